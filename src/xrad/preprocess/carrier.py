"""X-ray carrier detection: find the exposed plate (a bright quadrilateral) and crop it.

Candidates come from several binarisations of the blurred image (a ladder of thresholds between the
surround and the image's bright levels, plus Otsu) and from a dilated Canny edge map. Each outer contour
is simplified to a polygon; a candidate must have four vertices, be convex, cover at least
``carrier_min_area`` of the image and have near-right corners.

Unlike the authors' code, which takes the first candidate found, the chosen candidate maximises a
documented quality score::

    score = area_fraction × rectangularity × contrast

- ``area_fraction``: polygon area / image area (prefer the whole plate over a part of it);
(A contour that is not a clean quadrilateral but fills ≥ ``RECT_FILL`` of its minimum-area rectangle
contributes that rectangle.)

- ``rectangularity``: polygon area / area of its minimum bounding rectangle (1 for a rectangle);
- ``contrast``: (median inside − median of a thin band just outside) / 255, divided by
  ``CONTRAST_FULL`` and clipped to [0.01, 1]: a gate more than a weight — any candidate with a clear,
  bright-inside edge gets full credit, so among clear candidates the largest wins (the plate, not a
  bright limb lying on it), while a candidate straddling the plate's edge scores low.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class CarrierResult:
    """The chosen quadrilateral (4×2, clockwise from top-left, source pixel coords) or None."""

    polygon: np.ndarray | None
    score: float = 0.0
    candidates: list[np.ndarray] = field(default_factory=list)


def order_corners(points: np.ndarray) -> np.ndarray:
    """Order 4 points clockwise starting at the top-left (smallest x + y)."""
    pts = np.asarray(points, dtype=np.float64).reshape(4, 2)
    centre = pts.mean(axis=0)
    angles = np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0])
    pts = pts[np.argsort(angles)]  # clockwise in image coordinates (y points down)
    start = int(np.argmin(pts.sum(axis=1)))
    return np.roll(pts, -start, axis=0)


def _corner_cos(poly: np.ndarray) -> float:
    """Largest |cos| of the four corner angles."""
    worst = 0.0
    for i in range(4):
        a, b, c = poly[i - 1], poly[i], poly[(i + 1) % 4]
        u, v = a - b, c - b
        denom = np.linalg.norm(u) * np.linalg.norm(v)
        if denom == 0:
            return 1.0
        worst = max(worst, abs(float(np.dot(u, v) / denom)))
    return worst


def _binarisations(blurred: np.ndarray) -> list[np.ndarray]:
    """Binary images whose foreground may be the plate: threshold ladder, Otsu, dilated edges."""
    low, high = np.percentile(blurred, [2, 98])
    # Dense near the dark end: a plate is often only a little brighter than the surround.
    fractions = (0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6, 0.75)
    levels = {int(low + f * (high - low)) for f in fractions}
    otsu, _ = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    levels.add(int(otsu))
    binaries: list[np.ndarray] = [(blurred > t).astype(np.uint8) * 255 for t in sorted(levels)]
    edges = cv2.Canny(blurred, 10, 50, apertureSize=3)
    binaries.append(cv2.dilate(edges, np.ones((3, 3), np.uint8)))
    return binaries


CONTRAST_FULL = 0.08
RECT_FILL = 0.93


def _contrast(gray: np.ndarray, poly: np.ndarray) -> float:
    """Edge contrast gate in [0.01, 1]: (median inside − median just outside) / 255 / CONTRAST_FULL."""
    h, w = gray.shape
    inside = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(inside, np.round(poly).astype(np.int32), 1)
    band_width = max(2, int(0.02 * max(h, w)))
    grown = cv2.dilate(inside, np.ones((2 * band_width + 1, 2 * band_width + 1), np.uint8))
    ring = (grown > 0) & (inside == 0)
    if inside.sum() == 0:
        return 0.01
    if ring.sum() < 10:  # the plate fills the image: nothing outside to compare with
        return 0.5
    value = (np.median(gray[inside > 0]) - np.median(gray[ring])) / 255.0 / CONTRAST_FULL
    return float(np.clip(value, 0.01, 1.0))


def detect_carrier(gray: np.ndarray, min_area: float = 0.15, max_cos: float = 0.3) -> CarrierResult:
    """Detect the carrier in a normal-polarity uint8 image (plate brighter than the surround)."""
    h, w = gray.shape
    image_area = float(h * w)
    blurred = cv2.GaussianBlur(gray, (5, 5), 0)
    candidates: list[np.ndarray] = []
    for binary in _binarisations(blurred):
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            if cv2.contourArea(contour) < min_area * image_area:
                continue
            approx = cv2.approxPolyDP(contour, 0.02 * cv2.arcLength(contour, True), True)
            if len(approx) == 4 and cv2.isContourConvex(approx):
                poly = order_corners(approx.reshape(4, 2))
            else:
                # A plate whose outline is nicked (a limb or marker touching its edge) still fills
                # its minimum-area rectangle almost completely: take that rectangle.
                rect = cv2.minAreaRect(contour)
                if cv2.contourArea(contour) < RECT_FILL * rect[1][0] * rect[1][1]:
                    continue
                poly = order_corners(cv2.boxPoints(rect))
            if _corner_cos(poly) >= max_cos:
                continue
            candidates.append(poly)
    # The same plate is found by many binarisations: keep distinct candidates only.
    unique: list[np.ndarray] = []
    for poly in candidates:
        if not any(np.abs(poly - other).max() < 2.0 for other in unique):
            unique.append(poly)
    best, best_score = None, 0.0
    for poly in unique:
        area = cv2.contourArea(poly.astype(np.float32))
        (_, _), (rw, rh), _ = cv2.minAreaRect(poly.astype(np.float32))
        rectangularity = area / max(rw * rh, 1.0)
        score = (area / image_area) * rectangularity * _contrast(blurred, poly)
        if score > best_score:
            best, best_score = poly, score
    return CarrierResult(polygon=best, score=float(best_score), candidates=unique)


def crop_homography(polygon: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Perspective transform mapping the quadrilateral onto an upright rectangle, and that size."""
    tl, tr, br, bl = polygon
    width = int(round((np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2))
    height = int(round((np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2))
    width, height = max(width, 1), max(height, 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(polygon.astype(np.float32), target)
    return matrix.astype(np.float64), width, height
