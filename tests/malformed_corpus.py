"""A corpus of malformed (and a few awkward but valid) image files, generated at test time.

Every :class:`Case` writes one file system entry and states what :func:`xrad.data.io.read_radiograph` must make
of it; the entry points' outcomes follow from that (see tests/test_malformed.py):

- ``read="ok"``: decodes completely (``degenerate`` names the flag a scorer must raise: constant / tiny);
- ``read="partial"``: a truncated file that decodes in part, flagged ``truncated`` (scoring and the service refuse
  it, training and preprocessing keep it, as CONTRIBUTING.md's FracAtlas policy says);
- otherwise ``read`` holds words the one-line :class:`~xrad.errors.ImageReadError` reason must contain.

``upload`` is what the service answers when the file's bytes are posted (None: not a regular file, nothing to
upload). ``dicom=True`` marks entries a DICOM folder index must list (they carry a readable DICOM header).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["CASES", "Case", "build_corpus", "dicom_bytes", "good_png"]


@dataclass(frozen=True)
class Case:
    kind: str
    name: str  # the file name written (may hold unicode or a newline)
    build: Callable[[Path], None]
    read: str  # "ok", "partial" or words of the reason
    degenerate: str = ""  # "constant" / "tiny": the flag a scored image carries
    upload: int | None = 200  # the service's status for the file's bytes (None: nothing to upload)
    dicom: bool = False  # a DICOM folder index lists it


def _grey(shape: tuple[int, int] = (96, 80), seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    disc = 120 * np.exp(-((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2) / (2 * (min(shape) / 4 + 1) ** 2))
    noise = np.random.default_rng(seed).normal(0, 8, shape)
    return np.clip(40 + disc + noise, 0, 255).astype(np.uint8)


def _encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def good_png(shape: tuple[int, int] = (96, 80), seed: int = 0) -> bytes:
    """A plausible small greyscale radiograph as PNG bytes."""
    return _encode(_grey(shape, seed), "PNG")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_declaring(width: int, height: int, body: bytes = b"\0" * 64) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(body)) + _chunk(b"IEND", b"")


def dicom_bytes(
    stored: np.ndarray | None = None, *, transfer_syntax=None, pixel_data: bytes | None = None, **tags
) -> bytes:
    """A small single-frame MONOCHROME2 DICOM with a patient name and id (which must never be logged)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    stored = np.random.default_rng(1).integers(0, 4096, (48, 40)).astype(np.uint16) if stored is None else stored
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = "Doe^Jane", "PAT-SECRET-42"
    ds.StudyInstanceUID = generate_uid()
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixel_data is None:
        ds.PixelData = stored.astype(np.uint16).tobytes()
    elif pixel_data:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([pixel_data])
        ds["PixelData"].VR = "OB"
    for key, value in tags.items():
        setattr(ds, key, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _no_pixel_dicom() -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes()))
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def _bytes(data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        path.write_bytes(data() if callable(data) else data)

    return build


def _pil(array: np.ndarray, fmt: str, mode: str | None = None, **kwargs) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, fmt, **kwargs)
        path.write_bytes(buffer.getvalue())

    return build


def _float_tiff(values: np.ndarray) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        buffer = io.BytesIO()
        Image.fromarray(values.astype(np.float32), mode="F").save(buffer, "TIFF")
        path.write_bytes(buffer.getvalue())

    return build


def _png16(path: Path) -> None:
    image = _grey().astype(np.uint16) * 257
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())


def _truncated(data: Callable[[], bytes], fraction: float) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        full = data()
        path.write_bytes(full[: int(len(full) * fraction)])

    return build


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _symlink_loop(path: Path) -> None:
    os.symlink(path.name, path)  # points at itself: ELOOP when opened


def _dangling(path: Path) -> None:
    os.symlink(path.parent / "does-not-exist.png", path)


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inside.png").write_bytes(good_png())


def _rgba(path: Path) -> None:
    grey = _grey()
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 200)])
    path.write_bytes(_encode(rgba, "PNG"))


def _palette(path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_grey()).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())


_ARRAY = _grey()
_PNG = good_png
_JPEG = lambda: _encode(_grey((160, 128)), "JPEG", quality=90)

