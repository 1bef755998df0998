"""Framework-free scorer of DROCC (torch only): −logit of the "normal" class of a ResNet-18 classifier."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from xrad.methods.supervised.scorer import LinearHeadScorer
from xrad.models.resnet import ResNet18Backbone

__all__ = ["DroccScorer"]


class DroccScorer(LinearHeadScorer):
    """ResNet-18 features → one normality logit (normal = 1); the anomaly score is −logit (monotone in
    1 − P(normal))."""

    kind: ClassVar[str] = "drocc"
    backbone_class = ResNet18Backbone

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """−logit (B,) in float64; no sphere."""
        return -self.logits(images).double(), None
