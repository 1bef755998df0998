"""``xrad index SOURCE -o MANIFEST``: index a MURA tree, a CSV file or a DICOM folder into a manifest.

The kind of source is detected: a folder that is or contains ``MURA-v1.1`` → MURA; a ``.csv`` file → a
table with (by default) ``path`` and ``label`` columns; a folder holding DICOM files → DICOM headers
(identifiers pseudonymised). Paths in the manifest are absolute.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``xrad index``."""
    parser.add_argument("source", type=Path, help="MURA-v1.1 folder (or its parent), a CSV file, or a DICOM folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="manifest CSV to write")
    csv = parser.add_argument_group("CSV sources")
    csv.add_argument("--path-column", default=argparse.SUPPRESS, help="column holding image paths (default: path)")
    csv.add_argument(
        "--label-column",
        default=argparse.SUPPRESS,
        help="column holding labels 0/1, true/false, normal/abnormal, empty (default: label)",
    )
    csv.add_argument(
        "--no-labels",
        action="store_true",
        default=argparse.SUPPRESS,
        help="the table has no labels (all unknown)",
    )
    csv.add_argument(
        "--patient-column",
        default=argparse.SUPPRESS,
        help="column holding patient ids (default: none → per image)",
    )
    csv.add_argument(
        "--study-column",
        default=argparse.SUPPRESS,
        help="column holding study ids (default: one study per image)",
    )
    csv.add_argument(
        "--body-part-column",
        default=argparse.SUPPRESS,
        help="column holding body parts (default: body_part if present)",
    )
    csv.add_argument("--view-column", default=argparse.SUPPRESS, help="column holding the view")
    csv.add_argument(
        "--view-columns",
        default=argparse.SUPPRESS,
        help="comma-separated 0/1 view flag columns joined into view, e.g. frontal,lateral,oblique",
    )
    csv.add_argument(
        "--base-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="folder relative paths refer to (default: the CSV's folder)",
    )
    csv.add_argument(
        "--keep-columns",
        action="store_true",
        default=argparse.SUPPRESS,
        help="keep the table's other columns",
    )
    dicom = parser.add_argument_group("DICOM folders")
    dicom.add_argument(
        "--labels",
        type=Path,
        default=argparse.SUPPRESS,
        help="CSV with study_id,label columns (clear StudyInstanceUID or its pseudonym)",
    )


def run(args: argparse.Namespace) -> int:
    """Index the source, write the manifest atomically and print a short summary."""
    import warnings

    from xrad.data.indexing import index_source, index_summary
    from xrad.data.manifest import write_manifest

    # Options left unset are absent from args (default=SUPPRESS keeps --help free of "(default: None)").
    names = (
        "path_column",
        "label_column",
        "no_labels",
        "patient_column",
        "study_column",
        "body_part_column",
        "view_column",
        "view_columns",
        "base_dir",
        "keep_columns",
        "labels",
    )
    options = {name: getattr(args, name) for name in names if hasattr(args, name)}
    if "view_columns" in options:
        options["view_columns"] = options["view_columns"].split(",")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = index_source(args.source, **options)
    for warning in caught:
        print(f"xrad index: warning: {warning.message}")
    write_manifest(frame, args.output)
    print(index_summary(frame))
    print(f"wrote {args.output} ({len(frame)} rows)")
    return 0
