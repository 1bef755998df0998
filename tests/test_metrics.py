"""Every metric of xrad.evaluation.metrics against scikit-learn on fixed arrays, plus evaluate_scores/CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, cohen_kappa_score, roc_auc_score, roc_curve

from xrad.errors import DataError
from xrad.evaluation import metrics
from xrad.evaluation.evaluate import choose_threshold, evaluate_scores, format_table, read_scores


def _arrays(seed: int, n: int = 300, decimals: int | None = 1):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = rng.normal(size=n) + 0.9 * labels
    # Rounding creates many ties, the case where implementations of AUROC/AP usually differ.
    return labels, (np.round(scores, decimals) if decimals is not None else scores)


@pytest.mark.parametrize("seed,decimals", [(0, 1), (1, None), (2, 0), (3, 2)])
def test_threshold_free_metrics_match_sklearn(seed, decimals):
    labels, scores = _arrays(seed, decimals=decimals)
    assert metrics.auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )
    assert metrics.average_precision(labels, scores, positive=0) == pytest.approx(
        average_precision_score(1 - labels, -scores), abs=1e-12
    )
    suite = metrics.metric_suite(labels, scores, specificities=(0.8, 0.9), sensitivities=(0.85,))
    assert suite["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert suite["auprc_normal"] == pytest.approx(average_precision_score(1 - labels, -scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    for spec in (0.8, 0.9):
        expected = tpr[fpr <= 1 - spec + 1e-12].max()
        assert metrics.sensitivity_at_specificity(labels, scores, spec) == pytest.approx(expected)
        assert suite[f"sens@spec{spec:g}"] == pytest.approx(expected)
    expected = (1 - fpr[tpr >= 0.85 - 1e-12]).max()
    assert metrics.specificity_at_sensitivity(labels, scores, 0.85) == pytest.approx(expected)
    assert suite["spec@sens0.85"] == pytest.approx(expected)


def test_weighted_metrics_equal_repeated_rows():
    """A bootstrap weight row must give exactly what scikit-learn gives on the resampled data."""
    labels, scores = _arrays(5, n=120)
    weights = np.random.default_rng(9).integers(0, 4, size=(6, labels.size))
    suite = metrics.metric_suite(labels, scores, weights, specificities=(0.9,), sensitivities=(0.9,))
    for b, row in enumerate(weights):
        idx = np.repeat(np.arange(labels.size), row)
        y, s = labels[idx], scores[idx]
        assert suite["auroc"][b] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert suite["auprc_abnormal"][b] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert suite["auprc_normal"][b] == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        assert suite["sens@spec0.9"][b] == pytest.approx(tpr[fpr <= 0.1 + 1e-12].max())
        kappa = metrics.cohen_kappa(labels, scores, 0.4, weights)[b]
        assert kappa == pytest.approx(cohen_kappa_score(y, (s >= 0.4).astype(int)), abs=1e-12)


@pytest.mark.parametrize("threshold", [-0.5, 0.3, 0.45, 1.2])
def test_kappa_sensitivity_specificity_at_threshold(threshold):
    labels, scores = _arrays(4)
    pred = (scores >= threshold).astype(int)
    out = metrics.confusion_at_threshold(labels, scores, threshold)
    assert out["kappa"] == pytest.approx(cohen_kappa_score(labels, pred), abs=1e-12)
    assert out["sensitivity"] == pytest.approx(pred[labels == 1].mean())
    assert out["specificity"] == pytest.approx(1 - pred[labels == 0].mean())


def test_threshold_choices():
    labels, scores = _arrays(6, decimals=2)
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    youden = metrics.youden_threshold(labels, scores)
    best = (tpr - fpr).max()
    pred = scores >= youden
    assert pred[labels == 1].mean() - pred[labels == 0].mean() == pytest.approx(best)
    t95 = metrics.threshold_at_specificity(labels, scores, 0.95)
    normals = scores[labels == 0]
    assert (normals < t95).mean() >= 0.95
    assert (normals < normals[normals < t95].max()).mean() < 0.95  # the next lower threshold breaks the target
    # Works with normals only (no known anomaly in validation).
    assert metrics.threshold_at_specificity(np.zeros(4), np.array([1.0, 2.0, 3.0, 4.0]), 0.75) == 4.0
    assert metrics.threshold_at_specificity(np.zeros(4), np.array([1.0, 2.0, 3.0, 4.0]), 1.0) > 4.0
    t90 = metrics.threshold_at_sensitivity(labels, scores, 0.9)
    assert (scores[labels == 1] >= t90).mean() >= 0.9


def test_single_class_is_undefined_not_perfect():
    assert np.isnan(metrics.auroc(np.ones(5), np.arange(5.0)))
    assert np.isnan(metrics.average_precision(np.ones(5), np.arange(5.0)))
    assert np.isnan(metrics.average_precision(np.zeros(5), np.arange(5.0), positive=0))


def test_nothing_scored_is_undefined_not_an_error():
    """An empty split (or one with only unlabelled rows) gives NaN metrics, also under bootstrap weights."""
    empty = np.array([])
    assert np.isnan(metrics.auroc(empty, empty))
    assert np.isnan(metrics.auroc(np.array([-1, -1]), np.array([0.1, 0.2])))
    assert all(np.isnan(v) for v in metrics.metric_suite(empty, empty).values())
    weighted = metrics.auroc(empty, empty, weights=np.ones((3, 0)))
    assert weighted.shape == (3,) and np.isnan(weighted).all()


def _scores_frame(seed: int = 0, n: int = 240) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    patients = np.arange(n) // 4
    labels = (patients % 3 == 0).astype(int)
    return pd.DataFrame(
        {
            "path": [f"/d/{i}.png" for i in range(n)],
            "patient_id": [f"p{p}" for p in patients],
            "study_id": [f"p{p}_s{(i // 2) % 2}" for i, p in enumerate(patients)],
            "body_part": np.where(patients % 2 == 0, "HAND", "WRIST"),
            "label": labels,
            "score": rng.normal(size=n) + labels,
            "split": "test",
        }
    )


def test_evaluate_scores_structure_and_point_values():
    frame = _scores_frame()
    result = evaluate_scores(frame, threshold=0.5, n_bootstrap=200, seed=3)
    assert result["bootstrap"]["unit"] == "patient" and result["bootstrap"]["n_units"] == 60
    image = result["levels"]["image"]
    assert image["auroc"]["value"] == pytest.approx(roc_auc_score(frame["label"], frame["score"]))
    assert image["auroc"]["low"] < image["auroc"]["value"] < image["auroc"]["high"]
    assert image["prevalence"] == pytest.approx(frame["label"].mean())
    assert image["kappa_at_threshold"]["value"] == pytest.approx(
        cohen_kappa_score(frame["label"], (frame["score"] >= 0.5).astype(int))
    )
    hand = frame[frame["body_part"] == "HAND"]
    assert image["by_body_part"]["HAND"]["auroc"]["value"] == pytest.approx(roc_auc_score(hand["label"], hand["score"]))
    study = frame.groupby("study_id").agg(score=("score", "max"), label=("label", "max"))
    assert result["levels"]["study"]["max"]["auroc"]["value"] == pytest.approx(
        roc_auc_score(study["label"], study["score"])
    )
    patient = frame.groupby("patient_id").agg(score=("score", "mean"), label=("label", "max"))
    assert result["levels"]["patient"]["mean"]["auroc"]["value"] == pytest.approx(
        roc_auc_score(patient["label"], patient["score"])
    )
    json.dumps(result, allow_nan=False)  # strict JSON: no NaN anywhere
    text = format_table(result)
    assert "PATIENT LEVEL" in text and "Cohen's kappa" in text and "HAND" in text
    # Same seed → same intervals; unlabelled rows are ignored.
    again = evaluate_scores(frame.assign(label=frame["label"].astype(object)), threshold=0.5, n_bootstrap=200, seed=3)
    assert again["levels"]["image"]["auroc"] == image["auroc"]


def test_no_patient_ids_falls_back_to_study_then_image():
    frame = _scores_frame().assign(patient_id="")
    result = evaluate_scores(frame, n_bootstrap=50)
    assert result["bootstrap"]["unit"] == "study" and "patient" not in result["levels"]
    frame = frame.assign(study_id="")
    result = evaluate_scores(frame, n_bootstrap=50)
    assert result["bootstrap"]["unit"] == "image" and set(result["levels"]) == {"image"}


def test_choose_threshold_and_read_scores_errors(tmp_path):
    frame = _scores_frame()
    choice = choose_threshold(frame, "specificity:0.9")
    normals = frame.loc[frame["label"] == 0, "score"]
    assert (normals < choice["threshold"]).mean() >= 0.9
    bad = tmp_path / "bad.csv"
    frame.assign(label=2).to_csv(bad, index=False)
    with pytest.raises(DataError, match="bad.csv"):
        read_scores(bad)
    with pytest.raises(DataError, match="not found"):
        read_scores(tmp_path / "missing.csv")


def test_cli_evaluate_uses_valid_rows_for_threshold(tmp_path, capsys):
    from xrad.cli.main import main

    valid = _scores_frame(1).assign(split="valid", patient_id=lambda f: "v" + f["patient_id"])
    path = tmp_path / "scores.csv"
    pd.concat([valid, _scores_frame(2)]).to_csv(path, index=False)
    assert main(["evaluate", str(path), "--n-bootstrap", "100"]) == 0
    result = json.loads((tmp_path / "scores.evaluation.json").read_text())
    assert result["evaluated_split"] == "test" and result["levels"]["image"]["n"] == 240
    expected = metrics.youden_threshold(valid["label"].to_numpy(), valid["score"].to_numpy())
    assert result["threshold"] == pytest.approx(expected)
    assert "threshold chosen by youden" in capsys.readouterr().out
    assert (tmp_path / "scores.evaluation.txt").is_file()
