"""The inversion decision: bright film margins and tight crops stay as they are, inverted images are
corrected, DICOM polarity is taken as read, old parameter files still load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xrad.data.io import read_radiograph
from xrad.errors import ConfigError
from xrad.preprocess import PreprocessParams, preprocess_image
from xrad.preprocess.cache import build_cache
from xrad.preprocess.segment import inversion_evidence

PARAMS = PreprocessParams(size=256)
ISSUE_IMAGES = (
    "IMG0000514",
    "IMG0000760",
    "IMG0001139",
    "IMG0001557",
    "IMG0001558",
    "IMG0002110",
    "IMG0002298",
    "IMG0002379",
)


def _gray(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(pixels, np.float32) * 255.0), 0, 255).astype(np.uint8)


def _old_rule(gray: np.ndarray) -> bool:
    """The replaced rule (median of the outer 4 % band above 0.5): the defect these tests pin down."""
    band = max(1, int(round(0.04 * min(gray.shape))))
    border = np.concatenate(
        [gray[:band].ravel(), gray[-band:].ravel(), gray[:, :band].ravel(), gray[:, -band:].ravel()]
    )
    return float(np.median(border)) > 127.5


@pytest.fixture(scope="module")
def displayed(phantoms: Path) -> list[tuple[pd.Series, np.ndarray]]:
    """Every phantom in display convention (the inverted ones turned back), with its ground-truth row."""
    truth = pd.read_csv(phantoms / "ground_truth.csv", keep_default_na=False)
    out = []
    for _, row in truth.iterrows():
        pixels = read_radiograph(phantoms / row["path"]).pixels
        out.append((row, 1.0 - pixels if int(row["inverted"]) else pixels))
    return out


def test_phantoms_inverted_exactly_as_the_ground_truth_says(phantoms: Path) -> None:
    truth = pd.read_csv(phantoms / "ground_truth.csv", keep_default_na=False)
    found = np.array(
        [inversion_evidence(_gray(read_radiograph(phantoms / p).pixels), PARAMS).inverted for p in truth["path"]]
    )
    expected = truth["inverted"].astype(int).to_numpy() == 1
    assert expected.sum() >= 5, "the fixture should contain inverted phantoms"
    assert np.array_equal(found, expected)


def _with_film_margin(pixels: np.ndarray, fraction: float = 0.12, level: float = 0.92) -> np.ndarray:
    """Unexposed film around an exposed image on the left, right and bottom: bright and flat."""
    m = int(round(fraction * max(pixels.shape)))
    return np.pad(pixels, ((0, m), (m, m)), constant_values=level)


def test_bright_film_margin_does_not_invert_a_correct_image(displayed) -> None:
    grays = [_gray(_with_film_margin(pixels)) for _, pixels in displayed]
    assert all(_old_rule(g) for g in grays), "the outer band is bright: the case the old rule got wrong"
    inverted = [row["path"] for (row, _), g in zip(displayed, grays) if inversion_evidence(g, PARAMS).inverted]
    assert inverted == []
    result = preprocess_image(_with_film_margin(displayed[0][1]), PARAMS)
    assert result.meta["inverted"] == 0 and result.meta["film_margin"] > 0.05  # the margin was recognised


def _tight_crop(pixels: np.ndarray, body: np.ndarray) -> np.ndarray:
    """The middle 60 % of the body's extent: soft tissue and bone fill the frame, little or no air."""
    ys, xs = np.nonzero(body)
    (y0, y1), (x0, x1) = np.percentile(ys, [20, 80]).astype(int), np.percentile(xs, [20, 80]).astype(int)
    return pixels[y0:y1, x0:x1]


def test_tight_crop_of_a_correct_image_is_not_inverted(phantoms: Path, displayed) -> None:
    crops = [
        _gray(_tight_crop(pixels, read_radiograph(phantoms / row["body_mask_path"]).pixels > 0))
        for row, pixels in displayed
    ]
    assert sum(_old_rule(c) for c in crops) >= len(crops) // 3, "bone and tissue make the border bright"
    assert [inversion_evidence(c, PARAMS).inverted for c in crops].count(True) == 0


@pytest.fixture(scope="module")
def white_background(phantoms: Path) -> list[np.ndarray]:
    """The phantoms generated inverted (white background, dark bone), as stored."""
    truth = pd.read_csv(phantoms / "ground_truth.csv", keep_default_na=False)
    return [read_radiograph(phantoms / p).pixels for p in truth.loc[truth["inverted"].astype(int) == 1, "path"]]


def test_truly_inverted_image_is_inverted_through_the_pipeline(white_background) -> None:
    for pixels in white_background:
        result = preprocess_image(pixels, PARAMS)
        assert result.meta["inverted"] == 1 and result.meta["inversion_uncertain"] == 0
        assert result.meta["polarity_from"] == "image"
        # Corrected: the body mask now lies on bright tissue, the background is dark.
        assert result.image[result.mask > 0].mean() > result.image[result.mask == 0].mean()


