"""A contact sheet for looking at preprocessing: per image, the source with every carrier candidate in
red and the chosen one in blue (the paper's Fig. 3), next to the result with its mask overlaid (Fig. 4)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from xrad.preprocess.params import PreprocessParams

TILE = 256


def _fit(image: np.ndarray, size: int = TILE) -> np.ndarray:
    """Letterbox a BGR image into a size×size tile."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    resized = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    tile = np.zeros((size, size, 3), np.uint8)
    top, left = (size - resized.shape[0]) // 2, (size - resized.shape[1]) // 2
    tile[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
    return tile


def render_pair(
    pixels: np.ndarray, params: PreprocessParams, label: str = "", *, photometric: str | None = None
) -> np.ndarray:
    """Two tiles side by side: candidates on the source; result with mask overlay (BGR uint8).

    ``photometric`` is passed on to :func:`xrad.preprocess.preprocess_image` (DICOM polarity is not guessed).
    """
    from xrad.preprocess import preprocess_image

    result = preprocess_image(pixels, params, photometric=photometric)
    source = np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8)
    if result.meta["inverted"]:
        source = 255 - source  # candidates were found on the corrected image: show that one
    left = cv2.cvtColor(source, cv2.COLOR_GRAY2BGR)
    thickness = max(1, round(max(source.shape) / 256))
    for poly in result.candidates:
        cv2.polylines(left, [np.round(poly).astype(np.int32)], True, (0, 0, 255), thickness)
    if result.meta["crop_polygon"] is not None:
        chosen = np.round(np.asarray(result.meta["crop_polygon"])).astype(np.int32)
        cv2.polylines(left, [chosen], True, (255, 0, 0), 2 * thickness)
    right = cv2.cvtColor(result.image, cv2.COLOR_GRAY2BGR)
    overlay = right.copy()
    overlay[result.mask > 0] = (0.6 * overlay[result.mask > 0] + 0.4 * np.array([0, 200, 0])).astype(np.uint8)
    pair = np.concatenate([_fit(left), _fit(overlay)], axis=1)
    shown = {
        "inverted": "inverted",
        "inversion_uncertain": "inv?",
        "uncropped": "uncropped",
        "low_contrast": "low_contrast",
        "mask_fallback": "mask_fallback",
    }
    flags = [name for key, name in shown.items() if result.meta.get(key)]
    text = " ".join([label] + flags)[:48]
    cv2.putText(pair, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1, cv2.LINE_AA)
    return pair


def contact_sheet(
    frame: pd.DataFrame, params: PreprocessParams, out_path: str | Path, k: int = 16, seed: int = 0, columns: int = 2
) -> Path:
    """Render ``k`` random rows (seeded) of a manifest into one PNG and return its path."""
    from xrad.data.io import read_radiograph
    from xrad.errors import XradError
    from xrad.utils.atomic import write_bytes

    rows = frame.sample(n=min(k, len(frame)), random_state=seed)
    tiles = []
    for _, row in rows.iterrows():
        try:
            radiograph = read_radiograph(row["path"])
        except XradError:
            continue
        tiles.append(
            render_pair(radiograph.pixels, params, Path(row["path"]).name, photometric=radiograph.meta.photometric)
        )
    if not tiles:
        tiles.append(np.zeros((TILE, 2 * TILE, 3), np.uint8))
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.concatenate([np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)])
    ok, encoded = cv2.imencode(".png", grid)
    write_bytes(out_path, encoded.tobytes())
    return Path(out_path)
