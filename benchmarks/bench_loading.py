"""Is data loading + augmentation hidden behind compute? (issue 4; target: overhead < 10 %).

For each image size, a ResNet-18 (1-channel conv1, Adam) training step is timed when fed
  (a) pre-loaded float tensors, no augmentation, and
  (b) BankDataset + DataLoader (uint8 batches) + the batched augmentation in the step:
      ``augment_ad`` (batch B) and ``contrastive_views`` (2 views, 2B images per step).
(a) and (b) are measured in alternating rounds (the machine's speed drifts ±20 % run to run) and the
median round is reported. Two steadier estimates of the overhead are printed as well: the share of (b)'s
wall time spent fetching + augmenting (timed step by step, so a busy machine slows both parts alike) and
the cost of fetching + augmenting a batch alone relative to a step of (a).

    .venv/bin/python benchmarks/bench_loading.py                  # synthetic cache PNGs under /tmp
    .venv/bin/python benchmarks/bench_loading.py --sizes 64 --rounds 3 --steps 5
    .venv/bin/python benchmarks/bench_loading.py --fracatlas ../shared/data/fracatlas   # real images

Writes nothing into the repository (synthetic PNGs go to a temporary folder that is removed).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torchvision

from xrad.config import ADAugment, ContrastiveAugment
from xrad.data.model_input import prepare_eval
from xrad.training.augment import augment_ad, batch_generator, contrastive_views
from xrad.training.banks import BankDataset, load_image_bank


def synthetic_cache(folder: Path, n: int, side: int, seed: int = 0) -> pd.DataFrame:
    """n smooth random 'radiographs' with elliptic body masks, as the preprocess step would write them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] / side - 0.5
    rows = []
    for i in range(n):
        noise = cv2.GaussianBlur(rng.random((side, side)).astype(np.float32), (0, 0), side / 32)
        half_w, half_h = rng.uniform(0.25, 0.45), rng.uniform(0.3, 0.48)
        mask = ((xx / half_w) ** 2 + (yy / half_h) ** 2 <= 1).astype(np.uint8)
        image = (255 * (noise - noise.min()) / (np.ptp(noise) + 1e-6) * mask).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i:05d}.png"), image)
        cv2.imwrite(str(folder / f"{i:05d}_mask.png"), mask)
        rows.append(
            {
                "path": str(folder / f"{i:05d}.png"),
                "cache_path": str(folder / f"{i:05d}.png"),
                "mask_path": str(folder / f"{i:05d}_mask.png"),
                "label": 0,
            }
        )
    return pd.DataFrame(rows)


def fracatlas_frame(folder: Path, n: int) -> pd.DataFrame:
    labels = pd.read_csv(folder / "labels.csv").head(n)
    return pd.DataFrame({"path": [str(folder / p) for p in labels["path"]], "label": labels["label"]})


def make_model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torchvision.models.resnet18(weights=None, num_classes=128)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model, torch.optim.Adam(model.parameters(), lr=1e-4)


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    model(x).pow(2).mean().backward()
    optimizer.step()


def rate_preloaded(model, optimizer, data: torch.Tensor, batch: int, steps: int) -> float:
    """Images/s of training steps on ready float tensors (the machine's training rate)."""
    start = time.perf_counter()
    for s in range(steps):
        i = (s * batch) % (len(data) - batch + 1)
        step(model, optimizer, data[i : i + batch])
    return steps * batch / (time.perf_counter() - start)


def rate_pipeline(model, optimizer, loader, mode: str, steps: int, epoch: int) -> tuple[float, float]:
    """Images/s (network inputs: 2 per image for contrastive) through DataLoader + batched augmentation,
    and the fraction of the wall time spent fetching + augmenting (measured step by step, so it is
    robust to other processes slowing the machine down)."""
    ad, contrastive = ADAugment(), ContrastiveAugment()
    done, images_seen, data_time = 0, 0, 0.0
    start = time.perf_counter()
    while done < steps:
        iterator = iter(loader)
        for index in range(len(loader)):
            t0 = time.perf_counter()
            batch = next(iterator)
            generator = batch_generator(0, epoch, index)
            if mode == "ad":
                x = augment_ad(batch["image"], batch["mask"], ad, generator)
            else:
                x = torch.cat(contrastive_views(batch["image"], batch["mask"], contrastive, generator))
            data_time += time.perf_counter() - t0
            step(model, optimizer, x)
            images_seen += len(x)
            done += 1
            if done == steps:
                break
    total = time.perf_counter() - start
    return images_seen / total, data_time / total


def pipeline_only_ms(loader, mode: str, batches: int = 20) -> float:
    """Milliseconds per batch for loading + augmenting alone (no network)."""
    ad, contrastive = ADAugment(), ContrastiveAugment()
    start, count = time.perf_counter(), 0
    while count < batches:
        for index, batch in enumerate(loader):
            generator = batch_generator(0, 0, index)
            if mode == "ad":
                augment_ad(batch["image"], batch["mask"], ad, generator)
            else:
                contrastive_views(batch["image"], batch["mask"], contrastive, generator)
            count += 1
            if count == batches:
                break
    return 1000 * (time.perf_counter() - start) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=320, help="images in the bank")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="training steps per round and variant")
    parser.add_argument("--loader-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fracatlas", type=Path, default=None, help="use real images instead of synthetic PNGs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="xrad-bench-") as tmp:
        if args.fracatlas is not None:
            frame = fracatlas_frame(args.fracatlas, args.images)
        else:
            frame = synthetic_cache(Path(tmp), args.images, 256)
        for size in args.sizes:
            start = time.perf_counter()
            bank = load_image_bank(frame, size, workers=2, progress=False)
            load_s = time.perf_counter() - start
            print(
                f"\n== {size} px: bank of {len(bank)} images loaded in {load_s:.2f} s "
                f"({len(bank) / load_s:.0f} img/s, 2 threads)"
            )
            loader = torch.utils.data.DataLoader(
                BankDataset(bank),
                batch_size=args.batch,
                shuffle=True,
                drop_last=True,
                num_workers=args.loader_workers,
                generator=torch.Generator().manual_seed(0),
            )
            preloaded = prepare_eval(bank.images, bank.masks)
            for mode, per_step in (("ad", args.batch), ("contrastive", 2 * args.batch)):
                model, optimizer = make_model()
                step(model, optimizer, preloaded[:per_step])  # warm-up (allocator, kernels)
                plain, piped, shares = [], [], []
                data = preloaded.repeat(2, 1, 1, 1)
                for r in range(args.rounds):
                    plain.append(rate_preloaded(model, optimizer, data, per_step, args.steps))
                    rate, share = rate_pipeline(model, optimizer, loader, mode, args.steps, epoch=r)
                    piped.append(rate)
                    shares.append(share)
                a, b = statistics.median(plain), statistics.median(piped)
                aug_ms = pipeline_only_ms(loader, mode)
                step_ms = 1000 * per_step / a
                print(
                    f"{mode:12s} (a) preloaded {a:6.1f} img/s | (b) loader+augment {b:6.1f} img/s | "
                    f"overhead {100 * (1 - b / a):+5.1f} % (rounds: a {[round(x) for x in plain]}, "
                    f"b {[round(x) for x in piped]})\n{'':12s} time share of fetch+augment inside (b): "
                    f"{100 * statistics.median(shares):4.1f} % | fetch+augment alone "
                    f"{aug_ms:5.1f} ms/batch = "
                    f"{100 * aug_ms / step_ms:4.1f} % of a step of (a)"
                )


if __name__ == "__main__":
    main()
