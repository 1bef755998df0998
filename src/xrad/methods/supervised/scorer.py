"""Framework-free scorer of the supervised baseline (torch only): P(abnormal) from a ResNet-50 classifier."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from xrad.methods.base import Scorer
from xrad.models.resnet import ResNet50Backbone

__all__ = ["ClassifierScorer"]


class ClassifierScorer(Scorer):
    """Supervised classifier: ResNet-50 features → one logit; the score is P(abnormal) = sigmoid(logit)."""

    kind: ClassVar[str] = "classifier"

    def __init__(self, backbone: ResNet50Backbone, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def logits(self, images: Tensor) -> Tensor:
        """Abnormality logits (B,)."""
        logits: Tensor = self.head(self.backbone(images))
        return logits.squeeze(1)

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """P(abnormal) (B,); the sigmoid runs in float64 so confident predictions do not all tie at 1.0."""
        return torch.sigmoid(self.logits(images).double()), None

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """The pooled ResNet-50 features h (B, 2048)."""
        return {"h": self.backbone(images)}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Backbone (``backbone.*``) and head (``head.*``) weights."""
        tensors = {f"backbone.{k}": v for k, v in self.backbone.state_dict().items()}
        tensors.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return tensors, {"in_channels": int(self.backbone.in_channels), "arch": "resnet50"}

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> ClassifierScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        backbone = ResNet50Backbone(in_channels=int(args.get("in_channels", 1)))
        backbone.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("backbone.")}, strict=True)
        head = nn.Linear(backbone.out_dim, 1)
        head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")}, strict=True)
        return cls(backbone, head)
