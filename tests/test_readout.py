"""Readable scores: each score's percentile among the validation normals stored at training, the flag at the
stored operating point with both rates, `xrad score ARTEFACT image.png` printing them, and old artefacts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xrad.cli.main import main
from xrad.inference.readout import MAX_REFERENCE_VALUES, normal_reference, percentiles
from xrad.utils.notice import RESEARCH_NOTICE


def test_percentile_is_the_share_of_normals_at_or_below() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(size=300) + labels
    reference = normal_reference(labels, scores)
    assert reference is not None and reference["n_normals"] == int((labels == 0).sum()) and not reference["quantiles"]
    normals = scores[labels == 0]
    queries = np.array([-5.0, 0.0, 0.3, 10.0, np.nan, normals[3]])
    expected = [100.0 * np.mean(normals <= q) for q in queries[:4]]
    got = percentiles(queries, reference)
    np.testing.assert_allclose(got[:4], expected)
    assert np.isnan(got[4]) and got[5] == pytest.approx(100.0 * np.mean(normals <= normals[3]))
    assert np.isnan(percentiles([1.0], None)).all()
    assert normal_reference([1, 1], [0.1, 0.2]) is None  # no normal, no reference


def test_many_normals_are_stored_as_quantiles_within_a_tenth_of_a_point() -> None:
    rng = np.random.default_rng(1)
    scores = rng.gamma(2.0, size=20_000)
    reference = normal_reference(np.zeros(20_000), scores)
    assert reference is not None and reference["quantiles"] and len(reference["scores"]) == MAX_REFERENCE_VALUES
    queries = rng.gamma(2.0, size=500)
    exact = 100.0 * (np.sort(scores)[None, :] <= queries[:, None]).mean(axis=1)
    assert np.abs(percentiles(queries, reference) - exact).max() <= 0.11


def test_training_stores_the_validation_normals(tiny_run: dict) -> None:
    from xrad.inference.artefact import read_meta

    reference = read_meta(tiny_run["run_dir"] / "artefact").normal_reference
    valid = pd.read_csv(tiny_run["run_dir"] / "scores_valid.csv")
    normals = np.sort(valid.loc[valid["label"] == 0, "score"].to_numpy())
    assert reference["split"] == "valid" and reference["n_normals"] == len(normals)
    np.testing.assert_allclose(reference["scores"], normals, rtol=1e-6)


def _image(tiny_run: dict, index: int) -> Path:
    return Path(tiny_run["manifest"]).parent / f"image{index:03d}.png"


def test_score_without_output_prints_score_percentile_and_flag(
    tiny_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artefact = tmp_path / "artefact"
    shutil.copytree(tiny_run["run_dir"] / "artefact", artefact)
    image = _image(tiny_run, 0)
    assert main(["score", str(artefact), str(image)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == RESEARCH_NOTICE and len(out) == 2
    assert out[1].startswith("image000.png: score ") and "percentile " in out[1] and "xrad calibrate" in out[1]
    assert not list(tmp_path.glob("*.csv"))  # nothing written
    # The printed numbers are those of the table `-o` writes.
    assert main(["score", str(artefact), str(image), "-o", str(tmp_path / "s.csv")]) == 0
    capsys.readouterr()
    row = pd.read_csv(tmp_path / "s.csv").iloc[0]
    assert f"score {row['score']:.4g}," in out[1] and f"percentile {row['percentile']:.1f} among" in out[1]
    # Calibrated: the flag, with the sensitivity and specificity its threshold achieved on validation.
    assert (
        main(["calibrate", str(artefact), str(tiny_run["run_dir"] / "scores_valid.csv"), "--specificity", "0.9"]) == 0
    )
    capsys.readouterr()
    from xrad.inference.artefact import read_meta

    threshold = read_meta(artefact).operating_point["threshold"]
    assert main(["score", str(artefact), str(image)]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    word = "FLAGGED" if row["score"] >= threshold else "not flagged"
    assert f", {word} at threshold {threshold:.4g} (sensitivity " in line and "specificity " in line


def test_an_old_artefact_loads_and_says_percentile_unavailable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_old_artefact import FIXTURES, _rebuild_weights
    from training_helpers import make_dataset

    blob, _ = _rebuild_weights("self_taught")
    folder = tmp_path / "artefact"
    folder.mkdir()
    shutil.copyfile(FIXTURES / "self_taught" / "artefact.json", folder / "artefact.json")
    (folder / "model.safetensors").write_bytes(blob)
    make_dataset(tmp_path / "data", n=4, cache=False)
    assert main(["score", str(folder), str(tmp_path / "data" / "image000.png")]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert "percentile unavailable" in line and "score " in line
