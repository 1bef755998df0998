"""The artefact (safetensors + JSON, no pickle) and framework-free scoring that reproduces training's scores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from xrad.errors import DataError, ImageReadError
from xrad.inference.artefact import load_artefact, save_artefact


def _test_rows(tiny_run: dict) -> pd.DataFrame:
    frame = pd.read_csv(tiny_run["manifest"], keep_default_na=False)
    return frame[frame["split"] == "test"].reset_index(drop=True)


def test_artefact_folder_is_safetensors_plus_json(tiny_run: dict) -> None:
    folder = tiny_run["run_dir"] / "artefact"
    assert sorted(p.name for p in folder.iterdir()) == ["artefact.json", "model.safetensors"]
    meta = json.loads((folder / "artefact.json").read_text())
    for key in (
        "method",
        "scorer",
        "image_size",
        "preprocessing",
        "config",
        "versions",
        "training_data",
        "xrad_version",
        "centres",
        "sha256",
        "format",
    ):
        assert key in meta, key
    assert meta["method"] == "self_taught" and meta["image_size"] == 32 and meta["scorer"]["kind"] == "sphere"
    assert meta["preprocessing"] is None  # the tiny data has no params.json beside its cache files
    assert meta["training_data"]["images"] == {"train": 32, "valid": 16, "test": 16}
    tensors, loaded_meta = load_artefact(folder)
    assert loaded_meta.to_json() == meta
    np.testing.assert_allclose(tensors["centers"].numpy(), np.array(meta["centres"]), rtol=1e-6)
    # safetensors layout (8-byte little-endian header length + JSON header), not a torch.save zip/pickle.
    blob = (folder / "model.safetensors").read_bytes()
    header = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])
    assert "centers" in header and not blob.startswith(b"PK") and not blob.startswith(b"\x80")


def test_score_frame_reproduces_the_runs_test_scores(tiny_run: dict) -> None:
    from xrad.inference.scoring import load_scorer, score_frame

    reference = pd.read_csv(tiny_run["run_dir"] / "scores_test.csv")
    scored = score_frame(tiny_run["run_dir"] / "artefact", _test_rows(tiny_run), batch_size=5)
    assert list(scored["path"]) == list(reference["path"])
    np.testing.assert_allclose(scored["score"], reference["score"], rtol=0, atol=1e-5)
    assert (scored["sphere"] == reference["sphere"]).all()
    # The scorer is a plain nn.Module: forward() gives the scores, which are distances to the nearest centre.
    scorer = load_scorer(tiny_run["run_dir"] / "artefact")
    from xrad.data.model_input import prepare_eval
    from xrad.training.banks import load_image_bank

    bank = load_image_bank(_test_rows(tiny_run), 32, workers=1, progress=False)
    with torch.no_grad():
        x = prepare_eval(bank.images, bank.masks)
        z = scorer.embed(x)["z"].numpy().astype(np.float64)
        forward = scorer(x).numpy()
    centres = scorer.centers.numpy().astype(np.float64)
    expected = np.sqrt(((z[:, None, :] - centres[None]) ** 2).sum(-1)).min(axis=1)
    np.testing.assert_allclose(forward, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(forward, reference["score"], rtol=0, atol=1e-5)


def test_scoring_imports_no_lightning(tiny_run: dict) -> None:
    code = (
        "import sys, pandas as pd\n"
        "import xrad.inference.scoring as s\n"
        "assert 'lightning' not in sys.modules\n"
        f"f = pd.read_csv({str(tiny_run['manifest'])!r}, keep_default_na=False)\n"
        f"out = s.score_frame({str(tiny_run['run_dir'] / 'artefact')!r}, f[f['split'] == 'test'])\n"
        "assert out['score'].notna().all()\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_unreadable_rows_raise_or_are_skipped(tiny_run: dict, tmp_path: Path) -> None:
    from xrad.inference.scoring import score_frame

    rows = _test_rows(tiny_run).head(4).copy()
    rows.loc[1, "cache_path"] = str(tmp_path / "gone.png")
    with pytest.raises(ImageReadError, match="gone.png"):
        score_frame(tiny_run["run_dir"] / "artefact", rows)
    out = score_frame(tiny_run["run_dir"] / "artefact", rows, on_error="skip")
    assert np.isnan(out.loc[1, "score"]) and "gone.png" in out.loc[1, "error"]
    assert out.drop(index=1)["score"].notna().all() and (out.drop(index=1)["error"] == "").all()
    reference = pd.read_csv(tiny_run["run_dir"] / "scores_test.csv").head(4)
    np.testing.assert_allclose(out.drop(index=1)["score"], reference.drop(index=1)["score"], atol=1e-5)


def test_save_load_round_trip_and_corruption_is_detected(tmp_path: Path) -> None:
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    save_artefact(tmp_path / "art", tensors, {"method": "x", "image_size": 8})
    loaded, meta = load_artefact(tmp_path / "art")
    assert torch.equal(loaded["a"], tensors["a"]) and torch.equal(loaded["b"], tensors["b"])
    assert meta.method == "x" and meta.format == "xrad-artefact/1" and "torch" in meta.versions
    weights = tmp_path / "art" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(DataError, match="checksum"):
        load_artefact(tmp_path / "art")
    with pytest.raises(DataError, match="not an xrad artefact"):
        load_artefact(tmp_path / "nowhere")


def test_unknown_scorer_kind_is_a_clear_error(tmp_path: Path) -> None:
    from xrad.errors import ConfigError
    from xrad.inference.scoring import load_scorer

    save_artefact(
        tmp_path / "art",
        {"a": torch.zeros(1)},
        {"method": "x", "image_size": 8, "scorer": {"kind": "martian", "args": {}}},
    )
    with pytest.raises(ConfigError, match="martian"):
        load_scorer(tmp_path / "art")


def test_raw_images_are_preprocessed_like_the_cache(tiny_run: dict, tmp_path: Path) -> None:
    """An artefact that records preprocessing parameters scores a raw image exactly as its cached version."""
    import shutil

    from xrad.inference.scoring import score_frame
    from xrad.preprocess.cache import build_cache
    from xrad.preprocess.params import PreprocessParams

    params = PreprocessParams(size=64)
    rows = _test_rows(tiny_run).head(6).drop(columns=["cache_path", "mask_path"])
    build_cache(rows, tmp_path / "cache", params, workers=1, progress=False)
    cached = pd.read_csv(tmp_path / "cache" / "manifest.csv", keep_default_na=False)
    assert len(cached) == len(rows)
    artefact = tmp_path / "artefact"
    shutil.copytree(tiny_run["run_dir"] / "artefact", artefact)
    meta = json.loads((artefact / "artefact.json").read_text())
    meta["preprocessing"] = params.to_dict()  # as a run on this cache would have recorded it
    (artefact / "artefact.json").write_text(json.dumps(meta))
    from_cache = score_frame(artefact, cached)
    from_raw = score_frame(artefact, cached.drop(columns=["cache_path", "mask_path"]))
    np.testing.assert_allclose(from_raw["score"], from_cache["score"], rtol=0, atol=1e-6)
