"""Local synthetic anomalies planted inside the body mask of normal training images.

A detector that has only ever seen normal radiographs learns what varies in them — anatomy, pose,
exposure — and ranks images by that, not by the small local defects that make an image abnormal. These
corruptions show it examples of *local* defects so that it learns to look for them: bright metal (a plate
with screw heads, single screws or wires), a dark gap across a bone, a step where one part of a bone is
shifted against the other, a lytic or sclerotic spot in a bone, a periosteal bump on its cortex, a patch of
the image pasted elsewhere, a blurred or low-contrast scar. Sizes are
fractions of the image, so the same settings mean the same anatomy at 64, 128 or 256 px.

Each function takes a float image in [0, 1] (zero outside the body) and its 0/1 mask, both ``(S, S)``
NumPy arrays, and a NumPy generator, and returns the corrupted image and the 0/1 map of the pixels it
changed. :func:`corrupt_batch` applies them to a batch; its randomness comes from the generator passed in
(seeded per (seed, epoch, batch) by the caller), so a resumed run plants the same corruptions.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = ["KINDS", "corrupt", "corrupt_batch"]

Corruption = tuple[np.ndarray, np.ndarray]


def _body_point(mask: np.ndarray, image: np.ndarray, rng: np.random.Generator, bright: bool) -> tuple[int, int]:
    """A random body pixel; with ``bright``, one of the brightest 40 % (bone rather than soft tissue)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return mask.shape[0] // 2, mask.shape[1] // 2
    if bright:
        values = image[ys, xs]
        keep = values >= np.quantile(values, 0.6)
        ys, xs = ys[keep], xs[keep]
    i = int(rng.integers(len(ys)))
    return int(ys[i]), int(xs[i])


def _box(shape: tuple[int, ...], cy: float, cx: float, length: float, width: float, angle: float) -> np.ndarray:
    """An anti-aliased filled rotated rectangle (float 0..1)."""
    out = np.zeros(shape[:2], np.float32)
    corners = cv2.boxPoints(((float(cx), float(cy)), (float(length), float(width)), float(angle)))
    cv2.fillConvexPoly(out, np.round(corners * 16).astype(np.int32), 1.0, lineType=cv2.LINE_AA, shift=4)
    return out


def _paint_metal(image: np.ndarray, region: np.ndarray, level: float) -> np.ndarray:
    """Metal is brighter than anything it covers: raise the region to at least ``level``."""
    painted: np.ndarray = image * (1 - region) + np.maximum(image, level) * region
    return painted


