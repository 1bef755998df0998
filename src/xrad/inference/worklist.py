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
import io
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xrad.data.radiograph import short_reason
from xrad.errors import ImageReadError
from xrad.utils.hashing import short_hash

__all__ = ["build_worklist", "worklist_folder_entry", "worklist_table"]

_MAX_IMAGES_PER_STUDY = 4


def worklist_table(
    scores: pd.DataFrame, *, aggregation: str = "max", threshold: float | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(studies sorted by score with ``rank`` and ``flagged``, the image rows with their ``study_id``)."""
    from xrad.evaluation.aggregate import aggregate_scores
    from xrad.evaluation.evaluate import prepare_scores

    images = scores.copy()
    if "study_id" not in images.columns or (images["study_id"].astype(str).str.strip() == "").any():
        ids = images["study_id"].astype(str).str.strip() if "study_id" in images else pd.Series("", index=images.index)
        images["study_id"] = ids.where(ids != "", _own_study_ids(images, ids))
    failed = images.iloc[:0]
    if "error" in images.columns:
        unreadable = images["error"].fillna("").astype(str) != ""
        failed, images = images[unreadable], images[~unreadable]
    images = prepare_scores(images, where="scores")
    studies = aggregate_scores(images, "study", aggregation)
    studies = studies.sort_values("score", ascending=False, kind="mergesort").reset_index(drop=True)
    studies.insert(0, "rank", pd.array(np.arange(1, len(studies) + 1), dtype="Int64"))
    if "percentile" in images.columns:  # `xrad score` output: each image's percentile among validation normals
        top = pd.to_numeric(images["percentile"], errors="coerce").groupby(images["study_id"]).max()
        studies["top_percentile"] = studies["study_id"].map(top)
    if "warnings" in images.columns:  # out-of-distribution warnings of its images (xrad.inference.readout)
        texts = images["warnings"].fillna("").astype(str)
        joined = texts[texts != ""].groupby(images["study_id"]).agg(lambda t: "; ".join(sorted(set(t))))
        studies["warnings"] = [str(joined.get(study, "")) for study in studies["study_id"]]
    studies["flagged"] = (studies["score"] >= threshold) if threshold is not None else pd.NA
    # An image that could not be read must not silently drop out of a triage list: its study keeps a count,
    # and a study with no readable image at all is listed (unranked, no score) so a person reads it.
    counts = failed.groupby("study_id").size()
    studies["unreadable"] = studies["study_id"].map(counts).fillna(0).astype(int)
    if "degenerate" in images.columns:  # decoded, scored, but the score means little (tiny, constant)
        odd = images[images["degenerate"].fillna("").astype(str) != ""].groupby("study_id").size()
        studies["degenerate"] = studies["study_id"].map(odd).fillna(0).astype(int)
    lost = counts[~counts.index.isin(studies["study_id"])]
    if len(lost):
        first = failed.drop_duplicates("study_id").set_index("study_id")
        extra = pd.DataFrame({"study_id": lost.index, "n_images": 0, "unreadable": lost.to_numpy()})
        for column in ("body_part", "label"):
            if column in studies.columns and column in first.columns:
                extra[column] = first.loc[lost.index, column].to_numpy()
        if "degenerate" in studies.columns:
            extra["degenerate"] = 0
        extra["rank"] = pd.array([pd.NA] * len(extra), dtype="Int64")
        extra["flagged"] = pd.NA
        studies = pd.concat([studies, extra], ignore_index=True)[list(studies.columns)]
    return studies, images


def _own_study_ids(images: pd.DataFrame, ids: pd.Series) -> pd.Series:
    """Ids for images without a study id: each image is its own study, named by its file stem — or, where
    two such images share a stem (``image1.png`` of two patients) or a stem is some study's id, by the stem
    and a hash of the full path, so two images are never merged into one study by their names."""
    if "path" not in images.columns:
        return pd.Series([f"image{i}" for i in range(len(images))], index=images.index)
    paths = images["path"].astype(str)
    stems = paths.map(lambda p: Path(p).stem)
    without = ids == ""
    taken = set(ids[~without])
    # Distinct paths with one stem collide; the same path twice stays one image's rows.
    clash = stems[without].groupby(stems[without]).transform(lambda g: paths[g.index].nunique() > 1)
    unique = stems.copy()
    for index in stems.index[without]:
        if bool(clash.get(index, False)) or stems[index] in taken:
            unique[index] = f"{stems[index]}~{short_hash(paths[index], 8)}"
    return unique


def _thumbnail(path: str, out_dir: Path, size: int, kind: str, previous: Path | None = None) -> str:
    """Write a downscaled PNG of an image (or an overlay PNG) and return its path relative to ``out_dir``.

    ``previous`` is the thumbs folder of the worklist being replaced: a thumbnail already made there (same file,
    same size and modification time) is linked rather than decoded again.
    """
    import cv2

    from xrad.data.io import read_radiograph, write_png

    try:
        stat = os.stat(path)
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        stamp = ""
    name = hashlib.sha1(f"{kind}:{path}:{stamp}:{size}".encode()).hexdigest()[:16] + ".png"
    target = out_dir / "thumbs" / name
    if not target.is_file() and previous is not None and (previous / name).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(previous / name, target)
        except OSError:
            shutil.copyfile(previous / name, target)
    if not target.is_file():
        if kind == "heatmap":
            write_png(target, _heatmap_pixels(path, size))
        else:
            pixels = read_radiograph(path).pixels
            factor = size / max(pixels.shape)
            if factor < 1:
                pixels = cv2.resize(
                    pixels,
                    (max(1, round(pixels.shape[1] * factor)), max(1, round(pixels.shape[0] * factor))),
                    interpolation=cv2.INTER_AREA,
                )
            write_png(target, np.clip(pixels, 0.0, 1.0))
    return f"thumbs/{name}"


def _heatmap_pixels(path: str, size: int) -> np.ndarray:
    """A heatmap overlay PNG (a scores file's ``heatmap`` column: any path) as uint8 RGB at most ``size`` px,
    under the rules every reader follows: a regular file, a PNG, within the pixel limit."""
    import warnings

    from PIL import Image

    from xrad.data.io import DEFAULT_MAX_PIXELS, sniff_format
    from xrad.utils.files import read_problem, read_regular

    try:
        data = read_regular(path)
    except OSError as exc:
        raise ImageReadError(path, read_problem(path, exc)) from None
    if sniff_format(data) != "png":
        raise ImageReadError(path, "heatmap is not a PNG; re-run `xrad score --heatmaps`")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
                width, height = image.size
                if width * height > DEFAULT_MAX_PIXELS:
                    raise ImageReadError(
                        path,
                        f"heatmap declares {width}x{height} pixels, above max_pixels="
                        f"{DEFAULT_MAX_PIXELS} (decompression-bomb guard)",
                    )
                rgb = image.convert("RGB")
                rgb.thumbnail((size, size))
                return np.asarray(rgb, dtype=np.uint8)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(path, f"heatmap cannot be decoded ({type(exc).__name__}: {short_reason(exc)})") from exc


def _images_html(rows: pd.DataFrame, out_dir: Path, size: int, previous: Path | None) -> tuple[str, str]:
    thumbs, heats = [], []
    for _, row in rows.head(_MAX_IMAGES_PER_STUDY).iterrows():
        path = str(row.get("path", "") or "")
        if not path:
            continue
        try:
            src = _thumbnail(path, out_dir, size, "image", previous)
            thumbs.append(f'<img class="thumb" src="{html.escape(src)}" alt="image" loading="lazy">')
        except Exception as exc:
            thumbs.append(f'<span class="bad">unreadable: {html.escape(_reason(exc))}</span>')
        heat = str(row.get("heatmap", "") or "")
        if heat and os.path.lexists(heat):
            try:
                src = _thumbnail(heat, out_dir, size, "heatmap", previous)
                heats.append(f'<img class="thumb" src="{html.escape(src)}" alt="heatmap" loading="lazy">')
            except Exception:
                heats.append('<span class="bad">heatmap unreadable</span>')
    return "".join(thumbs), "".join(heats)


def _percentile_text(value: Any) -> str:
    """A study's highest image percentile among the validation normals, for the page."""
    return "unavailable" if pd.isna(value) else f"{float(value):.1f}"


def _reason(exc: BaseException) -> str:
    """The reason of a thumbnail failure, without the file name (the page must not show file names)."""
    if isinstance(exc, ImageReadError):
        return exc.reason
    return f"{type(exc).__name__}: {short_reason(exc)}"


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.3rem;margin:0 0 .3rem}.muted{color:#666;font-size:.9rem}
table{border-collapse:collapse;margin-top:1rem}th,td{padding:.35rem .6rem;border-bottom:1px solid #ddd;
vertical-align:middle;text-align:left}th{background:#f3f3f3;position:sticky;top:0}
.thumb{max-height:var(--s);max-width:var(--s);margin-right:4px;border:1px solid #bbb;background:#000}
tr.flagged td.flag{color:#b00020;font-weight:600}td.score{font-variant-numeric:tabular-nums;font-weight:600}
tr.threshold td{border-top:3px dashed #b00020;border-bottom:none;color:#b00020;font-weight:600;padding:.2rem .6rem}
.bad{color:#b00020;font-size:.8rem}
.notice{background:#fff4e5;border-left:4px solid #e65100;padding:.4rem .6rem;max-width:60rem}
"""


def build_worklist(
    scores: pd.DataFrame,
    out_dir: str | Path,
    *,
    aggregation: str = "max",
    threshold: float | None = None,
    operating_point: dict[str, Any] | None = None,
    top: int = 200,
    thumb_size: int = 160,
    title: str = "xrad worklist",
) -> dict[str, Any]:
    """Write ``worklist.csv`` and ``index.html`` (with ``thumbs/``) into ``out_dir``.

    ``threshold`` overrides ``operating_point``. Returns ``{html, csv, n_studies, n_flagged, threshold}``.

    The three outputs are one set: they are built in a temporary folder beside ``out_dir`` which then replaces
    ``out_dir`` as a whole (:func:`xrad.utils.atomic.staged_folder`), so a failed re-run leaves the previous
    worklist whole. A folder holding anything but a worklist's files is refused, never replaced.
    """
    from xrad.utils.atomic import staged_folder

    out_dir = Path(out_dir)
    previous = out_dir / "thumbs" if (out_dir / "thumbs").is_dir() else None
    with staged_folder(out_dir, owned=worklist_folder_entry) as staged:
        result = _build(
            scores,
            staged,
            previous,
            aggregation=aggregation,
            threshold=threshold,
            operating_point=operating_point,
            top=top,
            thumb_size=thumb_size,
            title=title,
        )
    return {**result, "html": str(out_dir / "index.html"), "csv": str(out_dir / "worklist.csv")}


_OUTPUTS = ("worklist.csv", "index.html", "thumbs")


def worklist_folder_entry(entry: Path) -> bool:
    """What a worklist folder may hold (its outputs, and temporaries of an interrupted older version)."""
    return entry.name in _OUTPUTS or (entry.name.startswith(".") and entry.name.endswith(".tmp"))


def _build(
    scores: pd.DataFrame,
    out_dir: Path,
    previous: Path | None,
    *,
    aggregation: str,
    threshold: float | None,
    operating_point: dict[str, Any] | None,
    top: int,
    thumb_size: int,
    title: str,
) -> dict[str, Any]:
    from xrad.inference.calibration import stored_aggregation, study_threshold
    from xrad.utils.atomic import write_csv, write_text
    from xrad.utils.notice import RESEARCH_NOTICE

    note = ""
    missing = "no study-level operating point (run `xrad calibrate` or pass --threshold)"
    if threshold is None:
        threshold, note = study_threshold(operating_point, aggregation)
        stored = stored_aggregation(operating_point)
        if threshold is None and (operating_point or {}).get("study") and stored != aggregation:
            missing = (
                f"the stored study threshold is for {stored} scores, these are {aggregation} scores "
                f"(use --aggregation {stored}, or calibrate with --aggregation {aggregation})"
            )
        elif threshold is None and operating_point:
            missing = "the operating point has no study-level threshold (validation had no study ids)"
    elif operating_point is None:
        note = f"threshold {threshold:.6g} (given)"
    studies, images = worklist_table(scores, aggregation=aggregation, threshold=threshold)
    by_study = {key: rows for key, rows in images.groupby("study_id", sort=False)}
    write_csv(out_dir / "worklist.csv", studies)
    has_label = "label" in studies.columns and studies["label"].notna().any()
    has_pct = "top_percentile" in studies.columns and studies["top_percentile"].notna().any()
    header = ["#", "images", "heatmaps", "study", "body part", "score"]
    header += (["top image percentile"] if has_pct else []) + ["flag", "n"] + (["label"] if has_label else [])
    columns = ["rank", "img", "heat", "id", "part", "score"] + (["pct"] if has_pct else []) + ["flag", "n", "label"]
    lines = []
    threshold_drawn = threshold is None
    unscored = studies[studies["rank"].isna()]
    for i, study in studies[studies["rank"].notna()].iterrows():
        if not threshold_drawn and study["score"] < threshold:
            lines.append(
                f'<tr class="threshold"><td colspan="{len(header)}">threshold {threshold:.6g} — '
                f"studies below are not flagged</td></tr>"
            )
            threshold_drawn = True
        thumbs, heats = ("", "")
        if i < top:
            thumbs, heats = _images_html(
                by_study.get(study["study_id"], images.iloc[:0]), out_dir, thumb_size, previous
            )
        flagged = study["flagged"]
        flag_text = "" if pd.isna(flagged) else ("FLAGGED" if bool(flagged) else "—")
        cells = [
            str(study["rank"]),
            thumbs,
            heats,
            html.escape(str(study["study_id"]))
            + (
                f'<div class="bad warning">warning: {html.escape(str(study["warnings"]))}</div>'
                if str(study.get("warnings", "") or "") not in ("", "nan")
                else ""
            ),
            html.escape(str(study.get("body_part", "") or "")),
            f"{study['score']:.4g}",
            *([_percentile_text(study["top_percentile"])] if has_pct else []),
            flag_text,
            str(study["n_images"])
            + (f' <span class="bad">+{study["unreadable"]} unreadable</span>' if study["unreadable"] else "")
            + (
                f' <span class="bad">{study["degenerate"]} degenerate (tiny/constant)</span>'
                if study.get("degenerate", 0)
                else ""
            ),
        ]
        if has_label:
            cells.append("" if pd.isna(study["label"]) else str(int(study["label"])))
        row_class = "flagged" if flag_text == "FLAGGED" else ""
        lines.append(
            f'<tr class="{row_class}">' + "".join(f'<td class="{c}">{v}</td>' for c, v in zip(columns, cells)) + "</tr>"
        )
    if not threshold_drawn:  # every study is above the threshold
        lines.append(f'<tr class="threshold"><td colspan="{len(header)}">threshold {threshold:.6g}</td></tr>')
    n_flagged = int(studies["flagged"].fillna(False).astype(bool).sum()) if threshold is not None else 0
    summary = f"{len(studies) - len(unscored)} studies ({len(images)} images), sorted by {aggregation} score" + (
        f"; {n_flagged} flagged at {note or f'threshold {threshold:.6g}'}" if threshold is not None else f"; {missing}"
    )
    n_unreadable = int(studies["unreadable"].sum())
    unreadable_html = ""
    if n_unreadable:
        summary += f"; {n_unreadable} image(s) could not be read"
    if len(unscored):
        ids = ", ".join(html.escape(str(v)) for v in unscored["study_id"])
        unreadable_html = (
            f'<p class="bad" id="unscored">{len(unscored)} study(ies) could not be scored — none of '
            f"their images could be read; read them yourself: {ids}</p>"
        )
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<style>{_CSS}</style></head><body style="--s:{thumb_size}px"><h1>{html.escape(title)}</h1>'
        f'<p class="notice" id="notice">{html.escape(RESEARCH_NOTICE)}</p>'
        f'<div class="muted" id="summary">{html.escape(summary)}</div>{unreadable_html}'
        '<table id="worklist"><thead><tr>'
        + "".join(f"<th>{h}</th>" for h in header)
        + "</tr></thead><tbody>"
        + "\n".join(lines)
        + "</tbody></table></body></html>\n"
    )
    write_text(out_dir / "index.html", page)
    return {
        "html": str(out_dir / "index.html"),
        "csv": str(out_dir / "worklist.csv"),
        "n_studies": len(studies) - len(unscored),
        "n_unscored": len(unscored),
        "n_unreadable_images": n_unreadable,
        "n_flagged": n_flagged,
        "threshold": threshold,
    }
