"""One self-contained HTML report for a run folder or a benchmark folder (PNG figures embedded as data URIs).

``render_report(folder)`` writes ``folder/report.html`` and the PNGs in ``folder/report/``. The HTML needs
no network and no JavaScript. Every section is always present; where its input is missing (e.g. a method
that logs no spheres) the section says which file it looked for.
"""

from __future__ import annotations

import base64
import html
import json
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from xrad.errors import DataError
from xrad.evaluation import plots
from xrad.evaluation.evaluate import choose_threshold, evaluate_scores, format_table, read_scores
from xrad.run_folder import detector_folder
from xrad.utils.atomic import write_text

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

_STAGE_ORDER = ("pretrain", "finetune")
_CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:24px auto;
padding:0 16px;color:#222}h1{border-bottom:2px solid #444}h2{margin-top:36px;border-bottom:1px solid #bbb}
img{max-width:100%;border:1px solid #ddd;margin:8px 0}
.notice{background:#fff4e5;border-left:4px solid #e65100;padding:6px 10px}.headline{font-size:18px}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f0f0}td:first-child{text-align:left}
pre{background:#f7f7f7;padding:10px;overflow-x:auto;font-size:12px}.missing{color:#a33;font-style:italic}
.note{color:#555}.warning{color:#b00020;font-weight:600}
.gallery{display:flex;flex-wrap:wrap;gap:8px}.gallery figure{margin:0;width:23%}
.gallery img{width:100%}.gallery figcaption{font-size:12px}"""


def is_benchmark_folder(folder: Path) -> bool:
    """A benchmark folder has ``cells/`` or ``results.csv``."""
    return (folder / "cells").is_dir() or (folder / "results.csv").is_file()


def stage_metrics(run_dir: Path) -> dict[str, pd.DataFrame]:
    """Epoch-level metrics per stage (one row per epoch; the last logged non-empty value of each column).

    Lightning's CSV logger writes training and validation values on separate rows, so rows are merged by
    epoch; missing columns simply stay missing.
    """
    found = {p.parent.name: p for p in sorted(run_dir.glob("*/metrics.csv"))}
    out = {}
    for stage in sorted(found, key=lambda s: (_STAGE_ORDER.index(s) if s in _STAGE_ORDER else 99, s)):
        try:
            frame = pd.read_csv(found[stage])
        except (pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
        if "epoch" not in frame.columns or frame.empty:
            continue
        frame = frame.apply(pd.to_numeric, errors="coerce").dropna(subset=["epoch"])
        out[stage] = frame.groupby("epoch", sort=True).last().reset_index()
    return out


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _missing(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def _table(frame: pd.DataFrame, digits: int = 4) -> str:
    markup: str = frame.to_html(index=False, border=0, na_rep="n/a", float_format=lambda v: f"{v:.{digits}g}")
    return markup


class _Builder:
    """Collects sections and figures; figures are written to ``png_dir`` and embedded."""

    def __init__(self, png_dir: Path) -> None:
        self.png_dir = png_dir
        self.parts: list[str] = []

    def section(self, title: str) -> None:
        self.parts.append(f"<h2>{html.escape(title)}</h2>")

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def figure(self, fig: Figure, name: str, alt: str) -> None:
        self.parts.append(_img(plots.save_png(fig, self.png_dir / f"{name}.png"), alt))


def _environment(folder: Path, env_path: Path | None, extra: dict[str, Any] | None = None) -> str:
    import xrad

    info: dict[str, Any] = {"xrad": getattr(xrad, "__version__", "?"), "python": platform.python_version()}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        info["report_commit"] = commit.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        info["report_commit"] = "unknown"
    parts = [f"<pre>{html.escape(json.dumps(info, indent=2))}</pre>"]
    if env_path is not None and env_path.is_file():
        parts.append(
            f"<p>Training environment ({html.escape(str(env_path.relative_to(folder)))}):</p>"
            f"<pre>{html.escape(env_path.read_text(encoding='utf-8'))}</pre>"
        )
    else:
        parts.append(_missing("env.json not found: training versions, seeds and commit unknown"))
    for title, value in (extra or {}).items():
        parts.append(f"<p>{html.escape(title)}:</p><pre>{html.escape(value)}</pre>")
    return "\n".join(parts)


def _load_embeddings(run_dir: Path) -> dict[str, np.ndarray] | None:
    path = run_dir / "embeddings_test.safetensors"
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    return load_file(str(path))


def _tsne_section(
    b: _Builder, run_dir: Path, name: str, title: str, keys: tuple[str, ...], seed: int, max_points: int
) -> None:
    emb = _load_embeddings(run_dir)
    if emb is None:
        b.add(_missing(f"{run_dir.name}/embeddings_test.safetensors not found: no t-SNE"))
        return
    n = len(next(iter(emb.values())))
    scores_path = run_dir / "scores_test.csv"
    scores = read_scores(scores_path) if scores_path.is_file() else None
    keep = np.arange(n)
    if n > max_points:  # t-SNE is O(n log n) but slow on 2 cores; a seeded subsample keeps it to seconds
        keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    colourings: dict[str, np.ndarray] = {}
    if "labels" in emb:
        colourings["label"] = np.where(emb["labels"][keep] > 0, "1", np.where(emb["labels"][keep] == 0, "0", "?"))
    if scores is not None and len(scores) == n and "body_part" in scores:
        colourings["body part"] = scores["body_part"].replace("", "unknown").to_numpy()[keep]
    if "sphere" in emb:
        colourings["sphere"] = emb["sphere"][keep].astype(int).astype(str)
    for key in keys:
        if key not in emb:
            continue
        coords = plots.tsne_coordinates(emb[key][keep].reshape(len(keep), -1), seed=seed)
        b.figure(
            plots.tsne_figure(
                coords,
                colourings or {"all": np.zeros(len(keep))},
                f"{title}: t-SNE of '{key}' embeddings ({len(keep)} test images)",
            ),
            f"tsne_{name}_{key}",
            f"t-SNE {key}",
        )


def _pretext_tsne_section(b: _Builder, run_dir: Path, seed: int, max_points: int) -> None:
    """Fig. 9: t-SNE of the validation images' embeddings by the stage-1 (pretext) encoder beside the final
    (fine-tuned) one, coloured by label."""
    from safetensors.numpy import load_file

    paths = [run_dir / "embeddings_valid_pretext.safetensors", run_dir / "embeddings_valid.safetensors"]
    if not all(p.is_file() for p in paths):
        return
    pretext, final = (load_file(str(p)) for p in paths)
    key = "z" if "z" in pretext and "z" in final else "h"
    if key not in pretext or key not in final:
        return
    n = len(pretext[key])
    keep = np.arange(n)
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    labels = np.where(final["labels"][keep] > 0, "1", "0")
    b.section("t-SNE of the validation embeddings: pretext beside fine-tuned (Fig. 9)")
    for name, emb in (("pretext", pretext), ("fine-tuned", final)):
        coords = plots.tsne_coordinates(emb[key][keep].reshape(len(keep), -1), seed=seed)
        b.figure(
            plots.tsne_figure(
                coords, {"label": labels}, f"{name} encoder: t-SNE of '{key}' ({len(keep)} valid images)"
            ),
            f"tsne_valid_{name}",
            f"t-SNE valid {name}",
        )


def _curves_section(b: _Builder, histories_by_stage: dict[str, dict[str, list[pd.DataFrame]]], prefix: str) -> None:
    """Validation AUROC (Fig. 8), surviving spheres and loss per epoch."""

    def pick(column: str) -> dict[str, list[pd.DataFrame]]:
        out: dict[str, list[pd.DataFrame]] = {}
        for stage, histories in histories_by_stage.items():
            for name, frames in histories.items():
                frames = [f for f in frames if column in f and f[column].notna().any()]
                if frames:
                    out[name if len(histories_by_stage) == 1 or prefix == "bench" else f"{name} ({stage})"] = frames
        return out

    b.section("Validation AUROC per epoch")
    auroc = pick("valid_auroc")
    if auroc:
        b.figure(
            plots.epoch_figure(auroc, "valid_auroc", "validation AUROC", "Validation AUROC per epoch (Fig. 8)"),
            f"{prefix}_valid_auroc",
            "validation AUROC per epoch",
        )
    else:
        b.add(_missing("no valid_auroc column in any <stage>/metrics.csv"))
    b.section("Surviving spheres per epoch")
    spheres = pick("n_spheres")
    if spheres:
        b.figure(
            plots.epoch_figure(
                spheres, "n_spheres", "surviving spheres", "Surviving hyperspheres per epoch", integer=True
            ),
            f"{prefix}_spheres",
            "surviving spheres per epoch",
        )
    else:
        b.add(_missing("no n_spheres column in any <stage>/metrics.csv (not a multi-sphere method)"))
    b.section("Loss curves")
    drawn = False
    for stage, histories in histories_by_stage.items():
        frames = {
            n: [f for f in fs if "train_loss" in f and f["train_loss"].notna().any()] for n, fs in histories.items()
        }
        frames = {n: fs for n, fs in frames.items() if fs}
        if frames:
            b.figure(
                plots.epoch_figure(frames, "train_loss", "training loss", f"Training loss per epoch: {stage}"),
                f"{prefix}_loss_{stage}",
                f"loss {stage}",
            )
            drawn = True
    if not drawn:
        b.add(_missing("no train_loss column in any <stage>/metrics.csv"))


def _artefact_json(run_dir: Path) -> dict[str, Any]:
    """The run's ``artefact/artefact.json`` as a dict ({} when absent or unreadable): the report reads it as
    JSON and never loads the model."""
    try:
        meta = json.loads((run_dir / "artefact" / "artefact.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, not UTF-8, not JSON
        return {}
    return meta if isinstance(meta, dict) else {}


def _stored_operating_point(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The image-level operating point stored by ``xrad calibrate`` in the artefact, if any."""
    point = meta.get("operating_point")
    return point if isinstance(point, dict) and "threshold" in point else None


def _headline(b: _Builder, frames: dict[str, pd.DataFrame], run_dir: Path, n_bootstrap: int, seed: int) -> Any:
    """AUROC with its interval, the operating point and the confusion matrix at it; returns the evaluation."""
    from xrad.utils.notice import PHANTOM_TRAINED, RESEARCH_NOTICE

    b.section("Headline")
    b.add(f'<p class="notice" id="notice">{html.escape(RESEARCH_NOTICE)}</p>')
    if "test" not in frames:
        b.add(_missing("scores_test.csv not found"))
        return None
    test = frames["test"]
    meta = _artefact_json(run_dir)
    point = _stored_operating_point(meta)
    if point is not None:
        threshold, how = float(point["threshold"]), "stored by xrad calibrate (chosen on validation)"
    elif "valid" in frames and frames["valid"]["label"].nunique() > 1:
        choice = choose_threshold(frames["valid"], "youden")
        threshold, how = choice["threshold"], f"Youden's J on validation ({choice['n_valid']} images); not calibrated"
    else:
        threshold, how = None, "none (no calibrated operating point and no labelled validation scores)"
    result = evaluate_scores(test, threshold=threshold, n_bootstrap=n_bootstrap, seed=seed)
    image = result["levels"]["image"]
    auroc = image["auroc"]
    level = round(100 * result["bootstrap"]["confidence"])
    interval = f" ({level}% interval {auroc['low']:.2f}–{auroc['high']:.2f})" if "low" in auroc else ""
    chance = " — no better than chance" if "low" in auroc and auroc["low"] <= 0.5 else ""
    lines = [
        f"<p class='headline' id='auroc'>Test AUROC <b>{auroc['value']:.2f}</b>{interval}{chance}, on "
        f"{image['n']} test images ({image['n_abnormal']} abnormal).</p>"
    ]
    if threshold is not None:
        labelled = test[test["label"].notna()]
        flagged = labelled["score"].to_numpy(float) >= threshold
        truth = labelled["label"].to_numpy(int) == 1
        tp, fp = int((flagged & truth).sum()), int((flagged & ~truth).sum())
        fn, tn = int((~flagged & truth).sum()), int((~flagged & ~truth).sum())
        sens = tp / (tp + fn) if tp + fn else float("nan")
        spec = tn / (tn + fp) if tn + fp else float("nan")
        lines.append(
            f"<p id='operating'>Operating point: threshold {threshold:.4g}, {html.escape(how)}. On test: "
            f"sensitivity {sens:.2f}, specificity {spec:.2f}.</p>"
            "<table id='confusion'><tr><th></th><th>flagged</th><th>not flagged</th></tr>"
            f"<tr><th>abnormal</th><td>{tp}</td><td>{fn}</td></tr>"
            f"<tr><th>normal</th><td>{fp}</td><td>{tn}</td></tr></table>"
        )
    else:
        lines.append(f"<p id='operating'>Operating point: {html.escape(how)}.</p>")
    training = meta.get("training_data")
    if isinstance(training, dict) and training.get("phantoms"):  # the warning every score of it carries
        lines.append(f"<p class='warning' id='warning'>Warning: {html.escape(PHANTOM_TRAINED)}</p>")
    b.add("".join(lines))
    return result


def _body_part_table(test: pd.DataFrame) -> str:
    """Test AUROC per body part (with its image counts); "–" where a part lacks normals or anomalies."""
    from xrad.evaluation.metrics import auroc

    if "body_part" not in test.columns:
        return _missing("no body_part column")
    rows = []
    for part, group in test[test["label"].notna()].groupby("body_part"):
        labels = group["label"].to_numpy(int)
        value = auroc(labels, group["score"].to_numpy(float)) if 0 < labels.sum() < len(labels) else None
        rows.append(
            {
                "body part": part,
                "images": len(group),
                "abnormal": int(labels.sum()),
                "AUROC": "–" if value is None else f"{value:.2f}",
            }
        )
    return _table(pd.DataFrame(rows)) if rows else _missing("no labelled test rows")


def _gallery_section(b: _Builder, run_dir: Path) -> None:
    """The highest- and lowest-scored test images with their heatmaps (drawn by xrad.inference.gallery)."""
    b.section("Examples: the highest- and lowest-scored test images, with their heatmaps")
    listing = run_dir / "gallery" / "gallery.json"
    if not listing.is_file():
        b.add(_missing(f"{listing} not found; `xrad report` draws it when the run folder holds its artefact"))
        return
    gallery = json.loads(listing.read_text(encoding="utf-8"))
    labels = {0: "normal", 1: "abnormal", None: "unlabelled"}
    for which in ("highest", "lowest"):
        b.add(f"<h3>{which.capitalize()} scores</h3><div class='gallery'>")
        for entry in (e for e in gallery.get("images", []) if e.get("which") == which):
            percentile = entry.get("percentile")
            name, part = html.escape(str(entry.get("image", ""))), html.escape(str(entry.get("body_part", "")))
            caption = (
                f"#{entry['rank']} {name} ({part}, {labels.get(entry.get('label'), 'unlabelled')}): "
                f"score {float(entry['score']):.4g}"
                + ("" if percentile is None else f", percentile {float(percentile):.1f}")
            )
            png = listing.parent / str(entry.get("png") or "")
            picture = _img(png.read_bytes(), caption) if entry.get("png") and png.is_file() else _missing("not drawn")
            b.add(f"<figure>{picture}<figcaption>{caption}</figcaption></figure>")
        b.add("</div>")


def _run_report(b: _Builder, run_dir: Path, n_bootstrap: int, seed: int, max_points: int) -> str:
    summary = (
        json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        if (run_dir / "summary.json").is_file()
        else {}
    )
    title = f"xrad run report: {run_dir.name}"
    frames = {
        s: read_scores(run_dir / f"scores_{s}.csv")
        for s in ("valid", "test")
        if (run_dir / f"scores_{s}.csv").is_file()
    }
    result = _headline(b, frames, run_dir, n_bootstrap, seed)
    _gallery_section(b, run_dir)
    b.section("Per body part (test)")
    b.add(_body_part_table(frames["test"]) if "test" in frames else _missing("scores_test.csv not found"))
    b.section("ROC and precision–recall curves")
    curves = [
        (
            split,
            f.loc[f["label"].notna(), "label"].to_numpy(int),
            f.loc[f["label"].notna(), "score"].to_numpy(float),
        )
        for split, f in frames.items()
    ]
    if curves:
        b.figure(plots.roc_pr_figure(curves, "ROC and precision–recall, validation and test"), "roc_pr", "ROC and PR")
    else:
        b.add(_missing("no scores_valid.csv / scores_test.csv"))
    b.section("Score distributions (test, overall and per body part)")
    if "test" in frames:
        b.figure(
            plots.score_distribution_figure(frames["test"], "Test scores of normal and abnormal images"),
            "scores_test",
            "score distributions",
        )
    else:
        b.add(_missing("scores_test.csv not found"))
    b.section("Embeddings (t-SNE, coloured by label, body part and sphere)")
    _tsne_section(b, run_dir, "run", run_dir.name, ("h", "z"), seed, max_points)
    _pretext_tsne_section(b, run_dir, seed, max_points)
    _curves_section(b, {s: {s: [f]} for s, f in stage_metrics(run_dir).items()}, "run")
    b.section("Appendix: run summary and every metric")
    scalars = {k: v for k, v in summary.items() if isinstance(v, (str, int, float, bool)) or v is None}
    b.add(
        _table(pd.DataFrame({"key": list(scalars), "value": [str(v) for v in scalars.values()]}))
        if scalars
        else _missing("summary.json not found")
    )
    if result is not None:
        b.add(f"<pre>{html.escape(format_table(result))}</pre>")
    b.section("Appendix: environment")
    config = run_dir / "config.yaml"
    b.add(
        _environment(
            run_dir,
            run_dir / "env.json",
            {"config.yaml": config.read_text(encoding="utf-8")} if config.is_file() else None,
        )
    )
    return title


def _table1_html(table: pd.DataFrame, pairs: pd.DataFrame) -> str:
    """Table 1 (mean ± t-interval half-width, in %) and the pairwise Welch tests as HTML tables."""
    from xrad.evaluation.statistics import SIGNIFICANCE_LEGEND
    from xrad.evaluation.tables import format_percent

    if table.empty:
        return _missing("no finished cell yet")
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
        _table(shown),
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
            _table(tests),
            f'<p class="note">{html.escape(SIGNIFICANCE_LEGEND)}.</p>',
        ]
    return "\n".join(parts)


def _split_section(b: _Builder, split_files: list[Path]) -> None:
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


def _bench_report(b: _Builder, folder: Path, seed: int, max_points: int) -> str:
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
    b.add(_table(results.drop(columns=["cell"], errors="ignore")))
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
    ) if curves else b.add(_missing("no scores_test.csv in any cell"))
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
        _tsne_section(b, dirs[0], f"bench{i}", f"{method} ({dirs[0].name})", ("z",), seed, max_points)
    histories: dict[str, dict[str, list[pd.DataFrame]]] = {}
    for method, dirs in by_method.items():
        for d in dirs:
            for stage, frame in stage_metrics(d).items():
                histories.setdefault(stage, {}).setdefault(method, []).append(frame)
    _curves_section(b, histories, "bench")
    b.section("Environment")
    first_env = next((d / "env.json" for dirs in by_method.values() for d in dirs if (d / "env.json").is_file()), None)
    config = folder / "benchmark.json"
    b.add(
        _environment(
            folder,
            first_env,
            {"benchmark.json": config.read_text(encoding="utf-8")} if config.is_file() else None,
        )
    )
    return f"xrad benchmark report: {folder.name}"


def render_report(
    folder: str | Path,
    output: str | Path | None = None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    max_tsne_points: int = 2000,
) -> Path:
    """Render ``folder`` (a run or a benchmark) as one HTML file (default FOLDER/report.html)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; pass a run folder (xrad train -o) or a benchmark output folder")
    output = Path(output) if output else folder / "report.html"
    folder = detector_folder(folder)  # the folder of `xrad run` holds the detector's run folder
    builder = _Builder(
        output.parent / f"{output.stem}_figures" if output.stem != "report" else output.parent / "report"
    )
    if is_benchmark_folder(folder):
        title = _bench_report(builder, folder, seed, max_tsne_points)
    elif (folder / "summary.json").is_file() or (folder / "scores_test.csv").is_file():
        title = _run_report(builder, folder, n_bootstrap, seed, max_tsne_points)
    else:
        raise DataError(
            f"{folder}: neither a run folder (summary.json, scores_test.csv) nor a benchmark folder "
            f"(results.csv); point at the folder written by `xrad train` or `xrad benchmark`"
        )
    page = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class='note'>Folder: {html.escape(str(folder.resolve()))}</p>"
        + "\n".join(builder.parts)
        + "</body></html>"
    )
    write_text(output, page)
    return output
