"""The report's gallery: a run's highest- and lowest-scored test images, each drawn with its heatmap.

:func:`write_gallery` needs the trained artefact (it draws the heatmaps), so ``xrad report`` calls it and
the report (:mod:`xrad.evaluation.report`, which only embeds) shows ``RUN/gallery/gallery.json`` and its
PNGs when present. The PNGs and the JSON are published together: ``gallery.json`` lists exactly the images
beside it, and a re-run never leaves a mix of two runs' images.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GALLERY_DIR", "GALLERY_JSON", "write_gallery"]

log = logging.getLogger(__name__)

GALLERY_DIR = "gallery"
GALLERY_JSON = "gallery.json"


def _pick(frame: Any, n: int) -> list[tuple[str, int, Any]]:
    """(``highest`` | ``lowest``, rank, row) for the ``n`` highest then the ``n`` lowest finite scores (each
    image once: with fewer than 2n images the lowest are those not already among the highest)."""
    ok = frame[np.isfinite(frame["score"].to_numpy(float))]
    ordered = ok.sort_values("score", ascending=False, kind="stable")
    top = ordered.head(n)
    rest = ordered.drop(index=top.index)
    bottom = rest.tail(n).iloc[::-1]
    return [("highest", r + 1, row) for r, (_, row) in enumerate(top.iterrows())] + [
        ("lowest", r + 1, row) for r, (_, row) in enumerate(bottom.iterrows())
    ]


def write_gallery(run_dir: str | Path, n: int = 6, split: str = "test") -> Path | None:
    """Draw the ``n`` highest- and ``n`` lowest-scored images of ``RUN/scores_<split>.csv`` with the run's
    artefact into ``RUN/gallery/`` (``<which>_<rank>.png`` and ``gallery.json``); returns the JSON's path, or
    None when the run has no artefact or no scores. An image that cannot be drawn is listed without a PNG."""
    from xrad.evaluation.evaluate import read_scores
    from xrad.inference.artefact import meta_of
    from xrad.inference.heatmaps import explain_row
    from xrad.inference.readout import percentiles
    from xrad.inference.scoring import load_scorer
    from xrad.utils.atomic import FileSet

    run_dir = Path(run_dir)
    scores_csv, artefact = run_dir / f"scores_{split}.csv", run_dir / "artefact"
    if not scores_csv.is_file() or not (artefact / "artefact.json").is_file():
        return None
    frame = read_scores(scores_csv)
    scorer = load_scorer(artefact)
    reference = meta_of(scorer).normal_reference
    out = run_dir / GALLERY_DIR
    out.mkdir(exist_ok=True)
    entries: list[dict[str, Any]] = []
    with FileSet() as files:
        for stale in out.glob("*.png"):
            files.remove_stale(stale)
        for which, rank, row in _pick(frame, n):
            name = f"{which}_{rank:02d}.png"
            try:
                files.write_bytes(out / name, explain_row(scorer, row).figure_png())
            except Exception as exc:  # one image that cannot be drawn never costs the others
                log.warning("gallery: %s could not be drawn (%s)", Path(str(row["path"])).name, type(exc).__name__)
                name = ""
            label = row.get("label")
            score = float(row["score"])
            percentile = float(percentiles([score], reference)[0])
            entries.append(
                {
                    "which": which,
                    "rank": rank,
                    "image": Path(str(row["path"])).name,
                    "body_part": str(row.get("body_part", "") or ""),
                    "label": None if label is None or label != label else int(label),
                    "score": score,
                    "percentile": percentile if np.isfinite(percentile) else None,
                    "png": name,
                }
            )
        files.write_json(out / GALLERY_JSON, {"split": split, "n": n, "images": entries})
    return out / GALLERY_JSON
