"""ONNX export: onnxruntime scores match the torch artefact to 1e-4, metadata travels with the model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from conftest import make_tiny_artefact  # noqa: E402 - after the importorskips

from xrad.cli.main import main  # noqa: E402
from xrad.inference.calibration import store_operating_point, threshold_for  # noqa: E402
from xrad.inference.export import export_onnx, onnx_scores, parity_batch  # noqa: E402
from xrad.inference.scoring import load_scorer  # noqa: E402


def _images(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8))
    masks = torch.from_numpy((rng.random((n, 1, size, size)) > 0.2).astype(np.uint8))
    return images, masks


def test_sphere_export_parity_and_metadata(tiny_artefact, tmp_path) -> None:
    artefact = tmp_path / "artefact"
    shutil.copytree(tiny_artefact, artefact)
    store_operating_point(artefact, threshold_for(np.zeros(20), np.arange(20.0), specificity=0.9))
    out = tmp_path / "model.onnx"
    report = export_onnx(artefact, out)
    assert out.is_file() and report["outputs"] == ["score", "sphere"] and report["max_abs_diff"] <= 1e-4
    # Independent batch (another size than the traced one): scores and nearest spheres agree.
    images, masks = _images(11, 64, seed=5)
    expected = load_scorer(artefact).score_batches(images, masks)
    got = onnx_scores(out, images.numpy(), masks.numpy())
    assert np.max(np.abs(got - expected["score"].numpy())) <= 1e-4
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    spheres = session.run(["sphere"], {"image": images.numpy(), "mask": masks.numpy()})[0]
    assert (spheres == expected["sphere"].numpy()).all()
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["xrad.image_size"] == "64"
    assert json.loads(props["xrad.operating_point"])["target"] == {"specificity": 0.9}


def test_knn_export_parity_via_cli(tmp_path, capsys) -> None:
    artefact = make_tiny_artefact(tmp_path / "knn", kind="knn", seed=3)
    out = tmp_path / "knn.onnx"
    assert main(["export", str(artefact), "--onnx", str(out)]) == 0
    assert "max |score difference|" in capsys.readouterr().out
    images, masks = parity_batch(64, n=6, seed=9)
    expected = load_scorer(artefact).score_batches(images, masks)["score"].numpy()
    assert np.max(np.abs(onnx_scores(out, images.numpy(), masks.numpy()) - expected)) <= 1e-4


def test_export_refuses_a_mismatch(tiny_artefact, tmp_path) -> None:
    from xrad.errors import XradError

    with pytest.raises(XradError, match="differ"):
        export_onnx(tiny_artefact, tmp_path / "never.onnx", tolerance=-1.0)  # any difference is too much
    assert not (tmp_path / "never.onnx").exists() and not list(tmp_path.glob(".*tmp"))


def test_trained_tiny_artefact_onnx_matches_the_runs_test_scores(tiny_run: dict, tmp_path) -> None:
    import pandas as pd

    from xrad.data.manifest import read_manifest
    from xrad.training.banks import load_image_bank

    out = tmp_path / "tiny.onnx"
    report = export_onnx(tiny_run["run_dir"] / "artefact", out)
    assert report["max_abs_diff"] <= 1e-4
    frame = read_manifest(tiny_run["manifest"])
    bank = load_image_bank(frame[frame["split"] == "test"], 32, workers=1, progress=False)
    reference = pd.read_csv(tiny_run["run_dir"] / "scores_test.csv")["score"].to_numpy()
    got = onnx_scores(out, bank.images.numpy(), bank.masks.numpy())
    assert np.max(np.abs(got - reference)) <= 1e-4


def test_a_raw_png_through_the_documented_steps_and_onnxruntime_gives_xrad_scores_score(tmp_path) -> None:
    """The README's ONNX recipe, as a deployment would run it: the input spec from the model's metadata,
    xrad.inference.input.prepare_input (decode, carrier crop, inversion fix, body mask, resize) on the raw
    file, then onnxruntime on the uint8 image and mask; the score equals `xrad score`'s for that file."""
    import onnxruntime as ort
    import pandas as pd
    from PIL import Image

    from xrad.inference.artefact import InputSpec
    from xrad.inference.input import prepare_input
    from xrad.preprocess import PreprocessParams

    artefact = make_tiny_artefact(tmp_path / "artefact", preprocessing=PreprocessParams().to_dict())
    rng = np.random.default_rng(3)
    pixels = np.full((160, 120), 235, np.uint8)  # a bright carrier margin around a darker body
    pixels[20:140, 25:95] = rng.integers(50, 180, size=(120, 70), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "raw.png")
    assert main(["score", str(artefact), str(tmp_path / "raw.png"), "-o", str(tmp_path / "s.csv")]) == 0
    expected = float(pd.read_csv(tmp_path / "s.csv")["score"].iloc[0])

    model = tmp_path / "model.onnx"
    export_onnx(artefact, model)
    props = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert "prepare_input" in props["xrad.recipe"]
    stored = json.loads(props["xrad.preprocessing"])  # everything the steps need travels in the model
    spec = InputSpec(int(props["xrad.image_size"]), PreprocessParams.from_dict(stored) if stored else None)
    ready = prepare_input(tmp_path / "raw.png", spec)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": ready.image[None].numpy(), "mask": ready.mask[None].numpy()})[0]
    assert got.shape == (1,) and abs(float(got[0]) - expected) <= 1e-4 * max(1.0, abs(expected))
