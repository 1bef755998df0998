"""Framework-free scorers of DROCC (torch only): −logit of the "normal" class of a ResNet-18 classifier, and
its patch form, one normality logit per feature-map cell (``drocc.level: patch``), and DROCC on a frozen
backbone's standardised cells (``drocc_synthetic``)."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xrad.methods.base import CellMapScorer
from xrad.methods.supervised.scorer import LinearHeadScorer
from xrad.models.patch import PATCH_CHANNELS, body_average, cell_mask, patch_features
from xrad.models.resnet import ResNet18Backbone

__all__ = ["DroccCellScorer", "DroccPatchScorer", "DroccScorer", "cell_head"]


class DroccScorer(LinearHeadScorer):
    """ResNet-18 features → one normality logit (normal = 1); the anomaly score is −logit (monotone in
    1 − P(normal))."""

    kind: ClassVar[str] = "drocc"
    backbone_class = ResNet18Backbone

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """−logit (B,) in float64; no sphere."""
        return -self.logits(images).double(), None


class DroccPatchScorer(CellMapScorer, LinearHeadScorer):
    """The linear head ``PATCH_CHANNELS → 1`` applied as a 1×1 convolution to every cell of the layer2+layer3
    map: one normality logit per cell. The cell score softplus(−logit) = −log P(normal) is ≥ 0 (so cells
    outside the body can be 0) and does not saturate like 1 − sigmoid; image score = top-k mean in the body."""

    kind: ClassVar[str] = "drocc_patch"
    backbone_class = ResNet18Backbone
    backbone: ResNet18Backbone

    def __init__(self, backbone: ResNet18Backbone, head: nn.Linear, top_k: int = 3) -> None:
        super().__init__(backbone, head)
        if head.in_features != PATCH_CHANNELS or head.out_features != 1:
            raise ValueError(f"the patch head must be Linear({PATCH_CHANNELS}, 1), got {head}")
        self.top_k = int(top_k)

    def cell_logits(self, images: Tensor) -> Tensor:
        """Normality logits ``(B, S/8, S/8)``: the head on each cell's feature vector."""
        features = patch_features(self.backbone, images)  # (B, C, g, g)
        logits: Tensor = torch.einsum("bchw,c->bhw", features, self.head.weight[0]) + self.head.bias[0]
        return logits

    def logits(self, images: Tensor) -> Tensor:
        """One logit per image (B,): the mean of its cell logits inside the body (for validation and plots)."""
        cells = self.cell_logits(images)
        inside = cell_mask(images, cells.shape[-1]).to(cells.dtype)
        return (cells * inside).sum(dim=(1, 2)) / inside.sum(dim=(1, 2)).clamp_min(1.0)

    def cell_scores(self, images: Tensor) -> Tensor:
        """``(B, g, g)`` float64 softplus(−logit), 0 on cells mostly outside the body."""
        cells = self.cell_logits(images).double()
        return F.softplus(-cells) * cell_mask(images, cells.shape[-1]).to(cells.dtype)

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """The cell features averaged over the body (B, C), for plots."""
        return {"h": body_average(patch_features(self.backbone, images), images)}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Backbone and head weights; ``top_k``."""
        tensors, args = super().artefact_state()
        return tensors, {**args, "top_k": self.top_k}

    @classmethod
    def rebuild_kwargs(cls, args: dict[str, Any]) -> dict[str, Any]:
        """``top_k`` from the artefact's arguments."""
        return {"top_k": int(args.get("top_k", 3))}


class DroccCellScorer(CellMapScorer):
    """DROCC on a frozen backbone's cells (``drocc_synthetic``): every layer2+layer3 cell vector, standardised
    with the normal cells' ``mean``/``std``, goes through the MLP ``head`` to one normality logit; the cell
    score is softplus(−logit) = −log P(normal), image score = top-k mean in the body."""

    kind: ClassVar[str] = "drocc_cells"
    mean: Tensor  # buffer (C,)
    std: Tensor  # buffer (C,)

    def __init__(self, backbone: ResNet18Backbone, head: nn.Sequential, mean: Tensor, std: Tensor, top_k: int = 3):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.hidden = cast(nn.Linear, head[0]).out_features
        self.top_k = int(top_k)
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())

    def cell_logits(self, images: Tensor) -> Tensor:
        """Normality logits ``(B, S/8, S/8)``."""
        features = patch_features(self.backbone, images)
        z = (features.permute(0, 2, 3, 1) - self.mean) / self.std  # (B, g, g, C)
        logits: Tensor = self.head(z)[..., 0]
        return logits

    def cell_scores(self, images: Tensor) -> Tensor:
        """``(B, g, g)`` float64 softplus(−logit), 0 on cells mostly outside the body."""
        cells = self.cell_logits(images).double()
        return F.softplus(-cells) * cell_mask(images, cells.shape[-1]).to(cells.dtype)

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """The cell features averaged over the body (B, C), for plots."""
        return {"h": body_average(patch_features(self.backbone, images), images)}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Backbone (``backbone.*``), MLP (``head.*``), ``mean``, ``std``; ``top_k`` and ``hidden``."""
        tensors = {f"backbone.{k}": v for k, v in self.backbone.state_dict().items()}
        tensors.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        tensors.update(mean=self.mean, std=self.std)
        return tensors, {"top_k": self.top_k, "hidden": self.hidden}

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> DroccCellScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        backbone = ResNet18Backbone(in_channels=1)
        backbone.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("backbone.")}, strict=True)
        head = cell_head(int(args["hidden"]))
        head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")}, strict=True)
        return cls(backbone, head, tensors["mean"], tensors["std"], int(args["top_k"]))


def cell_head(hidden: int, channels: int = PATCH_CHANNELS) -> nn.Sequential:
    """The MLP ``channels → hidden → 1`` (ReLU) of :class:`DroccCellScorer`."""
    return nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, 1))
