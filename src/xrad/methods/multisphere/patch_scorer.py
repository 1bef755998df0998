"""Framework-free scorer of the patch form of multi-sphere Deep SAD: per-cell distance to the nearest centre.

:class:`PatchSphereNet` embeds every cell of the backbone's layer2+layer3 map
(:func:`xrad.models.patch.patch_features`) with a 1×1-convolution MLP; the image score is the mean of the
``top_k`` largest cell distances inside the body, and the heatmap is the distance map itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from xrad.methods.base import CellMapScorer
from xrad.models.patch import PATCH_CHANNELS, body_average, cell_mask, cell_vectors, patch_features
from xrad.models.resnet import ResNet18Backbone


class PatchSphereNet(nn.Module):
    """Backbone + a 1×1-convolution MLP ``PATCH_CHANNELS → dims[0] → … → dims[-1]`` per cell."""

    def __init__(self, backbone: ResNet18Backbone, dims: Sequence[int], bias: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.dims, self.bias = [int(d) for d in dims], bool(bias)
        layers: list[nn.Module] = []
        width = PATCH_CHANNELS
        for i, out in enumerate(self.dims):
            layers.append(nn.Conv2d(width, out, 1, bias=self.bias))
            if i < len(self.dims) - 1:
                layers.append(nn.ReLU(inplace=True))
            width = out
        self.head = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        """Cell embeddings ``(B, dims[-1], S/8, S/8)``."""
        cells: Tensor = self.head(patch_features(self.backbone, images))
        return cells


class PatchSphereScorer(CellMapScorer):
    """Mean of the ``top_k`` largest cell distances to the nearest surviving centre, inside the body."""

    kind: ClassVar[str] = "patch_sphere"
    centers: Tensor  # buffer (K, D)

    def __init__(self, net: PatchSphereNet, centers: Tensor, top_k: int = 1) -> None:
        super().__init__()
        self.net = net
        self.top_k = int(top_k)
        self.register_buffer("centers", centers.detach().clone().float())

    def cell_scores(self, images: Tensor) -> Tensor:
        """``(B, S/8, S/8)`` distances to the nearest centre, 0 on cells mostly outside the body."""
        z = self.net(images)
        cells = z.shape[-1]
        d2 = torch.cdist(cell_vectors(z).float(), self.centers).pow(2).amin(dim=1)
        dist = d2.clamp_min(0).sqrt().view(-1, cells, cells)
        return dist * cell_mask(images, cells).to(dist.dtype)

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """Cell embeddings averaged over the body (B, D), for plots."""
        return {"z": body_average(self.net(images), images)}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Network weights (``net.*``) and ``centers``; head widths and ``top_k`` as arguments."""
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        tensors["centers"] = self.centers
        return tensors, {"dims": self.net.dims, "bias": self.net.bias, "top_k": self.top_k}

    def artefact_meta_fields(self) -> dict[str, Any]:
        """The number of surviving centres (the centres themselves are in the weights file)."""
        return {"n_spheres": int(self.centers.shape[0])}

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> PatchSphereScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        net = PatchSphereNet(ResNet18Backbone(in_channels=1), args["dims"], bias=bool(args["bias"]))
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")}, strict=True)
        return cls(net, tensors["centers"], int(args["top_k"]))
