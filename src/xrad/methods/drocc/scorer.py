"""Framework-free scorer of DROCC (torch only): −logit of the "normal" class of a ResNet-18 classifier."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from xrad.methods.base import Scorer
from xrad.models.resnet import ResNet18Backbone

__all__ = ["DroccScorer"]


class DroccScorer(Scorer):
    """ResNet-18 features → one normality logit; the anomaly score is −logit (monotone in 1 − P(normal))."""

    kind: ClassVar[str] = "drocc"

    def __init__(self, backbone: ResNet18Backbone, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def logits(self, images: Tensor) -> Tensor:
        """Normality logits (B,) (normal = 1, as the reference trainer)."""
        logits: Tensor = self.head(self.backbone(images))
        return logits.squeeze(1)

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """−logit (B,) in float64; no sphere."""
        return -self.logits(images).double(), None

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """The pooled ResNet-18 features h (B, 512)."""
        return {"h": self.backbone(images)}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Backbone (``backbone.*``) and head (``head.*``) weights."""
        tensors = {f"backbone.{k}": v for k, v in self.backbone.state_dict().items()}
        tensors.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return tensors, {"in_channels": int(self.backbone.in_channels)}

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> DroccScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        backbone = ResNet18Backbone(in_channels=int(args.get("in_channels", 1)))
        backbone.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("backbone.")}, strict=True)
        head = nn.Linear(backbone.out_dim, 1)
        head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")}, strict=True)
        return cls(backbone, head)
