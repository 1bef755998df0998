"""Detection metrics on anomaly scores, written once for plain and for bootstrap-weighted data.

Every metric takes ``labels`` (1 = abnormal, 0 = normal), ``scores`` (higher = more abnormal) and an
optional ``weights`` matrix of shape ``(B, n)``: row ``b`` gives the multiplicity of each image in
bootstrap resample ``b``. Without weights the result is a float; with weights it is an array of ``B``
values, one per resample. Integer weights are exactly equivalent to repeating the rows, so the same code
gives both the point estimate and the bootstrap distribution (and is tested against scikit-learn on
both). The work per resample is a pass over the sorted scores: no Python loop over resamples.

Conventions (scikit-learn's): an image is predicted abnormal when ``score >= threshold``; tied scores
form one operating point; AUPRC is average precision (step-wise, no interpolation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

import numpy as np

# Resamples are processed in blocks so that memory stays at a few tens of MB for ~5,000 images.
_BLOCK = 128


def _as_arrays(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64).ravel()  # float: NaN marks an unlabelled row
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels ({labels.size}) and scores ({scores.size}) differ in length")
    return labels, scores


def _level_sums(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None, descending: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positive and negative weight per distinct score level, levels ordered from the highest score.

    Returns ``(pos (B, k), neg (B, k), level_scores (k,))``; ``B`` is 1 when ``weights`` is None.
    """
    if scores.size == 0:  # nothing scored (e.g. an empty validation split): every metric is then undefined (NaN)
        rows = 1 if weights is None else np.atleast_2d(weights).shape[0]
        return np.zeros((rows, 0)), np.zeros((rows, 0)), scores[:0]
    order = np.argsort(-scores if descending else scores, kind="mergesort")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    is_pos = labels[order] == 1
    w = np.ones((1, labels.size)) if weights is None else np.asarray(weights, dtype=np.float64)[:, order]
    pos = np.add.reduceat(np.where(is_pos, w, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(is_pos, 0.0, w), starts, axis=1)
    return pos, neg, sorted_scores[starts]


# A per-level metric: ``fn(pos, neg, levels, **kwargs) -> (B,)``.
_Core = Callable[..., np.ndarray]


@overload
def _blocked(fn: _Core, labels: np.ndarray, scores: np.ndarray, weights: None, **kwargs: Any) -> float: ...
@overload
def _blocked(fn: _Core, labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, **kwargs: Any) -> np.ndarray: ...
def _blocked(
    fn: _Core, labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None, **kwargs: Any
) -> float | np.ndarray:
    """Apply ``fn(pos, neg, levels, **kwargs) -> (B,)`` in blocks of resamples; unwrap when unweighted."""
    labels, scores = _as_arrays(labels, scores)
    # Rows without a 0/1 label (unlabelled: -1 or NaN) or without a finite score say nothing about ranking.
    keep = ((labels == 0) | (labels == 1)) & np.isfinite(scores)
    if not keep.all():
        labels, scores = labels[keep], scores[keep]
        weights = None if weights is None else np.atleast_2d(weights)[:, keep]
    if weights is None:
        return float(fn(*_level_sums(labels, scores, None), **kwargs)[0])
    weights = np.atleast_2d(weights)
    out = [
        fn(*_level_sums(labels, scores, weights[i : i + _BLOCK]), **kwargs) for i in range(0, weights.shape[0], _BLOCK)
    ]
    return np.concatenate(out) if out else np.empty(0)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    quotient: np.ndarray = np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)
    return quotient


def _auroc_core(pos: np.ndarray, neg: np.ndarray, _levels: np.ndarray) -> np.ndarray:
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    # Negatives strictly below each level (levels run from the highest score down); ties count one half.
    below = n_neg[:, None] - np.cumsum(neg, axis=1)
    return _safe_div((pos * (below + 0.5 * neg)).sum(axis=1), n_pos * n_neg)


def _ap_core(pos: np.ndarray, neg: np.ndarray, _levels: np.ndarray) -> np.ndarray:
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    precision = np.nan_to_num(_safe_div(tp, tp + fp))  # a level with no weight adds nothing anyway
    ap = _safe_div((pos * precision).sum(axis=1), pos.sum(axis=1))
    # Without any negative, AP is trivially 1 (scikit-learn's value): undefined here, like AUROC.
    return np.where(neg.sum(axis=1) > 0, ap, np.nan)


