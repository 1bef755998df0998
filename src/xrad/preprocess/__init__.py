"""Offline preprocessing of one radiograph: inversion fix, carrier crop, contrast, body mask, resize/pad.

:func:`preprocess_image` is pure and deterministic; the cache builder (:mod:`xrad.preprocess.cache`)
runs it over a manifest, and the scorer runs it on new images with the parameters stored in the
artefact, so training and scoring see identically prepared images.

Order of operations, on a float image in [0, 1]:

1. to uint8; polarity: pixels from a DICOM (``photometric`` MONOCHROME1/2) are already in display
   convention and are never re-guessed; otherwise an image is inverted (flag ``inverted``) only when all
   cues of :func:`~xrad.preprocess.segment.inversion_evidence` say so (bright film margins set aside),
   and flagged ``inversion_uncertain`` when a cue disagrees or there is no evidence (then it is left as is);
2. carrier detection (:mod:`xrad.preprocess.carrier`); perspective-correct crop; a landscape crop is
   rotated 90° clockwise to portrait; no candidate → the whole image is kept as it is and flagged
   ``uncropped``;
3. ``low_contrast`` flag (scikit-image's test), then AutoContrast (1–99 % percentile stretch);
4. body-part mask (:mod:`xrad.preprocess.segment`), binary 0/1; ``mask_fallback`` when none was found;
5. major axis resized to ``size`` (area interpolation; nearest for the mask), centred zero padding; then, if
   asked, histogram equalisation inside the resized mask (:mod:`xrad.preprocess.equalise`).

The ablation switches of :class:`PreprocessParams` skip step 2 (``carrier_crop``) or replace the mask of
step 4 by the whole image (``body_mask``).

``meta["transform"]`` is the 3×3 matrix mapping source pixel coordinates to output coordinates, so
masks, heatmaps and boxes can be mapped between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from xrad.preprocess.carrier import CarrierResult, crop_homography, detect_carrier
from xrad.preprocess.equalise import equalise_inside
from xrad.preprocess.params import PreprocessParams
from xrad.preprocess.segment import NO_EVIDENCE, inversion_evidence, is_low_contrast, segment_body, stretch_contrast

__all__ = ["PreprocessParams", "PreprocessResult", "polarity_known", "preprocess_image", "resize_pad_matrix"]

# PhotometricInterpretation values whose pixels xrad.data.dicom has already put in display convention.
DISPLAY_CONVENTION = frozenset({"MONOCHROME1", "MONOCHROME2"})


@dataclass
class PreprocessResult:
    """Output of :func:`preprocess_image`."""

    image: np.ndarray  # uint8 (size, size)
    mask: np.ndarray  # uint8 (size, size), values 0/1
    meta: dict[str, Any]  # flags, crop polygon, transform, chosen factor
    candidates: list[np.ndarray] = field(default_factory=list)  # carrier candidates (source coords)


def resize_pad_matrix(height: int, width: int, size: int) -> tuple[np.ndarray, int, int]:
    """Matrix scaling the major axis to ``size`` and centring in a square; and the scaled (h, w)."""
    scale = size / max(height, width)
    new_h, new_w = max(1, int(round(height * scale))), max(1, int(round(width * scale)))
    top, left = (size - new_h) // 2, (size - new_w) // 2
    matrix = np.array([[new_w / width, 0, left], [0, new_h / height, top], [0, 0, 1]], dtype=np.float64)
    return matrix, new_h, new_w


def _to_portrait(width: int, height: int) -> np.ndarray:
    """Matrix rotating a landscape crop by 90° clockwise (identity for portrait)."""
    if width <= height:
        return np.eye(3)
    # (x, y) -> (height - y, x): the crop's left edge becomes its top edge.
    return np.array([[0, -1, height], [1, 0, 0], [0, 0, 1]], dtype=np.float64)


def polarity_known(photometric: str | None) -> bool:
    """True when the reader already put the pixels in display convention (DICOM MONOCHROME1/2).

    ``photometric`` is :attr:`xrad.data.radiograph.ImageMeta.photometric`: for DICOM the file's
    PhotometricInterpretation (MONOCHROME1 is inverted at read time), for other formats the Pillow mode,
    which says nothing about polarity.
    """
    return photometric is not None and photometric.strip().upper() in DISPLAY_CONVENTION


def preprocess_image(
    pixels: np.ndarray,
    params: PreprocessParams | None = None,
    body_part: str | None = None,
    *,
    photometric: str | None = None,
) -> PreprocessResult:
    """Preprocess one radiograph (float (H, W) in [0, 1]) into a square uint8 image and 0/1 mask.

    ``body_part`` is accepted for interface stability; the current parameters are relative to the
    image size and need no per-part values. ``photometric`` is the reader's ``meta.photometric``: a
    DICOM's pixels arrive in display convention, so their polarity is taken as read, not guessed.
    """
    params = params or PreprocessParams()
    gray = np.clip(np.round(np.asarray(pixels, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    evidence = NO_EVIDENCE if polarity_known(photometric) else inversion_evidence(gray, params)
    inverted = evidence.inverted
    if inverted:
        gray = 255 - gray
    carrier = (
        detect_carrier(gray, params.carrier_min_area, params.carrier_max_cos)
        if params.carrier_crop
        else CarrierResult(None)
    )
    h, w = gray.shape
    if carrier.polygon is None:
        crop_matrix, crop_w, crop_h = np.eye(3), w, h
    else:
        crop_matrix, crop_w, crop_h = crop_homography(carrier.polygon)
    # Crops are turned to portrait (the paper's convention); an uncropped image keeps its orientation.
    rotate = carrier.polygon is not None and crop_w > crop_h
    portrait = _to_portrait(crop_w, crop_h) if rotate else np.eye(3)
    out_w, out_h = (crop_h, crop_w) if rotate else (crop_w, crop_h)
    to_crop = portrait @ crop_matrix
    cropped = cv2.warpPerspective(
        gray, to_crop, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    low_contrast = is_low_contrast(cropped, params.low_contrast_fraction)
    stretched = stretch_contrast(cropped, params.contrast_low, params.contrast_high)
    factor: float | None = None  # the hysteresis factor of the segmentation (none without it)
    mask, fallback = np.ones(stretched.shape, np.uint8), False
    if params.body_mask:
        mask, fallback, factor = segment_body(stretched, params)
    fit, new_h, new_w = resize_pad_matrix(out_h, out_w, params.size)
    top, left = int(fit[1, 2]), int(fit[0, 2])
    interpolation = cv2.INTER_AREA if max(out_h, out_w) > params.size else cv2.INTER_LINEAR
    image = np.zeros((params.size, params.size), np.uint8)
    image[top : top + new_h, left : left + new_w] = cv2.resize(stretched, (new_w, new_h), interpolation=interpolation)
    out_mask = np.zeros((params.size, params.size), np.uint8)
    out_mask[top : top + new_h, left : left + new_w] = cv2.resize(mask, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    # Equalised in the cache's frame, after the resize: exactly the pixels the mask keeps, nothing beside them.
    image = equalise_inside(image, out_mask, params.equalize, params.clahe_clip_limit, params.clahe_tile_grid)
    transform = fit @ to_crop
    meta = {
        "inverted": int(inverted),
        "inversion_uncertain": int(evidence.uncertain),
        "polarity_from": "dicom" if polarity_known(photometric) else "image",
        "inversion_extrema": evidence.extrema,
        "inversion_texture": evidence.texture,
        "inversion_tissue": evidence.tissue,
        "film_margin": evidence.film_margin,
        "uncropped": int(carrier.polygon is None),
        "low_contrast": int(low_contrast),
        "mask_fallback": int(fallback),
        "carrier_score": round(carrier.score, 6),
        "carrier_candidates": len(carrier.candidates),
        "crop_polygon": None if carrier.polygon is None else np.round(carrier.polygon, 2).tolist(),
        "hysteresis_factor": factor,
        "equalized": params.equalize,
        "source_shape": [h, w],
        "transform": np.round(transform, 9).tolist(),
    }
    return PreprocessResult(image=image, mask=out_mask, meta=meta, candidates=carrier.candidates)
