"""Why does a detector rank phantoms the way it does? Prints, for a trained run on phantoms:

- test/valid AUROC overall, per anomaly kind (each kind against all normals) and within units (pairs of a
  normal and an abnormal image of the same patient and body part: anatomy held fixed);
- a linear probe: 5-fold cross-validated logistic regression on the artefact's embeddings (h, eval mode) of
  every image, labels known — can the representation tell abnormal from normal at all?;
- the response to a planted bright bar (a crude plate) on normal test images: the share whose score rises and
  the median score ratio — a detector should say "more abnormal".

usage: .venv/bin/python benchmarks/bench_phantom_probe.py RUN_DIR PHANTOM_DIR [--manifest CACHE_MANIFEST]
RUN_DIR is a finished `xrad train` / `xrad run` detector folder (artefact/, scores_*.csv); PHANTOM_DIR the
`xrad synth` output (ground_truth.csv). The manifest (the preprocessed split manifest) defaults to
PHANTOM_DIR/../cache/manifest.csv, the `xrad run` layout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from xrad.data.manifest import read_manifest
from xrad.data.model_input import prepare_eval
from xrad.inference.scoring import load_scorer
from xrad.training.banks import load_image_bank


def _key(paths: pd.Series) -> pd.Series:
    return paths.astype(str).str.split("MURA-v1.1/").str[-1]


def within_unit_auroc(frame: pd.DataFrame) -> tuple[float, int]:
    """P(abnormal image scores above a normal image of the same unit); ties count half."""
    wins = pairs = 0.0
    for _, unit in frame.groupby(["patient_id", "body_part"]):
        a = unit.loc[unit["label"] == 1, "score"].to_numpy()
        n = unit.loc[unit["label"] == 0, "score"].to_numpy()
        wins += (a[:, None] > n[None]).sum() + 0.5 * (a[:, None] == n[None]).sum()
        pairs += a.size * n.size
    return (wins / pairs if pairs else float("nan")), int(pairs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("phantoms")
    parser.add_argument("--manifest", default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    run, truth = Path(args.run), pd.read_csv(Path(args.phantoms) / "ground_truth.csv")
    truth["key"] = _key(truth["path"])
    kinds = truth.set_index("key")["anomaly_type"].fillna("")
    for split in ("valid", "test"):
        scores = pd.read_csv(run / f"scores_{split}.csv", dtype={"patient_id": str})
        scores["kind"] = _key(scores["path"]).map(kinds).fillna("")
        normal = scores[scores["label"] == 0]
        per_kind = {}
        for kind, group in scores[scores["label"] == 1].groupby("kind"):
            both = pd.concat([normal, group])
            per_kind[kind] = f"{roc_auc_score(both['label'], both['score']):.3f} (n={len(group)})"
        pair_auroc, pairs = within_unit_auroc(scores)
        print(
            f"{split}: AUROC {roc_auc_score(scores['label'], scores['score']):.3f} | within-unit "
            f"{pair_auroc:.3f} ({pairs} pairs) | per kind {json.dumps(per_kind)}"
        )

    manifest = args.manifest or str(Path(args.phantoms).parent / "cache" / "manifest.csv")
    frame = read_manifest(manifest).reset_index(drop=True)
    scorer = load_scorer(run / "artefact")
    size = scorer.artefact_meta.input_spec().image_size
    bank = load_image_bank(frame, size, progress=False)
    images = prepare_eval(bank.images, bank.masks)
    with torch.no_grad():
        h = torch.cat([scorer.embed(images[i : i + 128])["h"] for i in range(0, len(images), 128)]).numpy()
    labels = bank.labels.numpy()
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    predicted = cross_val_predict(probe, h, labels, cv=5, method="predict_proba")[:, 1]
    print(f"linear probe on h (5-fold, all {len(labels)} images): AUROC {roc_auc_score(labels, predicted):.3f}")

    normal_test = np.flatnonzero((frame["split"].to_numpy() == "test") & (labels == 0))
    clean = images[normal_test]
    barred = clean.clone()
    for row, index in enumerate(normal_test):
        ys, xs = np.nonzero(bank.masks[index, 0].numpy())
        cy, cx, half = int(ys.mean()), int(xs.mean()), max(2, size // 8)
        barred[row, 0, cy - half : cy + half, cx - 1 : cx + 2] = 1.0
    with torch.no_grad():
        before, after = scorer.score(clean)[0].numpy(), scorer.score(barred)[0].numpy()
    print(
        f"bright bar on {len(normal_test)} normal test images: score rises for {np.mean(after > before):.0%}, "
        f"median ratio {np.median(after / np.maximum(before, 1e-12)):.3f}"
    )
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
