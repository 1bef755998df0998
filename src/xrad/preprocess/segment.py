"""Polarity decision, body-part segmentation and intensity checks on a uint8 radiograph.

Polarity (:func:`inversion_evidence`) is decided on the whole image before the carrier crop, from two cues
inside the picture rather than from its outer band (bright unexposed film margins and tight crops made the
outer band bright on correctly displayed images). Everything else works on a cropped, normal-polarity image.

Segmentation (after Spahr et al., done once per image instead of nine times): histogram equalisation
and the Yen threshold are computed once; hysteresis thresholding (high = Yen, low = f·Yen) is tried for
each factor of the grid on a downsampled copy, and the factor whose mask correlates best with the image
is applied at full size; then an opening, the body component (:func:`_body_component`: flat rows and
columns a collimator bar or film edge lays along a side are cut off, and the largest component that is not
a border strip, flat, darker than the rest or a plate-sized rectangle is kept; on FracAtlas hand and
shoulder the largest component alone sat on a bar, a strip or the background in 225 of 1,382 images), and
small holes filled.
The result is strictly binary (0/1); when nothing usable is found the mask is all ones and flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage
from skimage import exposure, filters, morphology  # py.typed, but these functions carry no annotations

from xrad.preprocess.params import PreprocessParams


@dataclass(frozen=True)
class InversionEvidence:
    """The polarity cues of :func:`inversion_evidence`, each > 0 where the image looks inverted."""

    extrema: float  # (bright-plateau area − dark-basin area) / their sum, in [-1, 1]
    texture: float  # texture on the dark minus the bright side of the strongest edges, over their sum
    tissue: float  # the same over edges with texture on both sides (bone against soft tissue)
    film_margin: float  # fraction of the analysed image set aside as bright film margin
    inverted: bool  # all three cues clear their margins: invert
    uncertain: bool  # not inverted, but a cue leans towards inversion (or there is no evidence)


NO_EVIDENCE = InversionEvidence(0.0, 0.0, 0.0, 0.0, inverted=False, uncertain=False)

# Fixed pixel scales of the cues on the ``inversion_px`` copy (256 px by default).
EDGE_OFFSET = 4  # px from an edge to where each side's texture is read
EDGE_PERCENTILE = 90.0  # the strongest 10 % of gradients are "edges"
BOTH_TEXTURED = 0.25  # an edge is tissue-against-tissue when its flatter side has >= 25 % of the other's texture
MARGIN_MIN_AREA = 0.02  # smallest film margin (fraction of the image)


def _analysis_copy(gray: np.ndarray, px: int) -> np.ndarray:
    """Float copy in [0, 1] with the major axis at most ``px`` (the cues' pixel scales are fixed there)."""
    image: np.ndarray = gray.astype(np.float32) / 255.0
    scale = px / max(image.shape)
    if scale < 1:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


def _plateaus(image: np.ndarray, height: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(normalised image, bright plateaus, dark basins); None for a flat image.

    A pixel is on a bright plateau when it lies within ``height``/2 of the top of a regional maximum at
    least ``height`` high (h-dome, as a fraction of the 1–99 % range), on a dark basin likewise.
    """
    low, high = np.percentile(image, [1, 99])
    if high - low < 1e-3:
        return None
    v = cv2.GaussianBlur(np.clip((image - low) / (high - low), 0, 1).astype(np.float64), (0, 0), 1.0)
    bright = v - morphology.reconstruction(v - height, v, method="dilation")  # type: ignore[no-untyped-call]  # skimage: unannotated
    dark = morphology.reconstruction(v + height, v, method="erosion") - v  # type: ignore[no-untyped-call]  # skimage: unannotated
    return v, bright > height / 2, dark > height / 2


def _film_margins(v: np.ndarray, bright: np.ndarray, ring_dark: float) -> np.ndarray:
    """Bright plateaus touching the image border whose immediate surroundings are dark: film margins.

    Unexposed film and collimator shadows are the brightest, flattest part of a correctly displayed
    image and border the dark air of the exposed field; the white air of an inverted image borders the
    grey body instead. Only bright regions are set aside, never dark ones: what is removed is what would
    otherwise read as white air, so this makes the rule more reluctant to invert, never less.
    """
    h, w = v.shape
    out = np.zeros((h, w), bool)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright.astype(np.uint8), connectivity=8)
    outer, inner = np.ones((11, 11), np.uint8), np.ones((5, 5), np.uint8)
    for k in range(1, count):
        x, y, bw, bh, area = stats[k]
        if area < MARGIN_MIN_AREA * h * w or not (x == 0 or y == 0 or x + bw == w or y + bh == h):
            continue
        component = (labels == k).astype(np.uint8)
        ring = (cv2.dilate(component, outer) > 0) & ~(cv2.dilate(component, inner) > 0)  # 3–5 px outside
        if ring.sum() >= 10 and float(np.median(v[ring])) <= ring_dark:
            out |= component > 0
    return out


def _extrema_cue(bright: np.ndarray, dark: np.ndarray, ignore: np.ndarray) -> float:
    """Bright-plateau area minus dark-basin area over their sum, outside ``ignore``; 0 when neither exists.

    In display convention the air of the exposed field is the large flat-bottomed basin around and
    between the body parts, and bone gives narrow peaks; in an inverted image the air is the plateau.
    """
    b, d = float((bright & ~ignore).sum()), float((dark & ~ignore).sum())
    return (b - d) / (b + d) if b + d > 0 else 0.0


def _texture_cues(image: np.ndarray, ignore: np.ndarray) -> tuple[float, float]:
    """(all strong edges, tissue-against-tissue edges): texture on the dark minus the bright side, normalised.

    Bone (trabeculae, cortex) and the quantum noise behind dense tissue are textured, air is flat, and
    bone is brighter than the soft tissue around it: in display convention the more textured side of an
    edge is its bright side, so both cues are negative. The second keeps only edges with texture on both
    sides (bone against soft tissue), which flat margins and clipped air cannot reach.
    """
    h, w = image.shape
    border = EDGE_OFFSET + 3
    if min(h, w) <= 2 * border + 2:
        return 0.0, 0.0
    smooth = cv2.GaussianBlur(image, (0, 0), 1.0)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.hypot(gx, gy)
    # Finest-scale detail, then a 5×5 median: the step of the edge itself is a thin rim of detail on both
    # of its sides, which the median drops, so what is compared is the texture of the two regions.
    texture = cv2.medianBlur(np.abs(image - cv2.GaussianBlur(image, (0, 0), 0.8)).astype(np.float32), 5)
    inner = np.zeros((h, w), bool)
    inner[border : h - border, border : w - border] = True
    ignore = cv2.dilate(ignore.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    usable = inner & ~ignore
    if not usable.any():
        return 0.0, 0.0
    threshold = max(float(np.percentile(magnitude[usable], EDGE_PERCENTILE)), 1e-4)
    ys, xs = np.nonzero(inner & (magnitude > threshold))
    weight = magnitude[ys, xs]
    ux, uy = gx[ys, xs] / np.maximum(weight, 1e-12), gy[ys, xs] / np.maximum(weight, 1e-12)  # dark → bright
    yb, xb = np.round(ys + EDGE_OFFSET * uy).astype(int), np.round(xs + EDGE_OFFSET * ux).astype(int)
    yd, xd = np.round(ys - EDGE_OFFSET * uy).astype(int), np.round(xs - EDGE_OFFSET * ux).astype(int)
    keep = ~ignore[yb, xb] & ~ignore[yd, xd]  # an edge of a film margin says nothing about the body
    bright, dark, weight = texture[yb, xb][keep], texture[yd, xd][keep], weight[keep]
    if len(weight) == 0:
        return 0.0, 0.0
    edges = float(np.sum(weight * (dark - bright)) / max(float(np.sum(weight * (dark + bright))), 1e-12))
    tissue_edges = np.minimum(dark, bright) >= BOTH_TEXTURED * np.maximum(dark, bright)
    tissue = float(np.sum((dark - bright)[tissue_edges]) / max(float(np.sum((dark + bright)[tissue_edges])), 1e-12))
    return edges, tissue


def inversion_evidence(gray: np.ndarray, params: PreprocessParams) -> InversionEvidence:
    """Decide whether a uint8 radiograph is inverted (white air, dark bone), conservatively.

    Bright film margins (:func:`_film_margins`) are set aside first; then three cues must all point to
    inversion: the air is the bright plateau (:func:`_extrema_cue`, ``inversion_min_extrema``), the
    textured side of the strongest edges is the dark one and so is the bone side of edges between two
    textured tissues (:func:`_texture_cues`, ``inversion_min_texture``, ``inversion_min_tissue``).
    Inverting a correct image teaches a detector the defect, while inverted images are rare, so when a
    cue disagrees the image is left as it is and flagged ``uncertain`` (as is an image with no evidence).
    """
    image = _analysis_copy(gray, params.inversion_px)
    found = _plateaus(image, params.inversion_dome_height)
    if found is None:
        return InversionEvidence(0.0, 0.0, 0.0, 0.0, inverted=False, uncertain=True)
    v, bright, dark = found
    margin = _film_margins(v, bright, params.inversion_margin_dark)
    extrema = _extrema_cue(bright, dark, margin)
    texture, tissue = _texture_cues(image, margin)
    inverted = (
        extrema > params.inversion_min_extrema
        and texture > params.inversion_min_texture
        and tissue > params.inversion_min_tissue
    )
    leaning = extrema > params.inversion_min_extrema or texture > params.inversion_min_texture
    no_evidence = extrema == 0.0 and texture == 0.0
    return InversionEvidence(
        round(extrema, 6),
        round(texture, 6),
        round(tissue, 6),
        round(float(margin.mean()), 6),
        inverted,
        (leaning or no_evidence) and not inverted,
    )


def stretch_contrast(gray: np.ndarray, low_pct: float, high_pct: float) -> np.ndarray:
    """AutoContrast: map the [low, high] percentiles to [0, 255] (uint8)."""
    low, high = np.percentile(gray, [low_pct, high_pct])
    if high <= low:
        return gray.copy()
    scaled = (gray.astype(np.float32) - low) * (255.0 / (high - low))
    stretched: np.ndarray = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    return stretched


# Border bars (collimator shadows, film and detector edges) and how a body part is told from them.
# Texture is read on a copy whose major axis is TEXTURE_PX, so its levels do not depend on the image size.
TEXTURE_PX = 256
BAR_COVER = 0.9  # a border line is a bar when the mask covers >= 90 % of its length ...
BAR_FLAT = 4.0  # ... and is even along it: median absolute deviation below 4 uint8 levels (a saturated bar: 0)
BODY_FLAT = 1.0  # a component whose median texture is below this is a strip or background: bone is textured
MIN_BODY = 0.02  # only components covering >= 2 % of the image may replace the largest one
STRIP_SHARE = 0.5  # a component with >= half its area inside the border band lies on a strip, not a body part
PLATE_FILL = 0.85  # a component filling >= 85 % of a bounding box that covers >= half the image is a plate
PLATE_AREA = 0.5


def texture_map(gray: np.ndarray) -> np.ndarray:
    """Finest-scale detail |image − Gaussian(σ = 1.5 px)|, 5×5 median, in uint8 levels, read at ``TEXTURE_PX``
    and resized back to ``gray``'s shape: 0 on a saturated bar, a few levels on bone and soft tissue."""
    image = gray.astype(np.float32)
    h, w = image.shape
    scale = TEXTURE_PX / max(h, w)
    small: np.ndarray = image
    if scale < 1:
        small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    # The 5×5 median drops the thin rim of detail on both sides of a step (a bar's edge against air), so a
    # flat bar stays flat up to its edge, while the texture of bone and tissue survives.
    detail: np.ndarray = cv2.medianBlur(np.abs(small - cv2.GaussianBlur(small, (0, 0), 1.5)).astype(np.float32), 5)
    if detail.shape != image.shape:
        return cv2.resize(detail, (w, h), interpolation=cv2.INTER_LINEAR)
    return detail


def _band_width(shape: tuple[int, ...], band: float) -> int:
    return max(1, int(round(band * max(shape[0], shape[1]))))


def _border_bars(mask: np.ndarray, gray: np.ndarray, band: float) -> np.ndarray:
    """The mask's border bars: rows (columns) of a side that the mask covers over nearly their whole length
    (``BAR_COVER``) and that are even along it (``BAR_FLAT``, also at a bar's blurred edge), within
    ``band`` × the major axis of the side or continuing such a run inward to twice that depth.

    A collimator bar or film edge runs the full length of a side and is flat; a limb crosses a side only
    over its own width, and a row across a body part runs over bone and soft tissue.
    """
    h, w = mask.shape
    depth = _band_width(mask.shape, band)
    bars = np.zeros_like(mask, dtype=bool)
    sides = (
        [(i, slice(None)) for i in range(min(2 * depth, h))],
        [(h - 1 - i, slice(None)) for i in range(min(2 * depth, h))],
        [(slice(None), j) for j in range(min(2 * depth, w))],
        [(slice(None), w - 1 - j) for j in range(min(2 * depth, w))],
    )
    for lines in sides:
        for i, index in enumerate(lines):
            line = mask[index]
            values = gray[index][line]
            if line.mean() >= BAR_COVER and float(np.median(np.abs(values - np.median(values)))) < BAR_FLAT:
                bars[index] = line
            elif i >= depth:
                break
    return bars


def _not_a_body(component: np.ndarray, gray: np.ndarray, texture: np.ndarray, in_band: np.ndarray) -> bool:
    """A component that is no body part: it lies mostly in the border band (a strip along a side), it is
    flat (``BODY_FLAT``: a detector edge or background, no bone), darker than the rest of the image (the
    background), or a large near-rectangle (a detector plate)."""
    area = int(component.sum())
    if (component & in_band).sum() >= STRIP_SHARE * area:
        return True
    if float(np.median(texture[component])) < BODY_FLAT:
        return True
    if area < component.size and float(gray[component].mean()) < float(gray[~component].mean()):
        return True
    ys, xs = np.nonzero(component)
    box = (int(ys.max() - ys.min()) + 1) * (int(xs.max() - xs.min()) + 1)
    return area >= PLATE_FILL * box and box >= PLATE_AREA * component.size


def _body_component(
    mask: np.ndarray, gray: np.ndarray, texture: np.ndarray, band: float, max_hole_fraction: float
) -> np.ndarray:
    """The body part among the mask's components, small holes filled.

    With ``band`` > 0, border bars (:func:`_border_bars`) are cut off first, so a limb lying on a bar comes
    apart from it, and the largest component that :func:`_not_a_body` does not reject is the body (the
    largest of all when every component of at least ``MIN_BODY`` of the image is rejected; measured on
    FracAtlas, falling back to the uncut mask's largest component instead brought 27 frames of detector
    background back). With ``band`` = 0 it is the largest component.
    """
    if band > 0:
        mask = mask & ~_border_bars(mask, gray, band)
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body: np.ndarray = labels == int(np.argmax(sizes))
    if band > 0:
        depth = _band_width(mask.shape, band)
        in_band = np.ones(mask.shape, bool)
        in_band[depth:-depth, depth:-depth] = False
        for k in np.argsort(-sizes, kind="stable"):
            if sizes[k] < MIN_BODY * mask.size:
                break  # nothing looks like a body part: the largest component
            if not _not_a_body(labels == k, gray, texture, in_band):
                body = labels == k
                break
    # Fill holes smaller than a fraction of the body (noise); keep large ones (real background
    # enclosed by the body, e.g. between the thumb and the hand).
    holes, n_holes = ndimage.label(ndimage.binary_fill_holes(body) & ~body)
    if n_holes:
        hole_sizes = np.bincount(holes.ravel())
        small = np.flatnonzero(hole_sizes < max_hole_fraction * body.sum())
        small = small[small > 0]
        body = body | np.isin(holes, small)
    return body


def _hysteresis_mask(
    equalised: np.ndarray,
    gray: np.ndarray,
    texture: np.ndarray,
    threshold: float,
    factor: float,
    radius: int,
    params: PreprocessParams,
) -> np.ndarray:
    mask = filters.apply_hysteresis_threshold(equalised, factor * threshold, threshold)  # type: ignore[no-untyped-call]  # skimage: unannotated
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel) > 0
    return _body_component(mask, gray, texture, params.mask_border_band, params.max_hole_fraction)


def _correlation(image: np.ndarray, mask: np.ndarray) -> float:
    m = mask.astype(np.float32).ravel()
    if m.min() == m.max():
        return -1.0
    return float(np.corrcoef(image.astype(np.float32).ravel(), m)[0, 1])


def segment_body(gray: np.ndarray, params: PreprocessParams) -> tuple[np.ndarray, bool, float]:
    """(binary uint8 mask 0/1, fallback used, chosen hysteresis factor) for a normal-polarity image."""
    equalised = exposure.equalize_hist(gray)  # type: ignore[no-untyped-call]  # skimage: unannotated
    threshold = float(filters.threshold_yen(equalised))  # type: ignore[no-untyped-call]  # skimage: unannotated
    texture = texture_map(gray) if params.mask_border_band > 0 else np.zeros(gray.shape, np.float32)
    # Search the factor cheaply on a small copy; only the winner is computed at full size.
    scale = min(1.0, params.search_px / max(gray.shape))
    # An explicit size of at least 1 px a side: scaling by ``fx``/``fy`` rounds a 1-pixel-high (1xN)
    # image's short side to 0, which OpenCV refuses with an assertion.
    small_size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
    small_gray = cv2.resize(gray, small_size, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    small_eq = exposure.equalize_hist(small_gray)  # type: ignore[no-untyped-call]  # skimage: unannotated
    small_radius = max(1, int(round(params.opening_fraction * max(small_gray.shape))))
    small_texture = cv2.resize(texture, small_size, interpolation=cv2.INTER_AREA) if scale < 1 else texture
    best_factor, best_corr = params.hysteresis_grid[0], -np.inf
    for factor in params.hysteresis_grid:
        small_mask = _hysteresis_mask(small_eq, small_gray, small_texture, threshold, factor, small_radius, params)
        corr = _correlation(small_gray, small_mask)
        if corr > best_corr + 1e-6:
            best_factor, best_corr = factor, corr
    radius = max(1, int(round(params.opening_fraction * max(gray.shape))))
    mask = _hysteresis_mask(equalised, gray, texture, threshold, best_factor, radius, params)
    if mask.sum() < 0.01 * mask.size or mask.all():
        return np.ones(gray.shape, np.uint8), True, best_factor
    return mask.astype(np.uint8), False, best_factor


def is_low_contrast(gray: np.ndarray, fraction: float) -> bool:
    """scikit-image's low-contrast test (range of the 1–99 % percentiles below ``fraction``)."""
    return bool(exposure.is_low_contrast(gray, fraction_threshold=fraction))  # type: ignore[no-untyped-call]  # skimage: unannotated
