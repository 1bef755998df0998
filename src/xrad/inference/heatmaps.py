"""Heatmaps that explain a score, and overlays of them on the radiograph.

Every :class:`~xrad.methods.base.Scorer` has ``heatmap(images) -> (B, 1, S, S)``. The default is Grad-CAM
of the *anomaly score* on the backbone's last convolutional block (:mod:`xrad.models.gradcam`); a detector
with a decoder overrides ``heatmap`` with its reconstruction error.

Input: a map is computed on exactly the input scoring uses, :func:`xrad.inference.input.prepare_input`
(same pixel limit, truncated-file rule, preprocessing and resize), so the score beside an overlay is the
score ``xrad score`` and the service report for that image; this module only maps the result back.

Geometry: the model sees the image resized (major axis → S) and centre-padded to S×S
(:func:`xrad.data.model_input.resize_image_and_mask`). That step is inverted exactly (:func:`to_original`).
When the artefact preprocesses (carrier crop, rotation, resize/pad), :func:`xrad.preprocess.preprocess_image`
records the homography from the original image to its output, and the map is warped back through it
(zero outside the crop); so overlays from raw files are always drawn on the original image in its own pixel
coordinates. Rows scored from a preprocessed cache (``cache_path``) have no homography at hand: their
overlays are drawn on the cached (preprocessed) image.

Scale: a map is divided by the artefact's ``heat_scale`` (``normal_reference.heat_scale``, fixed at training from
the validation normals' maps: :func:`heat_scale_of`) and clipped to [0, 1], so one colour means one value on
every image of an artefact and a normal image is not as red as the top-scored one. Artefacts without it fall
back to each map's own maximum, and say so (``Explanation.heat_scale`` is None). The figure
(:meth:`Explanation.figure_png`) adds the body mask's outline and a colour bar; :func:`mask_problem` flags a
body mask that failed (empty, or lying on the background rather than on the body).

Resolution: layer4 of a ResNet-18 has stride 32 (16×16 cells at 512 px); pass ``layer="encoder.backbone.layer3"``
for maps twice as fine and somewhat noisier.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger("xrad.heatmaps")

if TYPE_CHECKING:  # pragma: no cover
    from xrad.data.io import Radiograph
    from xrad.inference.input import ModelInput

__all__ = [
    "Explanation",
    "explain_input",
    "explain_pixels",
    "explain_row",
    "heat_scale_of",
    "mask_problem",
    "normalise",
    "overlay",
    "png_bytes",
    "to_original",
    "warp_to_source",
    "write_heatmaps",
]


def normalise(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray | None = None) -> np.ndarray:
    """Scale each map to [0, 1] by its own maximum (0 outside ``masks``); returns float32 NumPy."""
    arr = np.asarray(maps.detach().cpu() if isinstance(maps, Tensor) else maps, dtype=np.float32).copy()
    if masks is not None:
        arr *= np.asarray(masks.detach().cpu() if isinstance(masks, Tensor) else masks) > 0
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 2 else arr.reshape(1, -1)
    peak = flat.max(axis=1, keepdims=True)
    flat /= np.where(peak > 0, peak, 1.0)
    return flat.reshape(arr.shape)


HEAT_SCALE_QUANTILE = 0.99  # of the validation normals' per-image map maxima: a normal image reaches red rarely
HEAT_SCALE_IMAGES = 32  # validation normals whose maps fix the scale (Grad-CAM costs a backward pass each)


def heat_scale_of(scorer: Any, images: Tensor, masks: Tensor) -> float | None:
    """The artefact's fixed heatmap scale: the :data:`HEAT_SCALE_QUANTILE` quantile of the per-image maxima of
    the masked maps of (up to :data:`HEAT_SCALE_IMAGES`) validation normals; None when no map is positive."""
    from xrad.data.model_input import prepare_eval

    images, masks = images[:HEAT_SCALE_IMAGES], masks[:HEAT_SCALE_IMAGES]
    if len(images) == 0:
        return None
    scorer.eval()
    device = next(iter(scorer.parameters()), torch.empty(0)).device
    try:
        maps = scorer.heatmap(prepare_eval(images.to(device), masks.to(device))).detach().cpu()
    except Exception as exc:  # a detector whose maps fail must still finish training: per-image scaling then
        log.warning("no fixed heatmap scale (the maps failed: %s); maps are scaled per image", type(exc).__name__)
        return None
    peaks = (maps * (masks > 0)).flatten(1).amax(dim=1).numpy()
    value = float(np.quantile(peaks, HEAT_SCALE_QUANTILE))
    return value if np.isfinite(value) and value > 0 else None


def scale_maps(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray, scale: float | None) -> np.ndarray:
    """Maps on the artefact's fixed scale (``map / scale`` clipped to [0, 1], 0 outside the mask); each map by
    its own maximum when ``scale`` is None (:func:`normalise`)."""
    if scale is None:
        return normalise(maps, masks)
    arr = np.asarray(maps.detach().cpu() if isinstance(maps, Tensor) else maps, dtype=np.float32)
    arr = arr * (np.asarray(masks.detach().cpu() if isinstance(masks, Tensor) else masks) > 0)
    scaled: np.ndarray = np.clip(arr / float(scale), 0.0, 1.0).astype(np.float32)
    return scaled


def mask_problem(image: np.ndarray, mask: np.ndarray) -> str:
    """Why a body mask cannot be trusted, or "": it is (nearly) empty, or it lies on the background — the
    pixels it covers are darker on average than those it leaves out (body is brighter than background in
    the normal polarity every input is put into)."""
    inside = np.asarray(mask) > 0
    coverage = float(inside.mean()) if inside.size else 0.0
    if coverage < 0.01:
        return f"body mask failed: it covers {100 * coverage:.1f} % of the image"
    pixels = np.asarray(image, dtype=np.float32)
    if coverage < 0.99 and pixels[inside].mean() < pixels[~inside].mean():
        return "body mask failed: it covers the background (darker than the rest), not the body"
    return ""


def to_original(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Invert the resize-and-pad of :func:`~xrad.data.model_input.resize_image_and_mask`: an S×S map → (H, W)."""
    import cv2

    size = heat.shape[-1]
    height, width = shape
    factor = size / max(height, width)
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    top, left = (size - new_h) // 2, (size - new_w) // 2
    crop = np.ascontiguousarray(heat[top : top + new_h, left : left + new_w], dtype=np.float32)
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
    blended: np.ndarray = np.clip(grey * (1 - weight) + colours * weight, 0, 255).astype(np.uint8)
    return blended


