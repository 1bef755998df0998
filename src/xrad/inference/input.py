"""THE input path of a trained detector: one image (decoded pixels, a raw file, or a cached preprocessed PNG
with its mask) → the uint8 image and mask ``(1, S, S)`` its scorer takes.

Scoring (:mod:`xrad.inference.scoring`), heatmaps (:mod:`xrad.inference.heatmaps`), the service and ONNX
export used to build this input each in their own way, and their rules drifted apart (a truncated raw file
was refused only when the artefact preprocesses; cache PNGs had no pixel limit). Every entry point now goes
through :func:`prepare_input`, which applies, for every artefact alike:

1. the pixel limit (:data:`xrad.data.io.DEFAULT_MAX_PIXELS`), to raw files, decoded pixels and cache PNGs
   (:func:`check_cached`, header only, before decoding);
2. the truncated-file rule: a raw file of which only part decodes is refused with an
   :class:`~xrad.errors.ImageReadError` naming it (:func:`check_complete`) — a score of a partial image
   would be confident and meaningless. ``allow_truncated=True`` (the service's option) accepts it;
3. preprocessing with the artefact's parameters (:class:`~xrad.inference.artefact.InputSpec`), a DICOM's
   polarity taken from its Photometric Interpretation as the cache does; cached rows are preprocessed
   already; without parameters the image is rounded to 8 bits, as the training banks do;
4. the one resize (:func:`xrad.data.model_input.resize_image_and_mask`).

The result also carries what a heatmap needs to be drawn where the model looked: the image the input was
resized from, the original→preprocessed homography and the 8-bit original (:class:`ModelInput`).
Cached rows are decoded by the training banks' own PNG reader, so a row scores identically in bulk
(:func:`xrad.training.banks.load_image_bank`) and alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xrad.data.io import DEFAULT_MAX_PIXELS, Radiograph, read_cache_png, read_radiograph
from xrad.errors import DataError, ImageReadError
from xrad.inference.artefact import InputSpec

if TYPE_CHECKING:  # pragma: no cover - torch is imported where an input is built, not to check a file
    from torch import Tensor

__all__ = [
    "CachedImage",
    "ModelInput",
    "Source",
    "check_cached",
    "check_complete",
    "prepare_input",
    "prepare_row",
    "row_source",
    "to_uint8",
]


@dataclass(frozen=True)
class CachedImage:
    """A row of ``xrad preprocess`` output: the preprocessed 8-bit PNG and its body mask ("" for none)."""

    cache_path: str
    mask_path: str = ""


Source = str | Path | np.ndarray | Radiograph | CachedImage


@dataclass(frozen=True)
class ModelInput:
    """One image as the model sees it, and how to map a map on it back."""

    image: Tensor  # uint8 (1, S, S)
    mask: Tensor  # uint8 (1, S, S), 0/1
    base: np.ndarray  # uint8 (h, w): the image ``image`` was resized from (preprocessed, cached or original)
    transform: np.ndarray | None  # 3×3 original → ``base`` homography (preprocessing), else None
    original: np.ndarray | None  # uint8 (H, W) decoded original when a map can be drawn on it, else None
    degenerate: str = ""  # why the score cannot be trusted though the image decoded (tiny, constant), else ""

    @property
    def on_original(self) -> bool:
        """True when a heatmap can be mapped back to the original image (not for cached rows)."""
        return self.original is not None


def check_complete(radiograph: Radiograph, allow_truncated: bool = False) -> Radiograph:
    """``radiograph``, unless it was decoded from a truncated file (then an :class:`ImageReadError` naming it)."""
    if radiograph.meta.truncated and not allow_truncated:
        raise ImageReadError(
            radiograph.meta.path,
            f"truncated {radiograph.meta.format.upper()} file (only part of it decodes); re-export or re-download it",
        )
    return radiograph


def _check_pixels(name: str, width: int, height: int, max_pixels: int, fix: str) -> None:
    if width * height > max_pixels:
        raise ImageReadError(
            name,
            f"declares {width}x{height} = {width * height} pixels, above max_pixels="
            f"{max_pixels} (decompression-bomb guard); {fix}",
        )


def check_cached(cached: CachedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse a cache PNG (or mask) whose header declares more than ``max_pixels``, before it is decoded.

    Only the header is read. A file that cannot be opened is left to the decoder, whose message is the
    better one (not found, not a PNG).
    """
    import warnings

    from PIL import Image

    from xrad.utils.files import open_regular

    for name in (cached.cache_path, cached.mask_path):
        if not name:
            continue
        try:
            with warnings.catch_warnings(), open_regular(name) as handle:  # never blocks on a FIFO
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(handle) as image:
                    width, height = image.size
        except Image.DecompressionBombError:
            raise ImageReadError(
                name,
                f"declares more than {max_pixels} pixels (decompression-bomb guard); "
                "delete it and re-run `xrad preprocess`",
            ) from None
        except Exception:
            continue
        _check_pixels(name, width, height, max_pixels, "delete it and re-run `xrad preprocess`")


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key, "")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def row_source(row: Mapping[str, Any]) -> str | CachedImage:
    """What a manifest/scores row is scored from: its ``cache_path`` (and ``mask_path``) when present,
    else its ``path``."""
    cache = _text(row, "cache_path")
    if cache:
        return CachedImage(cache, _text(row, "mask_path"))
    path = _text(row, "path")
    if not path:
        raise DataError("manifest row has an empty 'path' and no 'cache_path'; fix or drop that row")
    return path


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] pixels → uint8 by rounding, as preprocessing and the training banks do."""
    return np.clip(np.round(np.asarray(pixels, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def prepare_input(
    source: Source,
    spec: InputSpec,
    *,
    body_part: str | None = None,
    allow_truncated: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ModelInput:
    """``source`` → the model input under the rules of the module docstring.

    ``source`` is decoded [0, 1] pixels (the caller vouches that they are complete), a
    :class:`~xrad.data.io.Radiograph` (its ``truncated`` flag is honoured), a raw image file, or a
    :class:`CachedImage` (already preprocessed: only the resize is applied).
    """
    if isinstance(source, CachedImage):
        check_cached(source, max_pixels)
        base = read_cache_png(source.cache_path, "cached image", max_pixels)
        mask = read_cache_png(source.mask_path, "mask", max_pixels) if source.mask_path else None
        if mask is not None and mask.shape != base.shape:
            raise ImageReadError(
                source.mask_path,
                f"mask is {mask.shape[1]}x{mask.shape[0]} px but its image "
                f"{base.shape[1]}x{base.shape[0]}; re-run `xrad preprocess`",
            )
        return _guarded(source.cache_path, lambda: _from_cache(base, mask, spec))
    if isinstance(source, (str, Path)):
        source = read_radiograph(source, max_pixels=max_pixels)
    photometric = None  # bare pixels: polarity unknown, so preprocessing decides it from the image
    if isinstance(source, Radiograph):
        pixels = check_complete(source, allow_truncated).pixels
        name, photometric = source.meta.path, source.meta.photometric
    else:
        pixels, name = np.asarray(source), "<pixels>"
    if pixels.ndim != 2:
        raise ImageReadError(name, f"expected a 2-D greyscale image, got shape {pixels.shape}")
    _check_pixels(name, pixels.shape[1], pixels.shape[0], max_pixels, "raise max_pixels if trusted")
    if pixels.size == 0:
        raise ImageReadError(name, "image has no pixels; re-export it")
    return _guarded(name, lambda: _from_pixels(pixels, spec, body_part, photometric))


def _guarded(name: str, build: Callable[[], ModelInput]) -> ModelInput:
    """``build()``, with any failure of preprocessing or the resize (OpenCV, scikit-image ... on an image they
    cannot handle) turned into this image's one-line :class:`ImageReadError` instead of a foreign exception."""
    from xrad.data.radiograph import short_reason
    from xrad.errors import XradError

    try:
        return build()
    except XradError:
        raise
    except MemoryError:
        raise ImageReadError(name, "image is too large to prepare in memory; lower its size") from None
    except Exception as exc:
        raise ImageReadError(
            name, f"cannot be prepared for the model ({type(exc).__name__}: {short_reason(exc)})"
        ) from exc


