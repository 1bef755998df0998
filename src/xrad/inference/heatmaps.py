"""Heatmaps that explain a score, and overlays of them on the radiograph.

Every :class:`~xrad.methods.base.Scorer` has ``heatmap(images) -> (B, 1, S, S)``. The default is Grad-CAM
of the *anomaly score* on the backbone's last convolutional block (:mod:`xrad.models.gradcam`); a detector
with a decoder overrides ``heatmap`` with its reconstruction error.

Geometry: the model sees the image resized (major axis → S) and centre-padded to S×S
(:func:`xrad.data.model_input.resize_image_and_mask`). That step is inverted exactly (:func:`to_original`).
When the artefact preprocesses (carrier crop, rotation, resize/pad), :func:`xrad.preprocess.preprocess_image`
records the homography from the original image to its output, and the map is warped back through it
(zero outside the crop); so overlays from raw files are always drawn on the original image in its own pixel
coordinates. Rows scored from a preprocessed cache (``cache_path``) have no homography at hand: their
overlays are drawn on the cached (preprocessed) image.

Resolution: layer4 of a ResNet-18 has stride 32 (16×16 cells at 512 px); pass ``layer="encoder.backbone.layer3"``
for maps twice as fine and somewhat noisier.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Explanation", "explain_pixels", "explain_row", "input_from_pixels", "normalise", "overlay", "png_bytes",
           "to_original", "warp_to_source", "write_heatmaps"]


def normalise(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray | None = None) -> np.ndarray:
    """Scale each map to [0, 1] by its own maximum (0 outside ``masks``); returns float32 NumPy."""
    arr = np.asarray(maps.detach().cpu() if isinstance(maps, Tensor) else maps, dtype=np.float32).copy()
    if masks is not None:
        arr *= np.asarray(masks.detach().cpu() if isinstance(masks, Tensor) else masks) > 0
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 2 else arr.reshape(1, -1)
    peak = flat.max(axis=1, keepdims=True)
    flat /= np.where(peak > 0, peak, 1.0)
    return flat.reshape(arr.shape)


def to_original(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Invert the resize-and-pad of :func:`~xrad.data.model_input.resize_image_and_mask`: an S×S map → (H, W)."""
    import cv2

    size = heat.shape[-1]
    height, width = shape
    factor = size / max(height, width)
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    top, left = (size - new_h) // 2, (size - new_w) // 2
    crop = np.ascontiguousarray(heat[top:top + new_h, left:left + new_w], dtype=np.float32)
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 overlay of a [0, 1] ``heat`` map (JET colours) on a grey uint8 ``image`` of the same shape.

    Where the map is near zero the radiograph shows through unchanged, so weak regions do not tint it.
    """
    import cv2

    grey = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    colours = cv2.applyColorMap(np.clip(heat * 255.0, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB).astype(np.float32)
    weight = (alpha * np.clip(heat, 0, 1))[..., None]
    return np.clip(grey * (1 - weight) + colours * weight, 0, 255).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    """PNG encoding of a grey (H, W) or RGB (H, W, 3) uint8 array."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


@dataclass
class Explanation:
    """One image's score with its heatmap; ``base`` is the grey image the overlay is drawn on."""

    score: float
    sphere: int
    heat: np.ndarray  # float32 (h, w) in [0, 1], same shape as base
    base: np.ndarray  # uint8 (h, w)
    on_original: bool  # True: base is the decoded original image; False: the preprocessed image

    def overlay_png(self, alpha: float = 0.45) -> bytes:
        """The overlay as PNG bytes."""
        return png_bytes(overlay(self.base, self.heat, alpha))


