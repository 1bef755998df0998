"""Framework-free scorer of the supervised baseline (torch only): P(abnormal) from a ResNet-50 classifier."""

from __future__ import annotations

from typing import Any, ClassVar, Self

import torch
from torch import Tensor, nn

from xrad.methods.base import Scorer
from xrad.models.resnet import ResNet18Backbone, ResNet50Backbone

__all__ = ["ClassifierScorer", "LinearHeadScorer"]


class LinearHeadScorer(Scorer):
    """A ResNet backbone's pooled features → one logit through a linear head; subclasses say which backbone
    (``backbone_class``) and how the logit becomes a score. Shared by the supervised baseline and DROCC."""

    backbone_class: ClassVar[type[ResNet18Backbone] | type[ResNet50Backbone]]
    artefact_args: ClassVar[dict[str, Any]] = {}

    def __init__(self, backbone: ResNet18Backbone | ResNet50Backbone, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def logits(self, images: Tensor) -> Tensor:
        """The head's logits (B,)."""
        logits: Tensor = self.head(self.backbone(images))
        return logits.squeeze(1)

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """The pooled backbone features h (B, out_dim)."""
        return {"h": self.backbone(images)}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Backbone (``backbone.*``) and head (``head.*``) weights."""
        tensors = {f"backbone.{k}": v for k, v in self.backbone.state_dict().items()}
        tensors.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return tensors, {"in_channels": int(self.backbone.in_channels), **self.artefact_args}

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> Self:
        """Rebuild from an artefact's tensors and scorer arguments."""
        backbone = cls.backbone_class(in_channels=int(args.get("in_channels", 1)))
        backbone.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("backbone.")}, strict=True)
        head_state = {k[5:]: v for k, v in tensors.items() if k.startswith("head.")}
        # The head's width is the stored weight's: the pooled features (out_dim) or, for a head applied to
        # every feature-map cell, the patch channels.
        head = nn.Linear(int(head_state["weight"].shape[1]), 1)
        head.load_state_dict(head_state, strict=True)
        return cls(backbone, head, **cls.rebuild_kwargs(args))

    @classmethod
    def rebuild_kwargs(cls, args: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments beyond backbone and head, from the artefact's arguments (none here)."""
        return {}


class ClassifierScorer(LinearHeadScorer):
    """Supervised classifier: ResNet-50 features → one logit; the score is P(abnormal) = sigmoid(logit)."""

    kind: ClassVar[str] = "classifier"
    backbone_class = ResNet50Backbone
    artefact_args: ClassVar[dict[str, Any]] = {"arch": "resnet50"}

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """P(abnormal) (B,); the sigmoid runs in float64 so confident predictions do not all tie at 1.0."""
        return torch.sigmoid(self.logits(images).double()), None
