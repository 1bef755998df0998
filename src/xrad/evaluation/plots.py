"""Figures for people: ROC/PR, score distributions, t-SNE, per-epoch curves and the Fig. 7 comparison.

Every function returns a matplotlib ``Figure`` (Agg backend, no display needed) with a title, axis labels
and a legend; :func:`save_png` writes it atomically and returns the PNG bytes for embedding in HTML.
Colours follow one rule everywhere: normal = blue, abnormal = red; methods take the tab10 cycle in order.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import matplotlib

matplotlib.use("Agg")  # headless: reports are rendered on servers and in CI

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from xrad.evaluation import metrics
from xrad.evaluation.statistics import papers_band, t_interval
from xrad.utils.atomic import write_bytes

NORMAL, ABNORMAL = "#1f77b4", "#d62728"
# tab10 is a ListedColormap of ten RGB tuples; the stubs type get_cmap's result as the Colormap base class.
_CYCLE = cast(tuple[tuple[float, float, float], ...], cast(ListedColormap, plt.get_cmap("tab10")).colors)


def color(index: int) -> tuple[float, float, float]:
    """The colour of the ``index``-th method."""
    return _CYCLE[index % len(_CYCLE)]


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """``fig`` as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def save_png(fig: Figure, path: str | Path, dpi: int = 110) -> bytes:
    """Write ``fig`` as PNG (atomically), close it, and return the bytes."""
    data = png_bytes(fig, dpi)
    write_bytes(path, data)
    return data


