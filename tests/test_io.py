"""Tests of xrad.data.io / xrad.data.dicom: formats, DICOM pipeline, malformed files, FracAtlas."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

from xrad.data.io import ImageMeta, Radiograph, decode_radiograph, read_dicom_tags, read_radiograph, write_png
from xrad.errors import ImageReadError
from xrad.utils.hashing import pseudonymise

RNG_SEED = 1234


# ---------------------------------------------------------------- helpers


def save_pil(path: Path, array: np.ndarray, fmt: str, **kwargs: Any) -> Path:
    Image.fromarray(array).save(path, format=fmt, **kwargs)
    return path


def grey8(shape: tuple[int, int] = (48, 64), seed: int = RNG_SEED) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def make_dicom(
    stored: np.ndarray,
    path: Path | None = None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    signed: bool = False,
    **tags: Any,
) -> bytes:
    """A minimal, valid single-sample DICOM (Explicit VR Little Endian) holding ``stored``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    frames = stored.shape[0] if stored.ndim == 3 else 1
    ds.Rows, ds.Columns = stored.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    if path is not None:
        path.write_bytes(data)
    return data


def stored12(shape: tuple[int, int] = (16, 20)) -> np.ndarray:
    return np.random.default_rng(RNG_SEED).integers(0, 4096, shape).astype(np.uint16)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


# ---------------------------------------------------------------- PNG / TIFF / JPEG


def test_png16_scaled_by_65535_not_clamped(tmp_path: Path) -> None:
    arr = np.array([[0, 1000, 40000], [65535, 256, 255]], dtype=np.uint16)
    rad = read_radiograph(save_pil(tmp_path / "x.png", arr, "PNG"))
    assert rad.pixels.dtype == np.float32 and rad.pixels.shape == (2, 3)
    assert rad.pixels[0, 2] == pytest.approx(40000 / 65535, abs=1e-6)  # ≈ 0.6104, not 1.0 (clamped)
    np.testing.assert_allclose(rad.pixels, arr / 65535.0, atol=1e-6)
    meta = rad.meta
    assert (meta.format, meta.bit_depth, meta.shape, meta.truncated) == ("png", 16, (2, 3), False)


def test_tiff16(tmp_path: Path) -> None:
    arr = np.array([[0, 40000], [65535, 12345]], dtype=np.uint16)
    rad = read_radiograph(save_pil(tmp_path / "x.tif", arr, "TIFF", dpi=(254, 254)))
    np.testing.assert_allclose(rad.pixels, arr / 65535.0, atol=1e-6)
    assert rad.meta.format == "tiff" and rad.meta.bit_depth == 16
    assert rad.meta.pixel_spacing == pytest.approx((0.1, 0.1))


def test_png8_exact_values(tmp_path: Path) -> None:
    arr = grey8()
    rad = read_radiograph(save_pil(tmp_path / "x.png", arr, "PNG"))
    assert np.array_equal(np.rint(rad.pixels * 255).astype(np.uint8), arr)
    assert rad.meta.bit_depth == 8 and rad.meta.photometric == "L" and rad.meta.pixel_spacing is None


def test_rgb_and_rgba_encoded_grey_equal_grey_exactly(tmp_path: Path) -> None:
    arr = grey8()
    grey = read_radiograph(save_pil(tmp_path / "g.png", arr, "PNG")).pixels
    rgb = read_radiograph(save_pil(tmp_path / "rgb.png", np.stack([arr] * 3, -1), "PNG"))
    alpha = np.random.default_rng(5).integers(0, 256, arr.shape, dtype=np.uint8)
    rgba = read_radiograph(save_pil(tmp_path / "rgba.png", np.stack([arr] * 3 + [alpha], -1), "PNG"))
    assert rgb.pixels.ndim == 2 and np.array_equal(rgb.pixels, grey)
    assert np.array_equal(rgba.pixels, grey)  # alpha ignored
    assert (rgb.meta.photometric, rgba.meta.photometric) == ("RGB", "RGBA")


