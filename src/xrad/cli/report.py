"""``xrad report RUN_OR_BENCHMARK``: one self-contained HTML report (figures embedded) plus the PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

from xrad.cli.options import int_at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``xrad report``."""
    parser.add_argument(
        "folder",
        type=Path,
        help="a run folder (xrad train -o), the folder of xrad run (its detector/ is reported) or a benchmark "
        "output folder",
    )
    parser.add_argument("-o", "--output", type=Path, default=None, help="HTML file (default: FOLDER/report.html)")
    parser.add_argument(
        "--n-bootstrap", type=int_at_least(0), default=1000, help="bootstrap resamples for the run evaluation"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of the t-SNE")
    parser.add_argument(
        "--gallery", type=int_at_least(0), default=6, help="highest- and lowest-scored test images shown (0: none)"
    )
    parser.add_argument("--max-tsne-points", type=int_at_least(10), default=2000, help="subsample size for t-SNE")


def run(args: argparse.Namespace) -> int:
    """Render the report and print where it is."""
    from xrad.evaluation.report import render_report
    from xrad.utils.atomic import check_writable

    if args.output is not None:
        check_writable(args.output)  # before minutes of bootstrap and t-SNE
    if args.gallery:
        from xrad.inference.gallery import write_gallery
        from xrad.run_folder import detector_folder

        write_gallery(detector_folder(args.folder), n=args.gallery)
    path = render_report(
        args.folder,
        args.output,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        max_tsne_points=args.max_tsne_points,
    )
    print(f"wrote {path}")
    return 0