def input_from_pixels(pixels: np.ndarray, size: int, params: Any = None,
                      body_part: str | None = None) -> tuple[Tensor, Tensor, np.ndarray, np.ndarray | None]:
    """Decoded [0, 1] pixels → the model's uint8 image and mask ``(1, S, S)``, the image they were resized
    from, and (with preprocessing) the 3×3 homography from the original image to that one (else None).

    Mirrors :mod:`xrad.inference.scoring`: with preprocessing parameters, :func:`xrad.preprocess.preprocess_image` and
    then the one resize; without, 8-bit rounding and the one resize (as the image bank does).
    """
    from xrad.data.model_input import resize_image_and_mask

    transform = None
    if params is not None:
        from xrad.preprocess import preprocess_image

        result = preprocess_image(pixels, params, body_part=body_part)
        base, mask = np.asarray(result.image, dtype=np.uint8), np.asarray(result.mask)
        if result.meta.get("transform") is not None:
            transform = np.asarray(result.meta["transform"], dtype=np.float64)
    else:
        base = np.clip(np.round(np.asarray(pixels, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
        mask = None
    image, model_mask = resize_image_and_mask(base, mask, size)
    return image, model_mask, base, transform


def warp_to_source(heat: np.ndarray, transform: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Warp a map on the preprocessed image back to the original ``shape`` through ``transform``
    (original → preprocessed homography); zero where the original lies outside the crop."""
    import cv2

    height, width = shape
    return cv2.warpPerspective(np.ascontiguousarray(heat, dtype=np.float32), transform, (width, height),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0)


def explain_pixels(scorer: Any, pixels: np.ndarray, *, size: int, params: Any = None,
                   body_part: str | None = None, heatmap: bool = True) -> Explanation:
    """Score one decoded image and explain it (the service's and ``xrad score --heatmaps``' path).

    With ``heatmap=False`` only the score is computed (the map is all zeros).
    """
    from xrad.data.model_input import prepare_eval

    image, mask, base, transform = input_from_pixels(pixels, size, params, body_part)
    on_original = params is None or transform is not None
    if transform is not None:  # draw on the original image; the map is warped back below
        base_pre, base = base, np.clip(np.round(np.asarray(pixels, np.float32) * 255.0), 0, 255).astype(np.uint8)
    scorer.eval()
    device = next(iter(scorer.parameters()), torch.empty(0)).device
    x = prepare_eval(image[None].to(device), mask[None].to(device))
    with torch.no_grad():
        score, sphere = scorer.score(x)
    if not heatmap:
        return Explanation(score=float(score[0]), sphere=int(sphere[0]) if sphere is not None else -1,
                           heat=np.zeros(base.shape, np.float32), base=base, on_original=on_original)
    heat = normalise(scorer.heatmap(x), mask[None])[0, 0]
    if transform is not None:
        heat = warp_to_source(to_original(heat, base_pre.shape), transform, base.shape)
    else:
        heat = to_original(heat, base.shape)
    return Explanation(score=float(score[0]), sphere=int(sphere[0]) if sphere is not None else -1,
                       heat=heat, base=base, on_original=on_original)


def _read_grey8(path: str) -> np.ndarray:
    """A preprocessed cache PNG (8-bit) as a 2-D uint8 array."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def explain_row(scorer: Any, row: Any, *, size: int, params: Any = None) -> Explanation:
    """Explain one manifest/scores row as :mod:`xrad.inference.scoring` scores it: its ``cache_path`` (preprocessed
    image and ``mask_path``) when present, else the original file (preprocessed with ``params`` if given)."""
    from xrad.data.model_input import resize_image_and_mask
    from xrad.data.io import read_radiograph
    from xrad.data.model_input import prepare_eval

    cache = str(row.get("cache_path", "") or "")
    if not cache or cache == "nan":
        pixels = read_radiograph(str(row["path"])).pixels
        body_part = str(row.get("body_part", "") or "") or None
        return explain_pixels(scorer, pixels, size=size, params=params, body_part=body_part)
    base = _read_grey8(cache)
    mask_path = str(row.get("mask_path", "") or "")
    mask = _read_grey8(mask_path) if mask_path and mask_path != "nan" else None
    image, model_mask = resize_image_and_mask(base, mask, size)
    device = next(iter(scorer.parameters()), torch.empty(0)).device
    x = prepare_eval(image[None].to(device), model_mask[None].to(device))
    with torch.no_grad():
        score, sphere = scorer.score(x)
    heat = to_original(normalise(scorer.heatmap(x), model_mask[None])[0, 0], base.shape)
    return Explanation(score=float(score[0]), sphere=int(sphere[0]) if sphere is not None else -1,
                       heat=heat, base=base, on_original=False)


def write_heatmaps(scorer: Any, frame: Any, out_dir: Any, *, progress: bool = False) -> list[str]:
    """Write one overlay PNG per row of ``frame`` into ``out_dir``; returns their paths ("" where a row
    has an ``error`` or cannot be read). Files are named ``<row number>_<file stem>.png``."""
    from pathlib import Path

    from tqdm.auto import tqdm

    from xrad.errors import XradError
    from xrad.utils.atomic import write_bytes

    meta = getattr(scorer, "artefact_meta", {})
    size = int(meta["image_size"])
    params = None
    if meta.get("preprocessing") is not None:
        from xrad.preprocess import PreprocessParams

        params = PreprocessParams.from_dict(meta["preprocessing"])
    out_dir = Path(out_dir)
    paths = []
    for i, (_, row) in enumerate(tqdm(frame.iterrows(), total=len(frame), desc="heatmaps", disable=not progress)):
        if str(row.get("error", "") or "") not in ("", "nan"):
            paths.append("")
            continue
        try:
            explanation = explain_row(scorer, row, size=size, params=params)
        except XradError:
            paths.append("")
            continue
        target = out_dir / f"{i:06d}_{Path(str(row['path'])).stem}.png"
        write_bytes(target, explanation.overlay_png())
        paths.append(str(target.resolve()))
    return paths
