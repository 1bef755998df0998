"""One self-contained HTML report for a run folder or a benchmark folder (PNG figures embedded as data URIs).

``render_report(folder)`` writes ``folder/report.html`` and the PNGs in ``folder/report/``. The HTML needs
no network and no JavaScript. Every section is always present; where its input is missing (e.g. a method
that logs no spheres) the section says which file it looked for. The sections live in
:mod:`xrad.evaluation.report_run` and :mod:`xrad.evaluation.report_benchmark`, their shared pieces in
:mod:`xrad.evaluation.report_parts`.
"""

from __future__ import annotations

import html
from pathlib import Path

from xrad.errors import DataError
from xrad.evaluation.report_benchmark import benchmark_report
from xrad.evaluation.report_parts import REPORT_CSS, ReportBuilder, stage_metrics
from xrad.evaluation.report_run import run_report
from xrad.run_folder import detector_folder
from xrad.utils.atomic import write_text

__all__ = ["is_benchmark_folder", "render_report", "stage_metrics"]


def is_benchmark_folder(folder: Path) -> bool:
    """A benchmark folder has ``cells/`` or ``results.csv``."""
    return (folder / "cells").is_dir() or (folder / "results.csv").is_file()


def render_report(
    folder: str | Path,
    output: str | Path | None = None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    max_tsne_points: int = 2000,
) -> Path:
    """Render ``folder`` (a run or a benchmark) as one HTML file (default FOLDER/report.html)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; pass a run folder (xrad train -o) or a benchmark output folder")
    output = Path(output) if output else folder / "report.html"
    folder = detector_folder(folder)  # the folder of `xrad run` holds the detector's run folder
    builder = ReportBuilder(
        output.parent / f"{output.stem}_figures" if output.stem != "report" else output.parent / "report"
    )
    if is_benchmark_folder(folder):
        title = benchmark_report(builder, folder, seed, max_tsne_points)
    elif (folder / "summary.json").is_file() or (folder / "scores_test.csv").is_file():
        title = run_report(builder, folder, n_bootstrap, seed, max_tsne_points)
    else:
        raise DataError(
            f"{folder}: neither a run folder (summary.json, scores_test.csv) nor a benchmark folder "
            f"(results.csv); point at the folder written by `xrad train` or `xrad benchmark`"
        )
    page = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{REPORT_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class='note'>Folder: {html.escape(str(folder.resolve()))}</p>"
        + "\n".join(builder.parts)
        + "</body></html>"
    )
    write_text(output, page)
    return output
