"""How many FracAtlas body masks sit on a border bar or the background: the largest component vs today's rule.

Usage: .venv/bin/python benchmarks/bench_masks.py -o /tmp/masks [--parts hand,shoulder] [--limit N] [--csv m.csv]

Each image is preprocessed twice at 256 px, with ``mask_border_band=0`` (the largest bright component, the
rule before) and with today's default, and each resulting mask is checked (:func:`check`, in the image's
own region of the square output, padding left out):

- ``background``: the mask is darker on average than what it leaves out (it covers the detector background);
- ``plate``: it fills >= 85 % of a bounding box covering >= half the image (a detector plate, not a limb);
- ``strip``: >= half its area lies in the border band (6 % of the major axis): a film or detector edge;
- ``bar``: >= 5 % of it lies on border lines (within that band) it covers over >= 90 % of their length
  and that are flat there (median |image − Gaussian(1.5)| < 2.5): a collimator bar stuck to the body.

The first three mean the mask missed the body part (``severe``); ``bar`` that it carries a bar along.
Shoulders and chests legitimately fill a whole side with flat soft tissue, so ``bar`` has false flags
there: look at the sheets. Writes ``flagged_old*.png`` / ``flagged_new*.png`` (the flagged images, mask
tinted green) and ``changed*.png`` (masks that changed: new mask green, old outline red) to ``-o``.
Skips with a message when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from xrad.data.io import read_radiograph
from xrad.preprocess import PreprocessParams, PreprocessResult, preprocess_image

FRACATLAS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fracatlas"
BAND, COVER, FLAT, BAR_SHARE = 0.06, 0.9, 2.5, 0.05
PER_SHEET, TILE, COLUMNS = 48, 192, 8
KINDS = ("background", "plate", "strip", "bar", "severe", "flagged")


def image_region(meta: dict[str, Any]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the image inside the padded square: the crop (or the source) through the transform."""
    transform = np.asarray(meta["transform"], np.float64)
    if meta["crop_polygon"] is None:
        h, w = meta["source_shape"]
        corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    else:
        corners = np.asarray(meta["crop_polygon"], np.float64)
    mapped = np.c_[corners, np.ones(4)] @ transform.T
    xy = mapped[:, :2] / mapped[:, 2:]
    x0, y0 = np.floor(xy.min(axis=0) + 0.5).astype(int)
    x1, y1 = np.floor(xy.max(axis=0) + 0.5).astype(int)
    return max(x0, 0), max(y0, 0), x1, y1


def _bar_lines(mask: np.ndarray, texture: np.ndarray, depth: int) -> np.ndarray:
    h, w = mask.shape
    lines = np.zeros_like(mask)
    indices = [(i, slice(None)) for i in range(depth)] + [(h - 1 - i, slice(None)) for i in range(depth)]
    indices += [(slice(None), j) for j in range(depth)] + [(slice(None), w - 1 - j) for j in range(depth)]
    for index in indices:
        line = mask[index]
        if line.mean() >= COVER and float(np.median(texture[index][line])) < FLAT:
            lines[index] = line
    return lines


