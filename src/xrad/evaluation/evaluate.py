"""Evaluate a scores table: image, study and patient metrics with cluster-bootstrap intervals.

The scores CSV (written by training runs and by ``xrad score``) has ``score`` (higher = more abnormal),
``label`` (1 / 0 / empty) and, when known, ``path``, ``patient_id``, ``study_id``, ``body_part``,
``split`` and ``sphere``. Unlabelled rows are ignored. Every interval comes from one set of resamples of
the top-level unit (patient, else study, else image), shared by all metrics and levels, so intervals of
different metrics are comparable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xrad.errors import ConfigError, DataError
from xrad.evaluation import metrics
from xrad.evaluation.aggregate import (
    LEVEL_KEYS,
    aggregate_scores,
    available_levels,
    bootstrap_unit,
    parse_aggregation,
    unit_codes,
)
from xrad.evaluation.bootstrap import resample_counts, row_weights, summarise

_ID_COLUMNS = ("path", "patient_id", "study_id", "body_part", "split")


def read_scores(path: str | Path) -> pd.DataFrame:
    """Read a scores CSV; ``score`` must be numeric and ``label`` 0, 1 or empty (→ NaN)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: scores file not found; write one with `xrad score` or a training run")
    try:
        frame = pd.read_csv(path, dtype={c: str for c in _ID_COLUMNS}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    return prepare_scores(frame, where=str(path))


def prepare_scores(frame: pd.DataFrame, where: str = "scores") -> pd.DataFrame:
    """Check and normalise a scores table (finite numeric score, label as float 0/1/NaN, ids as strings).

    Labels are read with the vocabulary of ``xrad index`` (:func:`xrad.data.indexing.parse_label`: 0/1,
    true/false, normal/abnormal, yes/no, positive/negative; empty or unknown → unlabelled); anything else is
    refused, never silently treated as unlabelled. Rows ``xrad score`` could not read (a non-empty ``error``)
    are left out and counted in ``frame.attrs["unreadable"]``; any other row without a finite score is refused,
    and so is an image listed twice (the same ``path`` twice in one ``split``).
    """
    from xrad.data.indexing import parse_label

    if "score" not in frame.columns:
        raise DataError(f"{where}: no 'score' column; expected the CSV written by `xrad score` or a run")
    by_split = dict(frame.attrs.get("unreadable_by_split", {}))
    frame = frame.copy()
    for column in _ID_COLUMNS:
        if column in frame.columns:
            frame[column] = frame[column].fillna("").astype(str).str.strip()
    if "error" in frame.columns:
        failed = frame["error"].fillna("").astype(str).str.strip() != ""
        splits = frame.loc[failed, "split"] if "split" in frame.columns else pd.Series("", index=frame.index[failed])
        for split, count in splits.value_counts().items():
            by_split[str(split)] = by_split.get(str(split), 0) + int(count)
        frame = frame[~failed].copy()
    raw = frame["score"]
    score = pd.to_numeric(raw.replace("", np.nan), errors="coerce").astype(float)
    if score.isna().any():
        first = raw[score.isna()].iloc[0]
        raise DataError(
            f"{where}: {int(score.isna().sum())} row(s) have no numeric score (e.g. {first!r}); fix or drop them"
        )
    if not np.isfinite(score.to_numpy()).all():
        bad = score[~np.isfinite(score.to_numpy())]
        raise DataError(
            f"{where}: {len(bad)} row(s) have a non-finite score ({bad.iloc[0]}); a score must be a "
            "finite number — fix or drop them"
        )
    frame["score"] = score
    if "label" in frame.columns:
        spellings = frame["label"].astype(str)
        mapping = {}
        for value in spellings.unique():
            parsed = parse_label(value, f"{where}: column 'label'")
            mapping[value] = np.nan if parsed is pd.NA else float(parsed)
        frame["label"] = spellings.map(mapping).astype(float)
    else:
        frame["label"] = np.nan
    if "path" in frame.columns:
        keys = ["path"] + (["split"] if "split" in frame.columns else [])
        named = frame[frame["path"] != ""]
        twice = named.duplicated(keys, keep=False)
        if twice.any():
            raise DataError(
                f"{where}: image {named.loc[twice, 'path'].iloc[0]} is listed {int(twice.sum())} times"
                f"{' in one split' if 'split' in keys else ''}; drop the duplicate rows"
            )
    # Counted per split, so a table filtered to one split later (`xrad evaluate` takes test) reports its own.
    frame.attrs["unreadable_by_split"] = by_split
    present = set(frame["split"]) if "split" in frame.columns else None
    frame.attrs["unreadable"] = sum(n for split, n in by_split.items() if present is None or split in present)
    return frame


def parse_threshold_rule(rule: str) -> tuple[str, float | None]:
    """Validate a threshold rule (``youden``, ``specificity:0.95``, ``sensitivity:0.9``) → (name, target)."""
    name, _, value = str(rule).strip().partition(":")
    if name == "youden" and not value:
        return name, None
    if name in ("specificity", "sensitivity") and value:
        try:
            target = float(value)
        except ValueError:
            target = float("nan")
        if 0.0 < target < 1.0:
            return name, target
    raise ConfigError(
        f"unknown threshold rule {rule!r}; use youden, specificity:0.95 or sensitivity:0.9 "
        "(targets strictly between 0 and 1)"
    )


def choose_threshold(frame: pd.DataFrame, rule: str = "youden") -> dict[str, Any]:
    """Pick an operating threshold on a validation table.

    ``rule``: ``youden`` (maximise sensitivity + specificity − 1), ``specificity:0.95`` (lowest threshold
    keeping that specificity; needs normals only) or ``sensitivity:0.9``. Returns ``{threshold, rule,
    n_valid}``. Choosing it on validation and applying it to test is what makes κ an honest estimate.
    """
    labelled = frame[frame["label"].notna()]
    labels, scores = labelled["label"].to_numpy(int), labelled["score"].to_numpy(float)
    name, target = parse_threshold_rule(rule)
    try:
        if target is None:
            threshold = metrics.youden_threshold(labels, scores)
        elif name == "specificity":
            threshold = metrics.threshold_at_specificity(labels, scores, target)
        else:
            threshold = metrics.threshold_at_sensitivity(labels, scores, target)
    except ValueError as exc:
        raise DataError(f"validation scores: cannot choose a threshold by {rule} ({exc})") from None
    return {"threshold": float(threshold), "rule": rule, "n_valid": int(len(labelled))}


def _block(
    labels: np.ndarray,
    scores: np.ndarray,
    weights: np.ndarray | None,
    *,
    specificities: tuple[float, ...],
    sensitivities: tuple[float, ...],
    threshold: float | None,
    confidence: float,
) -> dict[str, Any]:
    """Metrics of one table (a level or a body part) with intervals from the given resample weights."""
    n_abnormal = int((labels == 1).sum())
    out: dict[str, Any] = {
        "n": int(labels.size),
        "n_abnormal": n_abnormal,
        "prevalence": n_abnormal / labels.size if labels.size else None,
    }
    point = metrics.metric_suite(labels, scores, specificities=specificities, sensitivities=sensitivities)
    boot = (
        None
        if weights is None
        else metrics.metric_suite(labels, scores, weights, specificities=specificities, sensitivities=sensitivities)
    )
    for key, value in point.items():
        out[key] = summarise(value, None if boot is None else boot[key], confidence)
    if threshold is not None:
        point_t = metrics.confusion_at_threshold(labels, scores, threshold)
        boot_t = None if weights is None else metrics.confusion_at_threshold(labels, scores, threshold, weights)
        for key, value in point_t.items():
            out[f"{key}_at_threshold"] = summarise(value, None if boot_t is None else boot_t[key], confidence)
    return out


def _evaluate_table(table: pd.DataFrame, codes: np.ndarray, counts: np.ndarray | None, **kwargs: Any) -> dict[str, Any]:
    """Overall metrics of a level plus one block per body part (where a row has a single body part)."""
    labels, scores = table["label"].to_numpy(int), table["score"].to_numpy(float)
    weights = None if counts is None else row_weights(counts, codes)
    result = _block(labels, scores, weights, **kwargs)
    if "body_part" in table.columns:
        parts = table["body_part"].astype(str)
        per_part = {}
        for part in sorted(p for p in parts.unique() if p and "+" not in p):
            mask = (parts == part).to_numpy()
            per_part[part] = _block(labels[mask], scores[mask], None if weights is None else weights[:, mask], **kwargs)
        if len(per_part) > 1:
            result["by_body_part"] = per_part
    return result


def evaluate_scores(
    frame: pd.DataFrame,
    *,
    aggregations: tuple[str, ...] = ("mean", "max", "top2"),
    specificities: tuple[float, ...] = (0.9, 0.95),
    sensitivities: tuple[float, ...] = (0.9, 0.95),
    threshold: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """All metrics of a scores table as a nested, JSON-able dict.

    Levels: ``image``; ``study`` and ``patient`` (one entry per aggregation) where every row has that id
    (the study level is skipped when every study holds one image: it would repeat the image level).
    Each metric is ``{value, low, high, n_resamples}`` with a percentile interval over ``n_bootstrap``
    resamples of the top-level unit (``n_bootstrap=0`` gives point values only). ``threshold`` (chosen on
    validation, see :func:`choose_threshold`) adds κ, sensitivity and specificity at that threshold; study
    and patient scores are on the image-score scale, so the same threshold applies to them.
    """
    for name in aggregations:
        parse_aggregation(name)
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    frame = prepare_scores(frame)
    unreadable = int(frame.attrs.get("unreadable", 0))
    labelled = frame[frame["label"].notna()].reset_index(drop=True)
    if labelled.empty:
        raise DataError("scores: no labelled rows to evaluate (label is empty everywhere)")
    unit = bootstrap_unit(labelled)
    codes, n_units = unit_codes(labelled, unit)
    counts = resample_counts(n_units, n_bootstrap, seed) if n_bootstrap > 0 else None
    kwargs = dict(
        specificities=tuple(specificities),
        sensitivities=tuple(sensitivities),
        threshold=threshold,
        confidence=confidence,
    )
    result: dict[str, Any] = {
        "n_images": int(len(frame)),
        "n_labelled": int(len(labelled)),
        "bootstrap": {
            "unit": unit.replace("_id", ""),
            "n_units": int(n_units),
            "n_resamples": int(n_bootstrap),
            "seed": int(seed),
            "confidence": confidence,
            "interval": "percentile",
        },
        "threshold": threshold,
        "levels": {"image": _evaluate_table(labelled, codes, counts, **kwargs)},
    }
    if unreadable:  # said, not silent: the metrics are of the images that could be read
        result["n_unreadable"] = unreadable
        result.setdefault("notes", []).append(
            f"{unreadable} image(s) could not be read when scored (their `error` column) and are left out"
        )
    if "split" in labelled.columns:
        result["splits"] = sorted(s for s in labelled["split"].unique() if s)
    unit_lookup = (
        None if unit == "image" else pd.Series(codes, index=labelled[unit].astype(str)).groupby(level=0).first()
    )
    for level in available_levels(labelled):
        key = LEVEL_KEYS[level]
        if level == "study" and labelled[key].nunique() == len(labelled):
            result.setdefault("notes", []).append("every study holds one image: study level = image level")
            continue
        if unit_lookup is None:  # a level above the image has ids on every row, so the unit is one of them
            raise RuntimeError(f"evaluate_scores: level {level!r} available but the bootstrap unit is the image")
        per_aggregation = {}
        for how in aggregations:
            table = aggregate_scores(labelled, level, how)
            table = table[table["label"].notna()].reset_index(drop=True)
            column = key if unit == key else unit
            table_codes = unit_lookup.loc[table[column].astype(str)].to_numpy()
            per_aggregation[how] = _evaluate_table(table, table_codes, counts, **kwargs)
        result["levels"][level] = per_aggregation
    return result


_LABELS = {
    "auroc": "AUROC",
    "auprc_abnormal": "AUPRC (abnormal positive)",
    "auprc_normal": "AUPRC (normal positive)",
    "kappa_at_threshold": "Cohen's kappa at threshold",
    "sensitivity_at_threshold": "sensitivity at threshold",
    "specificity_at_threshold": "specificity at threshold",
}


def _metric_name(key: str) -> str:
    if key.startswith("sens@spec"):
        return f"sensitivity at specificity {key[9:]}"
    if key.startswith("spec@sens"):
        return f"specificity at sensitivity {key[9:]}"
    return _LABELS.get(key, key)


def format_cell(entry: dict[str, Any] | None, digits: int = 3) -> str:
    """``0.781 [0.752, 0.809]`` (or just the value when there is no interval; ``n/a`` when undefined)."""
    if not entry or entry.get("value") is None:
        return "n/a"
    text = f"{entry['value']:.{digits}f}"
    if "low" in entry and entry.get("low") is not None:
        text += f" [{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"
    return text


def _metric_rows(blocks: dict[str, dict[str, Any]]) -> list[list[str]]:
    first = next(iter(blocks.values()))
    rows = [
        ["n (abnormal)"] + [f"{b['n']} ({b['n_abnormal']})" for b in blocks.values()],
        ["prevalence (abnormal)"]
        + [f"{b['prevalence']:.3f}" if b["prevalence"] is not None else "n/a" for b in blocks.values()],
    ]
    for key in first:
        if isinstance(first[key], dict) and "value" in first[key]:
            rows.append([_metric_name(key)] + [format_cell(b.get(key)) for b in blocks.values()])
    return rows


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_table(result: dict[str, Any]) -> str:
    """A readable plain-text rendering of :func:`evaluate_scores`'s result (one section per level)."""
    boot = result["bootstrap"]
    lines = [
        f"{result['n_labelled']} labelled images of {result['n_images']}"
        + (f" (splits: {', '.join(result['splits'])})" if result.get("splits") else "")
    ]
    if boot["n_resamples"]:
        lines.append(
            f"intervals: {boot['confidence']:.0%} percentile bootstrap, {boot['n_resamples']} resamples "
            f"of {boot['n_units']} {boot['unit']} units (seed {boot['seed']})"
        )
    if result.get("threshold") is not None:
        lines.append(f"threshold: {result['threshold']:.6g} (score >= threshold is abnormal)")
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    levels = result["levels"]
    lines += ["", "IMAGE LEVEL", _render(["metric", "image"], _metric_rows({"image": levels["image"]}))]
    for level in ("study", "patient"):
        if level in levels:
            blocks = levels[level]
            lines += [
                "",
                f"{level.upper()} LEVEL (image scores aggregated per {level})",
                _render(["metric"] + list(blocks), _metric_rows(blocks)),
            ]
    for level, blocks in [("image", {"": levels["image"]})] + [
        (lv, levels[lv]) for lv in ("study", "patient") if lv in levels
    ]:
        # The JSON holds every aggregation; the table shows the first one per level to stay readable.
        for how, block in list(blocks.items())[:1]:
            parts = block.get("by_body_part")
            if not parts:
                continue
            title = f"PER BODY PART, {level} level" + (f" ({how})" if how else "")
            rows = [
                [
                    part,
                    f"{b['n']} ({b['n_abnormal']})",
                    f"{b['prevalence']:.3f}" if b["prevalence"] is not None else "n/a",
                    format_cell(b["auroc"]),
                    format_cell(b["auprc_abnormal"]),
                    format_cell(b["auprc_normal"]),
                ]
                for part, b in parts.items()
            ]
            lines += [
                "",
                title,
                _render(
                    ["body part", "n (abnormal)", "prevalence", "AUROC", "AUPRC abnormal+", "AUPRC normal+"],
                    rows,
                ),
            ]
    return "\n".join(lines) + "\n"
