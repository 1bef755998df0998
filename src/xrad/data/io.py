"""Reading radiographs (PNG, JPEG, TIFF, DICOM) into one convention, and writing PNGs.

Every reader returns a :class:`Radiograph`: ``float32`` pixels of shape (H, W) in [0, 1], display
convention (bone bright, as MONOCHROME2), plus :class:`ImageMeta`. The format is decided by the file's
content (magic bytes), never by its extension. Every failure raises :class:`xrad.errors.ImageReadError`
with a one-line reason; no Pillow/pydicom/NumPy exception escapes.

Conventions:

- 8-bit data is divided by 255, 16-bit PNG by 65535 (never clamped at 255: Pillow's ``convert("L")``
  clamps 16-bit data, so it is not used), TIFF integer data by ``2**BitsPerSample - 1``.
- RGB/RGBA-encoded greyscale (R == G == B) keeps one channel exactly; true colour becomes Rec. 601
  luminance; alpha is ignored. JPEG colour images are decoded straight to luma by libjpeg.
- DICOM goes through Modality LUT -> VOI LUT / window -> MONOCHROME1 inversion (:mod:`xrad.data.dicom`).
- The declared image size is checked against ``max_pixels`` before decoding (decompression bombs).
- Truncated files (e.g. 59 FracAtlas JPEGs): a normal decode is tried first; if the decoder reports a
  truncated file, the file is decoded again with Pillow's ``LOAD_TRUNCATED_IMAGES`` (set only for that
  retry, under a lock, then restored); the missing tail stays as the decoder leaves it (black) and
  ``meta.truncated`` is True. A file with nothing decodable raises.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from xrad.data.radiograph import ImageMeta, Radiograph, short_reason, to_grey
from xrad.errors import ImageReadError
from xrad.utils.atomic import write_bytes
from xrad.utils.files import read_problem, read_regular

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageMeta",
    "Radiograph",
    "decode_radiograph",
    "read_cache_png",
    "read_dicom_tags",
    "read_radiograph",
    "sniff_format",
    "write_png",
]

DEFAULT_MAX_PIXELS: int = 60_000_000
"""Decompression-bomb limit: larger declared images are refused (a 43x43 cm plate at 0.1 mm is ~18 Mpx)."""

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF"}


class _DecodeGate:
    """Pillow's truncation switch is a module global, so a strict decode in one thread and the tolerant retry
    in another must not overlap (the strict one would silently accept a truncated file). Strict decodes share
    the gate; a retry holds it alone, and a waiting retry keeps new strict decodes out so it cannot starve."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._strict = 0
        self._tolerant_waiting = 0
        self._tolerant = False

    @contextlib.contextmanager
    def strict(self) -> Iterator[None]:
        with self._cond:
            while self._tolerant or self._tolerant_waiting:
                self._cond.wait()
            self._strict += 1
        try:
            yield
        finally:
            with self._cond:
                self._strict -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def tolerant(self) -> Iterator[None]:
        with self._cond:
            self._tolerant_waiting += 1
            while self._tolerant or self._strict:
                self._cond.wait()
            self._tolerant_waiting -= 1
            self._tolerant = True
        try:
            yield
        finally:
            with self._cond:
                self._tolerant = False
                self._cond.notify_all()


_DECODE_GATE = _DecodeGate()