def test_true_colour_becomes_rec601_luminance(tmp_path: Path) -> None:
    rgb = np.random.default_rng(7).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    rad = read_radiograph(save_pil(tmp_path / "c.png", rgb, "PNG"))
    expected = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0
    np.testing.assert_allclose(rad.pixels, expected, atol=1e-5)


def test_palette_image(tmp_path: Path) -> None:
    arr = grey8()
    image = Image.fromarray(arr).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    image.save(tmp_path / "p.png")
    expected = np.asarray(image.convert("L"), dtype=np.float32) / 255  # grey palette: L conversion is exact
    rad = read_radiograph(tmp_path / "p.png")
    assert rad.meta.photometric == "P"
    np.testing.assert_allclose(rad.pixels, expected, atol=1 / 255 + 1e-6)


def test_jpeg_roughly_equal_to_source(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:64, 0:80]
    arr = (127 + 100 * np.sin(xx / 9.0) * np.cos(yy / 7.0)).astype(np.uint8)
    grey = read_radiograph(save_pil(tmp_path / "g.jpg", arr, "JPEG", quality=95))
    rgb = read_radiograph(save_pil(tmp_path / "c.jpg", np.stack([arr] * 3, -1), "JPEG", quality=95))
    for rad in (grey, rgb):
        assert rad.meta.format == "jpeg" and rad.pixels.shape == arr.shape
        assert np.abs(rad.pixels - arr / 255.0).mean() < 0.01
    assert rgb.meta.photometric == "RGB"


def test_format_decided_by_content_not_extension(tmp_path: Path) -> None:
    rad = read_radiograph(save_pil(tmp_path / "looks_like.jpg", grey8(), "PNG"))
    assert rad.meta.format == "png"


def test_png_phys_gives_pixel_spacing(tmp_path: Path) -> None:
    rad = read_radiograph(save_pil(tmp_path / "s.png", grey8(), "PNG", dpi=(127, 254)))
    assert rad.meta.pixel_spacing == pytest.approx((0.1, 0.2))  # (row, col) = (25.4/dpi_y, 25.4/dpi_x)


