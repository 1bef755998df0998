"""``xrad calibrate ARTEFACT MANIFEST --specificity 0.95``: store an operating point with the artefact.

The threshold is chosen on the validation rows only (``split == valid``, or ``--split``). MANIFEST is a
split manifest (its validation images are scored with the artefact) or a scores CSV of this artefact
(e.g. a run's ``scores_valid.csv``; its ``score`` column is used as it is).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from xrad.cli.options import int_at_least, open_fraction


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``xrad calibrate``."""
    parser.add_argument("artefact", type=Path, help="artefact folder written by training")
    parser.add_argument("manifest", type=Path, help="split manifest, or a scores CSV of this artefact")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--specificity", type=open_fraction, help="target specificity on validation normals (e.g. 0.95)"
    )
    target.add_argument(
        "--sensitivity", type=open_fraction, help="target sensitivity on validation anomalies (e.g. 0.9)"
    )
    parser.add_argument("--split", default="valid", help="rows whose `split` equals this are used ('' = all rows)")
    parser.add_argument(
        "--aggregation",
        default="max",
        help="study score: mean, max or topK; stored with the threshold, and then used by `xrad score` and "
        "`xrad worklist`",
    )
    parser.add_argument("--confidence", type=open_fraction, default=0.95, help="level of the Clopper-Pearson interval")
    parser.add_argument("--batch-size", type=int_at_least(1), default=64, help="images per forward pass when scoring")
    parser.add_argument("--workers", type=int_at_least(1), default=2, help="threads decoding images when scoring")


def run(args: argparse.Namespace) -> int:
    """Select validation rows, score them if needed, choose and store the threshold."""
    import pandas as pd

    from xrad.errors import DataError
    from xrad.evaluation.aggregate import parse_aggregation
    from xrad.inference.calibration import calibrate, describe, store_operating_point

    parse_aggregation(args.aggregation)  # refused now, not after scoring
    if not args.manifest.is_file():
        raise DataError(f"{args.manifest}: not found; pass a split manifest or a scores CSV")
    try:
        frame = pd.read_csv(
            args.manifest, dtype={"path": str, "patient_id": str, "study_id": str, "split": str}, keep_default_na=False
        )
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(
            f"{args.manifest}: not a readable CSV ({str(exc).splitlines()[0]}); pass a split manifest or a scores CSV"
        ) from None
    if args.split:
        if "split" not in frame.columns:
            raise DataError(
                f"{args.manifest}: no `split` column; make a split with `xrad split` "
                "(or pass --split '' to use every row)"
            )
        frame = frame[frame["split"] == args.split]
        if frame.empty:
            raise DataError(
                f"{args.manifest}: no rows with split == {args.split!r}; thresholds are chosen on validation data only"
            )
    if "score" not in frame.columns:
        from xrad.inference.scoring import score_frame

        frame = score_frame(
            args.artefact, frame, batch_size=args.batch_size, workers=args.workers, progress=True, on_error="skip"
        )
        failed = frame[frame["error"] != ""]
        if len(failed):  # the threshold is chosen on the images that could be read; said, not silent
            import sys

            print(
                f"warning: {len(failed)} image(s) could not be read and are left out of the calibration, e.g. "
                f"{failed['error'].iloc[0]}",
                file=sys.stderr,
            )
    point = calibrate(
        frame,
        specificity=args.specificity,
        sensitivity=args.sensitivity,
        confidence=args.confidence,
        aggregation=args.aggregation,
        where=str(args.manifest),
    )
    point["source"] = {"file": args.manifest.name, "split": args.split or "all"}
    path = store_operating_point(args.artefact, point)
    print(f"image level: {describe(point)}")
    if "study" in point:
        print(f"study level ({point['study']['aggregation']}): {describe(point['study'])}")
    else:
        print("study level: not calibrated (validation rows have no study_id, or no study of the needed label)")
    print(f"stored in {path}; `xrad score` and `xrad worklist --artefact` use it (and its {args.aggregation} rule)")
    return 0
