"""Training throughput of the 1-channel ResNet-18 encoder (forward + backward + Adam step) on this CPU.

Usage: .venv/bin/python benchmarks/bench_resnet.py [--sizes 64 128] [--batch 32] [--steps 8] [--threads 2]
Prints images/s (from the median step time) for each image size with contiguous and channels_last memory
formats, plus inference images/s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from xrad.losses import info_nce
from xrad.models import build_encoder


def _median_seconds(fn: Callable[[], object], steps: int) -> float:
    """Median wall time of ``steps`` calls: robust to other processes briefly taking the 2 cores."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(size: int, batch: int, steps: int, channels_last: bool, seed: int = 0) -> tuple[float, float]:
    """Return (training images/s with a two-view InfoNCE step, inference images/s) for one configuration."""
    g = torch.Generator().manual_seed(seed)
    enc = build_encoder()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    enc = enc.to(memory_format=fmt)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3, weight_decay=1e-6)
    # A contrastive step sees 2 views per image: batch//2 images -> batch network inputs.
    x = torch.rand(batch, 1, size, size, generator=g).contiguous(memory_format=fmt)

    def step() -> None:
        _, z = enc(x)
        loss = info_nce(z[: batch // 2], z[batch // 2 :])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    enc.train()
    for _ in range(2):  # warm-up: allocator and oneDNN kernel selection
        step()
    train_ips = batch / _median_seconds(step, steps)

    enc.eval()
    with torch.inference_mode():
        enc(x)
        infer_ips = batch / _median_seconds(lambda: enc(x), steps)
    return train_ips, infer_ips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} (network inputs)")
    print(f"{'size':>5} {'layout':>14} {'train img/s':>12} {'infer img/s':>12}")
    for size in args.sizes:
        for cl in (False, True):
            train_ips, infer_ips = bench(size, args.batch, args.steps, cl)
            layout = "channels_last" if cl else "contiguous"
            print(f"{size:>5} {layout:>14} {train_ips:>12.1f} {infer_ips:>12.1f}", flush=True)


if __name__ == "__main__":
    main()
