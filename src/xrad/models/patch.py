"""Patch-level features and heads on the 1-channel ResNet-18: what local anomaly scores are computed from.

A globally pooled embedding is dominated by anatomy, pose and exposure; a plate or a fracture line changes a
few cells of the feature map and barely moves the mean. :func:`patch_features` keeps the spatial map: the
outputs of ``layer2`` (stride 8) and ``layer3`` (stride 16, upsampled) concatenated, 384 channels at 1/8 of
the input size — the layers PatchCore and PaDiM use, fine enough for thin structures and deep enough to
describe them.

:class:`PatchClassifier` puts a 1×1-convolution head on those features: one logit per cell, trained to say
"this cell was corrupted" (:mod:`xrad.training.corruptions`); its map is the heatmap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xrad.models.resnet import ResNet18Backbone

__all__ = [
    "PATCH_CHANNELS",
    "PATCH_STRIDE",
    "PatchClassifier",
    "body_cell_vectors",
    "cell_mask",
    "patch_features",
    "sample_cells",
]

PATCH_CHANNELS = 128 + 256  # layer2 + layer3 of ResNet-18
PATCH_STRIDE = 8


def patch_features(backbone: ResNet18Backbone, images: Tensor) -> Tensor:
    """``(B, 384, S/8, S/8)``: layer2 features with layer3's upsampled (bilinear) beside them."""
    x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(images))))
    layer2 = backbone.layer2(backbone.layer1(x))
    layer3 = backbone.layer3(layer2)
    upsampled = F.interpolate(layer3, size=layer2.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([layer2, upsampled], dim=1)


def cell_mask(images: Tensor, cells: int, min_fraction: float = 0.3) -> Tensor:
    """``(B, cells, cells)`` bool: feature-map cells at least ``min_fraction`` inside the body.

    The body is the support of the prepared input (``images > 0``, as everywhere in scoring), averaged over
    each cell's footprint; cells mostly outside it are padding or air and never count towards a score.
    """
    support = (images > 0).to(images.dtype)
    return F.adaptive_avg_pool2d(support, cells)[:, 0] >= min_fraction


class PatchClassifier(nn.Module):
    """ResNet-18 (1 channel) + a 1×1-convolution head on :func:`patch_features`: one logit per cell."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.backbone = ResNet18Backbone(in_channels=1)
        self.head = nn.Sequential(nn.Conv2d(PATCH_CHANNELS, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1))
        self.hidden = hidden

    def features(self, images: Tensor) -> Tensor:
        """The patch features ``(B, 384, S/8, S/8)``."""
        return patch_features(self.backbone, images)

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``(B, S/8, S/8)``: how likely each cell is to hold a local defect."""
        logits: Tensor = self.head(self.features(images))
        return logits[:, 0]


def cell_vectors(features: Tensor) -> Tensor:
    """``(B, C, g, g)`` feature maps as ``(B·g·g, C)`` rows, row-major over (image, y, x)."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def body_cell_vectors(backbone: ResNet18Backbone, images: Tensor) -> Tensor:
    """``(n, 384)``: the :func:`patch_features` vectors of the cells of prepared ``images`` inside the body
    (:func:`cell_mask`), row-major over (image, y, x) — the normal cells a patch-level stage is fitted on."""
    features = patch_features(backbone, images)
    return cell_vectors(features)[cell_mask(images, features.shape[-1]).flatten()]


def sample_cells(cells: Tensor, max_patches: int, seed: int) -> Tensor:
    """At most ``max_patches`` rows of ``cells`` (N, C), a seeded uniform sample without replacement, in order."""
    if len(cells) <= max_patches:
        return cells
    pick = torch.randperm(len(cells), generator=torch.Generator().manual_seed(seed))[:max_patches]
    return cells[pick.sort().values]


def top_k_cell_mean(cell_map: Tensor, top_k: int) -> Tensor:
    """Image scores ``(B,)`` of a ``(B, g, g)`` cell-score map: the mean of its ``top_k`` largest cells."""
    flat = cell_map.flatten(1)
    return flat.topk(min(top_k, flat.shape[1]), dim=1).values.mean(dim=1)


def upsample_cell_map(cell_map: Tensor, size: tuple[int, ...]) -> Tensor:
    """A ``(B, g, g)`` non-negative cell map as a ``(B, 1, *size)`` heatmap (bilinear)."""
    up = F.interpolate(cell_map[:, None], size=size, mode="bilinear", align_corners=False)
    return up.clamp_min(0)


def body_average(features: Tensor, images: Tensor) -> Tensor:
    """The ``(B, C, g, g)`` cell features of ``images`` averaged over the body's cells: ``(B, C)``."""
    inside = cell_mask(images, features.shape[-1]).to(features.dtype)[:, None]
    averaged: Tensor = (features * inside).sum(dim=(2, 3)) / inside.sum(dim=(2, 3)).clamp_min(1.0)
    return averaged
