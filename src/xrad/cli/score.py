"""``xrad score ARTEFACT INPUT [-o scores.csv]``: score new images with a trained artefact.

Without ``-o`` it prints one line per image: the raw score, its percentile among the validation normals and
the flag at the stored operating point (with the sensitivity and specificity that point achieved); with
``-o`` it writes the tables below. Either way the research-use notice is printed.

INPUT may be one image file (PNG, JPEG, TIFF or DICOM), a folder of such files (searched recursively;
DICOM recognised by content), a MURA tree, or a manifest CSV (needs a ``path`` column; ``cache_path``
rows from ``xrad preprocess`` are used as they are). Lightning is never imported.

Besides the image table it writes ``<output stem>_studies.csv`` (and ``_patients.csv``) where the ids allow,
aggregated as in evaluation; with a calibrated artefact (``xrad calibrate``) every table has ``flagged``.
``--heatmaps DIR`` adds an overlay PNG per image (path in the ``heatmap`` column).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from xrad.cli.options import int_at_least

if TYPE_CHECKING:  # pragma: no cover
    import contextlib

    import pandas as pd

    from xrad.methods.base import Scorer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``xrad score``."""
    parser.add_argument(
        "artefact", type=Path, help="artefact folder written by training (model.safetensors + artefact.json)"
    )
    parser.add_argument(
        "input", type=Path, help="an image, a folder of images/DICOM files, a MURA tree or a manifest CSV"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="scores CSV to write (without it: one line per image is printed and nothing is written)",
    )
    parser.add_argument("--batch-size", type=int_at_least(1), default=64, help="images per forward pass")
    parser.add_argument("--workers", type=int_at_least(1), default=2, help="processes decoding images")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable image (default: record its reason in the `error` column)",
    )
    parser.add_argument(
        "--aggregation",
        default=None,
        help="study/patient score: mean, max or topK (default: the operating point's rule, else max)",
    )
    parser.add_argument(
        "--heatmaps",
        type=Path,
        metavar="DIR",
        help="also write a heatmap overlay PNG per image into DIR (column `heatmap`)",
    )


def run(args: argparse.Namespace) -> int:
    """Score INPUT and write the scores table (and its study/patient tables, published together)."""
    import contextlib
    import sys

    from xrad.evaluation.aggregate import parse_aggregation
    from xrad.inference.artefact import meta_of
    from xrad.inference.calibration import level_tables, stored_aggregation
    from xrad.inference.readout import score_images
    from xrad.inference.scoring import load_scorer
    from xrad.inference.sources import collect_inputs
    from xrad.utils.atomic import FileSet, check_writable

    # Everything that can be refused is refused before scoring starts.
    if args.aggregation is not None:
        parse_aggregation(args.aggregation)
    if args.output is None:
        if args.heatmaps is not None:
            from xrad.errors import ConfigError

            raise ConfigError("--heatmaps needs -o scores.csv (the overlays are listed in its `heatmap` column)")
        return _print_scores(args)
    check_writable(args.output)
    if args.heatmaps is not None:
        from xrad.utils.atomic import check_replaceable

        check_replaceable(args.heatmaps, _heatmap_entry)
    frame = collect_inputs(args.input)
    scorer = load_scorer(args.artefact)
    # percentile among the validation normals, and flagged (score >= the calibrated image threshold;
    # unreadable rows: False) when the artefact has an operating point
    scored = score_images(
        scorer,
        frame,
        batch_size=args.batch_size,
        workers=args.workers,
        on_error="raise" if args.strict else "skip",
        progress=True,
    )
    point = meta_of(scorer).operating_point
    failed = int((scored.get("error", "") != "").sum()) if "error" in scored else 0
    aggregation = args.aggregation or stored_aggregation(point)
    level_paths = {
        level: args.output.with_name(f"{args.output.stem}_{plural}.csv")
        for level, plural in (("study", "studies"), ("patient", "patients"))
    }
    # One set of outputs: the heatmaps folder and the tables are written aside and moved into place only when
    # all of them were made, and a table an earlier run wrote but this one does not is removed — a re-run never
    # leaves a mix of two runs' outputs.
    with contextlib.ExitStack() as stack:
        files = stack.enter_context(FileSet())
        if args.heatmaps is not None:
            scored["heatmap"] = _heatmaps(stack, scorer, scored, args.heatmaps)
        files.write_csv(args.output, scored)
        tables = level_tables(scored, point, aggregation) if failed < len(scored) else {}
        for level, path in level_paths.items():
            files.remove_stale(path)
            if level in tables:
                files.write_csv(path, tables[level])
    from xrad.utils.notice import RESEARCH_NOTICE

    print(RESEARCH_NOTICE)
    print(
        f"scored {len(scored) - failed} image(s) → {args.output}"
        + (f"; {failed} unreadable (see the `error` column)" if failed else "")
    )
    degenerate = int((scored["degenerate"] != "").sum()) if "degenerate" in scored else 0
    if degenerate:
        print(
            f"warning: {degenerate} image(s) are degenerate (tiny or constant): their scores mean little; see the "
            "`degenerate` column",
            file=sys.stderr,
        )
    if failed and failed == len(scored):
        from xrad.errors import DataError

        raise DataError(
            f"{args.input}: none of the {failed} image(s) could be read; the reasons are in the "
            f"`error` column of {args.output}"
        )
    for level, table in tables.items():
        plural = {"study": "studies", "patient": "patients"}[level]
        flagged = f", {int(table['flagged'].sum())} flagged" if "flagged" in table else ""
        print(f"{len(table)} {plural} ({aggregation} of image scores{flagged}) → {level_paths[level]}")
    return 0


def _print_scores(args: argparse.Namespace) -> int:
    """Score INPUT and print one line per image (score, percentile, flag) after the research-use notice."""
    from xrad.inference.artefact import meta_of
    from xrad.inference.readout import readout_line, score_images
    from xrad.inference.scoring import load_scorer
    from xrad.inference.sources import collect_inputs
    from xrad.utils.notice import RESEARCH_NOTICE

    frame = collect_inputs(args.input)
    scorer = load_scorer(args.artefact)
    scored = score_images(
        scorer,
        frame,
        batch_size=args.batch_size,
        workers=args.workers,
        on_error="raise" if args.strict else "skip",
        progress=len(frame) > 1,
    )
    meta = meta_of(scorer)
    print(RESEARCH_NOTICE)
    for _, row in scored.iterrows():
        print(readout_line(row, meta))
    failed = int((scored["error"] != "").sum()) if "error" in scored else 0
    if failed and failed == len(scored):
        from xrad.errors import DataError

        raise DataError(f"{args.input}: none of the {failed} image(s) could be read (reasons above)")
    return 0


def _heatmaps(stack: contextlib.ExitStack, scorer: Scorer, scored: pd.DataFrame, folder: Path) -> list[str]:
    """Write the overlays into a folder staged beside ``folder`` (published when the stack closes); the paths
    returned are where they will be."""
    from xrad.inference.heatmaps import write_heatmaps
    from xrad.utils.atomic import staged_folder

    staged = stack.enter_context(staged_folder(folder, owned=_heatmap_entry))
    final = folder.resolve()
    written = write_heatmaps(scorer, scored, staged, progress=True)
    return [str(final / Path(p).name) if p else "" for p in written]


def _heatmap_entry(entry: Path) -> bool:
    """What a heatmaps folder of `xrad score` holds: ``<row>_<stem>.png`` (and temporaries of older versions)."""
    import re

    return bool(re.match(r"^(\d{6}_.*\.png|\..*\.tmp)$", entry.name, re.DOTALL))
