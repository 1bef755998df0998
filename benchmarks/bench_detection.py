"""Detection on the phantoms, side by side in one run: every detector per anomaly kind, beside the floors.

For an ``xrad run`` folder (phantoms + split + preprocessed cache; made with ``xrad run`` or
``--make-run``) this trains each config for each seed on the same split (resumable: cells live in
``OUT/cells``), and prints one table:

- test AUROC overall and per anomaly kind (plate, screws, fracture gap, displaced fragment, lesion,
  cortical bump: normals vs that kind), mean ± sd over the seeds and per seed;
- localisation: the share of abnormal test images whose heatmap maximum falls inside the anomaly mask
  (dilated by 2 cells of 8 px), against chance (the mask's share of the body), and the pixel AUROC of the
  heatmap inside the body;
- seconds per training epoch;
- the floors on the same split and network input size: raw-pixel kNN, a random ResNet-18's patch kNN, the
  supervised small CNN given every train+valid label (``bench_reference_points.py``), and each whole-image
  statistic inside the body (median, 95th / 99th percentile, maximum, mean, body area; AUROC in its better
  orientation) — a phantom set whose anomalies such a statistic finds has a shortcut;
- with ``--learnability-patients N``, the same supervised CNN given an independent labelled phantom set of N
  patients as well: whether each kind can be learnt at all, beyond the split's ~20 labels per kind.

usage: .venv/bin/python benchmarks/bench_detection.py --run runs/default --configs synthetic_cpu
       self_taught_patch_cpu --seeds 0 1 2 [--floors] [-o runs/bench_detection]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xrad.evaluation.by_kind import PHANTOM_KINDS as KINDS
from xrad.evaluation.by_kind import SHORT_NAMES as SHORT


def ground_truth(run: Path) -> pd.DataFrame:
    """The cache manifest with each image's anomaly kind and anomaly-mask path."""
    frame = pd.read_csv(run / "cache" / "manifest.csv")
    truth = pd.read_csv(run / "data" / "ground_truth.csv")
    truth["path"] = [str((run / "data" / p).resolve()) for p in truth["path"]]
    truth["anomaly_mask_path"] = [
        str(run / "data" / p) if isinstance(p, str) and p else "" for p in truth["anomaly_mask_path"]
    ]
    frame = frame.merge(truth[["path", "anomaly_type", "anomaly_mask_path"]], on="path", how="left")
    frame["anomaly_type"] = frame["anomaly_type"].fillna("normal").replace("", "normal")
    return frame


def per_kind(frame: pd.DataFrame, scores: np.ndarray) -> dict[str, float]:
    """Test AUROC overall and for each kind (normals vs that kind)."""
    from xrad.evaluation.by_kind import auroc_by_kind

    return auroc_by_kind(frame["label"], frame["anomaly_type"], scores)


def _mask_in_cache(row: pd.Series, run: Path, size: int) -> np.ndarray | None:
    """The anomaly mask warped into the cached image (the recorded crop homography), resized like the model
    input; None when the image has no mask or no recorded transform."""
    import cv2

    from xrad.data.model_input import resize_image_and_mask

    if not row["anomaly_mask_path"]:
        return None
    key = Path(row["cache_path"]).stem
    meta_path = run / "cache" / "meta" / f"{key}.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    mask = cv2.imread(row["anomaly_mask_path"], cv2.IMREAD_GRAYSCALE)
    cached = cv2.imread(row["cache_path"], cv2.IMREAD_GRAYSCALE)
    if mask is None or cached is None or meta.get("transform") is None:
        return None
    warped = cv2.warpPerspective(
        (mask > 0).astype(np.uint8),
        np.asarray(meta["transform"], np.float64),
        (cached.shape[1], cached.shape[0]),
        flags=cv2.INTER_NEAREST,
    )
    _, resized = resize_image_and_mask(cached, warped, size)
    return resized[0].numpy() > 0


def localisation(artefact: Path, frame: pd.DataFrame, run: Path) -> dict[str, float]:
    """Heatmap maximum inside the (dilated) anomaly mask, chance, and pixel AUROC, on abnormal test images."""
    from xrad.data.model_input import prepare_eval
    from xrad.evaluation.metrics import auroc
    from xrad.inference.scoring import load_scorer
    from xrad.training.banks import load_image_bank

    scorer = load_scorer(artefact)
    size = scorer.artefact_meta.input_spec().image_size
    rows = frame[(frame["label"] == 1)].reset_index(drop=True)
    bank = load_image_bank(rows, size, workers=2, progress=False)
    hits, chance, pixel_labels, pixel_scores = [], [], [], []
    for i, row in rows.iterrows():
        truth = _mask_in_cache(row, run, size)
        if truth is None or not truth.any():
            continue
        x = prepare_eval(bank.images[i : i + 1], bank.masks[i : i + 1])
        heat = scorer.heatmap(x)[0, 0].detach().numpy()
        body = bank.masks[i, 0].numpy() > 0
        near = (
            torch.nn.functional.max_pool2d(torch.from_numpy(truth[None].astype(np.float32)), 33, 1, 16)[0].numpy() > 0
        )
        peak = np.unravel_index(int(np.argmax(np.where(body, heat, -np.inf))), heat.shape)
        hits.append(bool(near[peak]))
        chance.append(float((near & body).sum() / max(body.sum(), 1)))
        pixel_labels.append(truth[body])
        pixel_scores.append(heat[body])
    if not hits:
        return {}
    return {
        "hit": float(np.mean(hits)),
        "chance": float(np.mean(chance)),
        "pixel_auroc": float(auroc(np.concatenate(pixel_labels), np.concatenate(pixel_scores))),
        "n": len(hits),
    }


