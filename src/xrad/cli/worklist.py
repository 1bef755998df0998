"""``xrad worklist SCORES -o DIR``: an offline HTML page (and CSV) of studies sorted by anomaly score."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xrad.cli.options import finite_float, int_at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``xrad worklist``."""
    parser.add_argument("scores", type=Path, help="image-level scores CSV (from `xrad score` or a run)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for index.html, worklist.csv, thumbs/")
    parser.add_argument("--artefact", type=Path, help="artefact whose stored operating point flags studies")
    parser.add_argument("--threshold", type=finite_float, help="study threshold to flag at (overrides --artefact)")
    parser.add_argument(
        "--aggregation",
        help="study score: mean, max or topK (default: the rule stored with --artefact's operating point, else max)",
    )
    parser.add_argument("--top", type=int_at_least(0), default=200, help="studies shown with thumbnails and heatmaps")
    parser.add_argument("--thumb-size", type=int_at_least(16), default=160, help="thumbnail major axis in pixels")
    parser.add_argument("--title", default="xrad worklist", help="page title")


def run(args: argparse.Namespace) -> int:
    """Read the scores, build the worklist, say where it is."""
    import pandas as pd

    from xrad.errors import DataError
    from xrad.inference.worklist import build_worklist, worklist_folder_entry
    from xrad.utils.atomic import check_replaceable

    check_replaceable(args.output, worklist_folder_entry)  # before any work: never a user's other folder
    if not args.scores.is_file():
        raise DataError(f"{args.scores}: scores file not found; write one with `xrad score`")
    try:
        frame = pd.read_csv(
            args.scores,
            dtype={"path": str, "patient_id": str, "study_id": str, "body_part": str, "heatmap": str, "error": str},
            keep_default_na=False,
        )
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(
            f"{args.scores}: not a readable scores CSV ({str(exc).splitlines()[0]}); write one with `xrad score`"
        ) from None
    from xrad.inference.calibration import stored_aggregation

    point = None
    if args.artefact is not None:
        from xrad.inference.artefact import read_meta

        point = read_meta(args.artefact).operating_point
    aggregation = args.aggregation or stored_aggregation(point)
    result = build_worklist(
        frame,
        args.output,
        aggregation=aggregation,
        threshold=args.threshold,
        operating_point=point,
        top=args.top,
        thumb_size=args.thumb_size,
        title=args.title,
    )
    flagged = f", {result['n_flagged']} flagged" if result["threshold"] is not None else ""
    print(f"worklist of {result['n_studies']} studies{flagged} → {result['html']} (and {result['csv']})")
    if result["n_unreadable_images"]:
        print(
            f"warning: {result['n_unreadable_images']} image(s) could not be read"
            + (
                f"; {result['n_unscored']} study(ies) have no readable image and are listed unscored"
                if result["n_unscored"]
                else ""
            ),
            file=sys.stderr,
        )
    return 0
