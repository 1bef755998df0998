"""Every image score of a trained GAN detector on planted local defects, and where its heatmap points.

usage: .venv/bin/python benchmarks/bench_gan_phantoms.py ARTEFACT CACHE_MANIFEST [--kinds bright_bar,screws]
       [--n 48] [--seed 11]
Held-out normal test images of a preprocessed phantom cache (``xrad run``'s ``cache/manifest.csv``) are scored
clean and with one corruption of each kind planted (:mod:`xrad.training.corruptions`). Prints, per kind, the
AUROC (clean vs planted) of each score the variant offers, and the share of planted images whose heatmap maximum
falls within 4 px of the planted pixels beside chance (the share of the body those pixels cover, dilated alike).
Also prints the AUROC of each score on the real test split (the phantoms' own anomalies).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from xrad.data.model_input import prepare_eval
from xrad.evaluation.metrics import auroc
from xrad.inference.scoring import load_scorer
from xrad.training.banks import load_image_bank
from xrad.training.corruptions import corrupt_batch

parser = argparse.ArgumentParser()
parser.add_argument("artefact")
parser.add_argument("manifest")
parser.add_argument("--kinds", default="bright_bar,screws,gap_across_bone,density_spot")
parser.add_argument("--n", type=int, default=48)
parser.add_argument("--seed", type=int, default=11)
args = parser.parse_args()

scorer = load_scorer(args.artefact)
size = int(scorer.architecture["image_size"])
kinds = ["discriminator", "reconstruction", "residual_mix"]
if scorer.nets.code_discriminator is not None:
    kinds[1:1] = ["code_discriminator", "mean_discriminators"]
frame = pd.read_csv(args.manifest)
test = frame[frame["split"] == "test"].reset_index(drop=True)
bank = load_image_bank(test, size, workers=1, progress=False)
labels = bank.labels.numpy()
t0 = time.time()


def scores_of(x: torch.Tensor) -> dict[str, np.ndarray]:
    out = {}
    with torch.no_grad():
        for kind in kinds:
            scorer.score_kind = kind
            out[kind] = scorer.score(x)[0].numpy()
    return out


real = scores_of(prepare_eval(bank.images, bank.masks))
print(f"{scorer.nets.variant}: real test split ({int(labels.sum())} abnormal / {len(labels)})")
print("  " + "  ".join(f"{k} {auroc(labels, v):.3f}" for k, v in real.items()))
normal = (bank.labels == 0).nonzero().flatten()[: args.n]
clean = prepare_eval(bank.images[normal], bank.masks[normal])
clean_scores = scores_of(clean)
body = (bank.masks[normal] > 0).float()
for kind in args.kinds.split(","):
    planted, changed = corrupt_batch(clean, body, np.random.default_rng(args.seed), (kind,))
    planted_scores = scores_of(planted)
    y = np.r_[np.zeros(len(normal)), np.ones(len(normal))]
    line = "  ".join(f"{k} {auroc(y, np.r_[clean_scores[k], planted_scores[k]]):.3f}" for k in kinds)
    with torch.no_grad():
        maps = scorer.heatmap(planted)[:, 0]
    near = torch.nn.functional.max_pool2d(changed, 9, stride=1, padding=4)[:, 0] > 0
    peaks = maps.flatten(1).argmax(dim=1)
    hits = near.flatten(1)[torch.arange(len(peaks)), peaks].float().mean().item()
    inside = body[:, 0] > 0
    chance = ((near & inside).flatten(1).sum(1).float() / inside.flatten(1).sum(1).clamp_min(1)).mean().item()
    print(f"{kind}: AUROC {line}; heatmap max near the defect {hits:.2f} (chance {chance:.2f})")
print(f"seconds {time.time() - t0:.1f}")