CASES: tuple[Case, ...] = (
    # valid files, some awkward
    Case("good-png", "good.png", _bytes(_PNG), "ok"),
    Case("good-jpeg", "good.jpg", _bytes(_JPEG), "ok"),
    Case("good-dicom", "good.dcm", _bytes(lambda: dicom_bytes(WindowCenter=2048, WindowWidth=4096)), "ok", dicom=True),
    Case("png-16-bit", "sixteen.png", _png16, "ok"),
    Case("rgba-png", "rgba.png", _rgba, "ok"),
    Case("palette-png", "palette.png", _palette, "ok"),
    Case("grey-alpha-png", "la.png", _pil(_ARRAY, "PNG", mode="LA"), "ok"),
    Case("bilevel-png", "bilevel.png", _pil(_ARRAY, "PNG", mode="1"), "ok"),
    Case("float-tiff", "float.tif", _float_tiff(_ARRAY / 255.0), "ok"),
    Case("tiff-16-bit", "sixteen.tif", _pil(_ARRAY.astype(np.uint16) * 16, "TIFF"), "ok"),
    Case("png-named-jpg", "png-really.jpg", _bytes(_PNG), "ok"),
    Case(
        "dicom-without-extension",
        "IM0001",
        _bytes(lambda: dicom_bytes(WindowCenter=2048, WindowWidth=4096)),
        "ok",
        dicom=True,
    ),
    Case("unicode-name", "röntgen_画像_ü.png", _bytes(_PNG), "ok"),
    Case("newline-name", "two\nlines.png", _bytes(_PNG), "ok"),
    # degenerate but decodable: scored, flagged
    Case("one-by-one", "one.png", _pil(np.array([[128]], np.uint8), "PNG"), "ok", degenerate="tiny"),
    Case("one-by-n", "row.png", _pil(_grey((1, 300)), "PNG"), "ok", degenerate="tiny"),
    Case("n-by-one", "column.png", _pil(_grey((300, 1)), "PNG"), "ok", degenerate="tiny"),
    Case("all-black", "black.png", _pil(np.zeros((96, 80), np.uint8), "PNG"), "ok", degenerate="constant"),
    Case(
        "all-white-16-bit", "white16.png", _pil(np.full((96, 80), 65535, np.uint16), "PNG"), "ok", degenerate="constant"
    ),
    # damaged
    Case("zero-bytes", "empty.png", _bytes(b""), "empty", upload=422),
    Case("truncated-png", "cut.png", _truncated(_PNG, 0.6), "partial", upload=422),
    Case("truncated-png-header", "cuthead.png", _truncated(_PNG, 0.02), "truncated", upload=422),
    Case("truncated-jpeg", "cut.jpg", _truncated(_JPEG, 0.5), "partial", upload=422),
    Case("jpeg-stub", "stub.jpg", _bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"), "JPEG", upload=422),
    Case("truncated-dicom-pixels", "cut.dcm", _truncated(dicom_bytes, 0.7), "pixel data", upload=422, dicom=True),
    Case("truncated-dicom-header", "cuthead.dcm", _truncated(dicom_bytes, 0.06), "pixel data", upload=422, dicom=True),
    Case("dicom-damaged-header", "badhead.dcm", _bytes(lambda: _damaged_header_dicom()), "DICOM header", upload=422),
    Case("decompression-bomb-png", "bomb.png", _bytes(lambda: _png_declaring(100_000, 100_000)), "bomb", upload=413),
    Case(
        "bomb-dicom",
        "bomb.dcm",
        _bytes(lambda: dicom_bytes(Rows=60000, Columns=60000)),
        "max_pixels",
        upload=413,  # the service's per-request pixel budget
        dicom=True,
    ),
    Case("float-tiff-out-of-range", "hot.tif", _float_tiff(np.array([[0.0, 3.5], [1.0, -2.0]])), "[0, 1]", upload=422),
    Case("dicom-without-pixel-data", "nopix.dcm", _bytes(_no_pixel_dicom), "no pixel data", upload=422, dicom=True),
    Case(
        "dicom-compressed-without-decoder",
        "htj2k.dcm",
        _bytes(lambda: _htj2k_dicom()),
        "decoder",
        upload=422,
        dicom=True,
    ),
    Case(
        "dicom-window-width-0",
        "ww0.dcm",
        _bytes(lambda: dicom_bytes(WindowCenter=100, WindowWidth=0)),
        "window",
        upload=422,
        dicom=True,
    ),
    Case("text-named-png", "notes.png", _bytes(b"patient list\nnothing to see\n"), "text", upload=415),
    Case("html-named-dcm", "page.dcm", _bytes(b"<!DOCTYPE html><html>404</html>"), "HTML", upload=415),
    Case("random-bytes", "noise.png", _bytes(np.random.default_rng(3).bytes(2048)), "unrecognised", upload=415),
    # not regular files
    Case("fifo", "pipe.png", _fifo, "not a regular file", upload=None),
    Case("symlink-loop", "loop.png", _symlink_loop, "symbolic link", upload=None),
    Case("dangling-symlink", "dangling.png", _dangling, "broken symbolic link", upload=None),
    Case("directory-named-png", "folder.png", _directory, "directory", upload=None),
)


def _damaged_header_dicom() -> bytes:
    """'DICM', then a file-meta group length whose 3 bytes cannot be an unsigned long: pydicom cannot parse on."""
    good = dicom_bytes()
    return good[:132] + b"\x02\x00\x00\x00UL\x03\x00\x01\x02\x03" + good[144:]


def _htj2k_dicom() -> bytes:
    from pydicom.uid import HTJ2KLossless

    return dicom_bytes(transfer_syntax=HTJ2KLossless, pixel_data=b"\xff\x4f\xff\x51" + b"\0" * 60)


def build_corpus(folder: Path, cases: tuple[Case, ...] = CASES) -> dict[str, Path]:
    """Write every case into ``folder``; returns kind -> path (paths are absolute, not resolved)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case in cases:
        path = folder.absolute() / case.name
        case.build(path)
        paths[case.kind] = path
    return paths