def _from_cache(base: np.ndarray, mask: np.ndarray | None, spec: InputSpec) -> ModelInput:
    from xrad.data.model_input import degenerate_reason, resize_image_and_mask

    image, model_mask = resize_image_and_mask(base, mask, spec.image_size)
    return ModelInput(image, model_mask, base, None, None, degenerate_reason(base, mask))


def _from_pixels(pixels: np.ndarray, spec: InputSpec, body_part: str | None, photometric: str | None) -> ModelInput:
    from xrad.data.model_input import degenerate_reason, resize_image_and_mask

    degenerate = degenerate_reason(pixels)
    original = to_uint8(pixels)
    if spec.preprocessing is None:
        image, model_mask = resize_image_and_mask(original, None, spec.image_size)
        return ModelInput(image, model_mask, original, None, original, degenerate)
    from xrad.preprocess import preprocess_image

    # As the cache does (xrad.preprocess.cache): a DICOM's pixels are already in display convention
    # (MONOCHROME1 inverted by the reader), so its polarity is taken as read, never guessed again.
    result = preprocess_image(pixels, spec.preprocessing, body_part=body_part, photometric=photometric)
    base = np.asarray(result.image, dtype=np.uint8)
    image, model_mask = resize_image_and_mask(base, np.asarray(result.mask), spec.image_size)
    transform = result.meta.get("transform")
    if transform is None:  # no way back to the original: the map is drawn on the preprocessed image
        return ModelInput(image, model_mask, base, None, None, degenerate)
    return ModelInput(image, model_mask, base, np.asarray(transform, dtype=np.float64), original, degenerate)


def prepare_row(row: Mapping[str, Any], spec: InputSpec, **options: Any) -> ModelInput:
    """:func:`prepare_input` of a manifest/scores row (:func:`row_source`; its ``body_part`` is passed on)."""
    return prepare_input(row_source(row), spec, body_part=_text(row, "body_part") or None, **options)
