"""Tiny synthetic split data and a tiny finished run, shared by test_training.py and test_artefact_scoring.py.

Images are 40 px PNGs: a smooth bright disc plus noise; abnormal ones carry a planted bright square.
The tiny config (``xrad/configs/tiny.yaml``) trains a few seconds' worth at 32 px.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from xrad.data.manifest import write_manifest


def make_dataset(out: Path, n: int = 64, size: int = 40, seed: int = 0, cache: bool = True) -> Path:
    """Write ``n`` images (+ 0/1 masks when ``cache``) and a split manifest; return the manifest path.

    Half the rows are train (some known normal, some known abnormal), a quarter valid, a quarter test.
    """
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = 90 * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 4) ** 2))
    rows = []
    for i in range(n):
        label = int(i % 3 == 0)
        image = 50 + disc + rng.normal(0, 6, (size, size))
        if label:
            cy, cx = rng.integers(10, size - 10, 2)
            image[cy - 3 : cy + 3, cx - 3 : cx + 3] = 245
        path = out / f"image{i:03d}.png"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
        split = "train" if i < n // 2 else ("valid" if i < 3 * n // 4 else "test")
        semi = 0
        if split == "train":
            semi = -1 if (label and i % 2 == 0) else (1 if (not label and i % 5 == 0) else 0)
        row = {
            "path": str(path.resolve()),
            "patient_id": f"P{i:03d}",
            "study_id": f"S{i:03d}",
            "body_part": "HAND",
            "view": "",
            "label": label,
            "source": "csv",
            "split": split,
            "semi_label": semi,
        }
        if cache:
            mask = np.zeros((size, size), dtype=np.uint8)
            mask[3:-3, 2:-2] = 1
            mask_path = out / f"mask{i:03d}.png"
            Image.fromarray(mask).save(mask_path)
            row.update(cache_path=str(path.resolve()), mask_path=str(mask_path.resolve()))
        rows.append(row)
    manifest = out / "split.csv"
    write_manifest(pd.DataFrame(rows), manifest)
    return manifest
