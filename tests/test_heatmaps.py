"""Heatmaps: Grad-CAM on the score, the inverse of the resize-and-pad, overlays."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from xrad.data.model_input import prepare_eval, resize_image_and_mask
from xrad.inference.heatmaps import explain_pixels, normalise, overlay, png_bytes, to_original
from xrad.inference.scoring import load_scorer
from xrad.methods.base import Scorer
from xrad.models.gradcam import cam_layer, grad_cam


class BlobScorer(Scorer):
    """Score = mean response of a positive 'brightness' filter: abnormal = bright."""

    kind = "blob-test"

    def __init__(self) -> None:
        super().__init__()
        self.layer4 = nn.Conv2d(1, 2, 5, padding=2, stride=4, bias=False)
        nn.init.constant_(self.layer4.weight, 0.04)

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        return torch.relu(self.layer4(images)).mean(dim=(1, 2, 3)), None


def test_grad_cam_peaks_where_the_score_comes_from() -> None:
    images = torch.zeros(2, 1, 64, 64)
    images[0, 0, 8:16, 40:48] = 1.0  # blob top-right
    images[1, 0, 44:52, 10:18] = 1.0  # blob bottom-left
    scorer = BlobScorer().eval()
    assert cam_layer(scorer) is scorer.layer4
    maps = scorer.heatmap(images)
    assert maps.shape == (2, 1, 64, 64) and (maps >= 0).all()
    for i, (r, c) in enumerate([(12, 44), (48, 14)]):
        peak = np.unravel_index(int(maps[i, 0].argmax()), (64, 64))
        assert abs(peak[0] - r) <= 6 and abs(peak[1] - c) <= 6


def test_grad_cam_of_a_real_scorer_is_per_image(tiny_artefact) -> None:
    scorer = load_scorer(tiny_artefact)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (3, 1, 64, 64), dtype=np.uint8))
    x = prepare_eval(images, torch.ones_like(images))
    maps = scorer.heatmap(x)
    assert maps.shape == (3, 1, 64, 64) and torch.isfinite(maps).all() and (maps >= 0).all()
    alone = scorer.heatmap(x[1:2])
    torch.testing.assert_close(alone, maps[1:2], rtol=1e-4, atol=1e-6)
    assert maps.abs().sum() > 0
    finer = grad_cam(scorer, x, layer="encoder.backbone.layer3")
    assert finer.shape == maps.shape
    with pytest.raises(ValueError):
        cam_layer(scorer, "no.such.layer")


@pytest.mark.parametrize("shape", [(90, 50), (40, 120), (64, 64)])
def test_to_original_inverts_resize_and_pad(shape) -> None:
    height, width = shape
    image = np.zeros(shape, dtype=np.uint8)
    r, c = int(height * 0.3), int(width * 0.7)
    image[max(0, r - 3) : r + 3, max(0, c - 3) : c + 3] = 255
    resized, mask = resize_image_and_mask(image, None, 64)
    back = to_original(resized[0].numpy().astype(np.float32) / 255.0, shape)
    assert back.shape == shape
    peak = np.unravel_index(int(back.argmax()), shape)
    assert abs(peak[0] - r) <= 4 and abs(peak[1] - c) <= 4
    assert to_original(mask[0].numpy().astype(np.float32), shape).min() > 0.99  # padding is cropped away


def test_normalise_and_overlay() -> None:
    maps = np.stack([np.full((4, 4), 2.0), np.zeros((4, 4))])[:, None]
    masks = np.ones_like(maps)
    masks[0, 0, 0, 0] = 0
    out = normalise(maps, masks)
    assert out[0].max() == 1.0 and out[0, 0, 0, 0] == 0.0 and out[1].max() == 0.0
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    unchanged = overlay(grey, np.zeros((4, 4), np.float32))
    assert unchanged.shape == (4, 4, 3) and (unchanged == grey[..., None]).all()
    hot = overlay(grey, np.ones((4, 4), np.float32), alpha=1.0)
    assert (hot[..., 0] > 100).all() and (hot[..., 2] < 50).all()  # JET's maximum is red
    assert png_bytes(hot)[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_pixels_matches_scoring(tiny_artefact) -> None:
    scorer = load_scorer(tiny_artefact)
    rng = np.random.default_rng(1)
    pixels = rng.random((80, 50)).astype(np.float32)
    result = explain_pixels(scorer, pixels)
    assert result.on_original and result.heat.shape == (80, 50) and result.base.shape == (80, 50)
    assert result.heat.min() >= 0.0 and result.heat.max() <= 1.0
    image, mask = resize_image_and_mask(np.round(pixels * 255).astype(np.uint8), None, 64)
    expected = scorer.score_batches(image[None], mask[None])["score"][0].item()
    assert result.score == pytest.approx(expected, rel=1e-5)
    assert result.sphere in (0, 1, 2)
    assert result.overlay_png()[:4] == b"\x89PNG"


def test_knn_grad_cam_and_non_differentiable_fallback(tmp_path) -> None:
    from conftest import make_tiny_artefact

    from xrad.models.gradcam import grad_cam

    scorer = load_scorer(make_tiny_artefact(tmp_path / "knn", kind="knn"))
    images = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (2, 1, 64, 64), dtype=np.uint8))
    x = prepare_eval(images, torch.ones_like(images))
    # The kNN distance is differentiable in the image: a real Grad-CAM, not the activation fallback.
    with torch.enable_grad():
        probe = x.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(scorer.score(probe)[0].sum(), probe)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    maps = scorer.heatmap(x)
    assert maps.shape == (2, 1, 64, 64) and torch.isfinite(maps).all() and (maps >= 0).all() and maps.sum() > 0
    # A score computed under no_grad falls back to the channel-mean activation: still finite and non-empty,
    # and different from the gradient-weighted map.
    original = scorer.score
    scorer.score = lambda images: tuple(torch.no_grad()(original)(images))
    fallback = grad_cam(scorer, x)
    assert torch.isfinite(fallback).all() and (fallback >= 0).all() and fallback.sum() > 0
    assert not torch.allclose(fallback, maps)


def test_heatmaps_of_cached_rows_match_scoring(tiny_run: dict, tmp_path) -> None:
    from PIL import Image

    from xrad.data.manifest import read_manifest
    from xrad.inference.heatmaps import explain_row, write_heatmaps
    from xrad.inference.scoring import score_frame

    frame = read_manifest(tiny_run["manifest"]).head(4)
    assert frame["cache_path"].str.len().gt(0).all()  # the preprocessed-cache branch
    scorer = load_scorer(tiny_run["run_dir"] / "artefact")
    scored = score_frame(scorer, frame, workers=1)
    explanation = explain_row(scorer, frame.iloc[0])
    assert not explanation.on_original and explanation.heat.shape == (40, 40)
    assert explanation.score == pytest.approx(float(scored["score"][0]), abs=1e-5)
    paths = write_heatmaps(scorer, scored, tmp_path / "heat")
    # Each file is the overlay on the image's own 40×40 pixel grid, then the colour bar and its labels.
    assert len(paths) == 4 and all(Image.open(p).size[1] == 40 and Image.open(p).size[0] > 40 for p in paths)
    first = np.asarray(Image.open(paths[0]).convert("RGB"))[:, :40]
    from xrad.inference.heatmaps import overlay

    plain = overlay(explanation.base, explanation.heat)
    from scipy.ndimage import binary_erosion

    outline = explanation.mask ^ binary_erosion(explanation.mask)
    assert np.array_equal(first[~outline], plain[~outline])  # the overlay itself, pixel-aligned


def test_all_negative_grad_cam_falls_back_to_contribution_magnitude() -> None:
    class Inverse(BlobScorer):
        def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
            return -super().score(images)[0], None  # brighter = *less* abnormal: every location lowers it

    images = torch.zeros(1, 1, 64, 64)
    images[0, 0, 8:16, 40:48] = 1.0
    maps = Inverse().eval().heatmap(images)
    assert maps.max() > 0  # plain Grad-CAM would be all zero here
    peak = np.unravel_index(int(maps[0, 0].argmax()), (64, 64))
    assert abs(peak[0] - 12) <= 6 and abs(peak[1] - 44) <= 6


def test_preprocessed_artefact_maps_heatmaps_back_to_the_original(tiny_artefact, tmp_path) -> None:
    import json
    import shutil

    import pandas as pd
    from PIL import Image

    from xrad.inference.scoring import score_frame
    from xrad.preprocess import PreprocessParams

    artefact = tmp_path / "artefact"
    shutil.copytree(tiny_artefact, artefact)
    meta = json.loads((artefact / "artefact.json").read_text())
    meta["preprocessing"] = PreprocessParams(size=96).to_dict()
    (artefact / "artefact.json").write_text(json.dumps(meta))
    scorer = load_scorer(artefact)
    rng = np.random.default_rng(4)
    pixels = np.full((120, 90), 0.1, np.float32)
    pixels[20:100, 30:60] = 0.7 + 0.05 * rng.random((80, 30))  # a "bone" on a dark background
    from xrad.data.io import write_png

    write_png(tmp_path / "a.png", pixels)
    result = explain_pixels(scorer, pixels)
    assert result.on_original and result.heat.shape == (120, 90) and result.base.shape == (120, 90)
    assert result.heat.max() > 0 and np.isfinite(result.heat).all()
    expected = score_frame(scorer, pd.DataFrame({"path": [str(tmp_path / "a.png")]}), workers=1)["score"][0]
    assert result.score == pytest.approx(float(expected), rel=1e-5)
    assert Image.open(io.BytesIO(result.overlay_png())).size == (90, 120)
