"""How often the inversion fix inverts FracAtlas images (old outer-band rule vs today's), with contact sheets.

Usage: .venv/bin/python benchmarks/bench_inversion.py -o /tmp/inversion [--parts hand,shoulder] [--csv ev.csv]

FracAtlas's images are correctly displayed digital exports (no inverted one was found by eye among the
images either rule flags; the contact sheets are for checking that), so every inversion it reports there
is a wrong one. Prints, for the benchmark parts and for all images: images inverted by the old rule
(median of the outer 4 % band above 0.5) and by today's rule, images flagged ``inversion_uncertain``, and
how many of the same images turned into negatives (1 − v, a faithful inverted radiograph) each rule
corrects (and, of today's misses, how many it flags uncertain). Then the phantom check: a freshly
generated phantom set (``--phantom-patients`` patients, seed 7, 256 px) against its ``inverted`` ground
truth. Writes to the ``-o`` folder: ``new_inverted*.png`` (every image today's rule inverts, source and
preprocessed result side by side), ``issue_images.png`` (the eight images of the issue, after the fix),
``uncertain*.png`` (benchmark parts), ``old_inverted*.png`` (all images) and ``phantoms_inverted.png``
(the phantoms today's rule inverts). Skips with a message when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from xrad.data.io import read_radiograph
from xrad.preprocess import PreprocessParams
from xrad.preprocess.contact_sheet import render_pair
from xrad.preprocess.segment import inversion_evidence

FRACATLAS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fracatlas"
# The first eight hand/shoulder images the old rule inverted (the detection issue, item 0).
ISSUE_IMAGES = (
    "IMG0000514",
    "IMG0000760",
    "IMG0001139",
    "IMG0001557",
    "IMG0001558",
    "IMG0002110",
    "IMG0002298",
    "IMG0002379",
)
PER_SHEET = 24


def old_rule(gray: np.ndarray, border_fraction: float = 0.04, threshold: float = 0.5) -> bool:
    """The rule this benchmark replaces: the median of the outer band is bright."""
    h, w = gray.shape
    band = max(1, int(round(border_fraction * min(h, w))))
    border = np.concatenate(
        [gray[:band].ravel(), gray[-band:].ravel(), gray[:, :band].ravel(), gray[:, -band:].ravel()]
    )
    return float(np.median(border)) / 255.0 > threshold


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """The uint8 image preprocess_image decides on."""
    return np.clip(np.round(np.asarray(pixels, np.float32) * 255.0), 0, 255).astype(np.uint8)


def measure(paths: list[Path], params: PreprocessParams, negatives: bool) -> pd.DataFrame:
    """Per image: both rules on the image and, with ``negatives``, on its negative; today's cues."""
    rows = []
    for path in paths:
        gray = to_gray(read_radiograph(path).pixels)
        evidence = inversion_evidence(gray, params)
        row = {
            "name": path.stem,
            "old": int(old_rule(gray)),
            "new": int(evidence.inverted),
            "uncertain": int(evidence.uncertain),
            "extrema": evidence.extrema,
            "texture": evidence.texture,
        }
        if negatives:
            flipped = inversion_evidence(255 - gray, params)
            row.update(
                old_neg=int(old_rule(255 - gray)), new_neg=int(flipped.inverted), uncertain_neg=int(flipped.uncertain)
            )
        rows.append(row)
    return pd.DataFrame(rows)


def write_sheets(paths: list[Path], params: PreprocessParams, out: Path, stem: str, columns: int = 3) -> list[Path]:
    """Contact sheets of source (candidates) | preprocessed result, PER_SHEET pairs a page."""
    written = []
    for page, start in enumerate(range(0, len(paths), PER_SHEET)):
        tiles = [
            render_pair(
                read_radiograph(p).pixels,
                params,
                p.stem if p.suffix == ".jpg" else f"{p.parent.parent.name[-5:]}/{p.parent.name[:6]}/{p.stem}",
            )
            for p in paths[start : start + PER_SHEET]
        ]
        while len(tiles) % columns:
            tiles.append(np.zeros_like(tiles[0]))
        grid = np.concatenate([np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)])
        path = out / f"{stem}_{page + 1}.png" if len(paths) > PER_SHEET else out / f"{stem}.png"
        cv2.imwrite(str(path), grid)
        written.append(path)
    return written


