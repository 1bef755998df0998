"""AUROC per anomaly kind: each kind against all normals, equal to the plain AUROC of that subset."""

from __future__ import annotations

import numpy as np

from xrad.evaluation.by_kind import auroc_by_kind, kind_table
from xrad.evaluation.metrics import auroc


def test_each_kind_is_scored_against_all_normals() -> None:
    rng = np.random.default_rng(0)
    kinds = np.array(["normal"] * 30 + ["plate"] * 10 + ["fracture_gap"] * 10 + ["lesion"])
    labels = (kinds != "normal").astype(int)
    scores = rng.normal(size=len(kinds)) + np.where(kinds == "plate", 3.0, 0.0)
    got = auroc_by_kind(labels, kinds, scores)
    normal = kinds == "normal"
    for kind in ("plate", "fracture_gap"):
        keep = normal | (kinds == kind)
        assert got[kind] == auroc(labels[keep], scores[keep])
    assert got["all"] == auroc(labels, scores) and got["plate"] > 0.95 > got["fracture_gap"]
    assert "lesion" not in got  # one image is too few
    table = kind_table({"a detector": got})
    assert "plate" in table and "a detector" in table and "–" in table
