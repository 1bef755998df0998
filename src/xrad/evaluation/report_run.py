"""The report of one run folder: headline (AUROC with its interval, operating point, confusion matrix,
warnings), gallery, per-body-part table, curves, score distributions, embeddings and the appendices."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from xrad.evaluation import plots
from xrad.evaluation.evaluate import choose_threshold, evaluate_scores, format_table, read_scores
from xrad.evaluation.report_parts import (
    ReportBuilder,
    curves_section,
    embedded_png,
    environment_section,
    html_table,
    missing_note,
    pretext_tsne_section,
    stage_metrics,
    tsne_section,
)


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


def _headline(b: ReportBuilder, frames: dict[str, pd.DataFrame], run_dir: Path, n_bootstrap: int, seed: int) -> Any:
    """AUROC with its interval, the operating point and the confusion matrix at it; returns the evaluation."""
    from xrad.utils.notice import PHANTOM_TRAINED, RESEARCH_NOTICE

    b.section("Headline")
    b.add(f'<p class="notice" id="notice">{html.escape(RESEARCH_NOTICE)}</p>')
    if "test" not in frames:
        b.add(missing_note("scores_test.csv not found"))
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
        return missing_note("no body_part column")
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
    return html_table(pd.DataFrame(rows)) if rows else missing_note("no labelled test rows")


def _gallery_section(b: ReportBuilder, run_dir: Path) -> None:
    """The highest- and lowest-scored test images with their heatmaps (drawn by xrad.inference.gallery)."""
    b.section("Examples: the highest- and lowest-scored test images, with their heatmaps")
    listing = run_dir / "gallery" / "gallery.json"
    if not listing.is_file():
        b.add(missing_note(f"{listing} not found; `xrad report` draws it when the run folder holds its artefact"))
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
            picture = (
                embedded_png(png.read_bytes(), caption)
                if entry.get("png") and png.is_file()
                else missing_note("not drawn")
            )
            b.add(f"<figure>{picture}<figcaption>{caption}</figcaption></figure>")
        b.add("</div>")


def run_report(b: ReportBuilder, run_dir: Path, n_bootstrap: int, seed: int, max_points: int) -> str:
    """Add every section of a run folder's report to ``b``; return the page title."""
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
    b.add(_body_part_table(frames["test"]) if "test" in frames else missing_note("scores_test.csv not found"))
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
        b.add(missing_note("no scores_valid.csv / scores_test.csv"))
    b.section("Score distributions (test, overall and per body part)")
    if "test" in frames:
        b.figure(
            plots.score_distribution_figure(frames["test"], "Test scores of normal and abnormal images"),
            "scores_test",
            "score distributions",
        )
    else:
        b.add(missing_note("scores_test.csv not found"))
    b.section("Embeddings (t-SNE, coloured by label, body part and sphere)")
    tsne_section(b, run_dir, "run", run_dir.name, ("h", "z"), seed, max_points)
    pretext_tsne_section(b, run_dir, seed, max_points)
    curves_section(b, {s: {s: [f]} for s, f in stage_metrics(run_dir).items()}, "run")
    b.section("Appendix: run summary and every metric")
    scalars = {k: v for k, v in summary.items() if isinstance(v, (str, int, float, bool)) or v is None}
    b.add(
        html_table(pd.DataFrame({"key": list(scalars), "value": [str(v) for v in scalars.values()]}))
        if scalars
        else missing_note("summary.json not found")
    )
    if result is not None:
        b.add(f"<pre>{html.escape(format_table(result))}</pre>")
    b.section("Appendix: environment")
    config = run_dir / "config.yaml"
    b.add(
        environment_section(
            run_dir,
            run_dir / "env.json",
            {"config.yaml": config.read_text(encoding="utf-8")} if config.is_file() else None,
        )
    )
    return title
