"""Operating points: a threshold chosen on validation data, with the interval it was estimated with.

A detector's score has no natural cut-off, so a threshold is chosen on validation data only and stored
with the artefact (``artefact.json`` → ``operating_point``); scoring then reports ``flagged``
(``score >= threshold``) per image and per study.

Targets:

- ``specificity`` (e.g. 0.95): the lowest threshold that leaves at least that fraction of the validation
  *normals* unflagged. Needs normal images only, so it works when validation has no known anomaly —
  the case in which anomalib's F1-adaptive threshold returns the minimum score and flags everything
  (field guide §2.3). With no normals at all we refuse rather than guess.
- ``sensitivity`` (e.g. 0.9): the highest threshold that flags at least that fraction of the validation
  *anomalies*; refused when validation has none.

Interval: the achieved proportion on validation is ``k`` of ``n`` (normals below the threshold, or
anomalies at/above it). We report the exact Clopper–Pearson interval for the true proportion at that
threshold. Why it is valid although the threshold is data-dependent: the threshold is an order statistic of
the ``n`` scores, and for continuous scores the true specificity at the ``(k+1)``-th smallest normal score is
Beta(k+1, n−k) distributed — the Clopper–Pearson upper limit for ``k`` of ``n`` is exactly that
distribution's upper quantile and its lower limit lies below the lower one, so the interval covers the
true value with at least the stated confidence (checked by simulation in ``tests/test_calibration.py``).

Study level: when the validation rows carry ``study_id``, the same target is calibrated separately on
study scores (aggregated as in evaluation), because an image threshold applied to study means or maxima
would not keep its specificity.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xrad.errors import DataError
from xrad.evaluation.aggregate import DEFAULT_AGGREGATION
from xrad.evaluation.metrics import threshold_at_sensitivity, threshold_at_specificity

METHOD = "clopper-pearson"


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided ``confidence`` interval for a binomial proportion with ``k`` successes of ``n``."""
    from scipy.stats import beta

    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0 (got k={k}, n={n})")
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def _target(specificity: float | None, sensitivity: float | None) -> tuple[str, float]:
    if specificity is not None and sensitivity is None:
        name, value = "specificity", specificity
    elif sensitivity is not None and specificity is None:
        name, value = "sensitivity", sensitivity
    else:
        raise DataError("choose exactly one target: --specificity (normals only) or --sensitivity (needs anomalies)")
    if not 0.0 < float(value) < 1.0:
        raise DataError(f"--{name} must be between 0 and 1 (exclusive), got {value}")
    return name, float(value)


def threshold_for(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    specificity: float | None = None,
    sensitivity: float | None = None,
    confidence: float = 0.95,
    where: str = "validation scores",
) -> dict[str, Any]:
    """Threshold at a target specificity or sensitivity with its achieved value and exact interval.

    ``labels`` are 0 (normal), 1 (abnormal) or NaN (unlabelled; ignored). Returns ``{threshold, target,
    achieved, interval: [low, high], confidence, n, k, n_normal, n_abnormal, method, rates}``; ``rates`` holds
    ``specificity`` and ``sensitivity`` at the threshold (``{value, interval, k, n}``, each where validation has
    normals / anomalies); ``flagged`` means ``score >= threshold``.
    """
    name, value = _target(specificity, sensitivity)
    labels = np.asarray(labels, dtype=float)
    scores = np.asarray(scores, dtype=float)
    keep = np.isfinite(labels) & np.isfinite(scores)
    labels, scores = labels[keep].astype(int), scores[keep]
    n_normal, n_abnormal = int((labels == 0).sum()), int((labels == 1).sum())
    if name == "specificity":
        if n_normal == 0:
            raise DataError(
                f"{where}: no labelled normal image, so no threshold at a fixed specificity can be "
                "chosen; calibrate on a split with normals (label 0)"
            )
        threshold = threshold_at_specificity(labels, scores, value)
        k, n = int((scores[labels == 0] < threshold).sum()), n_normal
    else:
        if n_abnormal == 0:
            raise DataError(
                f"{where}: no labelled anomaly, so no threshold at a fixed sensitivity can be chosen; "
                "use --specificity, which needs normals only"
            )
        threshold = threshold_at_sensitivity(labels, scores, value)
        k, n = int((scores[labels == 1] >= threshold).sum()), n_abnormal
    low, high = clopper_pearson(k, n, confidence)
    # Both rates at this threshold, each with its exact interval, as far as validation has normals and
    # anomalies: a reader needs the sensitivity a specificity target buys, not only the target.
    rates: dict[str, dict[str, Any]] = {}
    for rate, hits, total in (
        ("specificity", int((scores[labels == 0] < threshold).sum()), n_normal),
        ("sensitivity", int((scores[labels == 1] >= threshold).sum()), n_abnormal),
    ):
        if total:
            rates[rate] = {
                "value": hits / total,
                "interval": list(clopper_pearson(hits, total, confidence)),
                "k": hits,
                "n": total,
            }
    return {
        "threshold": float(threshold),
        "rates": rates,
        "target": {name: value},
        "achieved": k / n,
        "interval": [low, high],
        "confidence": confidence,
        "n": n,
        "k": k,
        "n_normal": n_normal,
        "n_abnormal": n_abnormal,
        "method": METHOD,
    }


