"""The one input path of a trained detector (xrad.inference.input) and the one metadata record (ArtefactMeta).

Every entry point — ``score_frame``, ``explain_pixels``/``explain_row``, the service's predict function and
app, ``xrad score`` — must turn the same image into the same score, and refuse the same files.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xrad.data.io import decode_radiograph, read_radiograph
from xrad.errors import ImageReadError
from xrad.inference.artefact import FORMAT, ArtefactMeta, read_meta, save_artefact
from xrad.inference.heatmaps import explain_pixels, explain_row, write_heatmaps
from xrad.inference.input import CachedImage, prepare_input
from xrad.inference.scoring import load_scorer, score_frame


def _radiograph_png(path: Path, seed: int = 0) -> Path:
    """A bright "bone" on a dark background (preprocessing finds a body in it)."""
    rng = np.random.default_rng(seed)
    pixels = np.full((120, 90), 25, np.uint8)
    pixels[20:100, 30:60] = rng.integers(150, 220, (80, 30), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _cut(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


@pytest.fixture(params=["raw", "preprocessed"])
def artefact(request, tiny_artefact: Path, tmp_path: Path) -> Path:
    """The tiny artefact as it is (no preprocessing) and with preprocessing parameters recorded."""
    if request.param == "raw":
        return tiny_artefact
    from xrad.preprocess import PreprocessParams

    target = tmp_path / "preprocessed_artefact"
    shutil.copytree(tiny_artefact, target)
    meta = json.loads((target / "artefact.json").read_text())
    meta["preprocessing"] = PreprocessParams(size=96).to_dict()
    (target / "artefact.json").write_text(json.dumps(meta))
    return target


def test_same_image_gives_the_identical_score_through_every_entry_point(artefact: Path, tmp_path: Path) -> None:
    from xrad.service.app import artefact_predictor

    path = _radiograph_png(tmp_path / "a.png")
    scorer = load_scorer(artefact)
    frame = pd.DataFrame({"path": [str(path)]})
    from_frame = float(score_frame(scorer, frame, workers=1)["score"][0])
    from_pixels = explain_pixels(scorer, read_radiograph(path).pixels).score
    from_row = explain_row(scorer, frame.iloc[0]).score
    predict, meta = artefact_predictor(artefact)
    from_service = predict(decode_radiograph(path.read_bytes()), False, None)["score"]
    assert np.isfinite(from_frame)
    assert from_frame == from_pixels == from_row == from_service
    # The predict function's metadata is the typed record of the artefact it serves.
    assert isinstance(meta, ArtefactMeta) and meta.input_spec().image_size == 64
    assert (meta.input_spec().preprocessing is None) == (artefact.name == "artefact")


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_truncated_file_is_refused_by_every_entry_point_without_preprocessing(
    kind: str, tiny_artefact: Path, tmp_path: Path
) -> None:
    fastapi_testclient = pytest.importorskip("fastapi.testclient")
    from xrad.cli.main import main
    from xrad.service.app import app_from_artefact, artefact_predictor

    assert read_meta(tiny_artefact).preprocessing is None  # the case the old code let through
    buffer = io.BytesIO()
    yy, xx = np.mgrid[:200, :160]
    Image.fromarray(((yy * 3 + xx * 2) % 256).astype(np.uint8)).save(buffer, format=kind.upper())
    data = _cut(buffer.getvalue(), 2 / 3 if kind == "jpeg" else 1 / 2)
    path = tmp_path / f"cut.{'jpg' if kind == 'jpeg' else 'png'}"
    path.write_bytes(data)
    radiograph = read_radiograph(path)
    assert radiograph.meta.truncated  # decodable in part: flagged, not unreadable
    scorer = load_scorer(tiny_artefact)
    spec = scorer.artefact_meta.input_spec()
    message = f"truncated {kind.upper()} file"

    with pytest.raises(ImageReadError, match=f"cut.*{message}"):
        prepare_input(path, spec)
    with pytest.raises(ImageReadError, match=message):
        prepare_input(radiograph, spec)
    frame = pd.DataFrame({"path": [str(path)]})
    with pytest.raises(ImageReadError, match=f"{path.name}: {message}"):
        score_frame(scorer, frame, workers=1)
    skipped = score_frame(scorer, frame, workers=1, on_error="skip")
    assert np.isnan(skipped["score"][0]) and message in skipped["error"][0] and path.name in skipped["error"][0]
    with pytest.raises(ImageReadError, match=message):
        explain_row(scorer, frame.iloc[0])
    with pytest.raises(ImageReadError, match=message):
        explain_pixels(scorer, radiograph)
    assert write_heatmaps(scorer, frame, tmp_path / "heat") == [""]
    predict, _ = artefact_predictor(tiny_artefact)
    with pytest.raises(ImageReadError, match=message):
        predict(decode_radiograph(data), True, None)
    response = fastapi_testclient.TestClient(app_from_artefact(tiny_artefact)).post("/score", content=data)
    assert response.status_code == 422 and message in response.json()["detail"]
    assert main(["score", str(tiny_artefact), str(path), "-o", str(tmp_path / "s.csv"), "--workers", "1"]) == 2
    assert message in pd.read_csv(tmp_path / "s.csv", keep_default_na=False)["error"][0]
    # The service's explicit opt-in is the one way to score it.
    allowed, _ = artefact_predictor(tiny_artefact, allow_truncated=True)
    assert np.isfinite(allowed(decode_radiograph(data), False, None)["score"])


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A small valid PNG whose IHDR is rewritten (with a correct CRC) to declare ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_cached_png_above_the_pixel_limit_is_refused_before_decoding(tiny_artefact: Path, tmp_path: Path) -> None:
    bomb = _png_declaring(tmp_path / "bomb.png", 8000, 8000)  # 64 Mpx > DEFAULT_MAX_PIXELS
    good = tmp_path / "good.png"
    Image.fromarray(np.full((40, 40), 120, np.uint8)).save(good)
    spec = read_meta(tiny_artefact).input_spec()
    with pytest.raises(ImageReadError, match="bomb.png: declares 8000x8000 = 64000000 pixels, above max_pixels"):
        prepare_input(CachedImage(str(bomb)), spec)
    with pytest.raises(ImageReadError, match="bomb.png: declares"):  # a mask counts too
        prepare_input(CachedImage(str(good), str(bomb)), spec)
    assert prepare_input(CachedImage(str(good)), spec).image.shape == (1, 64, 64)
    with pytest.raises(ImageReadError, match="above max_pixels=100 "):
        prepare_input(CachedImage(str(good)), spec, max_pixels=100)
    frame = pd.DataFrame({"path": ["a", "b"], "cache_path": [str(good), str(bomb)], "mask_path": ["", ""]})
    scored = score_frame(tiny_artefact, frame, workers=1, on_error="skip")
    assert np.isfinite(scored["score"][0]) and "decompression-bomb guard" in scored["error"][1]


def _round_trip(data: dict) -> dict:
    return ArtefactMeta.from_json(data, "test").to_json()


def test_artefact_meta_round_trip_of_real_artefact_json_is_identical(
    tiny_run: dict, tiny_artefact: Path, tmp_path: Path
) -> None:
    from xrad.inference.calibration import store_operating_point, threshold_for

    trained = json.loads((tiny_run["run_dir"] / "artefact" / "artefact.json").read_text())
    assert {"centres", "n_spheres", "config", "training_data"} <= set(trained)  # extras and nested objects
    assert _round_trip(trained) == trained
    assert read_meta(tiny_run["run_dir"] / "artefact").to_json() == trained
    minimal = json.loads((tiny_artefact / "artefact.json").read_text())
    assert "training_data" not in minimal and minimal["preprocessing"] is None
    assert _round_trip(minimal) == minimal  # absent keys stay absent, null stays null

    # Calibration rewrites the file through the record: exactly one key more.
    calibrated = tmp_path / "calibrated"
    shutil.copytree(tiny_run["run_dir"] / "artefact", calibrated)
    point = threshold_for(np.zeros(20), np.arange(20.0), specificity=0.9)
    store_operating_point(calibrated, point)
    stored = json.loads((calibrated / "artefact.json").read_text())
    assert stored == {**trained, "operating_point": json.loads(json.dumps(point))}
    assert _round_trip(stored) == stored and read_meta(calibrated).operating_point == stored["operating_point"]

    # Hand-made artefact.json files keep exactly their keys.
    for data in (
        {"format": FORMAT},
        {"format": FORMAT, "method": "x", "scorer": None},
        {"format": FORMAT, "scorer": {"kind": "sphere"}, "extra_key": [1, 2]},
    ):
        assert _round_trip(data) == data


def test_artefact_meta_written_by_code_has_todays_keys(tmp_path: Path) -> None:
    import torch

    meta = ArtefactMeta(
        method="x", scorer_kind="sphere", scorer_args={"a": 1}, image_size=8, input="uint8", extra={"n_spheres": 2}
    )
    save_artefact(tmp_path / "art", {"t": torch.zeros(1)}, meta)
    written = json.loads((tmp_path / "art" / "artefact.json").read_text())
    assert set(written) == {
        "method",
        "scorer",
        "image_size",
        "input",
        "preprocessing",
        "n_spheres",
        "format",
        "xrad_version",
        "sha256",
        "versions",
    }
    assert written["scorer"] == {"kind": "sphere", "args": {"a": 1}} and written["preprocessing"] is None
    spec = read_meta(tmp_path / "art").input_spec()
    assert spec.image_size == 8 and spec.preprocessing is None
    with pytest.raises(ValueError, match="fields of their own"):
        ArtefactMeta(extra={"image_size": 3})


def test_old_artefact_fixtures_round_trip_when_present() -> None:
    fixtures = Path(__file__).parent / "fixtures" / "old_artefacts"
    files = sorted(fixtures.glob("*/artefact.json"))
    if not files:
        pytest.skip("no pre-refactor artefact.json fixtures in tests/fixtures/old_artefacts")
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert _round_trip(data) == data, path


def test_a_preprocessing_or_resize_failure_is_the_images_one_line_error(
    tiny_artefact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenCV's own assertion (a 1-pixel-high image inside preprocessing) escaped as cv2.error and stopped a
    batch. Preprocessing handles that image now (flagged tiny); any such failure left is an ImageReadError
    naming the file. Degenerate but usable images carry their reason."""
    import cv2
    from conftest import make_tiny_artefact

    import xrad.preprocess
    from xrad.preprocess import PreprocessParams

    Image.fromarray(np.full((1, 300), 90, np.uint8)).save(tmp_path / "row.png")
    pre = make_tiny_artefact(tmp_path / "pre", preprocessing=PreprocessParams().to_dict())
    row = prepare_input(tmp_path / "row.png", read_meta(pre).input_spec())
    assert row.degenerate.startswith("tiny image (300x1 px") and tuple(row.image.shape) == (1, 64, 64)

    def asserting(*args, **kwargs):
        raise cv2.error("OpenCV(5.0.0) resize.cpp:4223: error: (-215:Assertion failed) !dsize.empty()")

    monkeypatch.setattr(xrad.preprocess, "preprocess_image", asserting)
    with pytest.raises(ImageReadError, match=r"row.png: cannot be prepared for the model \(error: OpenCV") as info:
        prepare_input(tmp_path / "row.png", read_meta(pre).input_spec())
    assert "\n" not in str(info.value)
    plain = prepare_input(tmp_path / "row.png", read_meta(tiny_artefact).input_spec())
    assert plain.degenerate == "tiny image (300x1 px; a side under 32 px); constant image (every pixel 0.353)"
    assert prepare_input(_radiograph_png(tmp_path / "ok.png"), read_meta(tiny_artefact).input_spec()).degenerate == ""