def train_cell(config: str, seed: int, manifest: Path, out: Path, extra: list[str]) -> Path:
    """Train (or resume) one config × seed; returns its run folder."""
    from xrad.jobs.train import run_training

    cell = out / "cells" / f"{Path(config).stem}__seed{seed}"
    run_training(config, manifest, cell, progress=False, overrides=[f"seed={seed}", *extra])
    return cell


def seconds_per_epoch(cell: Path) -> float:
    """Training seconds per epoch over the cell's stages (from their done.json)."""
    seconds, epochs = 0.0, 0
    for done in cell.glob("*/done.json"):
        record = json.loads(done.read_text(encoding="utf-8"))
        seconds += float(record.get("seconds") or 0.0)
        epochs += int(record.get("epochs") or 0)
    return seconds / epochs if epochs else float("nan")


def global_statistics(images: torch.Tensor, masks: torch.Tensor) -> dict[str, np.ndarray]:
    """Whole-image statistics of the model input inside the body mask — the shortcuts a phantom set must not
    offer (a plate raises the maximum; swelling the body area)."""
    pixels = images.flatten(1).double().numpy()
    body = masks.flatten(1).numpy() > 0
    inside = np.where(body, pixels, np.nan)
    out = {f"p{q}": np.nanpercentile(inside, q, axis=1) for q in (50, 95, 99)}
    out["max"] = np.nanmax(inside, axis=1)
    out["mean"] = np.nanmean(inside, axis=1)
    out["body area"] = body.mean(axis=1)
    return {name: np.nan_to_num(values) for name, values in out.items()}


def learnability_reference(
    run: Path, frame: pd.DataFrame, patients: int, size: int, seed: int, epochs: int
) -> dict[str, float]:
    """The small supervised CNN trained on every label of an *independent* phantom set of ``patients`` patients
    (same generator, another seed) plus this run's train + valid labels, scored on this run's test split.

    With ~20 training examples per kind the split's own supervised reference measures how few labels there
    are, not whether a kind can be seen at all; this one answers the second question (is the set learnable?).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_reference_points as ref

    from xrad.jobs.pipeline import RunOptions, run_pipeline
    from xrad.training.banks import load_image_bank

    extra_run = run.parent / f"{run.name}_learnability_p{patients}"
    run_pipeline(RunOptions(output=extra_run, patients=patients, seed=1000 + seed), log=print, until="preprocess")
    extra = ground_truth(extra_run)
    both = pd.concat([extra, frame], ignore_index=True)
    bank = load_image_bank(both, size, workers=2, progress=False)
    split = both["split"].to_numpy()
    is_main = np.arange(len(both)) >= len(extra)
    train = np.flatnonzero(~is_main | (is_main & np.isin(split, ("train", "valid"))))
    test = np.flatnonzero(is_main & (split == "test"))
    _, scores = ref.supervised(bank, train, test, epochs, seed, small=True)
    return per_kind(both.iloc[test].reset_index(drop=True), scores)


def floors(frame: pd.DataFrame, size: int, seed: int, epochs: int) -> dict[str, dict[str, float]]:
    """Pixel kNN, random patch kNN and the supervised small CNN on the same split (bench_reference_points)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_reference_points as ref

    from xrad.data.model_input import prepare_eval
    from xrad.methods.knn.search import knn_mean_distance
    from xrad.models.resnet import ResNet18Backbone
    from xrad.training.banks import load_image_bank

    bank = load_image_bank(frame, size, workers=2, progress=False)
    x = prepare_eval(bank.images, bank.masks)
    split = frame["split"].to_numpy()
    normal_train = np.flatnonzero((split == "train") & (frame["semi_label"].to_numpy() != -1))
    test = np.flatnonzero(split == "test")
    test_frame = frame.iloc[test].reset_index(drop=True)
    out = {}
    flat = x.flatten(1)
    out["pixel kNN-5"] = per_kind(test_frame, knn_mean_distance(flat[test], flat[normal_train], k=5).numpy())
    for name, values in global_statistics(bank.images[test], bank.masks[test]).items():
        oriented = per_kind(test_frame, values)
        if oriented["all"] < 0.5:  # a shortcut works in either direction: report the better one
            oriented = per_kind(test_frame, -values)
        out[f"global {name}"] = oriented
    torch.manual_seed(seed)
    net = ResNet18Backbone(1).eval()
    maps = ref.feature_maps(net, x)
    both = torch.cat([maps[2], torch.nn.functional.interpolate(maps[3], size=maps[2].shape[-2:])], 1)
    out["random patch kNN"] = per_kind(test_frame, ref.patch_knn(both, bank.masks, normal_train, test))
    if epochs > 0:
        labelled = np.flatnonzero(np.isin(split, ("train", "valid")))
        _, scores = ref.supervised(bank, labelled, test, epochs, seed, small=True)
        out["supervised small CNN (every label)"] = per_kind(test_frame, scores)
    return out


