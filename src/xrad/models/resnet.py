"""One-channel ResNet backbones (torchvision architectures, no downloads, no 3x channel repeat).

The networks are torchvision's ``resnet18``/``resnet50`` built with ``weights=None`` whose first convolution
takes ``in_channels`` (1 for radiographs) instead of RGB, and whose classifier is removed: ``forward`` returns
the pooled feature vector ``h``. The stem and stages keep torchvision's attribute names (``conv1``, ``bn1``,
``layer1`` ... ``layer4``) so that (a) a torchvision state_dict loads with a single conv1 adaptation and
(b) ``.layer4`` stays reachable for Grad-CAM. ``forward`` has no data-dependent Python control flow, so it
traces and exports to ONNX.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision import models

from xrad.errors import ConfigError

__all__ = ["ResNet18Backbone", "ResNet50Backbone", "load_state_dict_file"]


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a state_dict from a ``.pth``/``.pt`` (torch.save) or ``.safetensors`` file, never unpickling code.

    Raises :class:`ConfigError` naming the file when it is missing or is not a tensor dictionary.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: weights file not found (no download is attempted); "
            "pass the path of a local torchvision state_dict (.pth or .safetensors)"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            # weights_only=True: a weights file must never be able to run code on load.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"{path}: cannot read weights ({type(exc).__name__}: {exc}); "
            "pass a torch.save'd state_dict or a .safetensors file"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # tolerate the common {"state_dict": ...} checkpoint wrapper
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a state_dict of tensors; pass torchvision's resnet state_dict file")
    return state


class _TorchvisionBackbone(nn.Module):
    """Shared body of the torchvision ResNet backbones: stem + 4 stages + global average pooling."""

    out_dim: int

    def __init__(self, builder: Callable[..., models.ResNet], out_dim: int, in_channels: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise ConfigError(f"in_channels must be >= 1 (got {in_channels}); radiographs use 1")
        net = builder(weights=None)  # weights=None: never touches the network or the torch hub cache
        self.in_channels = in_channels
        self.out_dim = out_dim
        # Same geometry as torchvision's RGB stem, but reading the grey channel directly instead of
        # repeating it three times (3x less stem compute, identical expressiveness).
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the last feature map (B, out_dim, H/32, W/32) — the Grad-CAM target."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features: Tensor = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return features

    def forward(self, x: Tensor) -> Tensor:
        """Map images (B, in_channels, H, W) to pooled features h (B, out_dim)."""
        return torch.flatten(self.avgpool(self.forward_features(x)), 1)

    def load_torchvision_weights(self, path: str | Path) -> None:
        """Load a local torchvision ResNet state_dict (e.g. the ImageNet weights file), adapting conv1.

        The RGB ``conv1`` kernel is summed over its 3 input channels: a grey image g fed to the summed kernel
        gives exactly the response of the RGB kernel to the image (g, g, g). For ``in_channels`` > 1 other
        than 3 the summed kernel is shared equally by the channels. ``fc.*`` is ignored. Nothing is
        downloaded; a missing or mismatching file raises :class:`ConfigError`. Note that ImageNet weights
        expect inputs normalised with ImageNet statistics (grey mean ~0.449, std ~0.226).
        """
        state = {k: v for k, v in load_state_dict_file(path).items() if not k.startswith("fc.")}
        if "conv1.weight" not in state:
            raise ConfigError(f"{path}: no 'conv1.weight' entry; pass a torchvision resnet state_dict")
        w = state["conv1.weight"]
        if w.ndim != 4 or w.shape[0] != 64:
            raise ConfigError(
                f"{path}: conv1.weight has shape {tuple(w.shape)}, expected (64, C, 7, 7); "
                "pass a torchvision resnet state_dict"
            )
        if w.shape[1] != self.in_channels:
            summed = w.sum(dim=1, keepdim=True)
            w = summed.repeat(1, self.in_channels, 1, 1) / self.in_channels
        state["conv1.weight"] = w
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or wrong:
            detail = (
                f"missing {missing[:3]}"
                if missing
                else f"unexpected {unexpected[:3]}"
                if unexpected
                else f"shape mismatch {wrong[:3]}"
            )
            raise ConfigError(
                f"{path}: not a {type(self).__name__} state_dict ({detail}); "
                "pass the matching torchvision resnet weights file"
            )
        self.load_state_dict(state, strict=True)


class ResNet18Backbone(_TorchvisionBackbone):
    """torchvision ResNet-18, ``in_channels``-channel stem, no classifier: (B,C,H,W) -> h (B, 512)."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__(models.resnet18, 512, in_channels)


class ResNet50Backbone(_TorchvisionBackbone):
    """torchvision ResNet-50, ``in_channels``-channel stem, no classifier: (B,C,H,W) -> h (B, 2048)."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__(models.resnet50, 2048, in_channels)
