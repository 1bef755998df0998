"""Operating points: thresholds at a target specificity/sensitivity and their exact intervals."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from xrad.errors import DataError
from xrad.inference.calibration import calibrate, clopper_pearson, describe, flag, store_operating_point, threshold_for


def test_clopper_pearson_closed_forms() -> None:
    # k = 0: the upper limit solves (1 - p)^n = alpha/2; k = n: the lower limit solves p^n = alpha/2.
    low, high = clopper_pearson(0, 10)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-9)
    low, high = clopper_pearson(10, 10)
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 10), rel=1e-9)
    low, high = clopper_pearson(5, 10)  # symmetric around one half
    assert low == pytest.approx(1 - high, abs=1e-12) and 0.18 < low < 0.19
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)


def test_specificity_threshold_holds_on_test_within_its_interval() -> None:
    rng = np.random.default_rng(7)
    # Validation has normals only: fixed specificity must still work (no flag-everything threshold).
    valid = pd.DataFrame({"score": rng.normal(size=400), "label": 0})
    point = calibrate(valid, specificity=0.95)
    assert point["n"] == 400 and point["n_abnormal"] == 0 and point["method"] == "clopper-pearson"
    assert point["achieved"] >= 0.95 and point["k"] == int((valid["score"] < point["threshold"]).sum())
    low, high = point["interval"]
    assert low < point["achieved"] < high and high - low < 0.06
    test_normals = rng.normal(size=50_000)
    test_specificity = float((test_normals < point["threshold"]).mean())
    assert low <= test_specificity <= high
    assert "specificity 0.95" in describe(point)


@pytest.mark.parametrize("target", ["specificity", "sensitivity"])
def test_interval_coverage_by_simulation(target: str) -> None:
    # The threshold is data-dependent; the exact interval must still cover the true value >= 95 % of the time.
    rng = np.random.default_rng(11)
    hits, reps, n = 0, 400, 120
    for _ in range(reps):
        if target == "specificity":
            point = threshold_for(np.zeros(n), rng.normal(size=n), specificity=0.9)
            true = norm.cdf(point["threshold"])  # P(normal score < threshold)
        else:
            point = threshold_for(np.ones(n), rng.normal(2.0, 1.0, size=n), sensitivity=0.9)
            true = norm.sf(point["threshold"], loc=2.0)  # P(anomaly score >= threshold)
        low, high = point["interval"]
        hits += low <= true <= high
    assert hits / reps >= 0.93


def test_sensitivity_needs_anomalies_and_one_target() -> None:
    normals = pd.DataFrame({"score": np.arange(10.0), "label": 0})
    with pytest.raises(DataError, match="--specificity"):
        calibrate(normals, sensitivity=0.9)
    with pytest.raises(DataError, match="exactly one"):
        calibrate(normals, specificity=0.9, sensitivity=0.9)
    with pytest.raises(DataError, match="between 0 and 1"):
        calibrate(normals, specificity=1.5)
    unlabelled = pd.DataFrame({"score": np.arange(10.0), "label": np.nan})
    with pytest.raises(DataError, match="no labelled normal"):
        calibrate(unlabelled, specificity=0.9)


def test_sensitivity_threshold_flags_the_target_share() -> None:
    scores = np.r_[np.linspace(0, 1, 50), np.linspace(0.5, 3, 20)]
    labels = np.r_[np.zeros(50), np.ones(20)]
    point = threshold_for(labels, scores, sensitivity=0.9)
    assert point["k"] == int((scores[labels == 1] >= point["threshold"]).sum()) >= 18
    assert point["achieved"] == point["k"] / 20


def test_study_level_point_and_flags(tmp_path) -> None:
    rng = np.random.default_rng(3)
    rows = [
        {"study_id": f"s{i}", "score": rng.normal() + 3 * (i % 5 == 0), "label": int(i % 5 == 0)}
        for i in range(200)
        for _ in range(3)
    ]
    point = calibrate(pd.DataFrame(rows), specificity=0.9, aggregation="max")
    study = point["study"]
    assert study["aggregation"] == "max" and study["n"] == 160 and study["achieved"] >= 0.9
    assert point["n"] == 480
    flags = flag(np.array([study["threshold"] - 1e-9, study["threshold"]]), point, "study")
    assert flags.tolist() == [False, True]
    assert flag(np.zeros(2), None) is None

    (tmp_path / "artefact.json").write_text(json.dumps({"format": "xrad-artefact/1", "method": "x"}))
    store_operating_point(tmp_path, point)
    stored = json.loads((tmp_path / "artefact.json").read_text())
    assert stored["method"] == "x" and math.isclose(stored["operating_point"]["threshold"], point["threshold"])


def test_calibrate_cli_uses_validation_rows_of_a_scores_csv(tmp_path, capsys) -> None:
    from xrad.cli.main import main

    rng = np.random.default_rng(5)
    valid = pd.DataFrame({"score": rng.normal(size=300), "label": 0, "split": "valid"})
    test = pd.DataFrame({"score": rng.normal(10, 1, size=300), "label": 0, "split": "test"})  # must be ignored
    pd.concat([valid, test]).to_csv(tmp_path / "scores.csv", index=False)
    artefact = tmp_path / "artefact"
    artefact.mkdir()
    (artefact / "artefact.json").write_text(json.dumps({"format": "xrad-artefact/1"}))
    assert main(["calibrate", str(artefact), str(tmp_path / "scores.csv"), "--specificity", "0.9"]) == 0
    point = json.loads((artefact / "artefact.json").read_text())["operating_point"]
    assert point["n"] == 300 and point["threshold"] < 3 and point["source"]["split"] == "valid"
    assert "validation normals" in capsys.readouterr().out
    # No validation rows → a one-line error (exit 2), nothing stored.
    test.to_csv(tmp_path / "test_only.csv", index=False)
    assert main(["calibrate", str(artefact), str(tmp_path / "test_only.csv"), "--sensitivity", "0.9"]) == 2
    assert "validation data only" in capsys.readouterr().err