def calibrate(
    frame: pd.DataFrame,
    *,
    specificity: float | None = None,
    sensitivity: float | None = None,
    confidence: float = 0.95,
    aggregation: str = DEFAULT_AGGREGATION,
    where: str = "validation scores",
) -> dict[str, Any]:
    """The operating point of a validation scores table (``score``, ``label``; ``study_id`` optional).

    Returns the image-level entry of :func:`threshold_for` plus ``level``, ``date`` and, when every row has
    a ``study_id``, a ``study`` entry calibrated on study scores aggregated with ``aggregation``.
    """
    from xrad.evaluation.aggregate import aggregate_scores, available_levels
    from xrad.evaluation.evaluate import prepare_scores

    frame = prepare_scores(frame, where=where)
    point = threshold_for(
        frame["label"].to_numpy(),
        frame["score"].to_numpy(),
        specificity=specificity,
        sensitivity=sensitivity,
        confidence=confidence,
        where=where,
    )
    point.update(
        level="image", aggregation=aggregation, date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    if "study" in available_levels(frame):
        studies = aggregate_scores(frame, "study", aggregation)
        try:
            study = threshold_for(
                studies["label"].to_numpy(),
                studies["score"].to_numpy(),
                specificity=specificity,
                sensitivity=sensitivity,
                confidence=confidence,
                where=f"{where} (studies)",
            )
        except DataError:
            study = None  # e.g. unlabelled studies only: image level still stands
        if study is not None:
            study["aggregation"] = aggregation
            point["study"] = study
    return point


def flag(scores: np.ndarray | pd.Series, point: dict[str, Any] | None, level: str = "image") -> np.ndarray | None:
    """``score >= threshold`` of the operating point's ``level`` (``image``/``study``); None when absent."""
    if not point:
        return None
    entry = point if level == "image" else point.get("study")
    if not entry:
        return None
    return np.asarray(scores, dtype=float) >= float(entry["threshold"])


def stored_aggregation(point: dict[str, Any] | None) -> str:
    """The study aggregation the operating point was calibrated with, else the default rule
    (:data:`xrad.evaluation.aggregate.DEFAULT_AGGREGATION`): what scoring and the worklist use unless told."""
    study = (point or {}).get("study") or {}
    return str(study.get("aggregation") or (point or {}).get("aggregation") or DEFAULT_AGGREGATION)


def study_threshold(point: dict[str, Any] | None, aggregation: str) -> tuple[float | None, str]:
    """The study-level threshold of ``point`` when it was calibrated with ``aggregation`` (else None), and a
    line describing it. An image threshold is never reused for study scores: it would not keep its target."""
    if not point or not point.get("study"):
        return None, ""
    study = point["study"]
    if str(study.get("aggregation", "")).lower() != str(aggregation).lower():
        return None, ""
    return float(study["threshold"]), describe(study)


def level_tables(
    frame: pd.DataFrame, point: dict[str, Any] | None, aggregation: str = "mean"
) -> dict[str, pd.DataFrame]:
    """Study and patient tables of an image scores table (levels its ids support), with ``flagged``.

    Rows without a finite score (unreadable images) are left out. A study is flagged at the study threshold
    of ``point`` (when calibrated with the same ``aggregation``); a patient is flagged when any of their
    studies is. Without a usable operating point there is no ``flagged`` column.
    """
    from xrad.evaluation.aggregate import aggregate_scores, available_levels

    scores = pd.to_numeric(frame["score"], errors="coerce")
    usable = frame[np.isfinite(scores.to_numpy(dtype=float))]
    tables: dict[str, pd.DataFrame] = {}
    levels = available_levels(usable)
    threshold, _ = study_threshold(point, aggregation)
    if "study" in levels:
        studies = aggregate_scores(usable, "study", aggregation)
        if threshold is not None:
            studies["flagged"] = studies["score"] >= threshold
        tables["study"] = studies
    if "patient" in levels:
        patients = aggregate_scores(usable, "patient", aggregation)
        studies = tables.get("study")
        if studies is not None and "flagged" in studies and "patient_id" in studies:
            patients["flagged"] = patients["patient_id"].isin(studies.loc[studies["flagged"], "patient_id"])
        tables["patient"] = patients
    return tables


def store_operating_point(artefact_dir: str | Path, point: dict[str, Any]) -> Path:
    """Write ``point`` into the artefact's ``artefact.json`` (atomically; the weights are untouched)."""
    from xrad.inference.artefact import update_artefact_meta

    return update_artefact_meta(artefact_dir, operating_point=point)


def describe(point: dict[str, Any]) -> str:
    """One human line, e.g. ``threshold 1.234 at specificity 0.95: achieved 0.951 [0.93, 0.97] on 400 normals``."""
    ((name, value),) = point["target"].items()
    low, high = point["interval"]
    unit = "normals" if name == "specificity" else "anomalies"
    pct = round(100 * point.get("confidence", 0.95))
    text = (
        f"threshold {point['threshold']:.6g} at {name} {value:g}: achieved {point['achieved']:.3f} "
        f"({pct}% CI {low:.3f}–{high:.3f}) on {point['n']} validation {unit}"
    )
    other = "sensitivity" if name == "specificity" else "specificity"
    entry = (point.get("rates") or {}).get(other)
    if entry:
        o_low, o_high = entry["interval"]
        text += f"; {other} {entry['value']:.3f} ({pct}% CI {o_low:.3f}–{o_high:.3f}) on {entry['n']}"
    elif "rates" in point:
        text += f"; {other} not measured (no validation {'anomalies' if other == 'sensitivity' else 'normals'})"
    return text
