"""Encoder = backbone (image -> h) + head (h -> z), the φ of the paper."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from xrad.errors import ConfigError
from xrad.models.heads import MLPHead
from xrad.models.resnet import ResNet18Backbone

__all__ = ["Encoder", "build_encoder"]


class Encoder(nn.Module):
    """Backbone followed by a head; ``forward(x) -> (h, z)``.

    Transfer between stages (contrastive → Deep SAD) copies ``encoder.backbone``'s weights; the head of the
    anomaly-detection encoder is built fresh (optionally bias-free).
    """

    backbone: ResNet18Backbone
    head: MLPHead

    def __init__(self, backbone: ResNet18Backbone, head: MLPHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return the backbone features h (B, 512) and the head embedding z (B, head out)."""
        h = self.backbone(x)
        return h, self.head(h)


def build_encoder(head_dims: Sequence[int] = (512, 256, 128), bias: bool = True, in_channels: int = 1) -> Encoder:
    """Build the paper's encoder: 1-channel ResNet-18 (h ∈ R^512) + MLP head ``head_dims`` (z ∈ R^128).

    Use ``bias=False`` for the Deep SAD / multi-sphere head (see :class:`MLPHead`).
    """
    backbone = ResNet18Backbone(in_channels=in_channels)
    if int(head_dims[0]) != backbone.out_dim:
        raise ConfigError(f"head_dims must start with the backbone width {backbone.out_dim} (got {tuple(head_dims)})")
    return Encoder(backbone, MLPHead(head_dims, bias=bias))
