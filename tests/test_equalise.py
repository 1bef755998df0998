"""Histogram equalisation and the preprocessing ablation switches (Davletshina et al.): the equalisation
against a NumPy transcription, confined to the body part; the switches change what the cache holds; and an
artefact trained on an equalised cache equalises the raw images it scores."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xrad.data.io import read_radiograph
from xrad.data.manifest import read_manifest
from xrad.errors import ConfigError, DataError
from xrad.preprocess import PreprocessParams, preprocess_image
from xrad.preprocess.cache import build_cache
from xrad.preprocess.equalise import equalise_inside


def np_equalise_hist(values: np.ndarray) -> np.ndarray:
    """Histogram equalisation of uint8 values, as OpenCV documents it: H'(i) = Σ_{j≤i} h(j), then
    round(255 · (H'(v) − H'(v_min)) / (N − H'(v_min))), v_min the smallest value present."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    cdf = np.cumsum(hist)
    first = cdf[values.min()]
    if values.size == first:  # a single grey value: OpenCV fills it with that value
        return values.copy()
    lut = np.clip(np.floor(255.0 * (cdf - first) / (values.size - first) + 0.5), 0, 255)
    return lut[values].astype(np.uint8)


def _body_image(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gray = np.full((160, 128), 12, np.uint8)
    mask = np.zeros_like(gray)
    mask[20:140, 16:112] = 1
    body = np.clip(np.round(rng.normal(115, 8, int(mask.sum()))), 90, 139)
    gray[mask > 0] = body.astype(np.uint8)  # a low-contrast body on a dark surround
    return gray, mask


def test_global_equalisation_matches_numpy_inside_the_body_and_leaves_the_rest() -> None:
    gray, mask = _body_image()
    out = equalise_inside(gray, mask, "global")
    inside = mask > 0
    np.testing.assert_array_equal(out[inside], np_equalise_hist(gray[inside]))
    np.testing.assert_array_equal(out[~inside], gray[~inside])
    # The body's values now span the whole range although they arrived in [90, 140).
    assert out[inside].min() == 0 and out[inside].max() == 255
    np.testing.assert_array_equal(equalise_inside(gray, mask, "none"), gray)
    np.testing.assert_array_equal(equalise_inside(gray, np.zeros_like(mask), "global"), gray)


def test_clahe_is_opencvs_inside_the_body_and_its_clip_limit_matters() -> None:
    gray, mask = _body_image(1)
    inside = mask > 0
    out = equalise_inside(gray, mask, "clahe", clip_limit=3.0, tile_grid=4)
    want = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(4, 4)).apply(gray)
    np.testing.assert_array_equal(out[inside], want[inside])
    np.testing.assert_array_equal(out[~inside], gray[~inside])
    spread = [equalise_inside(gray, mask, "clahe", clip_limit=c, tile_grid=4)[inside].std() for c in (1.0, 4.0)]
    assert spread[1] > spread[0] > gray[inside].std()  # a higher clip limit stretches contrast more
    with pytest.raises(ValueError, match="unknown"):
        equalise_inside(gray, mask, "adaptive")


def test_params_check_the_new_switches_and_old_records_load() -> None:
    with pytest.raises(ConfigError, match="equalize"):
        PreprocessParams(equalize="median")
    with pytest.raises(ConfigError, match="clahe_clip_limit"):
        PreprocessParams(equalize="clahe", clahe_clip_limit=0)
    old = PreprocessParams().to_dict()
    for key in ("carrier_crop", "body_mask", "equalize", "clahe_clip_limit", "clahe_tile_grid"):
        old.pop(key)
    assert PreprocessParams.from_dict(old) == PreprocessParams()  # caches/artefacts written before them


@pytest.fixture(scope="module")
def phantom_pixels(phantoms: Path) -> list[np.ndarray]:
    truth = pd.read_csv(phantoms / "ground_truth.csv", keep_default_na=False)
    return [read_radiograph(phantoms / p).pixels for p in truth["path"].head(4)]


def test_switches_change_the_preprocessed_image_as_documented(phantom_pixels: list[np.ndarray]) -> None:
    for pixels in phantom_pixels:
        full = preprocess_image(pixels, PreprocessParams(size=128))
        equalised = preprocess_image(pixels, PreprocessParams(size=128, equalize="global"))
        # Same crop and mask; the body's pixels changed, and the equalised body spans (nearly) the full range.
        np.testing.assert_array_equal(equalised.mask, full.mask)
        assert equalised.meta["transform"] == full.meta["transform"] and equalised.meta["equalized"] == "global"
        body = full.mask > 0
        assert (equalised.image[body] != full.image[body]).mean() > 0.5
        assert np.ptp(equalised.image[body]) >= 250

        uncropped = preprocess_image(pixels, PreprocessParams(size=128, carrier_crop=False))
        assert uncropped.meta["uncropped"] == 1 and uncropped.meta["crop_polygon"] is None
        h, w = pixels.shape
        assert uncropped.meta["source_shape"] == [h, w]
        # No crop: the whole frame, its major axis at 128 px (a carrier crop would not fill the frame).
        footprint = uncropped.image > 0
        assert footprint.any(axis=0).sum() == round(128 * w / max(h, w)) or footprint.any(axis=1).sum() >= 127

        raw = preprocess_image(pixels, PreprocessParams(size=128, carrier_crop=False, body_mask=False))
        rows, cols = np.nonzero(raw.mask)
        # The mask is the whole (resized) image: a filled rectangle, every pixel but the padding.
        assert raw.mask.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert raw.meta["mask_fallback"] == 0 and raw.meta["hysteresis_factor"] is None


def _raw_dataset(root: Path, n: int = 48) -> Path:
    """Uncached split manifest of ``n`` 48-px images: a dark frame around a low-contrast oval 'body'."""
    from training_helpers import make_dataset

    return make_dataset(root, n=n, size=48, cache=False)


def test_cache_records_equalisation_and_scoring_applies_it(tmp_path: Path) -> None:
    from xrad.inference.scoring import score_frame
    from xrad.jobs.train import run_training

    manifest = _raw_dataset(tmp_path / "data")
    frame = read_manifest(manifest)
    plain = build_cache(frame, tmp_path / "plain", PreprocessParams(size=64), workers=1, progress=False)
    params = PreprocessParams(size=64, equalize="clahe", clahe_clip_limit=3.0, clahe_tile_grid=4)
    equal = build_cache(frame, tmp_path / "clahe", params, workers=1, progress=False)
    assert json.loads((tmp_path / "clahe" / "params.json").read_text())["equalize"] == "clahe"
    # Cached pixels: equalised inside the body mask (same mask), untouched outside it.
    a, b = read_manifest(Path(plain["manifest"])), read_manifest(Path(equal["manifest"]))
    changed = []
    for pa, pb, ma, mb in zip(a["cache_path"], b["cache_path"], a["mask_path"], b["mask_path"]):
        ia, ib = np.asarray(Image.open(pa)), np.asarray(Image.open(pb))
        mask = np.asarray(Image.open(ma)) > 0
        np.testing.assert_array_equal(mask, np.asarray(Image.open(mb)) > 0)
        np.testing.assert_array_equal(ia[~mask], ib[~mask])
        changed.append((ia[mask] != ib[mask]).mean())
    assert np.mean(changed) > 0.5
    # Re-running with other equalisation settings on the same folder is refused (a cache is never mixed).
    with pytest.raises(DataError, match="other preprocessing parameters"):
        build_cache(frame, tmp_path / "clahe", PreprocessParams(size=64, equalize="global"), workers=1, progress=False)

    run = tmp_path / "run"
    run_training("tiny_vae", Path(equal["manifest"]), run, progress=False)
    recorded = json.loads((run / "artefact" / "artefact.json").read_text())["preprocessing"]
    assert recorded["equalize"] == "clahe" and recorded["clahe_tile_grid"] == 4
    test_rows = b[b["split"] == "test"].reset_index(drop=True)
    from_cache = score_frame(run / "artefact", test_rows)
    from_raw = score_frame(run / "artefact", test_rows.drop(columns=["cache_path", "mask_path"]))
    np.testing.assert_allclose(from_raw["score"], from_cache["score"], rtol=0, atol=1e-6)
    # Without the equalisation the same raw images score differently: scoring did apply it.
    meta = json.loads((run / "artefact" / "artefact.json").read_text())
    meta["preprocessing"]["equalize"] = "none"
    (run / "artefact" / "artefact.json").write_text(json.dumps(meta))
    try:
        unequalised = score_frame(run / "artefact", test_rows.drop(columns=["cache_path", "mask_path"]))
    except DataError:  # the artefact's checksum covers its JSON: an edited record is refused, which is fine too
        return
    assert np.abs(unequalised["score"].to_numpy() - from_raw["score"].to_numpy()).max() > 1e-4


def test_preprocess_cli_switches_reach_the_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from xrad.cli.main import main

    manifest = _raw_dataset(tmp_path / "data", n=4)
    out = tmp_path / "cache"
    args = ["preprocess", str(manifest), "-o", str(out), "--size", "64", "--workers", "1"]
    flags = [
        "--no-carrier-crop",
        "--no-body-mask",
        "--equalize",
        "clahe",
        "--clahe-clip-limit",
        "3",
        "--clahe-tile-grid",
        "4",
    ]
    assert main([*args, *flags]) == 0
    recorded = json.loads((out / "params.json").read_text())
    assert (recorded["carrier_crop"], recorded["body_mask"], recorded["equalize"]) == (False, False, "clahe")
    assert (recorded["clahe_clip_limit"], recorded["clahe_tile_grid"]) == (3.0, 4)
    cached = read_manifest(out / "manifest.csv")
    assert cached["uncropped"].astype(int).eq(1).all()
    masks = [np.asarray(Image.open(p)) for p in cached["mask_path"]]
    assert all(m.min() == 1 for m in masks)  # square 48-px sources: no padding, the whole image is "body"
    assert main(args) != 0  # a default re-run on this folder is refused with one line
    assert "other preprocessing parameters" in capsys.readouterr().err