def bright_bar(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Corruption:
    """A plate: a bright bar over bone, often with screw heads across it."""
    size = image.shape[0]
    cy, cx = _body_point(mask, image, rng, bright=True)
    length, width = rng.uniform(0.08, 0.45) * size, rng.uniform(0.015, 0.05) * size
    angle, level = rng.uniform(0, 180), rng.uniform(0.85, 1.0)
    region = _box(image.shape, cy, cx, length, width, angle)
    out = _paint_metal(image, region, level)
    if rng.random() < 0.6:
        direction = np.deg2rad(angle)
        for _ in range(int(rng.integers(1, 5))):
            t = rng.uniform(-0.5, 0.5) * length
            head = _box(
                image.shape,
                cy + t * np.sin(direction),
                cx + t * np.cos(direction),
                width * rng.uniform(1.5, 3),
                width * 0.5,
                angle + 90,
            )
            out, region = _paint_metal(out, head, level), np.maximum(region, head)
    return out, region


def screws(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Corruption:
    """One to three thin bright screws or wires close together."""
    size = image.shape[0]
    cy, cx = _body_point(mask, image, rng, bright=True)
    angle, level = rng.uniform(0, 180), rng.uniform(0.8, 1.0)
    out, region = image.copy(), np.zeros_like(image)
    for _ in range(int(rng.integers(1, 4))):
        screw = _box(
            image.shape,
            cy + rng.normal(0, 0.04 * size),
            cx + rng.normal(0, 0.04 * size),
            rng.uniform(0.04, 0.14) * size,
            rng.uniform(0.008, 0.025) * size,
            angle + rng.normal(0, 10),
        )
        out, region = _paint_metal(out, screw, level), np.maximum(region, screw)
    return out, region


def _ridges(image: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scale-normalised ridge strength (σ² × −the Hessian's lowest eigenvalue) of the image at scale ``sigma``,
    and the Hessian's entries (dxx, dxy, dyy) there."""
    smooth = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma)
    dxx = cv2.Sobel(smooth, cv2.CV_32F, 2, 0, ksize=3)
    dyy = cv2.Sobel(smooth, cv2.CV_32F, 0, 2, ksize=3)
    dxy = cv2.Sobel(smooth, cv2.CV_32F, 1, 1, ksize=3)
    half_trace = (dxx + dyy) / 2
    lowest = half_trace - np.sqrt(np.maximum(half_trace**2 - (dxx * dyy - dxy**2), 0))
    return -lowest * sigma**2, dxx, dxy, dyy


RidgeSites = tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]


def _ridge_sites(image: np.ndarray, mask: np.ndarray) -> RidgeSites:
    """Where bones run: the strongest 15 % of scale-normalised ridges in the body (ys, xs), the best scale of
    every pixel and the Hessians of the three scales (σ = 1.5, 3 and 5 % of the image).

    One scale alone finds thin bones (fingers) almost only; normalised across scales, a wide shaft (a humerus)
    is as strong a ridge as a thin one. Computed once per image; :func:`_draw_across` then draws from it.
    """
    size = image.shape[0]
    scales = [_ridges(image, max(1.0, fraction * size)) for fraction in (0.015, 0.03, 0.05)]
    strength = np.stack([scale[0] for scale in scales])
    best = np.argmax(strength, axis=0)
    ridge = np.where(mask > 0, np.take_along_axis(strength, best[None], 0)[0], 0)
    inside = ridge[mask > 0]
    ys, xs = np.nonzero(ridge > np.quantile(inside, 0.85)) if inside.size else (np.array([]), np.array([]))
    return ys, xs, best, scales


def _draw_across(
    sites: RidgeSites, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[int, int, np.ndarray]:
    """A random ridge point and the unit vector (x, y) across the bone there: the eigenvector of the Hessian's
    most negative eigenvalue at the point's best scale (a bright body pixel when there is no ridge)."""
    ys, xs, best, scales = sites
    if len(ys) == 0:
        cy, cx = _body_point(mask, image, rng, bright=True)
    else:
        i = int(rng.integers(len(ys)))
        cy, cx = int(ys[i]), int(xs[i])
    _, dxx, dxy, dyy = scales[int(best[cy, cx])]
    a, b, c = dxx[cy, cx], dxy[cy, cx], dyy[cy, cx]
    lam = (a + c) / 2 - np.sqrt(max(((a + c) / 2) ** 2 - (a * c - b**2), 0.0))
    vector = np.array([b, lam - a]) if abs(b) > 1e-6 else (np.array([1.0, 0.0]) if a < c else np.array([0.0, 1.0]))
    return cy, cx, vector / (np.linalg.norm(vector) + 1e-9)


def _across_bone(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int, np.ndarray]:
    """A point on a bright elongated structure (a bone) and the unit vector (x, y) across it."""
    return _draw_across(_ridge_sites(image, mask), image, mask, rng)


def _half_widths(image: np.ndarray, cy: int, cx: int, across: np.ndarray) -> tuple[int, int, float]:
    """Distances from the point to the bone's edges along ±``across`` (where the smoothed intensity has
    fallen half-way to its minimum), and the intensity just beyond those edges (the tissue around the bone)."""
    size = image.shape[0]
    smooth = cv2.GaussianBlur(image.astype(np.float32), (0, 0), max(1.0, 0.02 * size))
    out, beyond = [], []
    for sign in (1, -1):
        profile = []
        for t in range(int(0.25 * size)):
            y, x = int(round(cy + sign * t * across[1])), int(round(cx + sign * t * across[0]))
            if not (0 <= y < size and 0 <= x < size):
                break
            profile.append(smooth[y, x])
        values = np.array(profile or [smooth[cy, cx]])
        below = np.flatnonzero(values < (values[0] + values.min()) / 2)
        edge = int(below[0]) if len(below) else len(values)
        out.append(edge)
        beyond.append(float(values[min(edge + 1, len(values) - 1)]))
    return out[0], out[1], float(np.mean(beyond))


def _bone_layer(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the image into soft tissue (a grey opening wider than any bone) and the bone on top of it.

    A radiograph adds bone attenuation on top of soft tissue; the white top-hat keeps what is narrower than the
    structuring element — bones, not limbs — so ``soft + bone == image``. Removing part of ``bone`` leaves the
    soft tissue that was behind it, as a fracture gap does; moving part of it moves a fragment.
    """
    size = image.shape[0]
    radius = max(2, int(round(0.06 * size)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    soft = cv2.morphologyEx(image.astype(np.float32), cv2.MORPH_OPEN, kernel)
    return soft, image.astype(np.float32) - soft


def _bone_component(bone: np.ndarray, cy: int, cx: int) -> np.ndarray:
    """The connected region of clearly-bone pixels around (cy, cx) (float 0/1)."""
    level = float(bone[cy, cx])
    if level <= 0.02:
        return np.zeros_like(bone)
    region = (bone > 0.4 * level).astype(np.uint8)
    _, labels = cv2.connectedComponents(region, connectivity=8)
    component: np.ndarray = (labels == labels[cy, cx]).astype(np.float32)
    return component


def _bone_edges(
    smooth: np.ndarray, mask: np.ndarray, cy: int, cx: int, across: np.ndarray
) -> tuple[float, float, float]:
    """Where the bone through (cy, cx) ends along ±``across``: the first clear fall (at least half the
    steepest) of the lightly smoothed intensity within 0.15 of the image, staying in the body, and the
    soft-tissue level just beyond each edge.

    Returns (distance forward, distance backward, the lower of the two levels beyond); the level is ``inf``
    when no edge falls by at least 0.02 (no bone there).
    """
    size = smooth.shape[0]
    reach, levels = [], []
    for sign in (1, -1):
        profile = []
        for t in range(max(3, int(0.15 * size))):
            y, x = int(round(cy + sign * t * across[1])), int(round(cx + sign * t * across[0]))
            if not (0 <= y < size and 0 <= x < size) or mask[y, x] <= 0:
                break
            profile.append(float(smooth[y, x]))
        values = np.array(profile)
        if len(values) < 3:
            return 0.0, 0.0, float("inf")
        drops = values[:-1] - values[1:]
        # The first clear fall is the bone's own edge; a later, often steeper one is the limb's edge.
        strong = np.flatnonzero(drops >= max(0.5 * float(drops.max()), 0.02 / max(1.0, 0.006 * size)))
        if not len(strong):
            return 0.0, 0.0, float("inf")
        edge = int(strong[0])
        while edge + 1 < len(drops) and drops[edge + 1] > drops[edge]:
            edge += 1
        reach.append(edge + 0.5)  # the bone ends between the samples either side of its steepest fall
        levels.append(float(values[min(edge + 2, len(values) - 1)]))
    return reach[0], reach[1], min(levels)


def _structure(image: np.ndarray) -> np.ndarray:
    """The image without its pixel noise (the light smoothing :func:`_bone_edges` measures on)."""
    smooth: np.ndarray = cv2.GaussianBlur(image.astype(np.float32), (0, 0), max(0.7, 0.006 * image.shape[0]))
    return smooth


def _bone_site(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[int, int, np.ndarray, float, float, float, np.ndarray] | None:
    """A ridge point with a clear bone edge on both sides: (cy, cx, across, distance forward, distance
    backward, soft-tissue level, the smoothed image), or None after eight draws without one."""
    sites, structure = _ridge_sites(image, mask), _structure(image)
    for _ in range(8):
        cy, cx, across = _draw_across(sites, image, mask, rng)
        forward, backward, level = _bone_edges(structure, mask, cy, cx, across)
        if np.isfinite(level) and image[cy, cx] > level + 0.02:
            return cy, cx, across, forward, backward, level, structure
    return None


def gap_across_bone(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Corruption:
    """A fracture-like gap: a thin band across one bone from edge to edge, where the bone's attenuation is
    missing and only the soft tissue beside it shows through — as in a transverse or oblique fracture.

    The band runs from the point's bone edge on one side to the other (:func:`_bone_edges`) at up to 30° off
    the perpendicular of the bone; inside it the image falls most of the way to the soft-tissue level measured
    just beyond those edges. Points without a clear bone edge on both sides are redrawn (up to eight times).
    """
    size = image.shape[0]
    site = _bone_site(image, mask, rng)
    if site is None:
        return image, np.zeros_like(image)
    cy, cx, across, forward, backward, level, structure = site
    angle = np.deg2rad(rng.uniform(-30, 30))
    direction = np.array(
        [across[0] * np.cos(angle) - across[1] * np.sin(angle), across[0] * np.sin(angle) + across[1] * np.cos(angle)]
    )
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    position = (xx - cx) * direction[0] + (yy - cy) * direction[1]  # along the band
    offset = (xx - cx) * direction[1] - (yy - cy) * direction[0]  # across the band, from its centre line
    stretch = 1.0 / max(np.cos(angle), 0.5)  # an oblique band crosses the bone on a longer chord
    half = rng.uniform(0.004, 0.015) * size + 0.4
    band = np.clip(0.5 + half - np.abs(offset), 0.0, 1.0)
    band *= np.clip(0.5 + np.minimum(forward * stretch - position, backward * stretch + position), 0.0, 1.0)
    band *= mask > 0
    depth = rng.uniform(0.75, 1.0)  # most of the bone's attenuation is missing in the gap
    # The smoothed bone is removed, not the pixels: the image's noise stays in the gap, as in a radiograph,
    # instead of a noise-free band that a network could find by its texture alone.
    out = image - band * depth * np.maximum(structure - level, 0.0)
    return out, ((band > 0.5) & (image - out > 0.02)).astype(np.float32)


def step_across_bone(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Corruption:
    """A displaced-fragment-like step: one bone is broken across and the part beyond the break is moved
    sideways (and slightly turned) over the soft tissue, as in a displaced fracture.

    The bone is the strip between its edges (:func:`_bone_edges`) along its axis, from the break to up to 0.35
    of the image beyond it (faded out over its last pixels); its attenuation above the soft tissue is lifted
    off, moved by 0.5–1.2 bone half-widths across the axis and turned by up to 12° about the break, and put
    back over the soft tissue. Points without a clear bone edge on both sides are redrawn (up to eight times).
    """
    size = image.shape[0]
    site = _bone_site(image, mask, rng)
    if site is None:
        return image, np.zeros_like(image)
    cy, cx, across, forward, backward, level, structure = site
    axis = np.array([-across[1], across[0]]) * rng.choice([-1, 1])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    along = (xx - cx) * axis[0] + (yy - cy) * axis[1]  # beyond the break when > 0
    side = (xx - cx) * across[0] + (yy - cy) * across[1]  # across the bone, + towards ``forward``
    length = rng.uniform(0.15, 0.35) * size
    strip = np.clip(0.5 + np.minimum(forward - side, backward + side), 0.0, 1.0)
    strip *= np.clip(along + 0.5, 0.0, 1.0) * np.clip((length - along) / max(2.0, 0.05 * size), 0.0, 1.0)
    fragment = strip * np.maximum(structure - level, 0.0) * (mask > 0)  # the noise stays in place
    shift = max(1.0, rng.uniform(0.5, 1.2) * (forward + backward) / 2) * rng.choice([-1, 1])
    matrix = cv2.getRotationMatrix2D((float(cx), float(cy)), float(rng.uniform(-12, 12)), 1.0)
    matrix[:, 2] += shift * across
    moved = cv2.warpAffine(fragment.astype(np.float32), matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
    out = np.clip(image - fragment + moved, 0, 1) * (mask > 0)
    return out, (np.abs(out - image) > 0.04).astype(np.float32)


def cut_paste(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Corruption:
    """A patch of the image, possibly rotated or flipped, pasted elsewhere in the body (CutPaste)."""
    size = image.shape[0]
    height, width = (rng.uniform(0.06, 0.25, 2) * size).astype(int) + 2
    sy, sx = _body_point(mask, image, rng, bright=rng.random() < 0.5)
    sy, sx = int(np.clip(sy - height // 2, 0, size - height)), int(np.clip(sx - width // 2, 0, size - width))
    patch = image[sy : sy + height, sx : sx + width].copy()
    if rng.random() < 0.5:
        patch = np.rot90(patch, int(rng.integers(1, 4))).copy()
    if rng.random() < 0.5:
        patch = patch[::-1].copy()
    height, width = patch.shape
    ty, tx = _body_point(mask, image, rng, bright=False)
    ty, tx = int(np.clip(ty - height // 2, 0, size - height)), int(np.clip(tx - width // 2, 0, size - width))
    out, region = image.copy(), np.zeros_like(image)
    out[ty : ty + height, tx : tx + width] = patch * rng.uniform(0.8, 1.2)
    region[ty : ty + height, tx : tx + width] = 1
    out = np.clip(out, 0, 1)
    return out, (region * (np.abs(out - image) > 0.03)).astype(np.float32)


def blur_scar(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Corruption:
    """A round region blurred or with its contrast lowered (a lesion-like local texture change)."""
    size = image.shape[0]
    cy, cx = _body_point(mask, image, rng, bright=True)
    radius = rng.uniform(0.04, 0.12) * size
    yy, xx = np.mgrid[0:size, 0:size]
    region = cv2.GaussianBlur((np.hypot(yy - cy, xx - cx) < radius).astype(np.float32), (0, 0), radius / 4)
    if rng.random() < 0.5:
        altered = cv2.GaussianBlur(image, (0, 0), rng.uniform(1, 3))
    else:
        centre = image[cy, cx]
        altered = np.clip((image - centre) * rng.uniform(0.3, 0.7) + centre * rng.uniform(0.8, 1.2), 0, 1)
    out = image * (1 - region) + altered * region
    return out, ((region > 0.3) & (np.abs(out - image) > 0.02)).astype(np.float32)


def density_spot(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Corruption:
    """A lytic or sclerotic spot: inside one bone, an elongated soft-edged region where the bone's attenuation
    is lowered (more often) or raised — the bone layer of :func:`_bone_layer` scaled, the soft tissue kept."""
    size = image.shape[0]
    cy, cx, across = _across_bone(image, mask, rng)
    forward, backward, _ = _half_widths(image, cy, cx, across)
    _, bone = _bone_layer(image)
    this_bone = _bone_component(bone, cy, cx)
    radius = max(1.0, 0.5 * (forward + backward)) * rng.uniform(0.5, 1.0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = (xx - cx) * across[1] - (yy - cy) * across[0]  # along the bone
    v = (xx - cx) * across[0] + (yy - cy) * across[1]  # across it
    rho2 = (u / (rng.uniform(1.0, 2.0) * radius)) ** 2 + (v / radius) ** 2
    weight = np.exp(-2.0 * rho2) * this_bone
    amplitude = rng.uniform(0.4, 0.9) * (-1.0 if rng.random() < 0.6 else 1.0)
    out = np.clip(image + amplitude * bone * weight, 0, 1) * (mask > 0)
    return out, ((rho2 < 1.0) & (np.abs(out - image) > 0.02)).astype(np.float32)


def cortical_bump(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Corruption:
    """A periosteal bump: a small elongated bone-dense swelling on the outside of one bone's cortex."""
    size = image.shape[0]
    cy, cx, across = _across_bone(image, mask, rng)
    forward, backward, _ = _half_widths(image, cy, cx, across)
    _, bone = _bone_layer(image)
    side = 1 if rng.random() < 0.5 else -1
    edge = float(forward if side > 0 else backward)
    level = float(np.clip(bone[cy, cx], 0.05, 0.5))
    thickness = max(0.8, rng.uniform(0.25, 0.5) * 0.5 * (forward + backward))
    length = max(2.0, rng.uniform(1.0, 2.5) * 0.5 * (forward + backward))
    centre_x, centre_y = cx + side * across[0] * edge, cy + side * across[1] * edge
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = (xx - centre_x) * across[1] - (yy - centre_y) * across[0]
    v = (xx - centre_x) * across[0] + (yy - centre_y) * across[1]
    bump = np.exp(-2.0 * ((u / length) ** 2 + (v / thickness) ** 2))
    out = np.clip(image + rng.uniform(0.6, 1.2) * level * bump, 0, 1) * (mask > 0)
    return out, ((bump > 0.3) & (out - image > 0.02)).astype(np.float32)


KINDS = {
    "bright_bar": bright_bar,
    "screws": screws,
    "gap_across_bone": gap_across_bone,
    "step_across_bone": step_across_bone,
    "cut_paste": cut_paste,
    "blur_scar": blur_scar,
    "density_spot": density_spot,
    "cortical_bump": cortical_bump,
}


def corrupt(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, kinds: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, str]:
    """Plant one corruption of a kind drawn uniformly from ``kinds``; returns (image, changed pixels, kind).

    A draw that changes fewer than two body pixels (e.g. a step where there was no bone) is redrawn, up to
    five times; the image stays zero outside the body.
    """
    inside = (mask > 0).astype(np.float32)
    out, changed, kind = image, np.zeros_like(image), kinds[0]
    for _ in range(5):
        kind = kinds[int(rng.integers(len(kinds)))]
        out, changed = KINDS[kind](image, mask, rng)
        changed = changed * inside
        if changed.sum() >= 2:
            break
    return (np.clip(out, 0, 1) * inside).astype(np.float32), changed.astype(np.float32), kind


def corrupt_batch(
    images: Tensor, masks: Tensor, rng: np.random.Generator, kinds: tuple[str, ...]
) -> tuple[Tensor, Tensor]:
    """Corrupt every image of a float batch ``(B, 1, S, S)`` (masks 0/1 of the same shape) once.

    Returns the corrupted batch and the 0/1 maps of changed pixels, on the batch's device.
    """
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ValueError(f"unknown corruption kind(s) {unknown}; choose from {sorted(KINDS)}")
    source = images.detach().float().cpu().numpy()
    body = masks.detach().float().cpu().numpy()
    out, changed = np.empty_like(source), np.zeros_like(source)
    for i in range(source.shape[0]):
        out[i, 0], changed[i, 0], _ = corrupt(source[i, 0], body[i, 0], rng, tuple(kinds))
    return torch.from_numpy(out).to(images.device), torch.from_numpy(changed).to(images.device)