def _roc_points(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TPR and FPR at every operating point, starting with the point (0, 0) (nothing predicted abnormal)."""
    zeros = np.zeros((pos.shape[0], 1))
    tpr = _safe_div(np.hstack([zeros, np.cumsum(pos, axis=1)]), pos.sum(axis=1, keepdims=True))
    fpr = _safe_div(np.hstack([zeros, np.cumsum(neg, axis=1)]), neg.sum(axis=1, keepdims=True))
    return tpr, fpr


def _sens_at_spec_core(pos: np.ndarray, neg: np.ndarray, _levels: np.ndarray, specificity: float) -> np.ndarray:
    tpr, fpr = _roc_points(pos, neg)
    ok = fpr <= (1.0 - specificity) + 1e-12
    out = np.where(ok, tpr, -np.inf).max(axis=1)
    return np.where(np.isnan(tpr).any(axis=1) | np.isnan(fpr).any(axis=1), np.nan, out)


def _spec_at_sens_core(pos: np.ndarray, neg: np.ndarray, _levels: np.ndarray, sensitivity: float) -> np.ndarray:
    tpr, fpr = _roc_points(pos, neg)
    ok = tpr >= sensitivity - 1e-12
    out = np.where(ok, 1.0 - fpr, -np.inf).max(axis=1)
    return np.where(np.isnan(tpr).any(axis=1) | np.isnan(fpr).any(axis=1), np.nan, out)


@overload
def auroc(labels: np.ndarray, scores: np.ndarray, weights: None = None) -> float: ...
@overload
def auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray: ...
def auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float | np.ndarray:
    """Area under the ROC curve with abnormal (1) as the positive class; NaN without both classes."""
    return _blocked(_auroc_core, labels, scores, weights)


@overload
def average_precision(labels: np.ndarray, scores: np.ndarray, weights: None = None, positive: int = 1) -> float: ...
@overload
def average_precision(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, positive: int = 1) -> np.ndarray: ...
def average_precision(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None, positive: int = 1
) -> float | np.ndarray:
    """AUPRC as average precision. ``positive=0`` treats normal as the positive class (low score first).

    NaN when either class is absent (scikit-learn returns 1.0 without negatives, which reads as perfect).

    Report it next to the prevalence of the positive class: with ~75 % abnormal test sets (the papers'),
    abnormal-positive AUPRC is high even for a useless detector.
    """
    labels, scores = _as_arrays(labels, scores)
    if positive == 0:
        labels, scores = 1 - labels, -scores
    return _blocked(_ap_core, labels, scores, weights)


@overload
def sensitivity_at_specificity(
    labels: np.ndarray, scores: np.ndarray, specificity: float, weights: None = None
) -> float: ...
@overload
def sensitivity_at_specificity(
    labels: np.ndarray, scores: np.ndarray, specificity: float, weights: np.ndarray
) -> np.ndarray: ...
def sensitivity_at_specificity(
    labels: np.ndarray, scores: np.ndarray, specificity: float, weights: np.ndarray | None = None
) -> float | np.ndarray:
    """Largest sensitivity (TPR) among operating points whose specificity is at least ``specificity``."""
    return _blocked(_sens_at_spec_core, labels, scores, weights, specificity=specificity)


@overload
def specificity_at_sensitivity(
    labels: np.ndarray, scores: np.ndarray, sensitivity: float, weights: None = None
) -> float: ...
@overload
def specificity_at_sensitivity(
    labels: np.ndarray, scores: np.ndarray, sensitivity: float, weights: np.ndarray
) -> np.ndarray: ...
def specificity_at_sensitivity(
    labels: np.ndarray, scores: np.ndarray, sensitivity: float, weights: np.ndarray | None = None
) -> float | np.ndarray:
    """Largest specificity (1 − FPR) among operating points whose sensitivity is at least ``sensitivity``."""
    return _blocked(_spec_at_sens_core, labels, scores, weights, sensitivity=sensitivity)


@overload
def confusion_at_threshold(
    labels: np.ndarray, scores: np.ndarray, threshold: float, weights: None = None
) -> dict[str, float]: ...
@overload
def confusion_at_threshold(
    labels: np.ndarray, scores: np.ndarray, threshold: float, weights: np.ndarray
) -> dict[str, np.ndarray]: ...
def confusion_at_threshold(
    labels: np.ndarray, scores: np.ndarray, threshold: float, weights: np.ndarray | None = None
) -> dict[str, float] | dict[str, np.ndarray]:
    """Cohen's κ, sensitivity and specificity when ``score >= threshold`` is called abnormal."""
    labels, scores = _as_arrays(labels, scores)
    w = np.ones((1, labels.size)) if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))
    pred, pos = scores >= threshold, labels == 1
    tp = w[:, pred & pos].sum(axis=1)
    fn = w[:, ~pred & pos].sum(axis=1)
    fp = w[:, pred & ~pos].sum(axis=1)
    tn = w[:, ~pred & ~pos].sum(axis=1)
    total = tp + fn + fp + tn
    observed = _safe_div(tp + tn, total)
    expected = _safe_div((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn), total * total)
    out = {
        "kappa": _safe_div(observed - expected, 1.0 - expected),
        "sensitivity": _safe_div(tp, tp + fn),
        "specificity": _safe_div(tn, tn + fp),
    }
    return {k: float(v[0]) for k, v in out.items()} if weights is None else out


@overload
def cohen_kappa(labels: np.ndarray, scores: np.ndarray, threshold: float, weights: None = None) -> float: ...
@overload
def cohen_kappa(labels: np.ndarray, scores: np.ndarray, threshold: float, weights: np.ndarray) -> np.ndarray: ...
def cohen_kappa(
    labels: np.ndarray, scores: np.ndarray, threshold: float, weights: np.ndarray | None = None
) -> float | np.ndarray:
    """Cohen's κ between the labels and the prediction ``score >= threshold``."""
    return confusion_at_threshold(labels, scores, threshold, weights)["kappa"]


