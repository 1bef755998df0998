"""``xrad benchmark CONFIG``: run a grid of methods × seeds × split seeds × anomaly ratios and tabulate it.

Re-running the same command resumes: finished cells (with ``summary.json``) are skipped, unfinished ones
resume from their checkpoints. A split or cell made from other settings than the YAML's (an edited override,
split option or manifest) is refused with a one-line error naming it: choose another output folder (``-o``)
for the new settings. Prints the Table-1 summary at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``xrad benchmark``."""
    parser.add_argument(
        "config",
        type=Path,
        help="benchmark YAML (methods, training_seeds, split_seeds, abnormal_ratios, data, overrides, output)",
    )
    parser.add_argument("-o", "--output", type=Path, default=None, help="output folder (overrides the config's)")
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="data manifest (overrides the config's data.manifest), e.g. the same grid on caches preprocessed "
        "differently (benchmarks/davletshina/ablation.yaml); give each its own -o",
    )
    parser.add_argument("--progress", action="store_true", help="show the training progress bars of each cell")
    parser.add_argument("--report", action="store_true", help="render the HTML report when the grid is done")
    parser.add_argument(
        "--only",
        default=None,
        help="train only these methods (comma-separated labels), e.g. to spread one grid over several "
        "processes sharing the output folder; the tables still collect every finished cell",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of every method's config, e.g. --set finetune.epochs=5 "
        "(repeatable; applied after the YAML's `overrides:`)",
    )
    parser.add_argument(
        "--split-seeds",
        default=None,
        help="train only the cells of these split seeds (comma-separated), likewise",
    )


def run(args: argparse.Namespace) -> int:
    """Run the grid, write results.csv / table1.* / pairwise.csv, print Table 1."""
    from xrad.config import merge_overrides, parse_override
    from xrad.jobs.benchmark import load_benchmark_config, run_benchmark

    config = load_benchmark_config(args.config, output=args.output, manifest=args.manifest)
    if args.overrides:
        config.overrides = merge_overrides(config.overrides, dict(parse_override(text) for text in args.overrides))
    print(
        f"benchmark: {len(config.methods)} method(s) × {len(config.training_seeds)} training seed(s) × "
        f"{len(config.split_seeds)} split seed(s) × {len(config.abnormal_ratios)} ratio(s) → {config.output}",
        flush=True,
    )
    only = [m.strip() for m in args.only.split(",") if m.strip()] if args.only else None
    try:
        split_seeds = [int(v) for v in args.split_seeds.split(",") if v.strip()] if args.split_seeds else None
    except ValueError:
        from xrad.errors import ConfigError

        raise ConfigError(f"--split-seeds {args.split_seeds!r}: give integers separated by commas, e.g. 0,1") from None
    run_benchmark(
        config,
        progress=args.progress,
        log=lambda message: print(message, flush=True),
        only=only,
        only_split_seeds=split_seeds,
    )
    print((config.output / "table1.md").read_text(encoding="utf-8"), end="")
    print(f"wrote {config.output / 'results.csv'}, table1.csv, table1.md, pairwise.csv")
    if args.report:
        from xrad.evaluation.report import render_report

        print(f"wrote {render_report(config.output)}")
    return 0
