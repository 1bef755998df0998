"""The paper's Table 1 from a benchmark's tidy results: AUROC means with t-intervals over replicates, Welch
t-tests between methods with the paper's significance codes (Fig. 7), and the Markdown rendering."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from xrad.evaluation.statistics import SIGNIFICANCE_LEGEND, papers_band, significance_code, t_interval, welch_t

__all__ = ["format_percent", "pairwise_tests", "table1", "table1_markdown"]


def table1(results: pd.DataFrame, confidence: float = 0.95, with_papers_band: bool = False) -> pd.DataFrame:
    """Per method × ratio: valid and test AUROC as mean with a t-interval over replicates, and N.

    Replicates are all (training seed, split seed) cells, so the interval includes split variance.
    ``with_papers_band`` adds ``<split>_auroc_band_low/high``, the papers' mean ± 1.96·std
    (:func:`~xrad.evaluation.statistics.papers_band`), beside the t-interval.
    """
    rows = []
    if results.empty:
        return pd.DataFrame(columns=["method", "abnormal_ratio", "n"])
    for (method, ratio), group in results.groupby(["method", "abnormal_ratio"], sort=False):
        row: dict[str, Any] = {"method": method, "abnormal_ratio": ratio}
        for split in ("valid", "test"):
            values = group.loc[group["split"] == split, "auroc"].astype(float)
            stats = t_interval(values.to_numpy(), confidence)
            row.update(
                {
                    f"{split}_auroc_mean": stats["mean"],
                    f"{split}_auroc_low": stats["low"],
                    f"{split}_auroc_high": stats["high"],
                    f"{split}_auroc_half_width": stats["half_width"],
                }
            )
            if with_papers_band:
                band = papers_band(values.to_numpy())
                row.update({f"{split}_auroc_band_low": band["low"], f"{split}_auroc_band_high": band["high"]})
        test = group[group["split"] == "test"]
        row["test_auprc_abnormal_mean"] = float(test["auprc_abnormal"].astype(float).mean())
        row["test_auprc_normal_mean"] = float(test["auprc_normal"].astype(float).mean())
        row["test_prevalence"] = float(test["prevalence"].astype(float).mean())
        row["n"] = int(group["cell"].nunique())
        row["n_split_seeds"] = int(group["split_seed"].nunique())
        row["n_training_seeds"] = int(group["training_seed"].nunique())
        row["mean_seconds"] = float(group.drop_duplicates("cell")["seconds"].astype(float).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def pairwise_tests(results: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Welch t-tests on AUROC between every pair of methods, within each anomaly ratio."""
    columns = ["abnormal_ratio", "method_a", "method_b", "mean_a", "mean_b", "n_a", "n_b", "t", "p", "code"]
    rows = []
    data = results[results["split"] == split]
    for ratio, group in data.groupby("abnormal_ratio", sort=False):
        methods = list(dict.fromkeys(group["method"]))
        for a, b in itertools.combinations(methods, 2):
            va = group.loc[group["method"] == a, "auroc"].astype(float).to_numpy()
            vb = group.loc[group["method"] == b, "auroc"].astype(float).to_numpy()
            t, p = welch_t(va, vb)
            rows.append(
                {
                    "abnormal_ratio": ratio,
                    "method_a": a,
                    "method_b": b,
                    "mean_a": float(np.nanmean(va)),
                    "mean_b": float(np.nanmean(vb)),
                    "n_a": int(np.isfinite(va).sum()),
                    "n_b": int(np.isfinite(vb).sum()),
                    "t": t,
                    "p": p,
                    "code": significance_code(p),
                }
            )
    return pd.DataFrame(rows, columns=columns)


def format_percent(mean: float, half: float) -> str:
    """``86.36 ± 3.44 %`` (AUROC as percent with the interval half-width), as in the paper's Table 1."""
    if not np.isfinite(mean):
        return "n/a"
    return f"{100 * mean:.2f} ± {100 * half:.2f} %" if np.isfinite(half) else f"{100 * mean:.2f} %"


def table1_markdown(table: pd.DataFrame, pairs: pd.DataFrame, confidence: float = 0.95) -> str:
    """The paper's Table 1 layout (Validation AUROC, Test AUROC, N) and the pairwise tests, in Markdown."""
    lines = [
        "| Method | Anomaly ratio | Validation AUROC | Test AUROC | Test AUPRC (abn.+ / norm.+) | "
        "Test prevalence | N |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"| {r['method']} | {r['abnormal_ratio']:g} | "
            f"{format_percent(r['valid_auroc_mean'], r['valid_auroc_half_width'])} | "
            f"{format_percent(r['test_auroc_mean'], r['test_auroc_half_width'])} | "
            f"{r['test_auprc_abnormal_mean']:.3f} / {r['test_auprc_normal_mean']:.3f} | "
            f"{r['test_prevalence']:.3f} | {r['n']} |"
        )
    lines += [
        "",
        f"Mean ± half-width of the {confidence:.0%} Student t-interval of the mean over N replicates; "
        "replicates vary both the training seed and the split seed (so the interval includes split "
        "variance), unlike the papers' mean ± 1.96·std over one split.",
    ]
    if len(pairs):
        lines += [
            "",
            "Pairwise Welch t-tests on test AUROC:",
            "",
            "| Anomaly ratio | Method A | Method B | Mean A | Mean B | p | Significance |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for _, r in pairs.iterrows():
            p = f"{r['p']:.3g}" if np.isfinite(r["p"]) else "n/a"
            lines.append(
                f"| {r['abnormal_ratio']:g} | {r['method_a']} | {r['method_b']} | {100 * r['mean_a']:.2f} | "
                f"{100 * r['mean_b']:.2f} | {p} | {r['code']} |"
            )
        lines += ["", SIGNIFICANCE_LEGEND + "."]
    return "\n".join(lines) + "\n"
