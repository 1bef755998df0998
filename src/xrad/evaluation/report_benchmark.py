"""The report of a benchmark folder: Table 1 with its intervals and pairwise tests, the split summary
(Fig. 6), every cell's results, curves, score distributions and embeddings."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from xrad.errors import DataError
from xrad.evaluation import plots
from xrad.evaluation.evaluate import read_scores
from xrad.evaluation.report_parts import (
    ReportBuilder,
    curves_section,
    environment_section,
    html_table,
    missing_note,
    stage_metrics,
    tsne_section,
)


def _table1_html(table: pd.DataFrame, pairs: pd.DataFrame) -> str:
    """Table 1 (mean ± t-interval half-width, in %) and the pairwise Welch tests as HTML tables."""
    from xrad.evaluation.statistics import SIGNIFICANCE_LEGEND
    from xrad.evaluation.tables import format_percent

    if table.empty:
        return missing_note("no finished cell yet")
    shown = pd.DataFrame(
        {
            "Method": table["method"],
            "Anomaly ratio": table["abnormal_ratio"].map("{:g}".format),
            "Validation AUROC": [
                format_percent(m, h) for m, h in zip(table["valid_auroc_mean"], table["valid_auroc_half_width"])
            ],
            "Test AUROC": [
                format_percent(m, h) for m, h in zip(table["test_auroc_mean"], table["test_auroc_half_width"])
            ],
            "Test AUPRC abnormal+ / normal+": [
                f"{a:.3f} / {n:.3f}" for a, n in zip(table["test_auprc_abnormal_mean"], table["test_auprc_normal_mean"])
            ],
            "Test prevalence": table["test_prevalence"].map("{:.3f}".format),
            "N": table["n"],
        }
    )
    parts = [
        html_table(shown),
        '<p class="note">Mean ± half-width of the 95 % Student t-interval of the mean over N '
        "replicates; replicates vary both the training seed and the split seed, so the interval includes "
        "split variance (the papers reported mean ± 1.96·std over one split).</p>",
    ]
    if len(pairs):
        tests = pd.DataFrame(
            {
                "Anomaly ratio": pairs["abnormal_ratio"].map("{:g}".format),
                "Method A": pairs["method_a"],
                "Method B": pairs["method_b"],
                "Mean A (%)": (100 * pairs["mean_a"]).map("{:.2f}".format),
                "Mean B (%)": (100 * pairs["mean_b"]).map("{:.2f}".format),
                "p": pairs["p"].map(lambda v: f"{v:.3g}" if np.isfinite(v) else "n/a"),
                "Significance": pairs["code"],
            }
        )
        parts += [
            "<p>Pairwise Welch t-tests on test AUROC:</p>",
            html_table(tests),
            f'<p class="note">{html.escape(SIGNIFICANCE_LEGEND)}.</p>',
        ]
    return "\n".join(parts)


def _split_section(b: ReportBuilder, split_files: list[Path]) -> None:
    """The first split of a grid at a glance (Fig. 6): counts per split × semi-label and per body part."""
    from xrad.data.manifest import read_manifest
    from xrad.data.splits import split_summary

    if not split_files:
        return
    b.section(f"Split summary ({split_files[0].stem}, the first of the grid's {len(split_files)} splits)")
    frame = read_manifest(split_files[0])
    b.figure(
        plots.split_summary_figure(split_summary(frame), f"Split {split_files[0].stem}"),
        "split_summary",
        "images per split by semi-label and per body part",
    )


def benchmark_report(b: ReportBuilder, folder: Path, seed: int, max_points: int) -> str:
    """Add every section of a benchmark folder's report to ``b``; return the page title."""
    from xrad.evaluation.tables import pairwise_tests, table1

    results_path = folder / "results.csv"
    if not results_path.is_file():
        raise DataError(f"{folder}: results.csv not found; run `xrad benchmark CONFIG` first")
    results = pd.read_csv(results_path)
    table, pairs = table1(results), pairwise_tests(results)
    b.section("Table 1: validation and test AUROC")
    b.add(_table1_html(table, pairs))
    if len(results):
        b.figure(
            plots.comparison_figure(results, pairs, "Test AUROC per method (Fig. 7)"),
            "bench_comparison",
            "test AUROC per method with significance",
        )
    _split_section(b, sorted((folder / "splits").glob("*.csv")))
    b.section("Results per cell")
    b.add(html_table(results.drop(columns=["cell"], errors="ignore")))
    cells = {c: folder / "cells" / c for c in dict.fromkeys(results["cell"])}
    by_method: dict[str, list[Path]] = {}
    for cell, method in results.drop_duplicates("cell")[["cell", "method"]].itertuples(index=False):
        by_method.setdefault(method, []).append(cells[cell])
    b.section("ROC and precision–recall curves (test, every cell)")
    curves = []
    for method, dirs in by_method.items():
        for d in dirs:
            if (d / "scores_test.csv").is_file():
                f = read_scores(d / "scores_test.csv")
                f = f[f["label"].notna()]
                curves.append((method, f["label"].to_numpy(int), f["score"].to_numpy(float)))
    b.figure(
        plots.roc_pr_figure(curves, "Test set, all replicates"), "bench_roc_pr", "ROC and PR"
    ) if curves else b.add(missing_note("no scores_test.csv in any cell"))
    b.section("Score distributions (test, overall and per body part)")
    for i, (method, dirs) in enumerate(by_method.items()):
        pooled = [read_scores(d / "scores_test.csv") for d in dirs if (d / "scores_test.csv").is_file()]
        if pooled:
            b.figure(
                plots.score_distribution_figure(
                    pd.concat(pooled), f"{method}: test scores pooled over {len(pooled)} replicate(s)"
                ),
                f"bench_scores_{i}",
                method,
            )
    b.section("Embeddings (t-SNE, coloured by label, body part and sphere)")
    for i, (method, dirs) in enumerate(by_method.items()):
        tsne_section(b, dirs[0], f"bench{i}", f"{method} ({dirs[0].name})", ("z",), seed, max_points)
    histories: dict[str, dict[str, list[pd.DataFrame]]] = {}
    for method, dirs in by_method.items():
        for d in dirs:
            for stage, frame in stage_metrics(d).items():
                histories.setdefault(stage, {}).setdefault(method, []).append(frame)
    curves_section(b, histories, "bench")
    b.section("Environment")
    first_env = next((d / "env.json" for dirs in by_method.values() for d in dirs if (d / "env.json").is_file()), None)
    config = folder / "benchmark.json"
    b.add(
        environment_section(
            folder,
            first_env,
            {"benchmark.json": config.read_text(encoding="utf-8")} if config.is_file() else None,
        )
    )
    return f"xrad benchmark report: {folder.name}"
