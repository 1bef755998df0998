"""``xrad evaluate SCORES``: metrics with bootstrap intervals at image, study and patient level.

Writes ``<SCORES stem>.evaluation.json`` (or ``-o``) and a readable ``.txt`` table next to it, and prints
the table. When the scores hold several splits, the ``test`` rows are evaluated and the ``valid`` rows
choose the κ threshold (override with ``--split`` and ``--valid``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from xrad.cli.options import finite_float, int_at_least, open_fraction, open_fractions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``xrad evaluate``."""
    parser.add_argument(
        "scores",
        type=Path,
        help="scores CSV (columns score, label; optional path, patient_id, study_id, body_part, split)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="JSON output (default: SCORES with suffix .evaluation.json)",
    )
    parser.add_argument(
        "--split",
        default=None,
        help="evaluate only rows of this split (default: test when the file holds several splits)",
    )
    parser.add_argument(
        "--valid",
        type=Path,
        default=None,
        help="validation scores CSV to choose the κ threshold on (default: the file's valid rows, if any)",
    )
    parser.add_argument(
        "--threshold-rule",
        default="youden",
        help="how the threshold is chosen on validation: youden, specificity:0.95 or sensitivity:0.9",
    )
    parser.add_argument(
        "--threshold",
        type=finite_float,
        default=None,
        help="use this threshold instead of choosing one on validation",
    )
    parser.add_argument(
        "--aggregations",
        default="mean,max,top2",
        help="study/patient aggregations of image scores: mean, max, topK",
    )
    parser.add_argument(
        "--specificities",
        type=open_fractions,
        default=(0.9, 0.95),
        help="report sensitivity at these specificities (comma-separated)",
    )
    parser.add_argument(
        "--sensitivities",
        type=open_fractions,
        default=(0.9, 0.95),
        help="report specificity at these sensitivities (comma-separated)",
    )
    parser.add_argument(
        "--n-bootstrap", type=int_at_least(0), default=1000, help="bootstrap resamples (0: no intervals)"
    )
    parser.add_argument("--confidence", type=open_fraction, default=0.95, help="interval level")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def run(args: argparse.Namespace) -> int:
    """Evaluate the scores and write JSON + table."""
    from xrad.errors import DataError
    from xrad.evaluation.evaluate import (
        choose_threshold,
        evaluate_scores,
        format_table,
        parse_threshold_rule,
        read_scores,
    )
    from xrad.utils.atomic import FileSet

    frame = read_scores(args.scores)
    splits = sorted(s for s in frame["split"].unique() if s) if "split" in frame.columns else []
    split = args.split or ("test" if len(splits) > 1 and "test" in splits else None)
    target = frame if split is None else frame[frame["split"] == split]
    if target.empty:
        raise DataError(f"{args.scores}: no rows with split {split!r} (splits present: {', '.join(splits) or 'none'})")

    threshold_info = None
    parse_threshold_rule(args.threshold_rule)  # refused even when no validation rows will use it
    if args.threshold is not None:
        threshold_info = {"threshold": args.threshold, "rule": "given", "n_valid": 0}
    else:
        valid, source = None, None
        if args.valid is not None:
            valid, source = read_scores(args.valid), str(args.valid)
        elif split != "valid" and "valid" in splits:
            valid, source = frame[frame["split"] == "valid"], f"{args.scores} (valid rows)"
        if valid is not None:
            threshold_info = choose_threshold(valid, args.threshold_rule)
            threshold_info["source"] = source

    result = evaluate_scores(
        target,
        aggregations=tuple(a.strip() for a in args.aggregations.split(",") if a.strip()),
        specificities=args.specificities,
        sensitivities=args.sensitivities,
        threshold=None if threshold_info is None else threshold_info["threshold"],
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        confidence=args.confidence,
    )
    result["input"] = str(args.scores)
    result["evaluated_split"] = split
    result["threshold_choice"] = threshold_info
    table = format_table(result)
    if threshold_info is not None and threshold_info.get("rule") != "given":
        table = (
            f"threshold chosen by {threshold_info['rule']} on {threshold_info['source']} "
            f"({threshold_info['n_valid']} labelled images)\n"
        ) + table
    output = args.output or args.scores.with_suffix(".evaluation.json")
    with FileSet() as files:  # the JSON and its table are published together
        files.write_json(output, result)
        files.write_text(output.with_suffix(".txt"), table)
    print(table, end="")
    print(f"wrote {output} and {output.with_suffix('.txt')}")
    return 0
