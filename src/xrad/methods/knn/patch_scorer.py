"""Framework-free PatchCore-style scorer: nearest-neighbour distance of each feature-map cell to a memory
bank of normal training cells, image score = mean of the ``top_k`` largest cell distances inside the body.

The bank holds the layer2+layer3 features (:func:`xrad.models.patch.patch_features`, each cell averaged over
its ``smooth``×``smooth`` neighbourhood as PatchCore does) of the normal training images, reduced by greedy
coreset selection (:func:`xrad.methods.knn.search.greedy_coreset`); distances are exact and chunked
(:func:`~xrad.methods.knn.search.nearest_distance`). The heatmap is the cell distance map.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from xrad.methods.base import CellMapScorer
from xrad.methods.knn.search import nearest_distance
from xrad.models.patch import body_average, cell_mask, cell_vectors, patch_features
from xrad.models.resnet import ResNet18Backbone


def cell_features(backbone: ResNet18Backbone, images: Tensor, smooth: int) -> Tensor:
    """Patch features ``(B, C, g, g)``, averaged over ``smooth``×``smooth`` neighbourhoods (1: as they are)."""
    features = patch_features(backbone, images)
    if smooth > 1:
        features = F.avg_pool2d(features, smooth, stride=1, padding=smooth // 2, count_include_pad=False)
    return features


class PatchKnnScorer(CellMapScorer):
    """Cell distance to the nearest normal training cell; image score = top-k mean inside the body."""

    kind: ClassVar[str] = "patch_knn"
    memory: Tensor  # buffer (N, C)

    def __init__(self, backbone: ResNet18Backbone, memory: Tensor, top_k: int = 3, smooth: int = 3) -> None:
        super().__init__()
        self.backbone = backbone
        self.top_k, self.smooth = int(top_k), int(smooth)
        self.register_buffer("memory", memory.detach().clone().float())

    def cell_scores(self, images: Tensor) -> Tensor:
        """``(B, g, g)`` nearest-neighbour distances, 0 on cells mostly outside the body."""
        features = cell_features(self.backbone, images, self.smooth)
        cells = features.shape[-1]
        distances = nearest_distance(cell_vectors(features), self.memory).view(-1, cells, cells)
        return distances * cell_mask(images, cells).to(distances.dtype)

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """The cell features averaged over the body (B, C), for plots."""
        return {"h": body_average(cell_features(self.backbone, images, self.smooth), images)}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Backbone weights (``backbone.*``) and the ``memory`` bank; ``top_k`` and ``smooth``."""
        tensors = {f"backbone.{k}": v for k, v in self.backbone.state_dict().items()}
        tensors["memory"] = self.memory
        return tensors, {"top_k": self.top_k, "smooth": self.smooth}

    def artefact_meta_fields(self) -> dict[str, Any]:
        """The bank's size."""
        return {"memory_cells": int(self.memory.shape[0])}

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> PatchKnnScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        backbone = ResNet18Backbone(in_channels=1)
        backbone.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("backbone.")}, strict=True)
        return cls(backbone, tensors["memory"], int(args["top_k"]), int(args["smooth"]))


@torch.no_grad()
def build_patch_memory(
    backbone: ResNet18Backbone,
    images: Tensor,
    masks: Tensor,
    *,
    size: int,
    smooth: int,
    seed: int,
    batch_size: int = 64,
) -> Tensor:
    """The coreset-reduced bank ``(≤ size, C)`` of the body cells of uint8 ``images``/``masks`` (normal ones),
    in eval mode on their deterministic inputs."""
    from xrad.data.model_input import prepare_eval
    from xrad.methods.knn.search import greedy_coreset

    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    parts = []
    for start in range(0, images.shape[0], batch_size):
        x = prepare_eval(images[start : start + batch_size].to(device), masks[start : start + batch_size].to(device))
        features = cell_features(backbone, x, smooth)
        inside = cell_mask(x, features.shape[-1])
        parts.append(features.permute(0, 2, 3, 1)[inside].float().cpu())
    backbone.train(was_training)
    cells = torch.cat(parts)
    return cells[greedy_coreset(cells, size, seed=seed)].clone()
