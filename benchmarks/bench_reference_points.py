"""What AUROC can *any* model reach on a split at a given resolution? Reference points for a detector's number.

For a preprocessed split manifest (e.g. the `xrad run` folder's ``cache/manifest.csv``) prints test AUROC of:

- ``pixel kNN``: mean distance of the masked image to its k nearest normal train images (k = 1, 5, 20),
  no learning at all — the floor targets.md uses for FracAtlas;
- ``random patch kNN``: a randomly initialised 1-channel ResNet-18, layer-2/3 feature maps (3×3 averaged),
  every body-mask patch of every normal train image in a memory bank, image score = the largest
  nearest-neighbour distance of its patches (a PatchCore-style local detector without any training);
- ``supervised ResNet-18``: the same network trained with *every* train and valid label (binary
  cross-entropy, the anomaly-detection augmentation, Adam 1e-3), BatchNorm statistics re-estimated on the
  un-augmented train images before each evaluation — an upper reference far above what a one-class or
  semi-supervised detector is given;
- ``supervised small CNN``: the same training with the 4-layer, 64-channel CNN with global *max* pooling
  of the phantom learnability test (tests/test_synth.py): far fewer weights to memorise anatomy with, and
  the strongest image score from local evidence.

usage: .venv/bin/python benchmarks/bench_reference_points.py MANIFEST [--size 64] [--epochs 25] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from xrad.config import ADAugment
from xrad.data.model_input import prepare_eval
from xrad.methods.knn.search import knn_mean_distance
from xrad.models.batchnorm import recalibrate_batchnorm
from xrad.models.resnet import ResNet18Backbone
from xrad.training.augment import augment_ad, batch_generator
from xrad.training.banks import load_image_bank


def feature_maps(net: ResNet18Backbone, x: torch.Tensor) -> dict[int, torch.Tensor]:
    """Layer-2 and layer-3 maps (eval mode), each averaged over 3×3 neighbourhoods as PatchCore does."""
    out: dict[int, list[torch.Tensor]] = {2: [], 3: []}
    with torch.no_grad():
        for i in range(0, len(x), 64):
            t = net.maxpool(net.relu(net.bn1(net.conv1(x[i : i + 64]))))
            l2 = net.layer2(net.layer1(t))
            out[2].append(F.avg_pool2d(l2, 3, 1, 1))
            out[3].append(F.avg_pool2d(net.layer3(l2), 3, 1, 1))
    return {k: torch.cat(v) for k, v in out.items()}


def patch_knn(maps: torch.Tensor, masks: torch.Tensor, bank_rows: np.ndarray, query_rows: np.ndarray) -> np.ndarray:
    """Largest nearest-bank-patch distance over each query image's body-mask patches."""
    n, c, h, w = maps.shape
    inside = F.adaptive_max_pool2d(masks.float(), (h, w)).reshape(n, h * w) > 0
    patches = maps.permute(0, 2, 3, 1).reshape(n, h * w, c)
    bank = patches[bank_rows][inside[bank_rows]]
    scores = np.zeros(len(query_rows))
    for j, i in enumerate(query_rows):
        q = patches[i][inside[i]]
        if len(q):
            scores[j] = float(knn_mean_distance(q, bank, k=1).max())
    return scores


def small_cnn() -> torch.nn.Module:
    """4 × (3×3 conv, BatchNorm, ReLU, 2×2 max-pool), 16-32-64-64 channels, global max pooling, linear."""
    layers: list[torch.nn.Module] = []
    for a, b in ((1, 16), (16, 32), (32, 64), (64, 64)):
        layers += [torch.nn.Conv2d(a, b, 3, padding=1), torch.nn.BatchNorm2d(b), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
    return torch.nn.Sequential(*layers, torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 1))


def supervised(
    bank, train_rows: np.ndarray, test_rows: np.ndarray, epochs: int, seed: int, small: bool = False
) -> tuple[list[tuple[int, float]], np.ndarray]:
    """Train ResNet-18 + linear (or :func:`small_cnn`) on every label of ``train_rows``; test AUROC every 5
    epochs and at the end, and the final test scores."""
    torch.manual_seed(seed)
    net = small_cnn() if small else torch.nn.Sequential(ResNet18Backbone(1), torch.nn.Linear(512, 1))
    optimiser = torch.optim.Adam(net.parameters(), 2e-3 if small else 1e-3)
    labels = bank.labels.float()
    clean_train = prepare_eval(bank.images[train_rows], bank.masks[train_rows])
    clean_test = prepare_eval(bank.images[test_rows], bank.masks[test_rows])
    history = []
    for epoch in range(epochs):
        net.train()
        order = np.random.default_rng([seed, epoch]).permutation(train_rows)
        for b, i in enumerate(range(0, len(order), 32)):
            rows = order[i : i + 32]
            x = augment_ad(bank.images[rows], bank.masks[rows], ADAugment(), batch_generator(seed, epoch, b))
            loss = F.binary_cross_entropy_with_logits(net(x).squeeze(1), labels[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == epochs:
            recalibrate_batchnorm(net, clean_train.split(64))
            net.eval()
            with torch.no_grad():
                s = torch.cat([net(clean_test[i : i + 64]).squeeze(1) for i in range(0, len(clean_test), 64)])
            history.append((epoch + 1, roc_auc_score(labels[test_rows].numpy(), s.numpy())))
    return history, s.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("manifest", help="preprocessed split manifest (split, label, cache_path, mask_path)")
    parser.add_argument("--size", type=int, default=64, help="working resolution in pixels")
    parser.add_argument("--epochs", type=int, default=25, help="supervised training epochs (0: skip them)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    frame = pd.read_csv(args.manifest)
    bank = load_image_bank(frame, args.size, progress=False)
    x = prepare_eval(bank.images, bank.masks)
    split, label = frame["split"].to_numpy(), frame["label"].to_numpy()
    normal_train = np.flatnonzero((split == "train") & (label == 0))
    test = np.flatnonzero(split == "test")
    y = label[test]
    print(
        f"{args.manifest} at {args.size} px: {len(normal_train)} normal train images, test {len(test)} "
        f"({int(y.sum())} abnormal)"
    )

    start = time.time()
    flat = x.flatten(1)
    for k in (1, 5, 20):
        s = knn_mean_distance(flat[test], flat[normal_train], k=k).numpy()
        print(f"pixel kNN (k={k}): test AUROC {roc_auc_score(y, s):.3f}")
    torch.manual_seed(args.seed)
    net = ResNet18Backbone(1).eval()
    for layer, maps in feature_maps(net, x).items():
        s = patch_knn(maps, bank.masks, normal_train, test)
        print(
            f"random patch kNN (layer {layer}, {maps.shape[-1]}x{maps.shape[-1]} map): test AUROC "
            f"{roc_auc_score(y, s):.3f}"
        )
    print(f"({time.time() - start:.0f} s)")

    labelled = np.flatnonzero(split != "test")
    for small, name in ((True, "small CNN (max pooling)"), (False, "ResNet-18")) if args.epochs > 0 else ():
        start = time.time()
        for epoch, auroc in supervised(bank, labelled, test, args.epochs, args.seed, small=small)[0]:
            print(
                f"supervised {name}, every label of {len(labelled)} train+valid images, epoch {epoch}: "
                f"test AUROC {auroc:.3f}"
            )
        print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