def roc_curve_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` at every distinct score, starting at (0, 0) with threshold +inf."""
    labels, scores = _as_arrays(labels, scores)
    pos, neg, levels = _level_sums(labels, scores, None)
    tpr, fpr = _roc_points(pos, neg)
    return fpr[0], tpr[0], np.r_[np.inf, levels]


def pr_curve_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(recall, precision)`` at every distinct score (abnormal positive), highest threshold first."""
    labels, scores = _as_arrays(labels, scores)
    pos, neg, _ = _level_sums(labels, scores, None)
    tp, fp = np.cumsum(pos[0]), np.cumsum(neg[0])
    return _safe_div(tp, pos.sum()), _safe_div(tp, tp + fp)


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold maximising Youden's J = sensitivity + specificity − 1 (the highest one on ties)."""
    fpr, tpr, thresholds = roc_curve_points(labels, scores)
    if np.isnan(tpr).any() or np.isnan(fpr).any():
        raise ValueError("Youden's J needs both normal and abnormal labelled images")
    return float(thresholds[1:][int(np.argmax((tpr - fpr)[1:]))])


def threshold_at_specificity(labels: np.ndarray, scores: np.ndarray, specificity: float) -> float:
    """The lowest threshold whose specificity on the normal images is at least ``specificity``.

    Needs normal images only, so it works on a validation set without any known anomaly.
    """
    labels, scores = _as_arrays(labels, scores)
    normals = np.sort(scores[labels == 0])[::-1]
    if normals.size == 0:
        raise ValueError("a threshold at fixed specificity needs labelled normal images")
    allowed = np.floor((1.0 - specificity) * normals.size + 1e-9)
    # Candidate thresholds: every distinct normal score (predicting >= it flags all normals at or above).
    levels, counts = np.unique(normals, return_counts=True)
    levels, flagged = levels[::-1], np.cumsum(counts[::-1])
    ok = flagged <= allowed
    if not ok.any():
        return float(np.nextafter(normals[0], np.inf))
    return float(levels[np.flatnonzero(ok)[-1]])


def threshold_at_sensitivity(labels: np.ndarray, scores: np.ndarray, sensitivity: float) -> float:
    """The highest threshold whose sensitivity on the abnormal images is at least ``sensitivity``."""
    labels, scores = _as_arrays(labels, scores)
    abnormal = np.sort(scores[labels == 1])[::-1]
    if abnormal.size == 0:
        raise ValueError("a threshold at fixed sensitivity needs labelled abnormal images")
    needed = int(np.ceil(sensitivity * abnormal.size - 1e-9))
    return float(abnormal[max(needed, 1) - 1])


@overload
def metric_suite(
    labels: np.ndarray,
    scores: np.ndarray,
    weights: None = None,
    *,
    specificities: tuple[float, ...] = ...,
    sensitivities: tuple[float, ...] = ...,
) -> dict[str, float]: ...
@overload
def metric_suite(
    labels: np.ndarray,
    scores: np.ndarray,
    weights: np.ndarray,
    *,
    specificities: tuple[float, ...] = ...,
    sensitivities: tuple[float, ...] = ...,
) -> dict[str, np.ndarray]: ...
def metric_suite(
    labels: np.ndarray,
    scores: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    specificities: tuple[float, ...] = (0.9, 0.95),
    sensitivities: tuple[float, ...] = (0.9, 0.95),
) -> dict[str, float] | dict[str, np.ndarray]:
    """All threshold-free metrics from one sort of the scores (what the bootstrap calls per resample block).

    Keys: ``auroc``, ``auprc_abnormal``, ``auprc_normal``, ``sens@spec<t>`` and ``spec@sens<t>``.
    Normal-positive AUPRC reuses the same levels read from the lowest score up (positives and negatives
    swap roles), so it costs no second sort.
    """
    labels, scores = _as_arrays(labels, scores)
    weights_2d = None if weights is None else np.atleast_2d(weights)
    n_rows = 1 if weights_2d is None else weights_2d.shape[0]
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_rows, _BLOCK):
        block = None if weights_2d is None else weights_2d[start : start + _BLOCK]
        pos, neg, levels = _level_sums(labels, scores, block)
        values = {
            "auroc": _auroc_core(pos, neg, levels),
            "auprc_abnormal": _ap_core(pos, neg, levels),
            "auprc_normal": _ap_core(neg[:, ::-1], pos[:, ::-1], levels[::-1]),
        }
        for t in specificities:
            values[f"sens@spec{t:g}"] = _sens_at_spec_core(pos, neg, levels, specificity=t)
        for t in sensitivities:
            values[f"spec@sens{t:g}"] = _spec_at_sens_core(pos, neg, levels, sensitivity=t)
        for key, value in values.items():
            parts.setdefault(key, []).append(value)
    out = {key: np.concatenate(value) for key, value in parts.items()}
    return {key: float(value[0]) for key, value in out.items()} if weights is None else out