def test_truncated_png_flagged_and_pillow_global_restored(tmp_path: Path) -> None:
    arr = grey8((200, 300))
    data = (save_pil(tmp_path / "full.png", arr, "PNG")).read_bytes()
    path = tmp_path / "half.png"
    path.write_bytes(data[: len(data) // 2])
    rad = read_radiograph(path)
    assert rad.meta.truncated and rad.pixels.shape == arr.shape
    assert np.array_equal(np.rint(rad.pixels[:50] * 255).astype(np.uint8), arr[:50])  # the decoded head
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert read_radiograph(tmp_path / "full.png").meta.truncated is False


def test_truncated_files_are_flagged_while_other_threads_retry_truncated_ones(tmp_path: Path) -> None:
    """Pillow's truncation switch is global: a strict decode overlapping another thread's tolerant retry used to
    accept a truncated file silently (a flaky failure of the malformed-input tests with 2 workers)."""
    from concurrent.futures import ThreadPoolExecutor

    from xrad.data.io import decode_radiograph

    arr = grey8((300, 400))
    data = (save_pil(tmp_path / "full.png", arr, "PNG")).read_bytes()
    cut = data[: len(data) // 2]
    jobs = [(cut, True), (data, False)] * 40

    def decode(job: tuple[bytes, bool]) -> bool:
        return bool(decode_radiograph(job[0], "x.png").meta.truncated) == job[1]

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(decode, jobs))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_decode_bytes_equals_read_path(tmp_path: Path) -> None:
    paths = [save_pil(tmp_path / "a.png", grey8(), "PNG"), save_pil(tmp_path / "b.jpg", grey8(), "JPEG")]
    make_dicom(stored12(), tmp_path / "c.dcm", PixelSpacing=[0.2, 0.3])
    paths.append(tmp_path / "c.dcm")
    for path in paths:
        from_path = read_radiograph(path)
        from_bytes = decode_radiograph(path.read_bytes(), str(path))
        assert np.array_equal(from_path.pixels, from_bytes.pixels)
        assert from_path.meta == from_bytes.meta


# ---------------------------------------------------------------- DICOM


def _dicom(tmp_path: Path, name: str, stored: np.ndarray, **kwargs: Any) -> Radiograph:
    make_dicom(stored, tmp_path / name, **kwargs)
    return read_radiograph(tmp_path / name)


def test_dicom_full_stored_range_without_window(tmp_path: Path) -> None:
    stored = stored12()
    rad = _dicom(tmp_path, "a.dcm", stored)
    np.testing.assert_allclose(rad.pixels, stored / 4095.0, atol=1e-6)  # BitsStored range, not min-max
    assert (rad.meta.format, rad.meta.bit_depth, rad.meta.photometric) == ("dicom", 12, "MONOCHROME2")


def test_dicom_monochrome1_is_inverse_of_monochrome2(tmp_path: Path) -> None:
    stored = stored12()
    for extra in ({}, {"WindowCenter": 1500, "WindowWidth": 2000}):
        mono2 = _dicom(tmp_path, "m2.dcm", stored, **extra).pixels
        mono1 = _dicom(tmp_path, "m1.dcm", stored, photometric="MONOCHROME1", **extra).pixels
        np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
        assert not np.allclose(mono1, mono2)


def linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, output normalised to [0, 1]."""
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def test_dicom_window_center_width(tmp_path: Path) -> None:
    stored = stored12()
    rad = _dicom(tmp_path, "w.dcm", stored, WindowCenter=1200, WindowWidth=800)
    np.testing.assert_allclose(rad.pixels, linear_window(stored.astype(float), 1200, 800), atol=1e-6)
    assert rad.pixels.min() == 0.0 and rad.pixels.max() == 1.0  # values outside the window saturate


def test_dicom_rescale_slope_intercept_applied_before_window(tmp_path: Path) -> None:
    stored = stored12()
    rad = _dicom(tmp_path, "r.dcm", stored, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=2000, WindowWidth=3000)
    np.testing.assert_allclose(rad.pixels, linear_window(stored * 2.0 - 1000, 2000, 3000), atol=1e-6)
    plain = _dicom(tmp_path, "p.dcm", stored, WindowCenter=2000, WindowWidth=3000)
    assert not np.allclose(rad.pixels, plain.pixels)


def _voi_lut_item(first: int, lut: np.ndarray) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(lut), first, 16]
    item.LUTData = lut.astype("<u2").tobytes()  # ambiguous VR (US/OW): written as OW bytes
    return item


def test_dicom_voi_lut_sequence_preferred_over_window(tmp_path: Path) -> None:
    stored = stored12()
    first, n = 500, 3000
    lut = (np.linspace(0, 1, n) ** 2 * 65535).astype(np.uint16)  # a non-linear LUT a window cannot mimic
    expected = lut[np.clip(stored.astype(int) - first, 0, n - 1)] / 65535.0
    with_lut = _dicom(tmp_path, "l.dcm", stored, VOILUTSequence=Sequence([_voi_lut_item(first, lut)]))
    np.testing.assert_allclose(with_lut.pixels, expected, atol=1e-6)
    both = _dicom(
        tmp_path,
        "lw.dcm",
        stored,
        VOILUTSequence=Sequence([_voi_lut_item(first, lut)]),
        WindowCenter=100,
        WindowWidth=50,
    )
    np.testing.assert_allclose(both.pixels, expected, atol=1e-6)


def test_dicom_rescale_then_voi_lut_indexes_by_rescaled_value(tmp_path: Path) -> None:
    stored = stored12()
    first, n = 0, 4096
    lut = (np.linspace(0, 1, n) ** 0.5 * 65535).astype(np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "VOI LUT on a float input array" warning from pydicom
        rad = _dicom(
            tmp_path,
            "rl.dcm",
            stored,
            RescaleSlope=1,
            RescaleIntercept=-300,
            VOILUTSequence=Sequence([_voi_lut_item(first, lut)]),
        )
    expected = lut[np.clip(stored.astype(int) - 300 - first, 0, n - 1)] / 65535.0
    np.testing.assert_allclose(rad.pixels, expected, atol=1e-6)


def test_dicom_signed_pixels_use_signed_range(tmp_path: Path) -> None:
    stored = np.array([[-2048, 0], [2047, -1]], dtype=np.int16)
    rad = _dicom(tmp_path, "s.dcm", stored, signed=True)
    np.testing.assert_allclose(rad.pixels, (stored + 2048) / 4095.0, atol=1e-6)


def test_dicom_rle_reads_equal_to_uncompressed(tmp_path: Path) -> None:
    stored = stored12()
    make_dicom(stored, tmp_path / "u.dcm", WindowCenter=2000, WindowWidth=2500)
    ds = pydicom.dcmread(tmp_path / "u.dcm")
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    assert pydicom.dcmread(tmp_path / "rle.dcm").file_meta.TransferSyntaxUID == RLELossless
    compressed, plain = read_radiograph(tmp_path / "rle.dcm"), read_radiograph(tmp_path / "u.dcm")
    assert np.array_equal(compressed.pixels, plain.pixels) and compressed.meta.bit_depth == 12


def test_dicom_pixel_spacing_and_first_frame(tmp_path: Path) -> None:
    stored = stored12()
    calibrated = _dicom(tmp_path, "a.dcm", stored, PixelSpacing=[0.143, 0.15])
    assert calibrated.meta.pixel_spacing == pytest.approx((0.143, 0.15))
    detector = _dicom(tmp_path, "b.dcm", stored, ImagerPixelSpacing=[0.2, 0.2])
    assert detector.meta.pixel_spacing == pytest.approx((0.2, 0.2))
    assert _dicom(tmp_path, "c.dcm", stored).meta.pixel_spacing is None
    frames = np.stack([stored, 4095 - stored, stored // 2])
    rad = _dicom(tmp_path, "multi.dcm", frames)
    assert rad.pixels.shape == stored.shape
    np.testing.assert_allclose(rad.pixels, stored / 4095.0, atol=1e-6)


# lower-case BodyPartExamined occurs in the wild; pydicom warns about it
@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
def test_read_dicom_tags_pseudonymises_identifiers(tmp_path: Path) -> None:
    clear = {"PatientID": "PAT-0042-DOE", "StudyInstanceUID": "1.2.3.4.5", "SeriesInstanceUID": "1.2.3.4.5.6"}
    make_dicom(
        stored12(), tmp_path / "t.dcm", BodyPartExamined="hand ", ViewPosition="PA", ImageLaterality="L", **clear
    )
    tags = read_dicom_tags(tmp_path / "t.dcm")
    assert set(tags) == {"patient_id", "study_id", "series_id", "body_part", "view", "laterality"}
    assert tags["patient_id"] == pseudonymise("PAT-0042-DOE") != ""
    assert tags["study_id"] == pseudonymise("1.2.3.4.5") and tags["series_id"] == pseudonymise("1.2.3.4.5.6")
    assert (tags["body_part"], tags["view"], tags["laterality"]) == ("HAND", "PA", "L")
    output = repr(tags)
    assert not any(value in output for value in clear.values())
    make_dicom(stored12(), tmp_path / "bare.dcm")
    assert read_dicom_tags(tmp_path / "bare.dcm") == {k: "" for k in tags}
    with pytest.raises(ImageReadError, match="x.png"):
        read_dicom_tags(save_pil(tmp_path / "x.png", grey8(), "PNG"))


# ---------------------------------------------------------------- malformed files


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grey8((64, 64))).save(buffer, "PNG")
    return buffer.getvalue()


def _corrupt_idat(data: bytes) -> bytes:
    start = data.index(b"IDAT")
    length = struct.unpack(">I", data[start - 4 : start])[0]
    noise = np.random.default_rng(1).integers(0, 256, length, dtype=np.uint8).tobytes()
    return data[: start + 4] + noise + data[start + 4 + length :]


def _bomb_png() -> bytes:
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def _no_pixel_dicom() -> bytes:
    ds = pydicom.dcmread(io.BytesIO(make_dicom(stored12())))
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def _rle_dicom() -> bytes:
    ds = pydicom.dcmread(io.BytesIO(make_dicom(stored12())))
    ds.compress(RLELossless)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def _unplug_rle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pydicom itself report no RLE decoder plugin, as on a machine without one installed."""
    decoder = pydicom.pixels.get_decoder(RLELossless)
    monkeypatch.setattr(decoder, "_available", {})
    assert not decoder.is_available


MALFORMED: dict[str, tuple[str, Any, dict[str, Any], str]] = {
    # case id: (file name, bytes / builder / special, read kwargs, expected words in the reason)
    "zero-bytes": ("empty.png", b"", {}, "empty"),
    "truncated-png-header": ("head.png", lambda: _png_bytes()[:20], {}, "header"),
    "png-corrupt-idat": ("idat.png", lambda: _corrupt_idat(_png_bytes()), {}, "corrupt"),
    "random-bytes": ("noise.bin", np.random.default_rng(3).bytes(4096), {}, "not PNG"),
    "text-as-png": ("notes.png", b"patient list\nnothing to see here\n", {}, "text"),
    "html-as-dcm": ("page.dcm", b"<!DOCTYPE html><html><body>404 Not Found</body></html>", {}, "HTML"),
    "dicom-no-pixels": ("nopix.dcm", _no_pixel_dicom, {}, "no pixel data"),
    "dicom-truncated-pixels": ("cut.dcm", lambda: make_dicom(stored12())[:-10], {}, "truncated"),
    "dicom-truncated-header": ("cuthead.dcm", lambda: make_dicom(stored12())[:200], {}, "DICOM"),
    "jpeg-stub": ("stub.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", {}, "JPEG"),
    "tiff-stub": ("stub.tif", b"II*\x00\x08\x00\x00\x00", {}, "TIFF"),
    "nonexistent": ("missing.png", None, {}, "not found"),
    "directory": ("folder.png", "dir", {}, "directory"),
    "bomb-declared": ("bomb.png", _bomb_png, {}, "bomb"),
    "bomb-max-pixels": ("big.png", _png_bytes, {"max_pixels": 1000}, "max_pixels"),
    "dicom-bomb": ("huge.dcm", lambda: make_dicom(stored12(), Rows=60000, Columns=60000), {}, "max_pixels"),
    "dicom-two-samples": ("two.dcm", lambda: make_dicom(stored12(), SamplesPerPixel=2), {}, "unsupported"),
    "dicom-rle-no-plugin": ("rle.dcm", _rle_dicom, {}, "pip install"),
    "float-tiff-out-of-range": ("f.tif", "float", {}, "[0, 1]"),
}


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's note on the TIFF stub, before it fails
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_raises_image_read_error(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name, content, kwargs, words = MALFORMED[case]
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content == "float":
        Image.fromarray(np.array([[0.0, 3.5]], dtype=np.float32), mode="F").save(path)
    elif content is not None:
        path.write_bytes(content() if callable(content) else content)
    if case == "dicom-rle-no-plugin":
        _unplug_rle(monkeypatch)
    with pytest.raises(ImageReadError) as info:
        read_radiograph(path, **kwargs)
    message = str(info.value)
    assert name in message and info.value.path == str(path)
    assert words.lower() in message.lower()
    assert "\n" not in message
    if content not in (None, "dir", "float"):  # the in-memory path fails the same way
        with pytest.raises(ImageReadError):
            decode_radiograph(path.read_bytes(), name, **kwargs)


def test_rle_no_plugin_message_names_transfer_syntax(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rle.dcm").write_bytes(_rle_dicom())
    _unplug_rle(monkeypatch)
    expected = r"transfer syntax RLE Lossless needs a decoder plugin: pip install"
    with pytest.raises(ImageReadError, match=expected):
        read_radiograph(tmp_path / "rle.dcm")


# ---------------------------------------------------------------- write_png


def test_write_png_round_trips(tmp_path: Path) -> None:
    values = np.random.default_rng(9).random((20, 30)).astype(np.float32)
    write_png(tmp_path / "f8.png", values)
    write_png(tmp_path / "f16.png", values, bit_depth=16)
    r8, r16 = read_radiograph(tmp_path / "f8.png"), read_radiograph(tmp_path / "f16.png")
    assert r8.meta.bit_depth == 8 and r16.meta.bit_depth == 16
    assert np.abs(r8.pixels - values).max() <= 0.5 / 255 + 1e-6
    assert np.abs(r16.pixels - values).max() <= 0.5 / 65535 + 1e-6
    raw16 = np.array([[0, 40000, 65535]], dtype=np.uint16)
    write_png(tmp_path / "u16.png", raw16)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "u16.png")), raw16)
    mask = np.zeros((5, 6), dtype=bool)
    mask[1:3, 2:5] = True
    write_png(tmp_path / "mask.png", mask)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "mask.png")), mask.astype(np.uint8))  # 0/1
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f16.png", "f8.png", "mask.png", "u16.png"]
    bad_inputs = (np.full((2, 2), 1.5), np.full((2, 2), np.nan), np.zeros((2, 2), np.int64), np.zeros((2, 2, 2)))
    for bad in bad_inputs:
        with pytest.raises(ValueError):
            write_png(tmp_path / "bad.png", bad)


