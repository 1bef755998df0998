"""Preprocessing against phantom ground truth, on real FracAtlas images, and its cache's resumability."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from xrad.data.indexing import index_source
from xrad.data.io import read_radiograph
from xrad.data.manifest import read_manifest, write_manifest
from xrad.preprocess import PreprocessParams, preprocess_image
from xrad.preprocess.cache import build_cache

PARAMS = PreprocessParams(size=256)


def _fill(poly, shape) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, np.round(np.asarray(poly, dtype=np.float64)).astype(np.int32), 1)
    return mask.astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def phantom_results(phantoms):
    truth = pd.read_csv(phantoms / "ground_truth.csv", keep_default_na=False)
    results = []
    for _, row in truth.iterrows():
        pixels = read_radiograph(phantoms / row["path"]).pixels
        results.append((row, pixels.shape, preprocess_image(pixels, PARAMS)))
    return results


def test_carrier_iou_on_phantoms(phantom_results):
    ious = []
    for row, shape, result in phantom_results:
        poly = result.meta["crop_polygon"]
        truth = _fill(json.loads(row["carrier_corners"]), shape)  # clipped to the image by the fill
        ious.append(0.0 if poly is None else _iou(_fill(poly, shape), truth))
    ious = np.array(ious)
    assert len(ious) >= 100
    assert np.mean(ious >= 0.90) >= 0.95, f"carrier IoU >= 0.9 on {np.mean(ious >= 0.9):.3f} of images"


def test_body_mask_iou_on_phantoms(phantoms, phantom_results):
    ious = []
    for row, shape, result in phantom_results:
        assert set(np.unique(result.mask)) <= {0, 1}
        back = cv2.warpPerspective(
            result.mask,
            np.linalg.inv(np.array(result.meta["transform"])),
            (shape[1], shape[0]),
            flags=cv2.INTER_NEAREST,
        )
        truth = read_radiograph(phantoms / row["body_mask_path"]).pixels > 0
        ious.append(_iou(back > 0, truth))
    assert np.mean(ious) >= 0.85, f"mean body-mask IoU {np.mean(ious):.3f}"


def test_inversion_detected_on_phantoms(phantom_results):
    truth = np.array([int(row["inverted"]) for row, _, _ in phantom_results])
    found = np.array([result.meta["inverted"] for _, _, result in phantom_results])
    assert truth.sum() >= 5, "the fixture should contain inverted phantoms"
    assert np.mean(found[truth == 1] == 1) >= 0.98
    assert np.mean(found[truth == 0] == 0) >= 0.98


def test_transform_maps_carrier_corners_to_the_output_frame(phantom_results):
    for _row, _, result in phantom_results[:20]:
        if result.meta["crop_polygon"] is None:
            continue
        matrix = np.array(result.meta["transform"])
        corners = np.array(result.meta["crop_polygon"], dtype=np.float64)
        mapped = cv2.perspectiveTransform(corners[None], matrix)[0]
        assert mapped.min() >= -1.5 and mapped.max() <= PARAMS.size + 1.5


def _manifest(phantoms: Path, out: Path, n: int, broken: bool = False) -> Path:
    frame = index_source(phantoms).sort_values("path").head(n)
    if broken:
        bad = out / "broken.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
        frame = pd.concat([frame, frame.head(1).assign(path=str(bad), study_id="broken")], ignore_index=True)
    path = out / "manifest.csv"
    write_manifest(frame, path)
    return path


def test_failure_is_recorded_and_run_continues(phantoms, tmp_path):
    manifest = _manifest(phantoms, tmp_path, 6, broken=True)
    summary = build_cache(read_manifest(manifest), tmp_path / "cache", PARAMS, workers=1, progress=False)
    assert summary["failed"] == 1 and summary["images"] == 7
    failures = pd.read_csv(tmp_path / "cache" / "failures.csv")
    assert failures["path"].str.endswith("broken.png").all() and "broken.png" in failures["reason"][0]
    out = read_manifest(tmp_path / "cache" / "manifest.csv")
    assert len(out) == 6 and out["cache_path"].map(lambda p: Path(p).is_file()).all()


def test_a_replaced_image_is_preprocessed_again(phantoms, tmp_path):
    """The cache was keyed by path only: replace an image, re-run, and the old pixels stayed. A record now
    holds its source's SHA-256; a changed file is redone, the unchanged ones are skipped."""
    import shutil

    frame = index_source(phantoms).sort_values("path").head(3).reset_index(drop=True)
    copies = []
    for i, source in enumerate(frame["path"]):
        copies.append(tmp_path / f"image{i}.png")
        shutil.copyfile(source, copies[-1])
    frame["path"] = [str(c) for c in copies]
    first = build_cache(frame, tmp_path / "cache", PARAMS, workers=1, progress=False)
    assert first["processed"] == 3
    out = read_manifest(tmp_path / "cache" / "manifest.csv")
    before = [(tmp_path / "cache" / "images" / Path(c).name).read_bytes() for c in out["cache_path"]]
    shutil.copyfile(index_source(phantoms).sort_values("path")["path"].iloc[5], copies[1])  # same path, new image
    again = build_cache(frame, tmp_path / "cache", PARAMS, workers=1, progress=False)
    assert again["processed"] == 1 and again["skipped"] == 2
    after = [Path(c).read_bytes() for c in out["cache_path"]]
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]
    fresh = build_cache(frame.iloc[[1]], tmp_path / "fresh", PARAMS, workers=1, progress=False)
    fresh_path = read_manifest(fresh["manifest"])["cache_path"].iloc[0]
    assert Path(fresh_path).read_bytes() == after[1]  # exactly what a new cache makes of the new file
    meta = pd.read_csv(tmp_path / "cache" / "metadata.csv")
    from xrad.utils.hashing import sha256_file

    assert sorted(meta["source_sha256"]) == sorted(sha256_file(c) for c in copies)


