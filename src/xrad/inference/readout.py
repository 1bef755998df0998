"""Scores a person can read: the raw score with its percentile among the validation normals and the flag at the
stored operating point, with what that operating point achieved on validation.

A raw score is a distance with no natural scale (1.07 on one detector, 14.49 on another). Training therefore
stores the validation normals' scores in the artefact (``normal_reference``: the sorted scores, or
:data:`MAX_REFERENCE_VALUES` quantiles of them when there are more), and every score is reported with its
*percentile*: the percentage of validation normals scoring at or below it (99 means "higher than 99 % of the
normal images this detector was checked on"). Artefacts written before the reference existed still load;
their percentile is NaN and the text says "unavailable".

:func:`score_images` is what ``xrad score`` and :meth:`xrad.Detector.score` both call, so the CSV and the
Python table have the same columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xrad.data.model_input import input_statistics, squared_distances
from xrad.inference.artefact import ArtefactMeta, meta_of
from xrad.utils.notice import PHANTOM_TRAINED

__all__ = [
    "MAX_REFERENCE_VALUES",
    "annotate",
    "input_statistics",
    "appearance_reference",
    "input_warnings",
    "is_phantom_path",
    "statistics_reference",
    "normal_reference",
    "operating_point_text",
    "percentiles",
    "readout_line",
    "score_images",
]

MAX_REFERENCE_VALUES = 1001  # above this many normals, their quantiles at 0, 0.1, ..., 100 % are stored


def normal_reference(labels: Any, scores: Any, split: str = "valid") -> dict[str, Any] | None:
    """The ``normal_reference`` record of a split's labels and scores (normals: label 0; finite scores only);
    None when the split has no normal image."""
    labels = pd.to_numeric(pd.Series(np.asarray(labels)), errors="coerce").to_numpy(dtype=float)
    scores = np.asarray(scores, dtype=float)
    normals = np.sort(scores[(labels == 0) & np.isfinite(scores)])
    if len(normals) == 0:
        return None
    values = normals
    if len(normals) > MAX_REFERENCE_VALUES:
        values = np.quantile(normals, np.linspace(0.0, 1.0, MAX_REFERENCE_VALUES))
    return {
        "split": split,
        "n_normals": int(len(normals)),
        "quantiles": bool(len(normals) > MAX_REFERENCE_VALUES),
        "scores": [float(v) for v in values],
    }


PHANTOM_MARK = "synth_config.json"  # written by xrad synth at the root of every phantom folder
STAT_QUANTILES = (0.005, 0.995)  # the training range of an input statistic; outside it (by a margin) = warning
STAT_MARGIN = 0.1  # of the range's width, on each side ...
# ... and at least this much (of the [0, 1] intensity scale): a homogeneous training set has a very narrow range,
# and an input scored without the training cache's body mask (an upload) shifts its statistics a little.
STAT_FLOOR = 0.05


def is_phantom_path(path: str | Path) -> bool:
    """Whether an image lies in a phantom folder made by ``xrad synth`` (a parent holds its config file)."""
    return any((parent / PHANTOM_MARK).is_file() for parent in list(Path(str(path)).parents)[:8])


def statistics_reference(stats: np.ndarray) -> dict[str, list[float]]:
    """The training range of each input statistic: its :data:`STAT_QUANTILES` over the training images."""
    low, high = np.quantile(np.asarray(stats, dtype=float), STAT_QUANTILES, axis=0)
    return {"mean": [float(low[0]), float(high[0])], "std": [float(low[1]), float(high[1])]}


APPEARANCE_STORED = 100  # training images whose appearance (xrad.data.model_input.input_appearance) is stored
APPEARANCE_QUANTILE = 0.99  # of the training images' distances to the nearest other stored one ...
APPEARANCE_MARGIN = 1.5  # ... times this: farther from every stored image = "looks unlike the training data"


def appearance_reference(appearance: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The ``normal_reference.appearance`` record: up to :data:`APPEARANCE_STORED` training descriptors
    (rounded to 1e-4) and the distance above which an input looks unlike all of them — the
    :data:`APPEARANCE_QUANTILE` of the training images' own nearest-neighbour distances to the stored ones
    (themselves excluded) times :data:`APPEARANCE_MARGIN`."""
    appearance = np.asarray(appearance, dtype=np.float32)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(appearance))[:APPEARANCE_STORED])
    stored = np.round(appearance[keep], 4)
    d2 = squared_distances(appearance, stored)
    d2[keep, np.arange(len(keep))] = np.inf  # a stored image is not its own neighbour
    nearest = np.sqrt(d2.min(axis=1)) if len(keep) > 1 else np.zeros(len(appearance))
    nearest = nearest[np.isfinite(nearest)]
    limit = float(np.quantile(nearest, APPEARANCE_QUANTILE)) * APPEARANCE_MARGIN if len(nearest) else 0.0
    return {"side": int(round(np.sqrt(appearance.shape[1]))), "normals": stored.tolist(), "threshold": limit}