def test_meta_is_frozen() -> None:
    meta = ImageMeta("x", "png", 8, "L", None, (1, 1), False)
    with pytest.raises(AttributeError):
        meta.truncated = True  # type: ignore[misc]


# ---------------------------------------------------------------- FracAtlas (real data)

FIRST_TRUNCATED = "IMG0004028.jpg"


def test_fracatlas_59_truncated_files_flagged(fracatlas_dir: Path) -> None:
    labels = pd.read_csv(fracatlas_dir / "labels.csv").set_index("image_id")
    tail = sorted(p for p in (fracatlas_dir / "images").glob("IMG*.jpg") if p.name >= FIRST_TRUNCATED)
    flagged = []
    for path in tail:
        rad = read_radiograph(path)
        assert rad.pixels.ndim == 2 and rad.pixels.min() >= 0.0 and rad.pixels.max() <= 1.0
        assert rad.pixels.shape == (labels.at[path.name, "height"], labels.at[path.name, "width"])
        if rad.meta.truncated:
            flagged.append(path.name)
    assert len(flagged) == 59 and flagged[0] == FIRST_TRUNCATED
    assert (labels.loc[flagged, "label"] == 0).all()
    # the README's breakdown of the 59: 27 leg, 25 hand, 4 mixed, 3 shoulder
    assert Counter(labels.loc[flagged, "body_part"]) == {"leg": 27, "hand": 25, "mixed": 4, "shoulder": 3}
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_fracatlas_sample_reads_complete_and_grey(fracatlas_dir: Path) -> None:
    names = sorted(p.name for p in (fracatlas_dir / "images").glob("IMG*.jpg") if p.name < FIRST_TRUNCATED)
    sample = np.random.default_rng(0).choice(names, size=50, replace=False)
    modes = Counter()
    for name in sample:
        path = fracatlas_dir / "images" / name
        rad = read_radiograph(path)
        assert rad.meta.truncated is False and rad.meta.format == "jpeg"
        assert rad.pixels.ndim == 2 and rad.pixels.dtype == np.float32
        assert 0.0 <= rad.pixels.min() <= rad.pixels.max() <= 1.0
        with Image.open(path) as image:
            modes[image.mode] += 1
            assert rad.meta.photometric == image.mode
            if image.mode == "RGB":  # RGB-encoded grey: our channel matches any of Pillow's RGB channels
                rgb = np.asarray(image, dtype=np.float32) / 255
                assert np.abs(rad.pixels - rgb[..., 1]).mean() < 2 / 255
    assert modes["RGB"] > 0  # the sample exercises RGB-encoded files (3,478 of 4,083)