def check(image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """The mask's defects (module docstring) for one image region (uint8 image, boolean mask)."""
    image = image.astype(np.float32)
    h, w = mask.shape
    depth = max(2, round(BAND * max(h, w)))
    area = max(int(mask.sum()), 1)
    band = np.ones((h, w), bool)
    band[depth : h - depth, depth : w - depth] = False
    texture = np.abs(image - cv2.GaussianBlur(image, (0, 0), 1.5))
    ys, xs = np.nonzero(mask)
    box = (int(np.ptp(ys)) + 1) * (int(np.ptp(xs)) + 1) if len(ys) else 1
    out: dict[str, Any] = {
        "background": bool(mask.any() and (~mask).any() and image[mask].mean() < image[~mask].mean()),
        "plate": bool(area >= 0.85 * box and box >= 0.5 * h * w),
        "strip": bool((mask & band).sum() >= 0.5 * area),
        "bar_share": round(float(_bar_lines(mask, texture, depth).sum()) / area, 4),
    }
    out["bar"] = out["bar_share"] >= BAR_SHARE
    out["severe"] = out["background"] or out["plate"] or out["strip"]
    out["flagged"] = out["severe"] or out["bar"]
    return out


def _checked(result: PreprocessResult) -> dict[str, Any]:
    x0, y0, x1, y1 = image_region(result.meta)
    return check(result.image[y0:y1, x0:x1], result.mask[y0:y1, x0:x1] > 0)


def _tile(result: PreprocessResult, label: str, old: np.ndarray | None = None) -> np.ndarray:
    bgr = cv2.cvtColor(result.image, cv2.COLOR_GRAY2BGR)
    inside = result.mask > 0
    bgr[inside] = (0.6 * bgr[inside] + 0.4 * np.array([0, 200, 0])).astype(np.uint8)
    if old is not None:
        contours, _ = cv2.findContours(old.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(bgr, contours, -1, (0, 0, 255), 1)
    tile = cv2.resize(bgr, (TILE, TILE), interpolation=cv2.INTER_AREA)
    cv2.putText(tile, label, (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 255, 255), 1, cv2.LINE_AA)
    return tile


def write_sheets(tiles: list[np.ndarray], out: Path, stem: str) -> list[Path]:
    written = []
    for page, start in enumerate(range(0, len(tiles), PER_SHEET)):
        chunk = tiles[start : start + PER_SHEET]
        while len(chunk) % COLUMNS:
            chunk.append(np.zeros_like(chunk[0]))
        grid = np.concatenate([np.concatenate(chunk[i : i + COLUMNS], axis=1) for i in range(0, len(chunk), COLUMNS)])
        path = out / (f"{stem}_{page + 1}.png" if len(tiles) > PER_SHEET else f"{stem}.png")
        cv2.imwrite(str(path), grid)
        written.append(path)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the contact sheets")
    parser.add_argument("--data", type=Path, default=FRACATLAS)
    parser.add_argument("--parts", default="hand,shoulder", help="FracAtlas body_part values")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    parser.add_argument("--csv", type=Path, help="also write the per-image checks here")
    args = parser.parse_args()
    if not (args.data / "labels.csv").is_file():
        print(f"skipped: FracAtlas not found at {args.data} (../shared/data is absent on this machine)")
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    labels = pd.read_csv(args.data / "labels.csv")
    labels = labels[labels["body_part"].isin([p.strip() for p in args.parts.split(",") if p.strip()])]
    if args.limit:
        labels = labels.head(args.limit)
    old_params, new_params = PreprocessParams(size=256, mask_border_band=0.0), PreprocessParams(size=256)
    rows, sheets = [], {"flagged_old": [], "flagged_new": [], "changed": []}
    start = time.perf_counter()
    for _, label in labels.iterrows():
        path = args.data / label["path"]
        radiograph = read_radiograph(path)
        old = preprocess_image(radiograph.pixels, old_params, photometric=radiograph.meta.photometric)
        new = preprocess_image(radiograph.pixels, new_params, photometric=radiograph.meta.photometric)
        before, after = _checked(old), _checked(new)
        changed = not np.array_equal(old.mask, new.mask)
        rows.append(
            {"name": path.stem, "body_part": label["body_part"], "changed": changed}
            | {f"old_{k}": v for k, v in before.items()}
            | {f"new_{k}": v for k, v in after.items()}
        )
        if before["flagged"]:
            sheets["flagged_old"].append(_tile(old, path.stem[3:]))
        if after["flagged"]:
            sheets["flagged_new"].append(_tile(new, path.stem[3:]))
        if changed:
            sheets["changed"].append(_tile(new, path.stem[3:], old.mask > 0))
    seconds = time.perf_counter() - start
    found = pd.DataFrame(rows)
    if args.csv:
        found.to_csv(args.csv, index=False)
    print(f"FracAtlas {args.parts}: {len(found)} images, each preprocessed twice in {seconds:.0f} s")
    print(f"{'masks':<10}{'rule':<22}" + "".join(f"{k:>12}" for k in KINDS))
    for part, frame in [("all", found), *found.groupby("body_part")]:
        for rule, prefix in (("largest component", "old_"), ("today's", "new_")):
            print(f"{part:<10}{rule:<22}" + "".join(f"{int(frame[prefix + k].sum()):>12}" for k in KINDS))
    print(f"masks changed: {int(found['changed'].sum())}")
    written = [p for stem, tiles in sheets.items() if tiles for p in write_sheets(tiles, args.output, stem)]
    print(f"contact sheets ({len(written)}): {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