def input_warnings(
    meta: ArtefactMeta,
    *,
    body_part: str = "",
    mean: float = np.nan,
    std: float = np.nan,
    phantom: bool = False,
    appearance: float = np.nan,
) -> list[str]:
    """Why an input may be out of the detector's distribution (its score then means even less):

    - the detector was trained on generated phantoms only and the input is not one (``phantom``);
    - the input's body part is not one of the training images' (``training_data.train_body_parts``);
    - its mean or contrast inside the body mask is outside the training range (``normal_reference.statistics``,
      widened by :data:`STAT_MARGIN` of its width, at least :data:`STAT_FLOOR`), e.g. an inverted, over-exposed
      or non-radiograph image;
    - its appearance (:func:`~xrad.data.model_input.input_appearance`) is farther from every stored training
      image than ``normal_reference.appearance.threshold`` (``appearance``: that distance), e.g. another view,
      another anatomy or a photograph.
    """
    out: list[str] = []
    training = meta.training_data or {}
    if training.get("phantoms") and not phantom:
        out.append(PHANTOM_TRAINED)
    parts = training.get("train_body_parts") or {}
    if body_part and parts and str(body_part).upper() not in {str(k).upper() for k in parts}:
        out.append(f"body part {body_part} was not in training ({', '.join(sorted(parts))})")
    ranges = (meta.normal_reference or {}).get("statistics") or {}
    for name, value in (("mean", mean), ("std", std)):
        if name in ranges and np.isfinite(value):
            low, high = ranges[name]
            margin = max(STAT_MARGIN * (high - low), STAT_FLOOR)
            if not low - margin <= value <= high + margin:
                what = "brightness" if name == "mean" else "contrast"
                out.append(f"image {what} {value:.2f} is outside the training range {low:.2f}–{high:.2f}")
    limit = ((meta.normal_reference or {}).get("appearance") or {}).get("threshold")
    if isinstance(limit, (int, float)) and limit > 0 and np.isfinite(appearance) and appearance > limit:
        out.append(
            f"image looks unlike every training image (appearance distance {appearance:.2f}, "
            f"training images within {limit:.2f})"
        )
    return out


def percentiles(scores: Any, reference: dict[str, Any] | None) -> np.ndarray:
    """Percentage of the reference normals scoring at or below each score (NaN without a reference or for a
    non-finite score). With stored quantiles the value is exact to 0.1 percentage point."""
    scores = np.asarray(scores, dtype=float)
    out = np.full(scores.shape, np.nan)
    values = np.asarray((reference or {}).get("scores") or [], dtype=float)
    if len(values) == 0:
        return out
    ok = np.isfinite(scores)
    out[ok] = 100.0 * np.searchsorted(values, scores[ok], side="right") / len(values)
    return out


def annotate(scored: pd.DataFrame, meta: ArtefactMeta) -> pd.DataFrame:
    """Add ``percentile`` (NaN when the artefact has no reference), ``warnings`` (:func:`input_warnings`, "; "
    joined, "" for none) and, with an operating point, ``flagged``
    (``score >= threshold``; False for unreadable rows) to a table of :func:`~xrad.inference.scoring.score_frame`."""
    from xrad.inference.calibration import flag

    out = scored.copy()
    out["percentile"] = percentiles(out["score"], meta.normal_reference)
    warnings = []
    for _, row in out.iterrows():
        if str(row.get("error", "") or ""):
            warnings.append("")
            continue
        found = input_warnings(
            meta,
            body_part=str(row.get("body_part", "") or "").strip() if "body_part" in out else "",
            mean=float(row.get("input_mean", np.nan)),
            std=float(row.get("input_std", np.nan)),
            phantom=is_phantom_path(row["path"]) if "path" in out else False,
            appearance=float(row.get("input_appearance", np.nan)),
        )
        warnings.append("; ".join(found))
    out["warnings"] = warnings
    flags = flag(out["score"], meta.operating_point)
    if flags is not None:
        out["flagged"] = flags
    return out


def score_images(scorer: Any, frame: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """:func:`~xrad.inference.scoring.score_frame` (``options`` passed on), then :func:`annotate`."""
    from xrad.inference.scoring import score_frame

    return annotate(score_frame(scorer, frame, **options), meta_of(scorer))


def _rate(name: str, entry: dict[str, Any] | None) -> str:
    if not entry:
        return ""
    low, high = entry["interval"]
    return f"{name} {entry['value']:.2f} ({low:.2f}–{high:.2f}, n={entry['n']})"


def operating_point_text(point: dict[str, Any] | None) -> str:
    """The image-level operating point in words: threshold, and the sensitivity and specificity it achieved
    on validation with their intervals (as far as validation had normals and anomalies); "" without one."""
    if not point:
        return ""
    rates = point.get("rates") or {}
    if not rates:  # calibrated before both rates were stored: the target's rate only
        ((name, _),) = point["target"].items()
        rates = {name: {"value": point["achieved"], "interval": point["interval"], "n": point["n"]}}
    parts = [_rate(name, rates.get(name)) for name in ("sensitivity", "specificity")]
    measured = ", ".join(p for p in parts if p)
    return f"threshold {float(point['threshold']):.4g}" + (f" ({measured} on validation)" if measured else "")


def readout_line(row: Any, meta: ArtefactMeta) -> str:
    """One line per image: name, raw score, percentile among validation normals and the flag (or the error)."""
    name = Path(str(row.get("path", ""))).name or "image"
    error = str(row.get("error", "") or "")
    if error:
        return f"{name}: not scored — {error}"
    score = float(row["score"])
    pct = float(row.get("percentile", np.nan))
    reference = meta.normal_reference or {}
    where = f"{reference.get('n_normals', '?')} validation normals"
    text = f"{name}: score {score:.4g}, " + (
        f"percentile {pct:.1f} among {where}"
        if np.isfinite(pct)
        else "percentile unavailable (artefact has no validation reference; re-train to add it)"
    )
    if meta.operating_point:
        flagged = score >= float(meta.operating_point["threshold"])
        text += f", {'FLAGGED' if flagged else 'not flagged'} at {operating_point_text(meta.operating_point)}"
    else:
        text += ", no operating point (run `xrad calibrate`)"
    degenerate = str(row.get("degenerate", "") or "")
    if degenerate:
        text += f" [degenerate: {degenerate}]"
    warnings = str(row.get("warnings", "") or "")
    if warnings:
        text += f" [WARNING: {warnings}]"
    return text
