"""Throughput of :func:`xrad.data.io.read_radiograph` on real FracAtlas JPEGs (single process).

Usage: ``.venv/bin/python benchmarks/bench_io.py [--data ../shared/data/fracatlas] [-n 300] [--repeats 3]``
Prints images/s (best of the repeats; the first pass also warms the OS file cache). Skips with a message
when the data is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fracatlas"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="FracAtlas folder (holds images/)")
    parser.add_argument("-n", type=int, default=300, help="number of images")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    images = sorted((args.data / "images").glob("IMG*.jpg"))
    if not images:
        print(f"skipped: FracAtlas images not found under {args.data / 'images'}")
        return 0
    import numpy as np

    from xrad.data.io import read_radiograph

    # An evenly spaced, deterministic sample across the whole set (includes some truncated files).
    sample = [images[i] for i in np.linspace(0, len(images) - 1, min(args.n, len(images))).astype(int)]
    megapixels = 0.0
    best = float("inf")
    truncated = 0
    for _ in range(max(1, args.repeats)):
        start = time.perf_counter()
        megapixels, truncated = 0.0, 0
        for path in sample:
            rad = read_radiograph(path)
            megapixels += rad.pixels.size / 1e6
            truncated += rad.meta.truncated
        best = min(best, time.perf_counter() - start)
    print(
        f"read_radiograph: {len(sample)} FracAtlas images ({megapixels:.1f} Mpx, {truncated} truncated) "
        f"in {best:.3f} s = {len(sample) / best:.0f} images/s, {1000 * best / len(sample):.2f} ms/image "
        f"(1 process, best of {args.repeats})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