def phantom_check(patients: int, params: PreprocessParams, out: Path) -> str:
    """Today's rule against the ``inverted`` column of a freshly generated phantom set (and its sheet)."""
    from xrad.data.phantoms.generate import SynthConfig, generate_phantoms

    with tempfile.TemporaryDirectory(prefix="xrad_phantoms_") as tmp:
        generate_phantoms(Path(tmp), SynthConfig(n_patients=patients, seed=7, size=256, workers=1), progress=False)
        truth = pd.read_csv(Path(tmp) / "ground_truth.csv", keep_default_na=False)
        paths = [Path(tmp) / p for p in truth["path"]]
        found = measure(paths, params, negatives=False)
        inverted = truth["inverted"].astype(int).to_numpy() == 1
        new = found["new"].to_numpy() == 1
        if new.any():
            write_sheets([p for p, n in zip(paths, new) if n], params, out, "phantoms_inverted")
    return (
        f"phantoms ({patients} patients, seed 7, 256 px): {len(truth)} images, {inverted.sum()} inverted in "
        f"the ground truth; corrected {int((new & inverted).sum())}, missed {int((~new & inverted).sum())}, "
        f"other phantoms inverted {int((new & ~inverted).sum())}, uncertain {int(found['uncertain'].sum())}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the contact sheets")
    parser.add_argument("--data", type=Path, default=FRACATLAS)
    parser.add_argument("--parts", default="hand,shoulder", help="the benchmark subset (FracAtlas body_part)")
    parser.add_argument("--csv", type=Path, help="also write the per-image evidence here")
    parser.add_argument("--no-negatives", action="store_true", help="skip the inverted-copy recall check")
    parser.add_argument("--phantom-patients", type=int, default=30, help="0 skips the phantom check")
    args = parser.parse_args()
    if not (args.data / "labels.csv").is_file():
        print(f"skipped: FracAtlas not found at {args.data} (../shared/data is absent on this machine)")
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    params = PreprocessParams(size=256)
    labels = pd.read_csv(args.data / "labels.csv")
    start = time.perf_counter()
    found = measure([args.data / p for p in labels["path"]], params, negatives=not args.no_negatives)
    seconds = time.perf_counter() - start
    found["body_part"] = labels["body_part"].to_numpy()
    if args.csv:
        found.to_csv(args.csv, index=False)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    subset = found[found["body_part"].isin(parts)]
    print(
        f"FracAtlas: {len(found)} images decided in {seconds:.0f} s ({1000 * seconds / len(found):.0f} ms/image"
        f"{' incl. the negative' if not args.no_negatives else ''}); every inversion here is a wrong one"
    )
    print(
        f"{'images':<28}{'n':>6}{'old inverts':>13}{'new inverts':>13}{'uncertain':>11}"
        + ("" if args.no_negatives else f"{'negatives fixed: old':>22}{'new':>6}{'new uncertain':>15}")
    )
    for title, frame in ((" + ".join(parts), subset), ("all", found)):
        line = (
            f"{title:<28}{len(frame):>6}{int(frame['old'].sum()):>13}{int(frame['new'].sum()):>13}"
            f"{int(frame['uncertain'].sum()):>11}"
        )
        if not args.no_negatives:
            line += (
                f"{int(frame['old_neg'].sum()):>22}{int(frame['new_neg'].sum()):>6}"
                f"{int(frame['uncertain_neg'].sum()):>15}"
            )
        print(line)
    images = args.data / "images"
    sheets: list[Path] = []
    for stem, names in (
        ("new_inverted", found.loc[found["new"] == 1, "name"]),
        ("issue_images", ISSUE_IMAGES),
        ("uncertain", subset.loc[subset["uncertain"] == 1, "name"]),
        ("old_inverted", found.loc[found["old"] == 1, "name"]),
    ):
        if len(names):
            sheets += write_sheets([images / f"{n}.jpg" for n in names], params, args.output, stem)
    new_names = found.loc[found["new"] == 1, "name"].tolist()
    print(f"new rule inverts: {', '.join(new_names) or 'none'}")
    issue = found[found["name"].isin(ISSUE_IMAGES)]
    print(f"issue images: old rule inverts {int(issue['old'].sum())}/8, new rule {int(issue['new'].sum())}/8")
    print(f"contact sheets ({len(sheets)}): {args.output}")
    if args.phantom_patients > 0:
        print(phantom_check(args.phantom_patients, params, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