def _row(name: str, values: list[dict[str, float]], extra: str = "") -> str:
    cells = []
    for key in ("all", *KINDS):
        got = [v[key] for v in values if key in v]
        if not got:
            cells.append(f"{'–':>11}")
        elif len(got) == 1:
            cells.append(f"{got[0]:>11.3f}")
        else:
            cells.append(f"{np.mean(got):>6.3f}±{np.std(got, ddof=1):.2f}")
    return f"{name:40s}" + "".join(cells) + f"  {extra}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"), help="an xrad run folder (phantoms)")
    parser.add_argument(
        "--make-run",
        action="store_true",
        help="make the run folder's data first (xrad run's "
        "phantoms, split and cache with its defaults), without training",
    )
    parser.add_argument("--configs", nargs="*", default=["synthetic_cpu"], help="detector configs to train")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE for every config")
    parser.add_argument("--floors", action="store_true", help="also the floors (pixel kNN, random patch kNN)")
    parser.add_argument("--floor-size", type=int, default=128, help="network input size of the floors")
    parser.add_argument(
        "--supervised-epochs", type=int, default=45, help="epochs of the supervised small-CNN reference (0: skip it)"
    )
    parser.add_argument(
        "--learnability-patients",
        type=int,
        default=0,
        help="also train the supervised small CNN on an independent phantom set of N patients (0: skip it)",
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("runs/bench_detection"))
    args = parser.parse_args()
    if args.make_run:
        from xrad.jobs.pipeline import RunOptions, run_pipeline

        options = RunOptions(output=args.run)
        run_pipeline(options, log=print, until="preprocess")
    frame = ground_truth(args.run)
    manifest = args.run / "cache" / "manifest.csv"
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    counts = test["anomaly_type"].value_counts().to_dict()
    header = f"{'':40s}" + "".join(f"{k:>11}" for k in ("all", *(SHORT[k] for k in KINDS)))
    lines = [f"test images: {len(test)} ({', '.join(f'{k} {v}' for k, v in counts.items())})", header]
    for config in args.configs:
        results, locs, speeds = [], [], []
        for seed in args.seeds:
            started = time.perf_counter()
            cell = train_cell(config, seed, manifest, args.output, args.overrides)
            scores = pd.read_csv(cell / "scores_test.csv")
            merged = test.merge(scores[["path", "score"]], on="path", how="left")
            results.append(per_kind(merged, merged["score"].to_numpy()))
            locs.append(localisation(cell / "artefact", test, args.run))
            speeds.append(seconds_per_epoch(cell))
            print(
                _row(
                    f"{Path(config).stem} seed {seed}",
                    [results[-1]],
                    f"hit {locs[-1].get('hit', float('nan')):.2f} (chance {locs[-1].get('chance', float('nan')):.2f}), "
                    f"pixel AUROC {locs[-1].get('pixel_auroc', float('nan')):.3f}, {speeds[-1]:.1f} s/epoch, "
                    f"{time.perf_counter() - started:.0f} s",
                ),
                flush=True,
            )
        loc = (
            f"hit {np.mean([v.get('hit', np.nan) for v in locs]):.2f} (chance "
            f"{np.mean([v.get('chance', np.nan) for v in locs]):.2f}), pixel AUROC "
            f"{np.mean([v.get('pixel_auroc', np.nan) for v in locs]):.3f}, {np.nanmean(speeds):.1f} s/epoch"
        )
        lines.append(_row(f"{Path(config).stem} ({len(args.seeds)} seeds)", results, loc))
    if args.floors:
        for name, values in floors(frame, args.floor_size, args.seeds[0], args.supervised_epochs).items():
            lines.append(_row(f"floor: {name} ({args.floor_size} px)", [values]))
    if args.learnability_patients > 0:
        values = learnability_reference(
            args.run,
            frame,
            args.learnability_patients,
            args.floor_size,
            args.seeds[0],
            args.supervised_epochs or 40,
        )
        lines.append(_row(f"reference: supervised, +{args.learnability_patients} labelled patients", [values]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
