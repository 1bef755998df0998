"""From image scores to study and patient scores, and the unit the bootstrap resamples.

A radiology study (MURA: one body part of one patient on one day, several views) is read as a whole, so
its score is an aggregate of its image scores: ``mean``, ``max`` or ``top<k>`` (the mean of the k highest
image scores; all of them when a study has fewer than k images). The patient score aggregates *all* the
patient's image scores the same way (not the study scores), so one patient with ten views weighs no more
than one with two. A study or patient is abnormal when any of its labelled images is abnormal (MURA labels
whole studies, so this is exact there) and unlabelled when none of its images is labelled.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from xrad.errors import ConfigError

_TOPK = re.compile(r"^top(\d+)$")
LEVEL_KEYS: dict[str, str] = {"study": "study_id", "patient": "patient_id"}
# The one study rule of calibration, scoring and the worklist when none is stored or given: a study with one
# abnormal view is an abnormal study (triage reads the worst image). `xrad calibrate` stores the rule it used
# with the operating point, and scoring and the worklist then use that stored rule.
DEFAULT_AGGREGATION = "max"


def parse_aggregation(name: str) -> tuple[str, int]:
    """Validate an aggregation name; returns ``(kind, k)`` with kind ``mean``, ``max`` or ``top``."""
    name = str(name).strip().lower()
    if name in ("mean", "max"):
        return name, 0
    match = _TOPK.match(name)
    if match and int(match.group(1)) >= 1:
        return "top", int(match.group(1))
    raise ConfigError(f"unknown aggregation {name!r}; use mean, max or topK (e.g. top2)")


def _has_ids(frame: pd.DataFrame, column: str) -> bool:
    if column not in frame.columns or len(frame) == 0:
        return False
    values = frame[column].fillna("").astype(str).str.strip()
    return bool((values != "").all())


def available_levels(frame: pd.DataFrame) -> list[str]:
    """Levels above the image that the table supports: every row needs a non-empty id for that level."""
    return [level for level, column in LEVEL_KEYS.items() if _has_ids(frame, column)]


def bootstrap_unit(frame: pd.DataFrame) -> str:
    """The top-level unit to resample: ``patient_id``, else ``study_id``, else ``image`` (one row each).

    Images of one patient are correlated; resampling patients keeps that correlation inside each resample,
    so intervals are not falsely narrow. FracAtlas has no patient ids: its intervals are per image and may
    be too narrow where neighbouring images come from one patient.
    """
    for column in ("patient_id", "study_id"):
        if _has_ids(frame, column):
            return column
    return "image"


def unit_codes(frame: pd.DataFrame, unit: str) -> tuple[np.ndarray, int]:
    """Integer code per row of the unit it belongs to, and the number of units."""
    if unit == "image":
        return np.arange(len(frame)), len(frame)
    codes, uniques = pd.factorize(frame[unit].astype(str), sort=True)
    return codes.astype(np.int64), len(uniques)


def _join_parts(values: pd.Series) -> str:
    parts = sorted({str(v) for v in values if str(v) not in ("", "nan")})
    return "+".join(parts)


def aggregate_scores(frame: pd.DataFrame, level: str, how: str = "mean") -> pd.DataFrame:
    """One row per study (``level="study"``) or patient (``level="patient"``) with the aggregated score.

    Columns: the id column (``study_id`` / ``patient_id``), ``score``, ``label`` (float: 1, 0 or NaN),
    ``n_images``, ``body_part`` (several parts joined with ``+``) and ``patient_id`` when present (so the
    bootstrap can resample patients at study level). Rows are sorted by id.
    """
    if level not in LEVEL_KEYS:
        raise ConfigError(f"unknown level {level!r}; use one of {', '.join(LEVEL_KEYS)}")
    key = LEVEL_KEYS[level]
    kind, k = parse_aggregation(how)
    data = frame.copy()
    data["_score"] = pd.to_numeric(data["score"], errors="coerce").astype(float)
    data["_label"] = pd.to_numeric(data["label"], errors="coerce").astype(float) if "label" in data else np.nan
    groups = data.groupby(key, sort=True)
    if kind == "mean":
        score = groups["_score"].mean()
    elif kind == "max":
        score = groups["_score"].max()
    else:
        # Rank within each group from the highest score; keep the k best and average them.
        ranked = data.sort_values([key, "_score"], ascending=[True, False], kind="mergesort")
        top = ranked[ranked.groupby(key, sort=False).cumcount() < k]
        score = top.groupby(key, sort=True)["_score"].mean()
    out = pd.DataFrame({key: score.index.astype(str), "score": score.to_numpy(dtype=float)})
    out["label"] = groups["_label"].max().to_numpy()  # NaN only when no image of the group is labelled
    out["n_images"] = groups.size().to_numpy()
    if "body_part" in data.columns:
        out["body_part"] = groups["body_part"].agg(_join_parts).to_numpy()
    if level == "study" and "patient_id" in data.columns:
        out["patient_id"] = groups["patient_id"].first().astype(str).to_numpy()
    return out.reset_index(drop=True)
