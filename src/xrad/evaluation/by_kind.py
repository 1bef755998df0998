"""AUROC per anomaly kind: normals against each kind of anomaly separately.

A single AUROC averages easy and hard anomalies and hides which a detector finds. On data whose ground
truth names the kind of each anomaly (the phantoms' ``anomaly_type``) every kind gets its own AUROC against
all normals, and :func:`kind_table` lays them out in one line per detector.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from xrad.evaluation.metrics import auroc

PHANTOM_KINDS = ("plate", "screws", "fracture_gap", "displaced_fragment", "lesion", "cortical_bump")
SHORT_NAMES = {
    "plate": "plate",
    "screws": "screws",
    "fracture_gap": "gap",
    "displaced_fragment": "displaced",
    "lesion": "lesion",
    "cortical_bump": "bump",
}


def auroc_by_kind(
    labels: Sequence[int] | np.ndarray,
    kinds: Sequence[str] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    kind_names: Iterable[str] = PHANTOM_KINDS,
    min_count: int = 2,
) -> dict[str, float]:
    """``{"all": AUROC, kind: AUROC of normals vs that kind, ...}`` for kinds with at least ``min_count`` images."""
    labels, kinds, scores = np.asarray(labels), np.asarray(kinds, dtype=object), np.asarray(scores, dtype=float)
    out = {"all": float(auroc(labels, scores))}
    for kind in kind_names:
        keep = (kinds == kind) | (labels == 0)
        if int((kinds[keep] == kind).sum()) >= min_count:
            out[kind] = float(auroc(labels[keep], scores[keep]))
    return out


def phantom_kinds(scores: pd.DataFrame, data_dir: str | Path) -> pd.DataFrame:
    """``scores`` (with absolute ``path``) joined with the phantoms' ``ground_truth.csv`` anomaly kind
    (``normal`` for normal images)."""
    data_dir = Path(data_dir)
    truth = pd.read_csv(data_dir / "ground_truth.csv")
    truth["path"] = [str((data_dir / p).resolve()) for p in truth["path"]]
    out = scores.merge(truth[["path", "anomaly_type"]], on="path", how="left")
    out["anomaly_type"] = out["anomaly_type"].fillna("normal").replace("", "normal")
    return out


def kind_table(rows: dict[str, dict[str, float]], kind_names: Sequence[str] = PHANTOM_KINDS) -> str:
    """A fixed-width text table: one row per name, columns all + each kind (– where a kind was absent)."""
    keys = ("all", *kind_names)
    width = max([len(name) for name in rows] + [8])
    lines = [" " * width + "".join(f"{SHORT_NAMES.get(k, k):>11}" for k in keys)]
    for name, values in rows.items():
        cells = "".join(f"{values[k]:>11.3f}" if k in values else f"{'–':>11}" for k in keys)
        lines.append(f"{name:<{width}}{cells}")
    return "\n".join(lines)
