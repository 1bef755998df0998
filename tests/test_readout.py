"""Readable scores: each score's percentile among the validation normals stored at training, the flag at the
stored operating point with both rates, `xrad score ARTEFACT image.png` printing them, and old artefacts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

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


def test_service_replies_with_percentile_flag_text_and_notice() -> None:
    fastapi_testclient = pytest.importorskip("fastapi.testclient")
    from test_service import png_bytes

    from xrad.inference.calibration import threshold_for
    from xrad.service.app import create_app

    def predict(radiograph, want_heatmap, body_part):
        return {"score": 1.5, "sphere": None, "heatmap_png": None, "heatmap_on": None}

    point = threshold_for(np.array([0, 0, 0, 0, 1, 1]), np.array([0.5, 1.0, 1.2, 2.0, 1.4, 3.0]), specificity=0.7)
    reference = normal_reference(np.zeros(4), np.array([1.0, 2.0, 3.0, 4.0]))
    app = create_app(predict, operating_point=point, normal_reference=reference)
    client = fastapi_testclient.TestClient(app)
    body = client.post("/score", content=png_bytes()).json()
    assert body["percentile"] == 25.0 and body["n_reference_normals"] == 4 and body["notice"] == RESEARCH_NOTICE
    assert body["flagged"] is (point["threshold"] <= 1.5)
    assert "sensitivity" in body["operating_point_text"] and "specificity" in body["operating_point_text"]
    assert client.get("/health").json()["notice"] == RESEARCH_NOTICE
    page = client.get("/").text
    assert 'id="percentile"' in page and 'id="notice"' in page and "Research use only" in page
    bare = fastapi_testclient.TestClient(create_app(predict)).post("/score", content=png_bytes()).json()
    assert bare["percentile"] is None and bare["flagged"] is None


def test_calibrate_then_worklist_with_defaults_flags_the_studies_above_the_stored_threshold(
    tiny_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from xrad.cli import calibrate as calibrate_cli
    from xrad.evaluation.aggregate import DEFAULT_AGGREGATION
    from xrad.inference.artefact import read_meta

    parser = argparse.ArgumentParser()
    calibrate_cli.add_arguments(parser)
    assert parser.get_default("aggregation") == DEFAULT_AGGREGATION  # the CLI spells the one default out

    artefact = tmp_path / "artefact"
    shutil.copytree(tiny_run["run_dir"] / "artefact", artefact)
    run_dir = tiny_run["run_dir"]
    assert main(["calibrate", str(artefact), str(run_dir / "scores_valid.csv"), "--specificity", "0.9"]) == 0
    printed = capsys.readouterr().out
    point = read_meta(artefact).operating_point
    rates = point["study"]["rates"]
    valid = pd.read_csv(run_dir / "scores_valid.csv")
    normals, anomalies = valid.loc[valid["label"] == 0, "score"], valid.loc[valid["label"] == 1, "score"]
    # Both rates, counted by hand (each study is one image here), each with its interval printed.
    assert rates["specificity"]["k"] == int((normals < point["study"]["threshold"]).sum())
    assert rates["sensitivity"]["k"] == int((anomalies >= point["study"]["threshold"]).sum())
    for name in ("specificity", "sensitivity"):
        low, high = rates[name]["interval"]
        assert f"{name} {rates[name]['value']:.3f} (95% CI {low:.3f}–{high:.3f})" in printed or (
            f"achieved {rates[name]['value']:.3f} (95% CI {low:.3f}–{high:.3f})" in printed
        )
    assert point["aggregation"] == point["study"]["aggregation"] == DEFAULT_AGGREGATION

    out = tmp_path / "worklist"
    assert main(["worklist", str(run_dir / "scores_test.csv"), "-o", str(out), "--artefact", str(artefact)]) == 0
    table = pd.read_csv(out / "worklist.csv", dtype={"study_id": str})
    test = pd.read_csv(run_dir / "scores_test.csv", dtype={"study_id": str})
    study_max = test.groupby("study_id")["score"].max()
    expected = set(study_max[study_max >= point["study"]["threshold"]].index)
    assert expected and set(table.loc[table["flagged"].astype(bool), "study_id"]) == expected
    assert f"{len(expected)} flagged" in capsys.readouterr().out
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'id="notice"' in page and "Research use only" in page and "sensitivity" in page

    # Another rule than the stored one: no flags, and the page says why and how to fix it.
    other = tmp_path / "worklist_mean"
    assert main(["worklist", str(run_dir / "scores_test.csv"), "-o", str(other), "--artefact", str(artefact),
                 "--aggregation", "mean"]) == 0  # fmt: skip
    assert "use --aggregation max" in (other / "index.html").read_text(encoding="utf-8")


def test_worklist_shows_each_study_s_top_image_percentile(tiny_run: dict, tmp_path: Path) -> None:
    artefact = tiny_run["run_dir"] / "artefact"
    assert main(["score", str(artefact), str(tiny_run["manifest"]), "-o", str(tmp_path / "s.csv")]) == 0
    assert main(["worklist", str(tmp_path / "s.csv"), "-o", str(tmp_path / "w")]) == 0
    scores = pd.read_csv(tmp_path / "s.csv", dtype={"study_id": str})
    table = pd.read_csv(tmp_path / "w" / "worklist.csv", dtype={"study_id": str}).set_index("study_id")
    expected = scores.groupby("study_id")["percentile"].max()
    np.testing.assert_allclose(table.loc[expected.index, "top_percentile"], expected)
    assert "top image percentile" in (tmp_path / "w" / "index.html").read_text(encoding="utf-8")


def test_out_of_distribution_inputs_are_warned_about_everywhere(
    tiny_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dataclasses

    from PIL import Image

    from xrad.inference.artefact import read_meta, update_artefact_meta
    from xrad.inference.readout import input_warnings

    meta = read_meta(tiny_run["run_dir"] / "artefact")
    ranges = meta.normal_reference["statistics"]
    assert meta.training_data["phantoms"] is False and meta.training_data["train_body_parts"] == {"HAND": 32}
    low, high = ranges["mean"]
    assert input_warnings(meta, body_part="HAND", mean=(low + high) / 2, std=sum(ranges["std"]) / 2) == []
    assert "body part SHOULDER was not in training (HAND)" in input_warnings(meta, body_part="SHOULDER")
    assert "brightness 1.00 is outside" in "; ".join(input_warnings(meta, mean=1.0))
    phantom_meta = dataclasses.replace(meta, training_data={**meta.training_data, "phantoms": True})
    assert "phantoms only" in input_warnings(phantom_meta)[0] and input_warnings(phantom_meta, phantom=True) == []

    # CLI: a white image (brightness far outside training) from a phantom-trained artefact.
    artefact = tmp_path / "artefact"
    shutil.copytree(tiny_run["run_dir"] / "artefact", artefact)
    update_artefact_meta(artefact, training_data={**meta.training_data, "phantoms": True})
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(tmp_path / "imgs" / "white.png")
    assert main(["score", str(artefact), str(tmp_path / "imgs" / "white.png")]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert "[WARNING: trained on generated phantoms only" in line and "brightness 1.00 is outside" in line
    # The table and the worklist page carry it.
    assert main(["score", str(artefact), str(tmp_path / "imgs"), "-o", str(tmp_path / "s.csv")]) == 0
    table = pd.read_csv(tmp_path / "s.csv", keep_default_na=False)
    assert "phantoms only" in table.loc[0, "warnings"]
    assert main(["worklist", str(tmp_path / "s.csv"), "-o", str(tmp_path / "w")]) == 0
    assert "warning: trained on generated phantoms only" in (tmp_path / "w" / "index.html").read_text()
    # The service reply.
    fastapi_testclient = pytest.importorskip("fastapi.testclient")
    from xrad.service.app import app_from_artefact

    client = fastapi_testclient.TestClient(app_from_artefact(artefact))
    body = client.post("/score", content=(tmp_path / "imgs" / "white.png").read_bytes()).json()
    assert any("phantoms only" in w for w in body["warnings"]) and any("brightness" in w for w in body["warnings"])


def test_appearance_reference_is_the_nearest_other_stored_image_quantile_times_the_margin() -> None:
    from xrad.inference.readout import APPEARANCE_MARGIN, APPEARANCE_QUANTILE, appearance_reference

    looks = np.random.default_rng(0).random((30, 64)).astype(np.float32)
    reference = appearance_reference(looks)
    assert reference["side"] == 8 and len(reference["normals"]) == 30  # fewer than APPEARANCE_STORED: all kept
    stored = np.asarray(reference["normals"])
    nearest = [min(np.linalg.norm(looks[i] - stored[j]) for j in range(30) if j != i) for i in range(30)]
    expected = np.quantile(nearest, APPEARANCE_QUANTILE) * APPEARANCE_MARGIN
    assert np.isclose(reference["threshold"], expected, rtol=1e-3)


def test_an_image_laid_out_unlike_the_training_images_is_warned_about_though_its_statistics_match(
    tiny_run: dict, tmp_path: Path
) -> None:
    """The held-out test images look like training; the same pixels moved to the corners (np.roll: the
    brightness and contrast are unchanged, so the statistics check stays silent) look unlike every training
    image and get the appearance warning."""
    import pandas as pd
    from PIL import Image

    from xrad.inference.artefact import read_meta
    from xrad.inference.readout import score_images
    from xrad.inference.scoring import load_scorer

    artefact = tiny_run["run_dir"] / "artefact"
    frame = pd.read_csv(tiny_run["manifest"])
    train = frame[frame["split"] == "train"]
    # the train images not known to be abnormal (26 of 32): a known anomaly's layout is not "familiar"
    assert len(read_meta(artefact).normal_reference["appearance"]["normals"]) == (train["semi_label"] != -1).sum() == 26
    test = frame[frame["split"] == "test"].copy()
    first = test.iloc[0]
    pixels = np.asarray(Image.open(first["cache_path"]))
    Image.fromarray(np.roll(pixels, (20, 20), axis=(0, 1))).save(tmp_path / "moved.png")
    moved = first.copy()
    moved["path"] = moved["cache_path"] = str(tmp_path / "moved.png")
    scored = score_images(load_scorer(artefact), pd.concat([test, moved.to_frame().T], ignore_index=True))
    looks_unlike = scored["warnings"].str.contains("looks unlike every training image")
    normals = (scored["label"] == 0).to_numpy()[:-1]
    assert not looks_unlike.iloc[:-1][normals].any()
    assert looks_unlike.iloc[-1] and "outside the training range" not in scored["warnings"].iloc[-1]
    assert scored["input_appearance"].iloc[-1] > 2 * scored["input_appearance"].iloc[:-1].median()


def test_the_brightness_range_is_taken_from_the_train_images_not_known_to_be_abnormal(tiny_run: dict) -> None:
    """``normal_reference.statistics`` is the :data:`STAT_QUANTILES` range of the train images not known
    abnormal (a bright known plate must not widen the range an input is checked against), not of all of them."""
    from xrad.data.model_input import input_statistics
    from xrad.inference.artefact import read_meta
    from xrad.inference.readout import statistics_reference
    from xrad.methods.registry import load_config
    from xrad.training.banks import load_image_bank

    frame = pd.read_csv(tiny_run["manifest"])
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    bank = load_image_bank(train, load_config("tiny").data.image_size, workers=1, progress=False)
    usual = torch.as_tensor((train["semi_label"] != -1).to_numpy().copy())
    expected = statistics_reference(input_statistics(bank.images[usual].numpy(), bank.masks[usual].numpy()))
    everyone = statistics_reference(input_statistics(bank.images.numpy(), bank.masks.numpy()))
    stored = read_meta(tiny_run["run_dir"] / "artefact").normal_reference["statistics"]
    assert expected != everyone  # the known anomalies do move the range, so the check below can fail
    for key in ("mean", "std"):
        assert np.allclose(stored[key], expected[key], atol=1e-6)
