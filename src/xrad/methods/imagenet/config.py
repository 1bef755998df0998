"""The ``imagenet`` config section (Lightning-free)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xrad.config.sections import Check


@dataclass
class ImageNetConfig:
    """ImageNet-initialised encoder (Table 1 "Ruff et al. (Multi-Modal) Image-Net").

    ``weights``: path of a local torchvision ResNet-18 state_dict (``resnet18-f37072fd.pth`` from
    torchvision, or the same saved as .safetensors). Nothing is ever downloaded.
    ``normalise``: fold ImageNet's input normalisation (grey mean/std) into the first convolution and
    BatchNorm, so the pretrained filters see inputs on the scale they were trained on.
    """

    weights: str | None = None
    normalise: bool = True
    mean: float = 0.449  # ImageNet RGB means/stds averaged over the channels (grey input)
    std: float = 0.226

    def checks(self) -> Iterable[Check]:
        return [("std", self.std > 0, f"must be > 0, got {self.std}")]
