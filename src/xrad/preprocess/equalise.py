"""Histogram equalisation inside the body part (Davletshina et al.'s "histogram equalization" ablation).

Two forms, both OpenCV's: ``global`` — one histogram of the body-part pixels mapped to a flat one
(``cv2.equalizeHist`` on those pixels only, so the black surround, padding and carrier do not flatten the
body's contrast) — and ``clahe`` — contrast-limited adaptive equalisation (``cv2.createCLAHE``) with a named
clip limit and tile grid, computed on the whole crop (its tiles are local) and kept inside the body part.
Pixels outside the mask are left as they were: the model never sees them (its input is image × mask).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["EQUALISATIONS", "equalise_inside"]

EQUALISATIONS = ("none", "global", "clahe")


def equalise_inside(
    gray: np.ndarray, mask: np.ndarray, method: str, clip_limit: float = 2.0, tile_grid: int = 8
) -> np.ndarray:
    """``gray`` (uint8 (H, W)) with its body part (``mask`` > 0) equalised by ``method``; a new array.

    ``none`` returns a copy; an empty mask leaves the image unchanged.
    """
    if method not in EQUALISATIONS:
        raise ValueError(f"equalisation {method!r} is unknown; use one of {EQUALISATIONS}")
    out = gray.copy()
    inside = mask > 0
    if method == "none" or not inside.any():
        return out
    if method == "global":
        # equalizeHist takes any 8-bit single-channel array: the body's pixels as one row.
        out[inside] = cv2.equalizeHist(np.ascontiguousarray(gray[inside]).reshape(1, -1)).ravel()
        return out
    clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile_grid), int(tile_grid)))
    out[inside] = clahe.apply(np.ascontiguousarray(gray))[inside]
    return out