def roc_pr_figure(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str) -> Figure:
    """ROC and precision–recall curves; ``curves`` is a list of ``(name, labels, scores)``.

    Curves sharing a name (e.g. the replicates of one method) share a colour and one legend entry giving
    the mean AUROC / AUPRC. The PR panel shows the prevalence (a useless detector's AUPRC) as a dashed line.
    """
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 4.8))
    names = list(dict.fromkeys(name for name, _, _ in curves))
    stats: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    for name, labels, scores in curves:
        stats[name].append(
            (metrics.auroc(labels, scores), metrics.average_precision(labels, scores), float(np.mean(labels)))
        )
    seen: set[str] = set()
    for name, labels, scores in curves:
        c = color(names.index(name))
        first = name not in seen
        seen.add(name)
        alpha = 1.0 if len(stats[name]) == 1 else 0.55
        fpr, tpr, _ = metrics.roc_curve_points(labels, scores)
        recall, precision = metrics.pr_curve_points(labels, scores)
        auc = np.nanmean([s[0] for s in stats[name]])
        ap = np.nanmean([s[1] for s in stats[name]])
        suffix = "" if len(stats[name]) == 1 else f", mean of {len(stats[name])}"
        ax_roc.plot(
            fpr,
            tpr,
            color=c,
            alpha=alpha,
            lw=1.6,
            label=f"{name} (AUROC {auc:.3f}{suffix})" if first else None,
        )
        ax_pr.step(
            np.r_[0.0, recall],
            np.r_[precision[0] if precision.size else 1.0, precision],
            where="post",
            color=c,
            alpha=alpha,
            lw=1.6,
            label=f"{name} (AUPRC {ap:.3f}{suffix})" if first else None,
        )
    ax_roc.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    prevalence = np.nanmean([s[2] for values in stats.values() for s in values]) if curves else np.nan
    ax_pr.axhline(prevalence, ls="--", color="grey", lw=1, label=f"prevalence {prevalence:.2f} (chance)")
    ax_roc.set(
        xlabel="false positive rate (1 − specificity)",
        ylabel="true positive rate (sensitivity)",
        title="ROC curve",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax_pr.set(
        xlabel="recall (sensitivity)",
        ylabel="precision",
        title="Precision–recall (abnormal positive)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    for ax in (ax_roc, ax_pr):
        ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return fig


def _hist(ax: Axes, frame: pd.DataFrame, bins: np.ndarray, title: str) -> None:
    peak = 0.0
    for value, name, c in ((0, "normal", NORMAL), (1, "abnormal", ABNORMAL)):
        scores = frame.loc[frame["label"] == value, "score"].to_numpy(float)
        if scores.size:
            counts, _, _ = ax.hist(
                scores,
                bins=bins,  # type: ignore[arg-type]  # matplotlib's stubs take a Sequence of edges, not an array
                color=c,
                alpha=0.55,
                label=f"{name} (n={scores.size})",
            )
            peak = max(peak, float(np.max(counts)))
    # Log counts (as in the paper) only help when bins hold hundreds of images; small sets read better linear.
    log = peak > 100
    if log:
        ax.set_yscale("log")
    ax.set(title=title, xlabel="anomaly score", ylabel="images (log scale)" if log else "images")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def score_distribution_figure(frame: pd.DataFrame, title: str, max_parts: int = 7) -> Figure:
    """Histograms of scores for normal vs abnormal images: all images, then one panel per body part."""
    frame = frame[pd.to_numeric(frame["label"], errors="coerce").notna()].copy()
    frame["label"] = frame["label"].astype(float).astype(int)
    parts = []
    if "body_part" in frame.columns:
        parts = [p for p in frame["body_part"].fillna("").astype(str).value_counts().index if p][:max_parts]
    panels = 1 + (len(parts) if len(parts) > 1 else 0)
    cols = min(panels, 4)
    rows = int(np.ceil(panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    scores = frame["score"].to_numpy(float)
    bins = np.linspace(scores.min(), scores.max() + 1e-12, 41) if scores.size else np.linspace(0, 1, 41)
    _hist(axes[0, 0], frame, bins, "all body parts")
    if panels > 1:
        for i, part in enumerate(parts, 1):
            _hist(axes.flat[i], frame[frame["body_part"] == part], bins, part)
    for ax in list(axes.flat)[panels:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return fig


# The stacks of a split's images by what the detector is told about them (Fig. 6 of the self-taught paper).
SPLIT_GROUPS: tuple[tuple[str, str], ...] = (
    ("known_normal", "known normal (semi-label +1)"),
    ("unlabelled_normal", "unlabelled, normal"),
    ("unlabelled_abnormal", "unlabelled, abnormal (contamination / evaluation)"),
    ("known_abnormal", "known anomaly (semi-label -1)"),
)


def split_counts(summary: pd.DataFrame) -> pd.DataFrame:
    """Per split, the images of each :data:`SPLIT_GROUPS` group, from a ``split_summary`` table's ALL rows."""
    total = summary[summary["body_part"] == "ALL"]
    out = {}
    for split, rows in total.groupby("split", sort=False):
        normal = rows[rows["label"].astype(int) == 0]
        abnormal = rows[rows["label"].astype(int) == 1]
        out[str(split)] = {
            "known_normal": int(normal["known_normal"].sum()),
            "unlabelled_normal": int(normal["unlabelled"].sum()),
            "unlabelled_abnormal": int(abnormal["unlabelled"].sum()),
            "known_abnormal": int(rows["known_abnormal"].sum()),
        }
    return pd.DataFrame(out).T.reindex(columns=[key for key, _ in SPLIT_GROUPS])


def split_summary_figure(summary: pd.DataFrame, title: str) -> Figure:
    """A split at a glance (the paper's Fig. 6): left, each split's images stacked by what the detector is told
    (known normal, unlabelled normal / abnormal, known anomaly); right, images per body part and split."""
    counts = split_counts(summary)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    bottom = np.zeros(len(counts))
    for i, (key, name) in enumerate(SPLIT_GROUPS):
        values = counts[key].to_numpy(float)
        left.bar(counts.index, values, bottom=bottom, color=color(i), label=name)
        bottom += values
    left.set_ylabel("images")
    left.set_title("images per split, by semi-label and label")
    left.legend(fontsize=8)
    parts = summary[summary["body_part"] != "ALL"].groupby(["body_part", "split"], sort=True)["images"].sum()
    table = parts.unstack(fill_value=0).reindex(columns=list(counts.index), fill_value=0)
    width = 0.8 / max(len(table.columns), 1)
    for j, split in enumerate(table.columns):
        x = np.arange(len(table)) + (j - (len(table.columns) - 1) / 2) * width
        right.bar(x, table[split].to_numpy(float), width, color=color(j), label=split)
    right.set_xticks(np.arange(len(table)), [str(p) for p in table.index], rotation=30, ha="right")
    right.set_ylabel("images")
    right.set_title("images per body part")
    right.legend(fontsize=8)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return fig


def tsne_coordinates(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of the rows (PCA initialisation, perplexity capped for small sets)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = embeddings.shape[0]
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    # One thread: scikit-learn's OpenMP Barnes-Hut gradient was 5–30× slower with 2 threads on a busy
    # 2-core machine (threads spin-wait on each other), e.g. 2,000 points 134 s vs 28 s.
    with threadpool_limits(limits=1):
        coords: np.ndarray = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            np.asarray(embeddings, dtype=np.float32)
        )
    return coords


def tsne_figure(coords: np.ndarray, colourings: dict[str, np.ndarray], title: str) -> Figure:
    """One scatter panel per colouring (e.g. label, body part, sphere) of the same t-SNE coordinates."""
    fig, axes = plt.subplots(1, len(colourings), figsize=(5.2 * len(colourings), 4.8), squeeze=False)
    for ax, (name, values) in zip(axes[0], colourings.items()):
        values = np.asarray(values).astype(str)
        palette: dict[str, str | tuple[float, float, float]]
        if name == "label":
            palette = {"0": NORMAL, "1": ABNORMAL}
            names = {"0": "normal", "1": "abnormal"}
        else:
            uniques = list(dict.fromkeys(sorted(values)))
            palette = {u: color(i) for i, u in enumerate(uniques)}
            names = {u: u for u in uniques}
        for value in palette:
            mask = values == value
            if mask.any():
                ax.scatter(
                    coords[mask, 0],
                    coords[mask, 1],
                    s=9,
                    alpha=0.7,
                    color=palette[value],
                    label=f"{names.get(value, value)} ({mask.sum()})",
                )
        ax.set(title=f"coloured by {name}", xlabel="t-SNE 1", ylabel="t-SNE 2", xticks=[], yticks=[])
        ax.legend(fontsize=7, markerscale=1.5, loc="best", ncol=1 if len(palette) <= 8 else 2)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return fig


def epoch_figure(
    histories: dict[str, list[pd.DataFrame]], column: str, ylabel: str, title: str, integer: bool = False
) -> Figure:
    """A per-epoch quantity per method: mean line and min–max band over replicates."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for i, (name, frames) in enumerate(histories.items()):
        series = [f.set_index("epoch")[column].astype(float) for f in frames if column in f and f[column].notna().any()]
        if not series:
            continue
        table = pd.concat(series, axis=1)
        epochs = table.index.to_numpy()
        if table.shape[1] == 1:
            ax.plot(
                epochs,
                table.iloc[:, 0],
                marker="o",
                ms=3,
                color=color(i),
                label=name,
                drawstyle="steps-post" if integer else "default",
            )
            continue
        # Band = range over replicates: with 2–4 replicates a t-band is too wide to read the curve.
        mean = table.mean(axis=1, skipna=True).to_numpy()
        ax.plot(
            epochs,
            mean,
            marker="o",
            ms=3,
            color=color(i),
            label=f"{name} (mean of {table.shape[1]}, band: min–max)",
        )
        ax.fill_between(epochs, table.min(axis=1).to_numpy(), table.max(axis=1).to_numpy(), color=color(i), alpha=0.2)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    # A fresh linear axis has an AutoLocator, a MaxNLocator (the stubs type it as the Locator base class).
    cast(MaxNLocator, ax.xaxis.get_major_locator()).set_params(integer=True)
    if integer:
        cast(MaxNLocator, ax.yaxis.get_major_locator()).set_params(integer=True)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not logged by this method", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def comparison_figure(results: pd.DataFrame, pairs: pd.DataFrame, title: str, band: str = "t") -> Figure:
    """Fig. 7 layout: test AUROC per method (replicates, mean ± 95 % t-interval) and Welch links.

    ``band="1.96std"`` draws the papers' mean ± 1.96·std instead of the t-interval (to compare with them).
    """
    if band not in ("t", "1.96std"):
        raise ValueError(f"band must be 't' or '1.96std', got {band!r}")
    data = results[results["split"] == "test"]
    ratios = list(dict.fromkeys(data["abnormal_ratio"]))
    fig, axes = plt.subplots(
        1,
        len(ratios),
        figsize=(max(5.0, 2.0 + 1.6 * data["method"].nunique()) * len(ratios), 5),
        squeeze=False,
    )
    for ax, ratio in zip(axes[0], ratios):
        group = data[data["abnormal_ratio"] == ratio]
        methods = list(dict.fromkeys(group["method"]))
        tops = []
        for i, method in enumerate(methods):
            values = group.loc[group["method"] == method, "auroc"].astype(float).to_numpy()
            stats = t_interval(values) if band == "t" else papers_band(values)
            jitter = np.linspace(-0.12, 0.12, values.size) if values.size > 1 else np.zeros(1)
            ax.scatter(i + jitter, values, s=18, color=color(i), alpha=0.6, zorder=3)
            err = stats["half_width"] if np.isfinite(stats["half_width"]) else 0.0
            ax.errorbar(i, stats["mean"], yerr=err, fmt="s", color="black", capsize=6, ms=6, zorder=4)
            tops.append(np.nanmax(np.r_[values, stats["high"]]))
        ymax = np.nanmax(tops) if tops else 1.0
        step = 0.02
        sub = pairs[pairs["abnormal_ratio"] == ratio] if len(pairs) else pairs
        for k, (_, row) in enumerate(sub.iterrows()):
            a, b = methods.index(row["method_a"]), methods.index(row["method_b"])
            y = ymax + step * (k + 1)
            ax.plot([a, a, b, b], [y - step / 3, y, y, y - step / 3], color="grey", lw=1)
            ax.text((a + b) / 2, y, row["code"], ha="center", va="bottom", fontsize=9)
        ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right")
        ax.set(
            ylabel="test AUROC",
            title=f"anomaly ratio {ratio:g}",
            ylim=(
                max(0.0, np.nanmin(group["auroc"].astype(float)) - 0.05) if len(group) else 0,
                min(1.05, ymax + step * (len(sub) + 2)),
            ),
        )
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        title
        + "\n(dots: replicates; squares: mean with "
        + ("95 % t-interval" if band == "t" else "the papers' ±1.96·std")
        + "; links: Welch t-test codes)",
        fontsize=11,
    )
    fig.tight_layout()
    return fig
