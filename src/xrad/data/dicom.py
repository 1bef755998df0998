"""DICOM decoding (called by :mod:`xrad.data.io`): pixel pipeline and header tags.

The pixel pipeline follows the DICOM grayscale pipeline in the order the standard (and pydicom's docs)
prescribe: stored values -> Modality LUT (RescaleSlope/Intercept or Modality LUT Sequence) -> VOI
(VOI LUT Sequence preferred, else WindowCenter/WindowWidth, else the full stored range) -> MONOCHROME1
inversion -> [0, 1]. The output is scaled by the output range of the window, not by the image's own
min/max, so two images of one protocol keep comparable intensities (a per-image min-max would change
anomaly scores).

Only frame 0 of a multi-frame object is decoded (radiographs are single-frame; decoding one frame also
bounds memory). pydicom is imported lazily so reading PNG/JPEG never pays for it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from xrad.data.radiograph import ImageMeta, Radiograph, short_reason, to_grey
from xrad.errors import ImageReadError
from xrad.utils.hashing import pseudonymise

# pip hint per compressed transfer syntax family (name fragment -> packages providing a decoder).
_PLUGIN_HINTS: tuple[tuple[str, str], ...] = (
    ("JPEG-LS", "pip install pyjpegls (or python-gdcm)"),
    ("JPEG 2000", "pip install pylibjpeg pylibjpeg-openjpeg"),
    ("High-Throughput JPEG 2000", "pip install pylibjpeg pylibjpeg-openjpeg"),
    ("JPEG", "pip install pylibjpeg pylibjpeg-libjpeg"),
    ("RLE", "pip install pylibjpeg pylibjpeg-rle"),
    ("Deflate", "pip install python-gdcm"),
)


def _plugin_hint(ts_name: str) -> str:
    for fragment, hint in _PLUGIN_HINTS:
        if fragment.lower() in ts_name.lower():
            return hint
    return "pip install python-gdcm"


def _stored_range(ds: Any) -> tuple[int, int]:
    """The range of values the stored bits can hold (BitsStored, signed or not)."""
    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 16) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _modality_range(ds: Any) -> tuple[float, float]:
    """Output range of the Modality LUT over every possible stored value.

    Pushing the stored range through pydicom's own ``apply_modality_lut`` handles both a rescale
    (possibly with a negative slope) and a Modality LUT Sequence without re-implementing either.
    """
    # From the defining modules: the package re-exports them without an __all__, so a type checker
    # does not see them as exported from pydicom.pixels.
    from pydicom.pixels.processing import apply_modality_lut

    lo, hi = _stored_range(ds)
    probe = np.arange(lo, hi + 1, dtype=np.int64) if hi - lo <= 65535 else np.array([lo, hi], np.int64)
    out = np.asarray(apply_modality_lut(probe, ds), dtype=np.float64)
    return float(out.min()), float(out.max())


def _voi(arr: np.ndarray, ds: Any) -> tuple[np.ndarray, float, float]:
    """Apply the VOI transform (LUT preferred over window) and return (values, out_lo, out_hi)."""
    from pydicom.pixels.processing import apply_voi_lut

    lut_seq = ds.get("VOILUTSequence")
    if lut_seq:
        if not np.issubdtype(arr.dtype, np.integer):
            # A LUT is indexed by integers; a rescale makes floats (pydicom warns and truncates them).
            arr = np.rint(arr).astype(np.int64)
        out = np.asarray(apply_voi_lut(arr, ds, index=0, prefer_lut=True), dtype=np.float64)
        bits = int(lut_seq[0].LUTDescriptor[2])
        # The standard scales by the declared LUT bit depth; a few vendors declare 16 bits for 12-bit
        # data, which this keeps (dark image) rather than guessing — except when values exceed it.
        return out, 0.0, max(float(2**bits - 1), float(out.max()))
    if "WindowCenter" in ds and "WindowWidth" in ds:
        out = np.asarray(apply_voi_lut(arr, ds, index=0, prefer_lut=True), dtype=np.float64)
        # pydicom maps values outside the window to its y_min / y_max; probing with extreme inputs
        # reads that output range back exactly (also for SIGMOID, whose asymptotes are y_min / y_max).
        with np.errstate(all="ignore"):
            probe = np.asarray(apply_voi_lut(np.array([-1e30, 1e30]), ds, index=0, prefer_lut=True))
        return out, float(probe.min()), float(probe.max())
    lo, hi = _modality_range(ds)
    return np.asarray(arr, dtype=np.float64), lo, hi


def _quiet_pydicom() -> Any:
    """pydicom, with its validation of values read from files switched off: its warnings and log records quote
    the offending value, which may be a patient's name or id — and xrad never logs DICOM identifiers."""
    import pydicom
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    return pydicom


