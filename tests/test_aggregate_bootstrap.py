"""Study/patient aggregation on a hand-made table, the bootstrap's coverage, Welch tests and intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from xrad.errors import ConfigError
from xrad.evaluation import metrics
from xrad.evaluation.aggregate import aggregate_scores, bootstrap_unit, parse_aggregation, unit_codes
from xrad.evaluation.bootstrap import percentile_interval, resample_counts, row_weights
from xrad.evaluation.statistics import papers_band, significance_code, t_interval, welch_t

# patient, study, body part, label, score
_ROWS = [
    ("P1", "S1", "HAND", 0, 0.1),
    ("P1", "S1", "HAND", 0, 0.5),
    ("P1", "S1", "HAND", 0, 0.3),
    ("P1", "S2", "HAND", 1, 0.9),
    ("P2", "S3", "WRIST", 0, 0.2),
    ("P2", "S3", "WRIST", 0, 0.4),
    ("P2", "S5", "WRIST", None, 0.6),
    ("P3", "S4", "ELBOW", 1, 0.7),
    ("P3", "S4", "ELBOW", 1, 0.8),
    ("P3", "S4", "ELBOW", 1, 0.6),
    ("P3", "S4", "ELBOW", 1, 0.1),
]


@pytest.fixture()
def table() -> pd.DataFrame:
    frame = pd.DataFrame(_ROWS, columns=["patient_id", "study_id", "body_part", "label", "score"])
    return frame.sample(frac=1.0, random_state=0)  # row order must not matter


@pytest.mark.parametrize(
    "how,expected",
    [
        ("mean", {"S1": 0.3, "S2": 0.9, "S3": 0.3, "S4": 0.55, "S5": 0.6}),
        ("max", {"S1": 0.5, "S2": 0.9, "S3": 0.4, "S4": 0.8, "S5": 0.6}),
        ("top2", {"S1": 0.4, "S2": 0.9, "S3": 0.3, "S4": 0.75, "S5": 0.6}),
        ("top3", {"S1": 0.3, "S2": 0.9, "S3": 0.3, "S4": 0.7, "S5": 0.6}),
    ],
)
def test_study_aggregation(table, how, expected):
    out = aggregate_scores(table, "study", how).set_index("study_id")
    assert out["score"].to_dict() == pytest.approx(expected)
    assert out["n_images"].to_dict() == {"S1": 3, "S2": 1, "S3": 2, "S4": 4, "S5": 1}
    assert out["label"].iloc[:4].tolist() == [0, 1, 0, 1] and np.isnan(out.loc["S5", "label"])
    assert out["patient_id"].to_dict() == {"S1": "P1", "S2": "P1", "S3": "P2", "S4": "P3", "S5": "P2"}
    assert out.loc["S4", "body_part"] == "ELBOW"


@pytest.mark.parametrize(
    "how,expected",
    [
        ("mean", {"P1": 0.45, "P2": 0.4, "P3": 0.55}),
        ("max", {"P1": 0.9, "P2": 0.6, "P3": 0.8}),
        ("top2", {"P1": 0.7, "P2": 0.5, "P3": 0.75}),
    ],
)
def test_patient_aggregation(table, how, expected):
    out = aggregate_scores(table, "patient", how).set_index("patient_id")
    assert out["score"].to_dict() == pytest.approx(expected)
    assert out["label"].to_dict() == {"P1": 1.0, "P2": 0.0, "P3": 1.0}  # any abnormal image → abnormal
    assert out["n_images"].to_dict() == {"P1": 4, "P2": 3, "P3": 4}


def test_parse_aggregation_and_units(table):
    assert parse_aggregation("TOP5") == ("top", 5)
    for bad in ("top0", "median", "topx"):
        with pytest.raises(ConfigError):
            parse_aggregation(bad)
    assert bootstrap_unit(table) == "patient_id"
    assert bootstrap_unit(table.assign(patient_id="")) == "study_id"
    assert bootstrap_unit(table.assign(patient_id="", study_id="")) == "image"
    codes, n = unit_codes(table, "patient_id")
    assert n == 3 and sorted(set(codes)) == [0, 1, 2]


def test_resample_counts_shape_and_seed():
    counts = resample_counts(50, 30, seed=1)
    assert counts.shape == (30, 50) and (counts.sum(axis=1) == 50).all()
    assert np.array_equal(counts, resample_counts(50, 30, seed=1))
    assert not np.array_equal(counts, resample_counts(50, 30, seed=2))
    weights = row_weights(counts, np.array([0, 0, 3]))
    assert np.array_equal(weights[:, 0], counts[:, 0]) and np.array_equal(weights[:, 2], counts[:, 3])


def test_bootstrap_interval_covers_true_auroc():
    """Binormal scores with a known AUROC = Φ(d/√2): the 95 % interval covers it in ≥ 90 % of trials."""
    rng = np.random.default_rng(2024)
    d, n_normal, n_abnormal, trials = 1.0, 120, 60, 200
    true_auroc = stats.norm.cdf(d / np.sqrt(2.0))
    labels = np.r_[np.zeros(n_normal, int), np.ones(n_abnormal, int)]
    covered = 0
    for trial in range(trials):
        scores = np.r_[rng.normal(size=n_normal), rng.normal(d, 1.0, size=n_abnormal)]
        counts = resample_counts(labels.size, 400, seed=trial)
        low, high, _ = percentile_interval(metrics.auroc(labels, scores, counts), 0.95)
        covered += low <= true_auroc <= high
    assert covered / trials >= 0.90


def test_welch_and_significance_codes_match_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.78, 0.01, 5), rng.normal(0.75, 0.02, 4)
    t, p = welch_t(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert np.isnan(welch_t([0.7], [0.6, 0.5])[1])
    assert welch_t([0.7, np.nan, 0.72], [0.6, 0.61])[1] == pytest.approx(
        stats.ttest_ind([0.7, 0.72], [0.6, 0.61], equal_var=False).pvalue
    )
    cases = {
        0.5: "ns",
        0.1000001: "ns",
        0.1: ".",
        0.06: ".",
        0.05: "*",
        0.02: "*",
        0.01: "**",
        0.002: "**",
        0.001: "***",
        1e-9: "***",
        float("nan"): "n/a",
    }
    for p_value, code in cases.items():
        assert significance_code(p_value) == code, p_value


def test_t_interval_matches_scipy():
    values = [0.77, 0.78, 0.775, 0.79]
    out = t_interval(values, 0.95)
    low, high = stats.t.interval(0.95, df=3, loc=np.mean(values), scale=stats.sem(values))
    assert (out["low"], out["high"], out["n"]) == (pytest.approx(low), pytest.approx(high), 4)
    assert np.isnan(t_interval([0.7])["half_width"]) and t_interval([0.7])["mean"] == 0.7


def test_papers_band_is_mean_plus_minus_1_96_std_beside_the_t_interval():
    values = [0.77, 0.78, 0.775, 0.79, float("nan")]
    band = papers_band(values)
    x = np.array(values[:4])
    assert (band["low"], band["high"], band["n"]) == (
        pytest.approx(x.mean() - 1.96 * x.std()),
        pytest.approx(x.mean() + 1.96 * x.std()),
        4,
    )
    # Not the t-interval: 1.96·std(ddof=0) vs t_{0.975,3}·std(ddof=1)/√4.
    assert band["half_width"] != pytest.approx(t_interval(values)["half_width"])
    from xrad.evaluation.tables import table1

    results = pd.DataFrame(
        {
            "method": "m",
            "abnormal_ratio": 0.05,
            "split": ["test"] * 4 + ["valid"] * 4,
            "auroc": list(x) * 2,
            "auprc_abnormal": 0.5,
            "auprc_normal": 0.5,
            "prevalence": 0.3,
            "cell": [f"c{i}" for i in range(4)] * 2,
            "split_seed": 0,
            "training_seed": list(range(4)) * 2,
            "seconds": 1.0,
        }
    )
    plain, banded = table1(results), table1(results, with_papers_band=True)
    assert "test_auroc_band_low" not in plain and banded.loc[0, "test_auroc_band_low"] == pytest.approx(band["low"])
    assert banded.loc[0, "test_auroc_low"] == pytest.approx(t_interval(values)["low"])


def test_comparison_figure_draws_either_band():
    from xrad.evaluation.plots import comparison_figure

    results = pd.DataFrame(
        {"method": ["a"] * 3 + ["b"] * 3, "abnormal_ratio": 0.05, "split": "test", "auroc": [0.7, 0.72, 0.74] * 2}
    )
    for band in ("t", "1.96std"):
        assert comparison_figure(results, pd.DataFrame(), "x", band=band).axes
    with pytest.raises(ValueError, match="band"):
        comparison_figure(results, pd.DataFrame(), "x", band="2sd")
