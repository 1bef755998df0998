"""The decoded radiograph every reader returns, and the small conversions the readers share.

:class:`Radiograph` is ``float32`` pixels (H, W) in [0, 1] in display convention (bone bright, as
MONOCHROME2) plus :class:`ImageMeta`. The readers live in :mod:`xrad.data.io` (PNG, JPEG, TIFF) and
:mod:`xrad.data.dicom`; both build on this module, so neither imports the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ImageMeta", "Radiograph", "short_reason", "to_grey"]


@dataclass(frozen=True)
class ImageMeta:
    """What is known about a decoded image, as stored in the file."""

    path: str  # file path or the upload name
    format: str  # "png" | "jpeg" | "tiff" | "dicom" (by content)
    bit_depth: int  # bits per sample as stored (8, 16, 12 for many DICOMs, 1 for bilevel)
    photometric: str  # DICOM PhotometricInterpretation, or the Pillow mode as opened ("L", "RGB", "I;16")
    pixel_spacing: tuple[float, float] | None  # mm (row, col) when the file states it
    shape: tuple[int, int]  # (height, width)
    truncated: bool  # decoded from an incomplete file


@dataclass
class Radiograph:
    """Decoded pixels (float32 (H, W) in [0, 1], bone bright) and their metadata."""

    pixels: np.ndarray
    meta: ImageMeta


def to_grey(arr: np.ndarray, scale: float) -> np.ndarray:
    """Colour (H, W, 3) samples to one channel: exact copy when R == G == B, else Rec. 601 luminance."""
    if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]):
        return arr[..., 0].astype(np.float32) / np.float32(scale)
    rgb = arr[..., :3].astype(np.float32)
    return (rgb @ np.array([0.299, 0.587, 0.114], np.float32)) / np.float32(scale)


def short_reason(exc: BaseException) -> str:
    """The first line of an exception's message (at most 160 characters), or its type name."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]
