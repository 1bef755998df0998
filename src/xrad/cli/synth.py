"""``xrad synth``: generate phantom radiographs in MURA's folder layout, with pixel ground truth."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``xrad synth``."""
    from xrad.data.phantoms.generate import SynthConfig

    d = SynthConfig()
    parser.add_argument("-o", "--output", required=True, help="output folder (MURA-v1.1/ and ground_truth/ go inside)")
    parser.add_argument("--patients", type=int, default=d.n_patients, help="number of patients")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (same seed → byte-identical files)")
    parser.add_argument("--size", type=int, default=d.size, help="major axis of every image in pixels")
    parser.add_argument(
        "--difficulty",
        type=float,
        default=d.difficulty,
        help="anomaly subtlety: contrast × 1/difficulty, size × 1/sqrt(difficulty)",
    )
    parser.add_argument("--valid-fraction", type=float, default=d.valid_fraction, help="share of patients under valid/")
    parser.add_argument(
        "--abnormal-rate", type=float, default=d.abnormal_study_rate, help="probability that a study is positive"
    )
    parser.add_argument("--noise", type=float, default=d.noise, help="noise level multiplier")
    parser.add_argument("--workers", type=int, default=d.workers, help="worker processes")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace phantoms made with another configuration (default: resume identical ones)",
    )


def run(args: argparse.Namespace) -> int:
    """Generate the data set and print a summary (images, studies, patients, abnormal share per part)."""
    from xrad.data.phantoms.generate import SynthConfig, summarise, timed_generate

    config = SynthConfig(
        n_patients=args.patients,
        seed=args.seed,
        size=args.size,
        difficulty=args.difficulty,
        valid_fraction=args.valid_fraction,
        abnormal_study_rate=args.abnormal_rate,
        noise=args.noise,
        workers=args.workers,
    )
    frame, seconds = timed_generate(args.output, config, progress=not args.quiet, overwrite=args.overwrite)
    print(summarise(frame, seconds))
    print(f"written to {args.output} (ground truth: {os.path.join(args.output, 'ground_truth.csv')})")
    return 0
