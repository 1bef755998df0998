"""The triage worklist: studies sorted by anomaly score, as CSV and as one offline HTML page.

Input is an image-level scores table (``xrad score`` output, or a run's ``scores_test.csv``). Images are
aggregated to studies exactly as in evaluation (:func:`xrad.evaluation.aggregate.aggregate_scores`);
without ``study_id`` every image is its own study. A study is flagged when its score reaches the study
threshold: ``threshold`` if given, else the artefact's operating point (its study-level entry when it was
calibrated with the same aggregation, else none — an image threshold does not transfer to study scores).

The page (``DIR/index.html``) references thumbnails written next to it (``DIR/thumbs``), so the folder opens
offline in any browser. Thumbnails are named by a hash of the image path, never by identifiers. Only the
first ``top`` studies get images, which keeps a worklist of thousands of studies quick to build.
"""

from __future__ import annotations

import hashlib
import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xrad.errors import XradError

__all__ = ["build_worklist", "worklist_table"]

_MAX_IMAGES_PER_STUDY = 4


def worklist_table(scores: pd.DataFrame, *, aggregation: str = "max",
                   threshold: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(studies sorted by score with ``rank`` and ``flagged``, the image rows with their ``study_id``)."""
    from xrad.evaluation.aggregate import aggregate_scores
    from xrad.evaluation.evaluate import prepare_scores

    images = scores.copy()
    if "study_id" not in images.columns or (images["study_id"].astype(str).str.strip() == "").any():
        # No study ids: each image is its own study, named by its file.
        fallback = images["path"].astype(str).map(lambda p: Path(p).stem) if "path" in images else \
            pd.Series([f"image{i}" for i in range(len(images))], index=images.index)
        ids = images["study_id"].astype(str).str.strip() if "study_id" in images else fallback
        images["study_id"] = ids.where(ids != "", fallback)
    failed = images.iloc[:0]
    if "error" in images.columns:
        unreadable = images["error"].fillna("").astype(str) != ""
        failed, images = images[unreadable], images[~unreadable]
    images = prepare_scores(images, where="scores")
    studies = aggregate_scores(images, "study", aggregation)
    studies = studies.sort_values("score", ascending=False, kind="mergesort").reset_index(drop=True)
    studies.insert(0, "rank", pd.array(np.arange(1, len(studies) + 1), dtype="Int64"))
    studies["flagged"] = (studies["score"] >= threshold) if threshold is not None else pd.NA
    # An image that could not be read must not silently drop out of a triage list: its study keeps a count,
    # and a study with no readable image at all is listed (unranked, no score) so a person reads it.
    counts = failed.groupby("study_id").size()
    studies["unreadable"] = studies["study_id"].map(counts).fillna(0).astype(int)
    lost = counts[~counts.index.isin(studies["study_id"])]
    if len(lost):
        first = failed.drop_duplicates("study_id").set_index("study_id")
        extra = pd.DataFrame({"study_id": lost.index, "n_images": 0, "unreadable": lost.to_numpy()})
        for column in ("body_part", "label"):
            if column in studies.columns and column in first.columns:
                extra[column] = first.loc[lost.index, column].to_numpy()
        extra["rank"] = pd.array([pd.NA] * len(extra), dtype="Int64")
        extra["flagged"] = pd.NA
        studies = pd.concat([studies, extra], ignore_index=True)[list(studies.columns)]
    return studies, images


def _thumbnail(path: str, out_dir: Path, size: int, kind: str) -> str:
    """Write a downscaled PNG of an image (or an overlay PNG) and return its path relative to ``out_dir``."""
    import cv2

    from xrad.data.io import read_radiograph, write_png

    name = hashlib.sha1(f"{kind}:{path}".encode()).hexdigest()[:16] + ".png"
    target = out_dir / "thumbs" / name
    if not target.is_file():
        if kind == "heatmap":
            from PIL import Image

            with Image.open(path) as image:
                image = image.convert("RGB")
                image.thumbnail((size, size))
                target.parent.mkdir(parents=True, exist_ok=True)
                image.save(target, format="PNG")
        else:
            pixels = read_radiograph(path).pixels
            factor = size / max(pixels.shape)
            if factor < 1:
                pixels = cv2.resize(pixels, (max(1, round(pixels.shape[1] * factor)),
                                             max(1, round(pixels.shape[0] * factor))), interpolation=cv2.INTER_AREA)
            write_png(target, pixels)
    return f"thumbs/{name}"


def _images_html(rows: pd.DataFrame, out_dir: Path, size: int) -> tuple[str, str]:
    thumbs, heats = [], []
    for _, row in rows.head(_MAX_IMAGES_PER_STUDY).iterrows():
        path = str(row.get("path", "") or "")
        if not path:
            continue
        try:
            src = _thumbnail(path, out_dir, size, "image")
            thumbs.append(f'<img class="thumb" src="{html.escape(src)}" alt="image" loading="lazy">')
        except (XradError, OSError) as exc:
            thumbs.append(f'<span class="bad">unreadable: {html.escape(str(exc).split(": ", 1)[-1])}</span>')
        heat = str(row.get("heatmap", "") or "")
        if heat and Path(heat).is_file():
            try:
                src = _thumbnail(heat, out_dir, size, "heatmap")
                heats.append(f'<img class="thumb" src="{html.escape(src)}" alt="heatmap" loading="lazy">')
            except OSError:
                heats.append('<span class="bad">heatmap unreadable</span>')
    return "".join(thumbs), "".join(heats)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.3rem;margin:0 0 .3rem}.muted{color:#666;font-size:.9rem}
table{border-collapse:collapse;margin-top:1rem}th,td{padding:.35rem .6rem;border-bottom:1px solid #ddd;
vertical-align:middle;text-align:left}th{background:#f3f3f3;position:sticky;top:0}
.thumb{max-height:var(--s);max-width:var(--s);margin-right:4px;border:1px solid #bbb;background:#000}
tr.flagged td.flag{color:#b00020;font-weight:600}td.score{font-variant-numeric:tabular-nums;font-weight:600}
tr.threshold td{border-top:3px dashed #b00020;border-bottom:none;color:#b00020;font-weight:600;padding:.2rem .6rem}
.bad{color:#b00020;font-size:.8rem}
"""


def build_worklist(scores: pd.DataFrame, out_dir: str | Path, *, aggregation: str = "max",
                   threshold: float | None = None, operating_point: dict[str, Any] | None = None,
                   top: int = 200, thumb_size: int = 160, title: str = "xrad worklist") -> dict[str, Any]:
    """Write ``worklist.csv`` and ``index.html`` (with ``thumbs/``) into ``out_dir``.

    ``threshold`` overrides ``operating_point``. Returns ``{html, csv, n_studies, n_flagged, threshold}``.
    """
    from xrad.inference.calibration import study_threshold
    from xrad.utils.atomic import write_csv, write_text

    out_dir = Path(out_dir)
    note = ""
    if threshold is None:
        threshold, note = study_threshold(operating_point, aggregation)
    elif operating_point is None:
        note = f"threshold {threshold:.6g} (given)"
    studies, images = worklist_table(scores, aggregation=aggregation, threshold=threshold)
    by_study = {key: rows for key, rows in images.groupby("study_id", sort=False)}
    write_csv(out_dir / "worklist.csv", studies)
    has_label = "label" in studies.columns and studies["label"].notna().any()
    header = ["#", "images", "heatmaps", "study", "body part", "score", "flag", "n"] + (["label"] if has_label else [])
    lines = []
    threshold_drawn = threshold is None
    unscored = studies[studies["rank"].isna()]
    for i, study in studies[studies["rank"].notna()].iterrows():
        if not threshold_drawn and study["score"] < threshold:
            lines.append(f'<tr class="threshold"><td colspan="{len(header)}">threshold {threshold:.6g} — '
                         f"studies below are not flagged</td></tr>")
            threshold_drawn = True
        thumbs, heats = ("", "")
        if i < top:
            thumbs, heats = _images_html(by_study.get(study["study_id"], images.iloc[:0]), out_dir, thumb_size)
        flagged = study["flagged"]
        flag_text = "" if pd.isna(flagged) else ("FLAGGED" if bool(flagged) else "—")
        cells = [str(study["rank"]), thumbs, heats, html.escape(str(study["study_id"])),
                 html.escape(str(study.get("body_part", "") or "")), f"{study['score']:.4g}", flag_text,
                 str(study["n_images"]) + (f' <span class="bad">+{study["unreadable"]} unreadable</span>'
                                           if study["unreadable"] else "")]
        if has_label:
            cells.append("" if pd.isna(study["label"]) else str(int(study["label"])))
        row_class = "flagged" if flag_text == "FLAGGED" else ""
        lines.append(f'<tr class="{row_class}">' + "".join(
            f'<td class="{c}">{v}</td>' for c, v in zip(["rank", "img", "heat", "id", "part", "score", "flag", "n", "label"],
                                                        cells)) + "</tr>")
    if not threshold_drawn:  # every study is above the threshold
        lines.append(f'<tr class="threshold"><td colspan="{len(header)}">threshold {threshold:.6g}</td></tr>')
    n_flagged = int(studies["flagged"].fillna(False).astype(bool).sum()) if threshold is not None else 0
    summary = (f"{len(studies) - len(unscored)} studies ({len(images)} images), sorted by {aggregation} score"
               + (f"; {n_flagged} flagged at {note or f'threshold {threshold:.6g}'}" if threshold is not None
                  else "; no study-level operating point (run `xrad calibrate` or pass --threshold)"))
    n_unreadable = int(studies["unreadable"].sum())
    unreadable_html = ""
    if n_unreadable:
        summary += f"; {n_unreadable} image(s) could not be read"
    if len(unscored):
        ids = ", ".join(html.escape(str(v)) for v in unscored["study_id"])
        unreadable_html = (f'<p class="bad" id="unscored">{len(unscored)} study(ies) could not be scored — none of '
                           f"their images could be read; read them yourself: {ids}</p>")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body style=\"--s:{thumb_size}px\"><h1>{html.escape(title)}</h1>"
            f'<div class="muted" id="summary">{html.escape(summary)}</div>{unreadable_html}'
            '<table id="worklist"><thead><tr>'
            + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead><tbody>" + "\n".join(lines)
            + "</tbody></table></body></html>\n")
    write_text(out_dir / "index.html", page)
    return {"html": str(out_dir / "index.html"), "csv": str(out_dir / "worklist.csv"),
            "n_studies": len(studies) - len(unscored), "n_unscored": len(unscored), "n_unreadable_images": n_unreadable,
            "n_flagged": n_flagged, "threshold": threshold}
