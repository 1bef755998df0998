"""``xrad run``: the main job on the embedded default data (generated phantoms), resumable."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the main job; every default (from :class:`xrad.jobs.pipeline.RunOptions`) finishes in minutes on
    2 CPU cores."""
    from xrad.jobs.pipeline import RunOptions

    d = RunOptions()
    parser.add_argument(
        "-o", "--output", type=Path, default=d.output, help="run folder (re-running the same command resumes it)"
    )
    parser.add_argument("--config", default=d.config, help="detector config: a name in xrad/configs or a YAML path")
    parser.add_argument("--patients", type=int, default=d.patients, help="phantom patients to generate")
    parser.add_argument(
        "--difficulty",
        type=float,
        default=d.difficulty,
        help="phantom anomaly difficulty (contrast × 1/d, size × 1/√d): 0.5 easier, 2 harder",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="seed of the phantoms (training uses the config's seed: change it with --set seed=N)",
    )
    parser.add_argument("--split-seed", type=int, default=d.split_seed, help="seed of the train/valid/test split")
    parser.add_argument(
        "--abnormal-ratio",
        type=float,
        default=d.abnormal_ratio,
        help="fraction of abnormal units in train (all of them known anomalies)",
    )
    parser.add_argument(
        "--known-normal", type=float, default=d.known_normal, help="fraction of train units labelled normal"
    )
    parser.add_argument(
        "--cache-px",
        type=int,
        default=d.cache_px,
        help="cache size: major axis in px of the phantoms and of the preprocessed images "
        "(the network input is the config's data.image_size)",
    )
    parser.add_argument("--workers", type=int, default=d.workers, help="processes for generation and preprocessing")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the detector config, e.g. --set seed=1 or --set finetune.epochs=5 (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the pipeline and print where its outputs are.

    Every option is checked (as a one-line ConfigError naming it) before any step runs, and a run folder
    accepts changed options unless they would invalidate a finished step: see :mod:`xrad.jobs.pipeline`.
    """
    from xrad.jobs.pipeline import RunOptions, run_pipeline

    options = RunOptions(
        output=args.output,
        config=args.config,
        patients=args.patients,
        difficulty=args.difficulty,
        seed=args.seed,
        split_seed=args.split_seed,
        abnormal_ratio=args.abnormal_ratio,
        known_normal=args.known_normal,
        cache_px=args.cache_px,
        workers=args.workers,
        overrides=tuple(args.overrides),
    )
    if args.quiet:  # no step lines; the result only
        done = run_pipeline(options, log=lambda line: None)
        train = done.get("train", {})
        print(
            f"test AUROC {train.get('test_auroc', float('nan')):.3f} (validation "
            f"{train.get('valid_auroc', float('nan')):.3f}); artefact: {train.get('artefact')}"
        )
    else:
        run_pipeline(options)
    return 0
