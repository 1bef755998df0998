"""``xrad score ARTEFACT INPUT -o scores.csv``: score new images with a trained artefact.

INPUT may be one image file (PNG, JPEG, TIFF or DICOM), a folder of such files (searched recursively;
DICOM recognised by content), a MURA tree, or a manifest CSV (needs a ``path`` column; ``cache_path``
rows from ``xrad preprocess`` are used as they are). Lightning is never imported.

Besides the image table it writes ``<output stem>_studies.csv`` (and ``_patients.csv``) where the ids allow,
aggregated as in evaluation; with a calibrated artefact (``xrad calibrate``) every table has ``flagged``.
``--heatmaps DIR`` adds an overlay PNG per image (path in the ``heatmap`` column).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from xrad.cli.options import int_at_least

if TYPE_CHECKING:  # pragma: no cover
    import contextlib

    import pandas as pd

    from xrad.methods.base import Scorer

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``xrad score``."""
    parser.add_argument(
        "artefact", type=Path, help="artefact folder written by training (model.safetensors + artefact.json)"
    )
    parser.add_argument(
        "input", type=Path, help="an image, a folder of images/DICOM files, a MURA tree or a manifest CSV"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="scores CSV to write")
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
        help="study/patient score: mean, max or topK (default: the operating point's, else mean)",
    )
    parser.add_argument(
        "--heatmaps",
        type=Path,
        metavar="DIR",
        help="also write a heatmap overlay PNG per image into DIR (column `heatmap`)",
    )


def collect_inputs(source: Path) -> pd.DataFrame:
    """Turn INPUT into a table with at least ``path`` (and ids where the source has them)."""
    import pandas as pd

    from xrad.data.indexing import index_dicom_folder, index_mura, is_dicom
    from xrad.data.manifest import read_manifest
    from xrad.errors import DataError
    from xrad.utils.files import entry_kind

    kind = entry_kind(source)
    if kind == "missing":
        raise DataError(f"{source}: not found; pass an image, a folder or a manifest CSV")
    if kind == "file":
        if source.suffix.lower() == ".csv":
            return read_manifest(source, require=("path",))
        return pd.DataFrame({"path": [str(source.resolve())], "study_id": [source.stem]})
    if kind != "directory":
        raise DataError(f"{source}: is a {kind}, not an image, a folder or a manifest CSV; check the path")
    if source.name == "MURA-v1.1" or (source / "MURA-v1.1").is_dir():
        return index_mura(source)
    files: list[Path] = []
    special: list[Path] = []
    for dirpath, dirs, names in os.walk(source):  # links to folders are not followed (no loops)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            (files if entry_kind(path) == "file" else special).append(path)
    dicoms = [p for p in files if is_dicom(p)]
    dicom_set = set(dicoms)  # built once: membership per file, not a new set per file
    # An entry named like an image that is not a regular file (a FIFO, a broken link ...) is never opened, but
    # listed: its row says why it was not scored instead of it vanishing from the table.
    images = [p for p in files + special if p.suffix.lower() in IMAGE_SUFFIXES and p not in dicom_set]
    parts = []
    if dicoms:
        # The other images are read below; a damaged DICOM header is kept as a row, which will say why.
        parts.append(index_dicom_folder(source, warn_left_out=False, keep_unreadable=True))
    if images:
        parts.append(
            pd.DataFrame(
                {
                    "path": [str(p.absolute()) for p in images],
                    "study_id": [str(p.parent.relative_to(source) / p.stem) for p in images],
                }
            )
        )
    if not parts:
        raise DataError(f"{source}: no PNG, JPEG, TIFF or DICOM files found")
    return pd.concat(parts, ignore_index=True)


def run(args: argparse.Namespace) -> int:
    """Score INPUT and write the scores table (and its study/patient tables, published together)."""
    import contextlib
    import sys

    from xrad.evaluation.aggregate import parse_aggregation
    from xrad.inference.artefact import meta_of
    from xrad.inference.calibration import flag, level_tables
    from xrad.inference.scoring import load_scorer, score_frame
    from xrad.utils.atomic import FileSet, check_writable

    # Everything that can be refused is refused before scoring starts.
    if args.aggregation is not None:
        parse_aggregation(args.aggregation)
    check_writable(args.output)
    if args.heatmaps is not None:
        from xrad.utils.atomic import check_replaceable

        check_replaceable(args.heatmaps, _heatmap_entry)
    frame = collect_inputs(args.input)
    scorer = load_scorer(args.artefact)
    scored = score_frame(
        scorer,
        frame,
        batch_size=args.batch_size,
        workers=args.workers,
        on_error="raise" if args.strict else "skip",
        progress=True,
    )
    point = meta_of(scorer).operating_point
    if point:  # score >= the calibrated image threshold (unreadable rows: False)
        scored["flagged"] = flag(scored["score"], point)
    failed = int((scored.get("error", "") != "").sum()) if "error" in scored else 0
    aggregation = args.aggregation or ((point or {}).get("study") or {}).get("aggregation") or "mean"
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