def figure(rgb: np.ndarray, mask: np.ndarray | None, scale: float | None) -> np.ndarray:
    """``rgb`` with the outline of ``mask`` drawn in white and a JET colour bar appended on the right, labelled
    with the value drawn as 1 (``scale``; "max" when each map is scaled to its own maximum) and 0."""
    import cv2

    out = np.ascontiguousarray(rgb.copy())
    height = out.shape[0]
    if mask is not None and mask.any():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), max(1, height // 256))
    bar_width = max(8, height // 24)
    gradient = np.linspace(255, 0, height).astype(np.uint8)[:, None].repeat(bar_width, axis=1)
    bar = cv2.cvtColor(cv2.applyColorMap(gradient, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    label_width = max(30, height // 6)
    labels = np.full((height, label_width, 3), 255, np.uint8)
    font = max(0.3, height / 900)
    top = "max" if scale is None else f"{scale:.3g}"
    cv2.putText(labels, top, (2, max(10, int(14 * font / 0.4))), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), 1)
    cv2.putText(labels, "0", (2, height - 3), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), 1)
    return np.concatenate([out, bar, labels], axis=1)


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
    degenerate: str = ""  # why the score cannot be trusted though the image decoded (tiny, constant), else ""
    heat_scale: float | None = None  # the raw map value drawn as 1 (fixed per artefact); None: per-image maximum
    mask: np.ndarray | None = None  # bool (h, w): the body mask in the geometry of base
    mask_warning: str = ""  # mask_problem() of the model input, else ""
    statistics: tuple[float, float] = (float("nan"), float("nan"))  # input mean, std (readout.input_statistics)
    appearance: float = float("nan")  # distance to the nearest stored training image (model_input.appearance_distance)

    def overlay_png(self, alpha: float = 0.45) -> bytes:
        """The overlay as PNG bytes (same size as ``base``)."""
        return png_bytes(overlay(self.base, self.heat, alpha))

    def figure_png(self, alpha: float = 0.45) -> bytes:
        """The overlay with the body mask's outline (white) and a colour bar on its right (top: the scale's
        value; bottom: 0), as PNG bytes."""
        return png_bytes(figure(overlay(self.base, self.heat, alpha), self.mask, self.heat_scale))


def warp_to_source(heat: np.ndarray, transform: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Warp a map on the preprocessed image back to the original ``shape`` through ``transform``
    (original → preprocessed homography); zero where the original lies outside the crop."""
    import cv2

    height, width = shape
    return cv2.warpPerspective(
        np.ascontiguousarray(heat, dtype=np.float32),
        transform,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def explain_input(scorer: Any, model_input: ModelInput, *, heatmap: bool = True) -> Explanation:
    """Score one prepared input (:func:`xrad.inference.input.prepare_input`) and explain it.

    The map is drawn on the original image when the input was made from one (through the preprocessing
    homography when there is one), else on the image the input was resized from (cached rows). With
    ``heatmap=False`` only the score is computed (the map is all zeros).
    """
    from xrad.data.model_input import prepare_eval

    scorer.eval()
    device = next(iter(scorer.parameters()), torch.empty(0)).device
    x = prepare_eval(model_input.image[None].to(device), model_input.mask[None].to(device))
    with torch.no_grad():
        score, sphere = scorer.score(x)
    base = model_input.original if model_input.original is not None else model_input.base
    reference = _artefact_reference(scorer)
    scale = _heat_scale(reference)

    def back(grid: np.ndarray) -> np.ndarray:  # a map on the model's S×S grid → the geometry of base
        out = to_original(grid, model_input.base.shape)
        if model_input.transform is not None and model_input.original is not None:
            out = warp_to_source(out, model_input.transform, model_input.original.shape)
        return out

    if heatmap:
        heat = back(scale_maps(scorer.heatmap(x), model_input.mask[None], scale)[0, 0])
    else:
        heat = np.zeros(base.shape, np.float32)
    mask_grid = model_input.mask[0].numpy().astype(np.float32)
    return Explanation(
        score=float(score[0]),
        sphere=int(sphere[0]) if sphere is not None else -1,
        heat=heat,
        base=base,
        on_original=model_input.on_original,
        degenerate=model_input.degenerate,
        heat_scale=scale,
        mask=back(mask_grid) > 0.5,
        mask_warning=mask_problem(model_input.image[0].numpy(), model_input.mask[0].numpy()),
        statistics=_statistics(model_input),
        appearance=_appearance(reference, model_input),
    )


def _statistics(model_input: ModelInput) -> tuple[float, float]:
    from xrad.data.model_input import input_statistics

    mean, std = input_statistics(model_input.image[None].numpy(), model_input.mask[None].numpy())[0]
    return float(mean), float(std)


def _artefact_reference(scorer: Any) -> dict[str, Any]:
    """``normal_reference`` of the scorer's artefact ({}: not stored, or a scorer built by hand)."""
    from xrad.inference.artefact import meta_of

    try:
        return dict(meta_of(scorer).normal_reference or {})
    except TypeError:  # a scorer built by hand has no artefact
        return {}


def _appearance(reference: dict[str, Any], model_input: ModelInput) -> float:
    """The input's distance to the nearest training image stored in ``reference`` (NaN: none stored)."""
    from xrad.data.model_input import appearance_distance, input_appearance

    looks = input_appearance(model_input.image[None].numpy(), model_input.mask[None].numpy())
    return float(appearance_distance(looks, reference)[0])


def _heat_scale(reference: dict[str, Any]) -> float | None:
    """``reference["heat_scale"]``: the raw map value drawn as 1 (None: not stored)."""
    value = reference.get("heat_scale")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def explain_pixels(
    scorer: Any,
    pixels: np.ndarray | Radiograph,
    *,
    body_part: str | None = None,
    heatmap: bool = True,
    allow_truncated: bool = False,
) -> Explanation:
    """Score and explain one decoded image (the service's path): :func:`~xrad.inference.input.prepare_input`
    with the artefact's input spec, then :func:`explain_input`. A :class:`~xrad.data.io.Radiograph` of a
    truncated file is refused unless ``allow_truncated``."""
    from xrad.inference.artefact import meta_of
    from xrad.inference.input import prepare_input

    model_input = prepare_input(
        pixels, meta_of(scorer).input_spec(), body_part=body_part, allow_truncated=allow_truncated
    )
    return explain_input(scorer, model_input, heatmap=heatmap)


def explain_row(scorer: Any, row: Any, *, heatmap: bool = True) -> Explanation:
    """Explain one manifest/scores row as :mod:`xrad.inference.scoring` scores it: its ``cache_path``
    (preprocessed image and ``mask_path``) when present, else the original file."""
    from xrad.inference.artefact import meta_of
    from xrad.inference.input import prepare_row

    return explain_input(scorer, prepare_row(row, meta_of(scorer).input_spec()), heatmap=heatmap)


def write_heatmaps(scorer: Any, frame: Any, out_dir: Any, *, progress: bool = False) -> list[str]:
    """Write one overlay PNG per row of ``frame`` into ``out_dir``; returns their paths ("" where a row
    has an ``error`` or cannot be read). Files are named ``<row number>_<file stem>.png``; each is
    :meth:`Explanation.figure_png`: the overlay on the image's own pixel grid (its left ``w`` columns), the mask
    outline and, on the right, the colour bar of the artefact's fixed scale."""
    from pathlib import Path

    from xrad.utils.progress import progress as progress_bar

    out_dir = Path(out_dir)
    paths: list[str] = []
    with progress_bar(len(frame), "heatmaps", "img", enabled=progress) as bar:
        for i, (_, row) in enumerate(frame.iterrows()):
            paths.append(_write_one_heatmap(scorer, row, out_dir / f"{i:06d}_{Path(str(row['path'])).stem}.png", i))
            bar.update(1)
    return paths


def _write_one_heatmap(scorer: Any, row: Any, target: Any, i: int) -> str:
    """Write the overlay of ``row`` to ``target`` and return its path; "" when the row has an ``error`` or
    cannot be explained (an unexpected failure is logged by type, never stopping the other rows)."""
    from xrad.errors import XradError
    from xrad.utils.atomic import write_bytes

    if str(row.get("error", "") or "") not in ("", "nan"):
        return ""
    try:
        png = explain_row(scorer, row).figure_png()
    except Exception as exc:
        if not isinstance(exc, XradError):
            log.warning("heatmap of row %d failed: %s", i, type(exc).__name__)
        return ""
    write_bytes(target, png)
    return str(target.resolve())