def decode_dicom(data: bytes, name: str, max_pixels: int) -> Radiograph:
    """Decode DICOM bytes (frame 0) into a :class:`~xrad.data.radiograph.Radiograph`; see the module docstring."""
    pydicom = _quiet_pydicom()
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.pixels.processing import apply_modality_lut
    from pydicom.pixels.utils import pixel_array

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # pydicom raises many types on damaged headers
        raise ImageReadError(name, f"damaged DICOM header ({short_reason(exc)}); re-export the file") from exc
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise ImageReadError(name, "DICOM float pixel data is not supported; export integer pixel data")
    if "PixelData" not in ds:
        raise ImageReadError(
            name,
            "DICOM file has no pixel data (header-only, report or truncated before "
            "the pixels); export the image itself",
        )
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows <= 0 or cols <= 0:
        raise ImageReadError(name, "DICOM file lacks Rows/Columns; the header is damaged, re-export it")
    if rows * cols > max_pixels:
        raise ImageReadError(
            name,
            f"declares {cols}x{rows} = {rows * cols} pixels, above max_pixels="
            f"{max_pixels} (decompression-bomb guard); raise max_pixels if trusted",
        )
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    monochrome = photometric in ("MONOCHROME1", "MONOCHROME2")
    colour = samples == 3 and not monochrome and photometric != "PALETTE COLOR"
    if not ((samples == 1 and monochrome) or colour):
        raise ImageReadError(
            name,
            f"unsupported DICOM pixel layout ({samples} sample(s), {photometric}); "
            "expected MONOCHROME1/2 or RGB radiographs",
        )

    file_meta = getattr(ds, "file_meta", None)
    tsyntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if tsyntax is not None and tsyntax.is_compressed:
        try:
            available = get_decoder(tsyntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise ImageReadError(
                name, f"transfer syntax {tsyntax.name} needs a decoder plugin: {_plugin_hint(tsyntax.name)}"
            )
    try:
        stored = pixel_array(ds, index=0)
    except Exception as exc:  # truncated/corrupt pixel data, decoder failures
        raise ImageReadError(
            name,
            f"DICOM pixel data cannot be decoded ({short_reason(exc)}); the file is truncated or damaged, re-export it",
        ) from exc

    bits_stored = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 8) or 8)
    if samples == 3:
        # pydicom converts YBR to RGB by default; colour DICOMs carry no VOI, so scale by stored bits.
        pixels = to_grey(stored, 2**bits_stored - 1)
    else:
        try:
            values = apply_modality_lut(stored, ds)
            out, lo, hi = _voi(values, ds)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:  # e.g. Window Width 0
            raise ImageReadError(
                name,
                f"DICOM window/LUT cannot be applied ({short_reason(exc)}); fix "
                "WindowCenter/WindowWidth or the LUT in the header",
            ) from exc
        if hi <= lo:
            raise ImageReadError(
                name, f"DICOM window/range is empty ({lo} .. {hi}); fix WindowWidth or BitsStored in the header"
            )
        pixels = np.clip((out - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        if photometric == "MONOCHROME1":
            pixels = np.float32(1.0) - pixels  # MONOCHROME1: low values are bright; display bone bright
    meta = ImageMeta(
        path=name,
        format="dicom",
        bit_depth=bits_stored,
        photometric=photometric,
        pixel_spacing=_pixel_spacing(ds),
        shape=(int(pixels.shape[0]), int(pixels.shape[1])),
        truncated=False,
    )
    return Radiograph(pixels=np.ascontiguousarray(pixels, dtype=np.float32), meta=meta)


def _pixel_spacing(ds: Any) -> tuple[float, float] | None:
    """(row, col) spacing in mm: PixelSpacing (calibrated) first, else ImagerPixelSpacing (detector)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            row, col = float(value[0]), float(value[1])
        except (TypeError, ValueError, IndexError):
            continue
        if row > 0 and col > 0:
            return (row, col)
    return None


def read_dicom_tags(path: str | Path) -> dict[str, str]:
    """Read the grouping tags of a DICOM header without its pixels; identifiers come back pseudonymised.

    Keys: ``patient_id``, ``study_id``, ``series_id`` (pseudonyms of PatientID, StudyInstanceUID,
    SeriesInstanceUID via :func:`xrad.utils.hashing.pseudonymise`; never in clear), ``body_part``
    (BodyPartExamined, upper case), ``view`` (ViewPosition), ``laterality`` (ImageLaterality, else
    Laterality). Absent values are ``""``.
    """
    from xrad.utils.files import open_regular, read_problem

    pydicom = _quiet_pydicom()
    path = Path(path)
    head = b""
    try:
        handle = open_regular(path)  # never blocks on a FIFO
    except OSError as exc:
        raise ImageReadError(path, read_problem(path, exc)) from None
    try:
        with handle:
            head = handle.read(132)
            handle.seek(0)
            ds = pydicom.dcmread(handle, stop_before_pixels=True)
    except Exception as exc:
        if head[128:132] == b"DICM":
            raise ImageReadError(path, f"damaged DICOM header ({short_reason(exc)}); re-export the file") from exc
        raise ImageReadError(
            path, f"not a readable DICOM file ({short_reason(exc)}); DICOM needs the 'DICM' preamble"
        ) from exc

    def text(keyword: str) -> str:
        value = ds.get(keyword)
        return "" if value is None else str(value).strip()

    return {
        "patient_id": pseudonymise(text("PatientID")),
        "study_id": pseudonymise(text("StudyInstanceUID")),
        "series_id": pseudonymise(text("SeriesInstanceUID")),
        "body_part": text("BodyPartExamined").upper(),
        "view": text("ViewPosition"),
        "laterality": text("ImageLaterality") or text("Laterality"),
    }
