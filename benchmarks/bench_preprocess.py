"""Preprocessing throughput on real FracAtlas images with 1 and 2 worker processes.

Usage: .venv/bin/python benchmarks/bench_preprocess.py [--n 300] [--all]
Prints images/s per worker count and, with --all, the flag counts over all 4,083 images
(uncropped / inverted / low contrast / truncated / failures). Writes only under a temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from xrad.data.indexing import index_source
from xrad.preprocess import PreprocessParams
from xrad.preprocess.cache import FLAG_COLUMNS, build_cache

FRACATLAS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fracatlas"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="images per timing run")
    parser.add_argument("--all", action="store_true", help="also process all images with 2 workers")
    parser.add_argument("--data", type=Path, default=FRACATLAS)
    args = parser.parse_args()
    if not (args.data / "labels.csv").is_file():
        print(f"skipped: FracAtlas not found at {args.data}")
        return 0
    frame = index_source(args.data / "labels.csv")
    sample = frame.sample(n=min(args.n, len(frame)), random_state=0)
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            summary = build_cache(
                sample, Path(tmp) / f"w{workers}", PreprocessParams(), workers=workers, progress=False
            )
            print(f"workers={workers}: {summary['images_per_second']} images/s over {len(sample)} images")
        if args.all:
            summary = build_cache(frame, Path(tmp) / "all", PreprocessParams(), workers=2, progress=True)
            print(
                f"all {summary['images']} images: {summary['images_per_second']} images/s, "
                f"failed {summary['failed']}, " + ", ".join(f"{f} {summary[f]}" for f in FLAG_COLUMNS)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
