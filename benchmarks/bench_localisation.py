"""How often does the heatmap maximum of a fractured FracAtlas image fall inside an annotated fracture box?

usage: .venv/bin/python benchmarks/bench_localisation.py ARTEFACT SPLIT_MANIFEST [--splits test,valid]
       [--layers encoder.backbone.layer4,encoder.backbone.layer3]
The detector's own heatmap (what `xrad score --heatmaps` draws: the patch-score map of the local detectors,
Grad-CAM or the residual of the others), mapped back to the original image through the preprocessing
homography, and optionally Grad-CAM at the given layers (empty: skip). Compares with chance: (a) a point
uniform over the image, (b) uniform over the body (pixels above the image's Otsu threshold), (c) the image centre.
Also the pixel AUROC of the heatmap over the body pixels of the fractured images (inside a box: positive),
pooled over images on a 4-pixel grid, and its mean per image on that grid (0.5: chance).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xrad.data.io import read_radiograph
from xrad.data.model_input import prepare_eval
from xrad.evaluation.metrics import auroc
from xrad.inference.calibration import clopper_pearson
from xrad.inference.heatmaps import explain_pixels, normalise, to_original
from xrad.inference.input import prepare_input
from xrad.inference.scoring import load_scorer
from xrad.models.gradcam import grad_cam

parser = argparse.ArgumentParser()
parser.add_argument("artefact")
parser.add_argument("manifest")
parser.add_argument(
    "--coco",
    default=str(
        Path(__file__).resolve().parents[1].parent
        / "shared"
        / "data"
        / "fracatlas"
        / "annotations"
        / "fractures_coco.json"
    ),
)
parser.add_argument("--splits", default="test,valid")
parser.add_argument("--layers", default="", help="Grad-CAM layers, comma-separated (default: none)")
parser.add_argument("--limit", type=int, default=0)
args = parser.parse_args()

coco = json.loads(Path(args.coco).read_text())
boxes: dict[str, list[list[float]]] = {}
ids = {im["id"]: im["file_name"] for im in coco["images"]}
for ann in coco["annotations"]:
    boxes.setdefault(ids[ann["image_id"]], []).append(ann["bbox"])
frame = pd.read_csv(args.manifest, dtype=str, keep_default_na=False)
frame = frame[frame["split"].isin(args.splits.split(",")) & (frame["label"] == "1")]
frame = frame[frame["path"].map(lambda p: Path(p).name in boxes)]
if args.limit:
    frame = frame.head(args.limit)
scorer = load_scorer(args.artefact)
spec = scorer.artefact_meta.input_spec()
layers = [layer for layer in args.layers.split(",") if layer]
hits: dict[str, list[bool]] = {layer: [] for layer in layers}
own_hits: list[bool] = []
chance_img, chance_body, centre = [], [], []
pixel_labels, pixel_scores, per_image_auroc = [], [], []
t0 = time.time()
for path in frame["path"]:
    radiograph = read_radiograph(path)
    pixels = radiograph.pixels
    h, w = pixels.shape
    inside = np.zeros((h, w), bool)
    for x, y, bw, bh in boxes[Path(path).name]:
        inside[int(np.floor(y)) : int(np.ceil(y + bh)), int(np.floor(x)) : int(np.ceil(x + bw))] = True
    import cv2

    grey = np.round(pixels * 255).astype(np.uint8)
    _, body = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    body = body.astype(bool)
    chance_img.append(inside.mean())
    chance_body.append(inside[body].mean() if body.any() else inside.mean())
    centre.append(inside[h // 2, w // 2])
    own = explain_pixels(scorer, radiograph, allow_truncated=True).heat
    r, c = np.unravel_index(int(own.argmax()), own.shape)
    own_hits.append(bool(inside[r, c]) if own.shape == inside.shape else False)
    if own.shape == inside.shape and inside[body].any() and not inside[body].all():
        grid = np.zeros_like(body)
        grid[::4, ::4] = True  # a megapixel radiograph: every 16th body pixel is plenty, and bounded
        sampled = body & grid
        if inside[sampled].any() and not inside[sampled].all():
            pixel_labels.append(inside[sampled])
            pixel_scores.append(own[sampled])
            per_image_auroc.append(auroc(inside[sampled].astype(int), own[sampled]))
    if not layers:
        continue
    prepared = prepare_input(pixels, spec)
    image, mask, base = prepared.image, prepared.mask, prepared.base
    x = prepare_eval(image[None], mask[None])
    for layer in layers:
        heat = to_original(normalise(grad_cam(scorer, x, layer=layer), mask[None])[0, 0], base.shape)
        r, c = np.unravel_index(int(heat.argmax()), heat.shape)
        hits[layer].append(bool(inside[r, c]))
n = len(frame)
print(f"{n} fractured images with boxes (splits {args.splits}), image size {spec.image_size}, {time.time() - t0:.0f} s")
k = int(np.sum(own_hits))
lo, hi = clopper_pearson(k, n)
method = scorer.artefact_meta.method
print(f"detector heatmap ({method}): peak inside a fracture box {k}/{n} = {k / n:.3f} (95% CI {lo:.3f}-{hi:.3f})")
for layer in layers:
    k = int(np.sum(hits[layer]))
    lo, hi = clopper_pearson(k, n)
    print(f"Grad-CAM {layer}: peak inside a fracture box {k}/{n} = {k / n:.3f} (95% CI {lo:.3f}-{hi:.3f})")
print(f"chance, uniform over the image: {np.mean(chance_img):.3f}")
print(f"chance, uniform over the body (Otsu foreground): {np.mean(chance_body):.3f}")
print(f"image centre inside a box: {np.mean(centre):.3f}")
if pixel_labels:
    pooled = auroc(np.concatenate(pixel_labels).astype(int), np.concatenate(pixel_scores))
    print(
        f"pixel AUROC of the detector heatmap over body pixels (boxes positive): pooled {pooled:.3f}, "
        f"mean per image {np.mean(per_image_auroc):.3f} over {len(per_image_auroc)} images (chance 0.5)"
    )
