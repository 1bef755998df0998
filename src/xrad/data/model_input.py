"""The model's input: THE resize of training and scoring, and the deterministic float input.

Every path that feeds a network goes through these two functions — the training banks, evaluation, scoring,
heatmaps, the service and ONNX export — so a trained detector always sees its inputs prepared alike:

- :func:`resize_image_and_mask`: uint8 image (and body mask) → major axis resized to S, centre-padded to
  S×S, uint8 ``(1, S, S)``;
- :func:`prepare_eval`: uint8 batch ``(B, 1, S, S)`` × 0/1 mask → float32 in [0, 1], drawing no random
  numbers (augmentation, in :mod:`xrad.training.augment`, is the only other way in).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = ["MIN_SIDE", "degenerate_reason", "input_statistics", "prepare_eval", "resize_image_and_mask", "to_float"]

MIN_SIDE = 32
"""An image with a side shorter than this (in pixels, as decoded) is flagged tiny: no radiograph is that small,
and its resized model input is a smear whose score means nothing."""


def degenerate_reason(pixels: np.ndarray, mask: np.ndarray | None = None) -> str:
    """Why an image's score cannot be trusted although it decoded: "" when it is fine, else a short reason
    ("tiny image (1x300 px, ...)", "constant image (every pixel 0)"; both joined by "; ").

    ``mask`` (nonzero = body part) restricts the constancy test to the body part, as the model sees it (a
    cached image is padded with zeros, so the padding must not make a blank image look varied).
    """
    pixels = np.asarray(pixels)
    reasons = []
    if pixels.ndim != 2 or min(pixels.shape) < MIN_SIDE:
        shape = "x".join(str(v) for v in pixels.shape[::-1]) if pixels.ndim == 2 else str(pixels.shape)
        reasons.append(f"tiny image ({shape} px; a side under {MIN_SIDE} px)")
    values = pixels if mask is None else pixels[np.asarray(mask) > 0]
    if values.size == 0:
        reasons.append("empty body mask (nothing for the model to see)")
    elif float(values.min()) == float(values.max()):
        value = float(values.flat[0])
        reasons.append(f"constant image (every pixel {value:.3g})")
    return "; ".join(reasons)


def resize_image_and_mask(image: np.ndarray, mask: np.ndarray | None, size: int) -> tuple[Tensor, Tensor]:
    """Resize the major axis to ``size`` and centre-pad to a square: THE resize of training and scoring.

    ``image`` is uint8 ``(H, W)``; ``mask`` is ``(H, W)`` with nonzero = body part, or None (all ones).
    The image uses area interpolation (anti-aliased when shrinking), the mask nearest neighbour (stays
    binary). Padding is 0 in both. Returns uint8 ``(1, size, size)`` tensors.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D greyscale image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    height, width = image.shape
    binary = np.ones_like(image) if mask is None else (np.asarray(mask) > 0).astype(np.uint8)
    if binary.shape != image.shape:
        raise ValueError(f"mask shape {binary.shape} does not match image shape {image.shape}")
    factor = size / max(height, width)
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    if (new_h, new_w) != (height, width):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        binary = cv2.resize(binary, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out_image = np.zeros((1, size, size), dtype=np.uint8)
    out_mask = np.zeros((1, size, size), dtype=np.uint8)
    out_image[0, top : top + new_h, left : left + new_w] = image
    out_mask[0, top : top + new_h, left : left + new_w] = binary
    return torch.from_numpy(out_image), torch.from_numpy(out_mask)


def to_float(images: Tensor) -> Tensor:
    """Convert a uint8 batch ``(B, 1, S, S)`` to float32 in [0, 1] (float input is returned as float32)."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images.to(torch.float32)


def mask_float(masks: Tensor) -> Tensor:
    """Masks as float32 0/1 (accepts uint8 0/1, bool, or float)."""
    return (masks > 0).to(torch.float32) if masks.dtype != torch.float32 else masks


def prepare_eval(images: Tensor, masks: Tensor) -> Tensor:
    """Deterministic evaluation input: float [0, 1] image times its mask. Draws no random numbers.

    Used for validation, test, scoring and every statistic computed on data (k-means initialisation,
    sphere radii), so those never see augmented images (the authors' evaluation did).
    """
    check_batch(images, masks)
    return to_float(images) * mask_float(masks)


def check_batch(images: Tensor, masks: Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 1 or images.shape[2] != images.shape[3]:
        raise ValueError(f"expected a square one-channel batch (B, 1, S, S), got {tuple(images.shape)}")
    if masks.shape != images.shape:
        raise ValueError(f"mask batch {tuple(masks.shape)} does not match image batch {tuple(images.shape)}")


def input_statistics(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N, 2): mean and standard deviation, in [0, 1], of each uint8 model input (N,1,S,S) inside its mask —
    the statistics an input is compared with the training images on (whole image when the mask is empty)."""
    x = np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0
    m = np.asarray(masks).reshape(len(masks), -1) > 0
    m[~m.any(axis=1)] = True
    count = m.sum(axis=1)
    mean = (x * m).sum(axis=1) / count
    std = np.sqrt((((x - mean[:, None]) ** 2) * m).sum(axis=1) / count)
    return np.stack([mean, std], axis=1)


APPEARANCE_SIDE = 8  # a model input's appearance: its masked pixels averaged to 8×8 (64 numbers in [0, 1])


def input_appearance(images: np.ndarray, masks: np.ndarray, side: int = APPEARANCE_SIDE) -> np.ndarray:
    """(N, side²) float32: each uint8 model input (N,1,S,S) times its mask (whole image when the mask is
    empty), scaled to [0, 1] and block-averaged to ``side`` × ``side`` — a layout-and-brightness descriptor
    cheap enough to store for the training normals and compare every input with (out-of-distribution check)."""
    from torch.nn.functional import adaptive_avg_pool2d

    x = torch.as_tensor(np.asarray(images), dtype=torch.float32) / 255.0
    m = torch.as_tensor(np.asarray(masks) > 0, dtype=torch.float32)
    empty = m.flatten(1).sum(dim=1) == 0
    m[empty] = 1.0
    pooled = adaptive_avg_pool2d(x * m, side)
    return pooled.flatten(1).numpy().astype(np.float32)


def appearance_distance(appearance: np.ndarray, reference: Mapping[str, Any] | None) -> np.ndarray:
    """(N,): each descriptor's Euclidean distance to the nearest stored training normal
    (``reference["appearance"]["normals"]``); NaN without a stored reference."""
    stored = ((reference or {}).get("appearance") or {}).get("normals")
    appearance = np.atleast_2d(np.asarray(appearance, dtype=np.float32))
    if not stored:
        return np.full(len(appearance), np.nan)
    normals = np.asarray(stored, dtype=np.float32)
    if normals.shape[1] != appearance.shape[1]:
        return np.full(len(appearance), np.nan)
    return np.asarray(np.sqrt(squared_distances(appearance, normals).min(axis=1)))


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) squared Euclidean distances between the rows of ``a`` and of ``b`` (never below 0), through
    one matrix product: no (A, B, D) intermediate, so a large training set costs A×B numbers only."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    d2 = (a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None, :]
    return np.asarray(np.maximum(d2, 0.0))
