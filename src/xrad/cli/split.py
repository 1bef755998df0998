"""``xrad split MANIFEST -o OUT.csv --seed S``: the papers' semi-supervised split, leak-free by default.

Writes OUT.csv (the manifest plus ``split``, ``semi_label``, ``unit_id``, ``unit_kind``) and
OUT.summary.csv (counts per split × body part × label, with semi-label counts) and OUT.summary.png (the
same counts as bar charts, the paper's Fig. 6), and prints the summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1]")
    return value


def summary_path(output: Path) -> Path:
    """Where the summary of ``output`` goes: ``OUT.summary.csv`` next to ``OUT.csv``."""
    return output.with_name(output.stem + ".summary.csv")


def figure_path(output: Path) -> Path:
    """Where the split's summary figure goes: ``OUT.summary.png`` next to ``OUT.csv``."""
    return output.with_name(output.stem + ".summary.png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``xrad split``."""
    parser.add_argument("manifest", type=Path, help="manifest CSV written by `xrad index`")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="split manifest to write (its summary goes to OUT.summary.csv)",
    )
    parser.add_argument("--seed", type=int, default=0, help="split seed (independent of training seeds)")
    parser.add_argument("--train-fraction", type=_fraction, default=0.5, help="fraction of units in train")
    parser.add_argument(
        "--abnormal-ratio",
        type=_fraction,
        default=0.05,
        help="fraction of train units that are abnormal (papers: 0, 0.025, 0.05, 0.10, 0.15)",
    )
    parser.add_argument(
        "--known-normal",
        type=_fraction,
        default=0.05,
        help="fraction of train units labelled known normal (+1)",
    )
    parser.add_argument(
        "--known-abnormal",
        type=_fraction,
        default=1.0,
        help="fraction of train abnormal units labelled known abnormal (-1); the rest stay unlabelled (contamination)",
    )
    parser.add_argument(
        "--group",
        choices=("patient", "unit"),
        default="patient",
        help="patient: whole patients, no patient in two splits; "
        "unit: the papers' patient×body-part units (patients may cross splits)",
    )
    parser.add_argument(
        "--body-parts",
        default=argparse.SUPPRESS,
        help="comma-separated body parts to keep, e.g. HAND,SHOULDER (all when omitted)",
    )


def run(args: argparse.Namespace) -> int:
    """Split the manifest, write it and its summary atomically, print the summary."""
    from xrad.data.manifest import manifest_table, read_manifest
    from xrad.data.splits import SplitConfig, format_summary, make_split, split_summary
    from xrad.utils.atomic import FileSet

    given = getattr(args, "body_parts", "")
    parts = tuple(p.strip().upper() for p in given.split(",") if p.strip()) or None
    config = SplitConfig(
        seed=args.seed,
        train_fraction=args.train_fraction,
        abnormal_ratio=args.abnormal_ratio,
        known_normal=args.known_normal,
        known_abnormal=args.known_abnormal,
        group=args.group,
        body_parts=parts,
    )
    frame = make_split(read_manifest(args.manifest), config, where=str(args.manifest))
    summary = split_summary(frame)
    from xrad.evaluation.plots import png_bytes, split_summary_figure

    figure = split_summary_figure(summary, f"Split of {args.manifest.name} (seed {args.seed})")
    with FileSet() as files:  # the split, its summary and its figure are published together
        files.write_csv(args.output, manifest_table(frame))
        files.write_csv(summary_path(args.output), summary)
        files.write_bytes(figure_path(args.output), png_bytes(figure))
    print(format_summary(frame, summary))
    print(f"wrote {args.output}, {summary_path(args.output)} and {figure_path(args.output)}")
    return 0
