"""Body-part segmentation and intensity checks on a cropped, normal-polarity uint8 image.

Segmentation (after Spahr et al., done once per image instead of nine times): histogram equalisation
and the Yen threshold are computed once; hysteresis thresholding (high = Yen, low = f·Yen) is tried for
each factor of the grid on a downsampled copy, and the factor whose mask correlates best with the image
is applied at full size; then an opening, the largest connected component, and small holes filled.
The result is strictly binary (0/1); when nothing usable is found the mask is all ones and flagged.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from skimage import exposure, filters

from xrad.preprocess.params import PreprocessParams


def is_inverted(gray: np.ndarray, border_fraction: float, threshold: float) -> bool:
    """True for white-background images: the outer band of the image is bright.

    Air and the unexposed surround are dark on a normal radiograph; on an inverted one they are bright.
    The median of the outer band is robust to burned-in markers and to a plate reaching the border.
    """
    h, w = gray.shape
    band = max(1, int(round(border_fraction * min(h, w))))
    border = np.concatenate([gray[:band].ravel(), gray[-band:].ravel(), gray[:, :band].ravel(),
                             gray[:, -band:].ravel()])
    return float(np.median(border)) / 255.0 > threshold


def stretch_contrast(gray: np.ndarray, low_pct: float, high_pct: float) -> np.ndarray:
    """AutoContrast: map the [low, high] percentiles to [0, 255] (uint8)."""
    low, high = np.percentile(gray, [low_pct, high_pct])
    if high <= low:
        return gray.copy()
    scaled = (gray.astype(np.float32) - low) * (255.0 / (high - low))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _largest_component(mask: np.ndarray, max_hole_fraction: float) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == int(np.argmax(sizes))
    # Fill holes smaller than a fraction of the body (noise); keep large ones (real background
    # enclosed by the body, e.g. between the thumb and the hand).
    holes, n_holes = ndimage.label(ndimage.binary_fill_holes(body) & ~body)
    if n_holes:
        hole_sizes = np.bincount(holes.ravel())
        small = np.flatnonzero(hole_sizes < max_hole_fraction * body.sum())
        small = small[small > 0]
        body = body | np.isin(holes, small)
    return body


def _hysteresis_mask(equalised: np.ndarray, threshold: float, factor: float, radius: int,
                     max_hole_fraction: float) -> np.ndarray:
    mask = filters.apply_hysteresis_threshold(equalised, factor * threshold, threshold)
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel) > 0
    return _largest_component(mask, max_hole_fraction)


def _correlation(image: np.ndarray, mask: np.ndarray) -> float:
    m = mask.astype(np.float32).ravel()
    if m.min() == m.max():
        return -1.0
    return float(np.corrcoef(image.astype(np.float32).ravel(), m)[0, 1])


def segment_body(gray: np.ndarray, params: PreprocessParams) -> tuple[np.ndarray, bool, float]:
    """(binary uint8 mask 0/1, fallback used, chosen hysteresis factor) for a normal-polarity image."""
    equalised = exposure.equalize_hist(gray)
    threshold = float(filters.threshold_yen(equalised))
    # Search the factor cheaply on a small copy; only the winner is computed at full size.
    scale = min(1.0, params.search_px / max(gray.shape))
    small_gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    small_eq = exposure.equalize_hist(small_gray)
    small_radius = max(1, int(round(params.opening_fraction * max(small_gray.shape))))
    best_factor, best_corr = params.hysteresis_grid[0], -np.inf
    for factor in params.hysteresis_grid:
        corr = _correlation(small_gray, _hysteresis_mask(small_eq, threshold, factor, small_radius,
                                                         params.max_hole_fraction))
        if corr > best_corr + 1e-6:
            best_factor, best_corr = factor, corr
    radius = max(1, int(round(params.opening_fraction * max(gray.shape))))
    mask = _hysteresis_mask(equalised, threshold, best_factor, radius, params.max_hole_fraction)
    if mask.sum() < 0.01 * mask.size or mask.all():
        return np.ones(gray.shape, np.uint8), True, best_factor
    return mask.astype(np.uint8), False, best_factor


def is_low_contrast(gray: np.ndarray, fraction: float) -> bool:
    """scikit-image's low-contrast test (range of the 1–99 % percentiles below ``fraction``)."""
    return bool(exposure.is_low_contrast(gray, fraction_threshold=fraction))