def test_known_polarity_is_not_guessed_again(white_background) -> None:
    looks_inverted = white_background[0]
    for photometric in ("MONOCHROME2", "MONOCHROME1", "monochrome2 "):
        result = preprocess_image(looks_inverted, PARAMS, photometric=photometric)
        assert result.meta["inverted"] == 0 and result.meta["polarity_from"] == "dicom"
    for photometric in (None, "L", "RGB"):  # Pillow modes say nothing about polarity
        assert preprocess_image(looks_inverted, PARAMS, photometric=photometric).meta["inverted"] == 1


def _write_dicom(path: Path, stored: np.ndarray, photometric: str) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_cache_passes_dicom_polarity_on(white_background, tmp_path: Path) -> None:
    """A MONOCHROME2 DICOM whose picture looks inverted is kept as stored; the same pixels as PNG are not."""
    from PIL import Image

    looks_inverted = white_background[0]
    _write_dicom(tmp_path / "mono2.dcm", np.round(looks_inverted * 4095), "MONOCHROME2")
    # MONOCHROME1 stores the negative of what is displayed: the reader turns it into these same pixels.
    _write_dicom(tmp_path / "mono1.dcm", np.round((1.0 - looks_inverted) * 4095), "MONOCHROME1")
    np.testing.assert_allclose(read_radiograph(tmp_path / "mono1.dcm").pixels, looks_inverted, atol=1e-3)
    Image.fromarray(_gray(looks_inverted)).save(tmp_path / "same.png")
    frame = pd.DataFrame(
        {"path": [str(tmp_path / n) for n in ("mono2.dcm", "mono1.dcm", "same.png")], "body_part": ["FOREARM"] * 3}
    )
    summary = build_cache(frame, tmp_path / "cache", PARAMS, workers=1, progress=False)
    assert summary["failed"] == 0
    meta = pd.read_csv(tmp_path / "cache" / "metadata.csv")
    meta.index = meta["path"].map(lambda p: Path(p).name)
    assert meta.loc["mono2.dcm", "inverted"] == 0 and meta.loc["mono2.dcm", "polarity_from"] == "dicom"
    assert meta.loc["mono1.dcm", "inverted"] == 0 and meta.loc["mono1.dcm", "polarity_from"] == "dicom"
    assert meta.loc["same.png", "inverted"] == 1 and meta.loc["same.png", "polarity_from"] == "image"
    assert summary["inverted"] == 1
    # Scoring a raw file (xrad score without a cache, the service) takes the polarity from the DICOM the
    # same way: each file's model input equals the one made from its cached image.
    from xrad.inference.artefact import InputSpec
    from xrad.inference.input import CachedImage, prepare_input

    spec = InputSpec(64, PARAMS)
    rows = pd.read_csv(tmp_path / "cache" / "manifest.csv")
    rows.index = rows["path"].map(lambda p: Path(p).name)
    direct = {}
    for name in ("mono2.dcm", "mono1.dcm", "same.png"):
        cached = prepare_input(CachedImage(rows.loc[name, "cache_path"], rows.loc[name, "mask_path"]), spec)
        direct[name] = prepare_input(tmp_path / name, spec)
        assert np.array_equal(direct[name].image.numpy(), cached.image.numpy()), name
        assert np.array_equal(direct[name].mask.numpy(), cached.mask.numpy()), name
    assert not np.array_equal(direct["mono1.dcm"].image.numpy(), direct["same.png"].image.numpy())


def test_flat_image_has_no_evidence_and_is_left_alone() -> None:
    evidence = inversion_evidence(np.full((64, 64), 200, np.uint8), PARAMS)
    assert not evidence.inverted and evidence.uncertain


def test_old_parameter_files_load_and_unknown_keys_are_refused() -> None:
    old = {k: v for k, v in PARAMS.to_dict().items() if not k.startswith("inversion_")}
    old.update(border_fraction=0.04, inverted_border_median=0.5)  # a params.json written before the change
    assert PreprocessParams.from_dict(json.loads(json.dumps(old))) == PARAMS
    assert PreprocessParams.from_dict(PARAMS.to_dict()) == PARAMS
    with pytest.raises(ConfigError, match="unknown preprocessing parameter"):
        PreprocessParams.from_dict({**PARAMS.to_dict(), "inverted_border_mean": 0.5})
    with pytest.raises(ConfigError, match="inversion_min"):
        PreprocessParams(inversion_min_tissue=1.5)


def test_fracatlas_images_of_the_issue_are_kept_and_their_negatives_corrected(fracatlas_dir: Path) -> None:
    for name in ISSUE_IMAGES:
        gray = _gray(read_radiograph(fracatlas_dir / "images" / f"{name}.jpg").pixels)
        assert _old_rule(gray), name
        assert not inversion_evidence(gray, PARAMS).inverted, name
        negative = inversion_evidence(255 - gray, PARAMS)
        assert negative.inverted or negative.uncertain, name  # never silently accepted as correct