def sniff_format(data: bytes) -> str | None:
    """Return "png", "jpeg", "tiff" or "dicom" from the leading bytes, or None when unrecognised."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[128:132] == b"DICM":
        return "dicom"
    return None


def read_radiograph(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Radiograph:
    """Read a PNG, JPEG, TIFF or DICOM radiograph from ``path`` (see the module docstring)."""
    path = Path(path)
    try:  # only regular files, opened without blocking: a FIFO or a device never hangs the reader
        data = read_regular(path)
    except OSError as exc:
        raise ImageReadError(path, read_problem(path, exc)) from exc
    return decode_radiograph(data, str(path), max_pixels=max_pixels)


def decode_radiograph(data: bytes, name: str = "<upload>", *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Radiograph:
    """Decode an image held in memory (e.g. an upload); ``name`` is used in metadata and errors."""
    if not data:
        raise ImageReadError(name, "file is empty (0 bytes); re-export or re-download it")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageReadError(name, _unknown_reason(data))
    try:
        if fmt == "dicom":
            from xrad.data.dicom import decode_dicom

            return decode_dicom(data, name, max_pixels)
        return _decode_pillow(data, name, fmt, max_pixels)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(name, f"{fmt.upper()} image is too large to decode in memory; lower its size") from None
    except Exception as exc:
        raise ImageReadError(
            name,
            f"{fmt.upper()} file cannot be decoded ({type(exc).__name__}: {short_reason(exc)}); re-export the file",
        ) from exc


def read_dicom_tags(path: str | Path) -> dict[str, str]:
    """Header-only DICOM tags with pseudonymised ids; see :func:`xrad.data.dicom.read_dicom_tags`."""
    from xrad.data.dicom import read_dicom_tags as _read_tags

    return _read_tags(path)


def _unknown_reason(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<")):
        kind = "HTML/XML text (a saved web page or error page?)"
    elif all(32 <= b < 127 or b in (9, 10, 13) for b in data[:512]):
        kind = "plain text"
    else:
        kind = f"unrecognised bytes (starts {data[:8].hex()})"
    return (
        f"content is {kind}, not PNG, JPEG, TIFF or DICOM (DICOM needs its 'DICM' preamble); "
        "check that the file is an image"
    )


def _is_truncation(exc: BaseException) -> bool:
    """Pillow's way of saying "the data stopped early" (as opposed to corrupt data)."""
    return isinstance(exc, EOFError) or (isinstance(exc, OSError) and "truncated" in str(exc).lower())


