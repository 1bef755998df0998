"""Framework-free scorer of the patch form of subspace Deep SAD (``subspace.level: patch``).

Every cell of the backbone's layer2+layer3 map (:func:`xrad.models.patch.patch_features`, 384-d at stride 8)
is a vector e; its residual ‖e − P e‖² to the ridge subspace P = S Sᵀ (S Sᵀ + λI)⁻¹ of a sample of normal
training cells (:func:`xrad.methods.subspace.projection.subspace_projection`, the d×d form) is the cell's
score. Why cells: a pooled 512-d embedding averages a plate or a fracture line away (the image form is at
chance on the phantoms); a local defect moves a few cells out of the span of normal cells.

The map is layer2+layer3, not layer4 (the map right before pooling): layer4 has stride 32, 2×2 cells at 64 px.
Residuals are computed in float64 with P kept in float64: with many cells S Sᵀ is full rank and
e − P e = λ (S Sᵀ + λI)⁻¹ e is small next to e, so float32 would lose it to cancellation.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from xrad.methods.base import CellMapScorer
from xrad.methods.subspace.projection import subspace_distance
from xrad.models.patch import body_average, cell_mask, cell_vectors, patch_features
from xrad.models.resnet import ResNet18Backbone

__all__ = ["SubspacePatchScorer"]


class SubspacePatchScorer(CellMapScorer):
    """Cell residual ‖e − P e‖² to the subspace of normal training cells; image score = top-k mean in the body."""

    kind: ClassVar[str] = "subspace_patch"
    projection: Tensor  # buffer (C, C) float64

    def __init__(self, backbone: ResNet18Backbone, projection: Tensor, top_k: int = 3) -> None:
        super().__init__()
        self.backbone = backbone
        self.top_k = int(top_k)
        self.register_buffer("projection", projection.detach().clone().double())

    def cell_scores(self, images: Tensor) -> Tensor:
        """``(B, g, g)`` float64 residuals, 0 on cells mostly outside the body."""
        features = patch_features(self.backbone, images)
        cells = features.shape[-1]
        residual = subspace_distance(cell_vectors(features).double(), self.projection).view(-1, cells, cells)
        return residual * cell_mask(images, cells).to(residual.dtype)

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """The cell features averaged over the body (B, C), for plots."""
        return {"h": body_average(patch_features(self.backbone, images), images)}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Backbone weights (``backbone.*``) and the ``projection``; ``top_k``."""
        tensors = {f"backbone.{k}": v for k, v in self.backbone.state_dict().items()}
        tensors["projection"] = self.projection
        return tensors, {"top_k": self.top_k}

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> SubspacePatchScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        backbone = ResNet18Backbone(in_channels=1)
        backbone.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("backbone.")}, strict=True)
        return cls(backbone, tensors["projection"], int(args["top_k"]))