def test_an_empty_manifest_is_one_clear_error(tmp_path):
    """Was ``KeyError: 'failed'`` from the table step when no image was listed (an empty or header-only CSV)."""
    from xrad.errors import DataError

    for frame in (pd.DataFrame({"path": []}), pd.DataFrame(columns=["path", "body_part", "split", "label"])):
        with pytest.raises(DataError, match="the manifest has no rows"):
            build_cache(frame, tmp_path / "cache", PARAMS, workers=1, progress=False)


@pytest.mark.parametrize("shape", [(1, 300), (300, 1), (1, 5000), (2, 3000), (1, 1), (1, 2)])
def test_one_pixel_high_or_wide_images_preprocess(shape):
    """A 1xN image made the body-mask search's small copy 0 px high (an OpenCV resize assertion); every thin
    image now gives the square output, a mask of its size and finite values."""
    pixels = np.random.default_rng(0).random(shape).astype(np.float32)
    result = preprocess_image(pixels, PARAMS)
    assert result.image.shape == result.mask.shape == (256, 256)
    assert set(np.unique(result.mask)) <= {0, 1} and result.mask.any()
    assert result.meta["source_shape"] == list(shape)


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    skip = {"timings.csv", "manifest.csv"}
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


@pytest.mark.slow
def test_killed_run_resumes_to_identical_outputs(phantoms, tmp_path):
    manifest = _manifest(phantoms, tmp_path, 80)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    command = [sys.executable, "-m", "xrad.cli.main", "preprocess", str(manifest), "--size", "256", "--workers", "1"]
    subprocess.run(command + ["-o", str(clean)], check=True, capture_output=True)
    process = subprocess.Popen(command + ["-o", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "meta").glob("*.json"))) < 15:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(list((killed / "meta").glob("*.json")))
    assert 0 < done_before < 80, "the run should have been killed midway"
    subprocess.run(command + ["-o", str(killed)], check=True, capture_output=True)
    assert _tree_bytes(killed) == _tree_bytes(clean)
    # The manifests differ only by the cache folder in their paths.
    assert (killed / "manifest.csv").read_text().replace(str(killed.resolve()), "X") == (
        clean / "manifest.csv"
    ).read_text().replace(str(clean.resolve()), "X")


def test_fracatlas_sample_including_truncated_files(fracatlas_dir, tmp_path):
    frame = index_source(fracatlas_dir / "labels.csv")
    names = frame["path"].map(lambda p: Path(p).name)
    sample = pd.concat([frame[names >= "IMG0004028.jpg"].head(6), frame.sample(18, random_state=0)])
    summary = build_cache(sample, tmp_path / "cache", PreprocessParams(size=256), workers=2, progress=False)
    assert summary["failed"] == 0
    out = read_manifest(tmp_path / "cache" / "manifest.csv")
    assert len(out) == len(sample) and out["truncated"].astype(int).sum() >= 1
    for path in out["mask_path"].head(5):
        assert set(np.unique(cv2.imread(path, cv2.IMREAD_UNCHANGED)).tolist()) <= {0, 1}