def _open(data: bytes, name: str, fmt: str, max_pixels: int) -> tuple[Any, str]:
    """Open (header only) with the one Pillow plugin the content calls for; check the declared size.

    Returns the image and its mode as opened (before JPEG's luma-only draft changes it).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]])
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            name, f"declared size is above Pillow's decompression-bomb limit ({exc}); the file is malicious or damaged"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(
            name, f"damaged {fmt.upper()} header (the decoder cannot identify it); re-export the file"
        ) from exc
    except Exception as exc:  # SyntaxError, struct.error, EOFError on damaged headers
        raise ImageReadError(name, f"damaged {fmt.upper()} header ({short_reason(exc)}); re-export the file") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageReadError(
            name,
            f"declares {width}x{height} = {width * height} pixels, above max_pixels="
            f"{max_pixels} (decompression-bomb guard); raise max_pixels if trusted",
        )
    if width <= 0 or height <= 0:
        raise ImageReadError(name, f"declares an empty {width}x{height} image; re-export the file")
    opened_mode = image.mode
    if fmt == "jpeg" and image.mode == "RGB":
        image.draft("L", image.size)  # libjpeg emits luma directly: exact for grey-in-RGB, and faster
    return image, opened_mode


def _load(data: bytes, name: str, fmt: str, max_pixels: int) -> tuple[Any, str, bool]:
    """Open and decode; on a truncation error decode again tolerating it. Returns (image, mode, truncated)."""
    from PIL import ImageFile

    with _DECODE_GATE.strict():
        image, opened_mode = _open(data, name, fmt, max_pixels)
        try:
            image.load()
            return image, opened_mode, False
        except Exception as exc:
            if not _is_truncation(exc):
                raise ImageReadError(
                    name, f"corrupt {fmt.upper()} data ({short_reason(exc)}); re-export the file"
                ) from exc
    with _DECODE_GATE.tolerant():
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            image, _ = _open(data, name, fmt, max_pixels)
            image.load()
        except ImageReadError:
            raise
        except Exception as exc:
            raise ImageReadError(
                name, f"truncated {fmt.upper()} file with no decodable pixels ({short_reason(exc)}); re-download it"
            ) from exc
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
    return image, opened_mode, True


def _decode_pillow(data: bytes, name: str, fmt: str, max_pixels: int) -> Radiograph:
    image, opened_mode, truncated = _load(data, name, fmt, max_pixels)
    try:
        pixels, bit_depth = _to_unit_grey(image, data, fmt, name)
    except ImageReadError:
        raise
    except Exception as exc:  # conversion failures on exotic modes
        raise ImageReadError(
            name,
            f"unsupported {fmt.upper()} pixel format {image.mode} ({short_reason(exc)}); save it as 8/16-bit greyscale",
        ) from exc
    if truncated and (pixels.size == 0 or float(pixels.min()) == float(pixels.max())):
        # A truncated file that leaves a constant image decoded nothing useful.
        raise ImageReadError(name, f"truncated {fmt.upper()} file with no decodable pixels; re-download it")
    meta = ImageMeta(
        path=name,
        format=fmt,
        bit_depth=bit_depth,
        photometric=opened_mode,
        pixel_spacing=_pil_spacing(image, fmt),
        shape=(int(pixels.shape[0]), int(pixels.shape[1])),
        truncated=truncated,
    )
    return Radiograph(pixels=np.ascontiguousarray(pixels, dtype=np.float32), meta=meta)


def _to_unit_grey(image: Any, data: bytes, fmt: str, name: str) -> tuple[np.ndarray, int]:
    """Pillow image -> (float32 (H, W) in [0, 1], stored bits per sample)."""
    mode = image.mode
    stored_bits = _stored_bits(image, data, fmt)
    if mode == "1":
        return np.asarray(image, dtype=np.float32), 1
    if mode == "L":
        return np.asarray(image, dtype=np.float32) / np.float32(255), stored_bits or 8
    if mode in ("LA", "La"):
        return np.asarray(image)[..., 0].astype(np.float32) / np.float32(255), stored_bits or 8
    if mode.startswith("I;16"):
        bits = stored_bits if fmt == "tiff" and stored_bits else 16
        return _scale_int(np.asarray(image), bits), stored_bits or 16
    if mode == "I":
        bits = stored_bits or 16  # Pillow < 10.3 opened 16-bit PNG as "I"
        return _scale_int(np.asarray(image), bits), bits
    if mode == "F":
        arr = np.asarray(image, dtype=np.float32)
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ImageReadError(
                name,
                "floating-point image with values outside [0, 1]; rescale it to [0, 1] or save it as 16-bit integers",
            )
        return arr, 32
    if mode in ("RGB", "RGBA", "RGBX", "RGBa"):
        return to_grey(np.asarray(image)[..., :3], 255), stored_bits or 8
    if mode in ("P", "PA"):
        return to_grey(np.asarray(image.convert("RGB")), 255), stored_bits or 8
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return to_grey(np.asarray(image.convert("RGB")), 255), stored_bits or 8
    raise ImageReadError(name, f"unsupported pixel format {mode}; save it as 8/16-bit greyscale")


def _scale_int(arr: np.ndarray, bits: int) -> np.ndarray:
    scale = np.float32(2**bits - 1)
    scaled: np.ndarray = np.clip(arr.astype(np.float32) / scale, 0.0, 1.0)
    return scaled


def _stored_bits(image: Any, data: bytes, fmt: str) -> int:
    """Bits per sample as written in the file header (0 when not found)."""
    if fmt == "png" and len(data) > 24:
        return int(data[24])  # IHDR bit depth sits right after width and height
    if fmt == "jpeg":
        return int(getattr(image, "bits", 0) or 0)
    if fmt == "tiff":
        value = getattr(image, "tag_v2", {}).get(258)
        if isinstance(value, tuple):
            value = value[0] if value else 0
        return int(value or 0)
    return 0


def _pil_spacing(image: Any, fmt: str) -> tuple[float, float] | None:
    """(row, col) mm per pixel from PNG pHYs (metric) or TIFF resolution; JPEG density is ignored
    because most JPEGs carry a meaningless 72/96 dpi default."""
    if fmt == "jpeg":
        return None
    dpi = image.info.get("dpi")
    try:
        dpi_x, dpi_y = float(dpi[0]), float(dpi[1])
    except (TypeError, ValueError, IndexError):
        return None
    if dpi_x <= 0 or dpi_y <= 0:
        return None
    return (round(25.4 / dpi_y, 6), round(25.4 / dpi_x, 6))


def read_cache_png(path: str, what: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an 8-bit cache PNG (``xrad preprocess`` output: image or mask) as a 2-D uint8 array; colour files are
    converted to grey, 16-bit ones scaled to 8 bits. The one reader of cached images (training banks, scoring).

    A manifest's ``cache_path`` / ``mask_path`` may name any file, so the rules of :func:`read_radiograph` hold
    here too: only regular files are opened, and the header's declared size is checked against ``max_pixels``
    before anything is decoded.
    """
    import cv2

    # Read the bytes ourselves: cv2.imread cannot open non-ASCII paths on Windows and only logs its failures.
    try:
        data = read_regular(path)
    except OSError as exc:
        reason = read_problem(path, exc)
        if isinstance(exc, FileNotFoundError) and not Path(path).is_symlink():
            reason = f"{what} file not found; re-run `xrad preprocess` to rebuild the cache"
        raise ImageReadError(path, reason) from None
    width, height = _declared_size(data, path, what)
    if width * height > max_pixels:
        raise ImageReadError(
            path,
            f"declares {width}x{height} = {width * height} pixels, above max_pixels="
            f"{max_pixels} (decompression-bomb guard); delete it and re-run `xrad preprocess`",
        )
    decoded: np.ndarray | None = (
        cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    )
    if decoded is None or decoded.ndim not in (2, 3) or decoded.size == 0:
        raise ImageReadError(path, f"cannot decode {what} PNG; delete it and re-run `xrad preprocess`")
    if decoded.ndim == 3:
        if decoded.shape[2] == 1:
            decoded = decoded[..., 0]
        else:
            decoded = cv2.cvtColor(decoded, cv2.COLOR_BGRA2GRAY if decoded.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if decoded.dtype != np.uint8:  # e.g. a 16-bit PNG written by another tool: keep the top 8 bits' range
        if not np.issubdtype(decoded.dtype, np.integer):
            raise ImageReadError(
                path,
                f"{what} holds {decoded.dtype} pixels, not 8/16-bit integers; delete it and re-run `xrad preprocess`",
            )
        decoded = np.round(decoded.astype(np.float64) * (255.0 / np.iinfo(decoded.dtype).max)).astype(np.uint8)
    return decoded


def _declared_size(data: bytes, path: str, what: str) -> tuple[int, int]:
    """(width, height) from a cache file's header, read without decoding (PNG, JPEG or TIFF)."""
    import warnings

    from PIL import Image

    fmt = sniff_format(data) if data else None
    if fmt not in _PIL_FORMATS:
        reason = "is empty (0 bytes)" if not data else "is not a PNG"
        raise ImageReadError(path, f"{what} {reason}; delete it and re-run `xrad preprocess`")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]]) as image:
                return image.size
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            path,
            f"{what} declares a size above Pillow's decompression-bomb limit; delete it and re-run `xrad preprocess`",
        ) from exc
    except Exception as exc:
        raise ImageReadError(
            path,
            f"cannot decode {what} PNG (damaged header: {short_reason(exc)}); delete it and re-run `xrad preprocess`",
        ) from exc


def write_png(path: str | Path, pixels: np.ndarray, bit_depth: int = 8, *, compress_level: int = 1) -> None:
    """Atomically write ``pixels`` as a PNG.

    - float arrays must lie in [0, 1] (NaN refused); they are rounded to ``bit_depth`` (8 or 16) bits.
    - uint8 / uint16 arrays are written as they are (``bit_depth`` is ignored): 8- or 16-bit.
    - bool arrays (masks) are written as uint8 values 0/1 — not 0/255 — so a mask reads back as 0/1
      (read it with Pillow/NumPy directly; :func:`read_radiograph` would return 0 and 1/255).
    - shape (H, W) gives greyscale, (H, W, 3) uint8 or float gives 8-bit RGB (e.g. overlays).

    ``compress_level`` 1 is chosen for speed on small CPUs (files ~10% larger than level 6).
    Programming errors (wrong dtype/shape/range) raise ``ValueError``.
    """
    from PIL import Image

    arr = np.asarray(pixels)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"write_png needs (H, W) or (H, W, 3) pixels, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
        if arr.size and (not np.isfinite(arr).all() or arr.min() < -1e-6 or arr.max() > 1 + 1e-6):
            raise ValueError("float pixels must be finite and within [0, 1]")
        depth = 8 if arr.ndim == 3 else bit_depth
        top = 2**depth - 1
        arr = np.rint(np.clip(arr, 0.0, 1.0) * top).astype(np.uint8 if depth == 8 else np.uint16)
    elif arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_png needs float, bool, uint8 or uint16 pixels, got {arr.dtype}")
    if arr.ndim == 3 and arr.dtype != np.uint8:
        raise ValueError("RGB PNGs are written as 8-bit; pass uint8 or float pixels")
    image = Image.fromarray(np.ascontiguousarray(arr))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    write_bytes(path, buffer.getvalue())
