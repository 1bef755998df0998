"""Gaussian density scores of the synthetic-anomaly detector's features (``synthetic.score: gaussian`` and
``gaussian_image``), as AnatPaste and CutPaste score their self-supervised encoders.

One multivariate Gaussian N(μ, Σ) is fitted to the layer2+layer3 features of the normal training images'
body cells (patch level), and one to their body-averaged features (image level). The anomaly score of a
vector e is its Mahalanobis distance √((e − μ)ᵀ Σ⁻¹ (e − μ)). Σ is shrunk towards a multiple of the identity,
Σ + s·(tr Σ / d)·I: with a few hundred training images the image-level Σ (384-d) is singular, and the relative
form keeps s on the features' own variance scale. Unlike PaDiM there is one Gaussian for all cell positions:
radiographs are not aligned (pose, view, crop), so a position has no fixed anatomy.

- ``gaussian``: cell map of Mahalanobis distances; image score = mean of the ``top_k`` largest body cells.
- ``gaussian_image``: image score = the distance of the body-averaged feature; the heatmap is still the cell
  map (where the image departs from normal cells), since an averaged vector has no place.

Everything is computed in float64: the distances are differences of large quadratic forms.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from xrad.errors import DataError
from xrad.methods.base import CellMapScorer
from xrad.models.patch import body_average, cell_mask, cell_vectors, patch_features
from xrad.models.resnet import ResNet18Backbone

LEVELS = ("patch", "image")
GAUSSIAN_TENSORS = ("cell_mean", "cell_precision", "image_mean", "image_precision")


def gaussian_precision(covariance: Tensor, shrinkage: float) -> Tensor:
    """``(Σ + s·(tr Σ / d)·I)⁻¹`` in float64: the precision of the shrunk covariance."""
    cov = covariance.double()
    d = cov.shape[0]
    ridge = shrinkage * float(torch.trace(cov)) / d
    if not ridge > 0:
        raise DataError("the normal training features have no variance: a Gaussian of them has no scale")
    precision: Tensor = torch.linalg.inv(cov + ridge * torch.eye(d, dtype=cov.dtype))
    return precision


def mahalanobis(vectors: Tensor, mean: Tensor, precision: Tensor) -> Tensor:
    """``(N,)`` float64 distances √((e − μ)ᵀ P (e − μ)) of the rows of ``vectors`` (N, C)."""
    centred = vectors.double() - mean.double()
    squared = ((centred @ precision.double()) * centred).sum(dim=1)
    return squared.clamp_min(0).sqrt()


class MomentAccumulator:
    """Running sums of rows (float64) for the mean and unbiased covariance of more rows than fit at once."""

    def __init__(self, dim: int) -> None:
        self.count = 0
        self.total = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)

    def add(self, rows: Tensor) -> None:
        """Add the rows ``(n, dim)``."""
        rows = rows.double()
        self.count += rows.shape[0]
        self.total += rows.sum(dim=0)
        self.outer += rows.T @ rows

    def moments(self) -> tuple[Tensor, Tensor]:
        """(mean (dim,), covariance (dim, dim)) of every row added; at least two rows are needed."""
        if self.count < 2:
            raise ValueError(f"a Gaussian needs at least 2 vectors, got {self.count}")
        mean = self.total / self.count
        covariance = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return mean, covariance


class PatchGaussianScorer(CellMapScorer):
    """Mahalanobis distance of each body cell (or of the body-averaged feature) to the normal training ones."""

    kind: ClassVar[str] = "patch_gaussian"
    cell_mean: Tensor  # buffers, float64
    cell_precision: Tensor
    image_mean: Tensor
    image_precision: Tensor

    def __init__(
        self,
        backbone: ResNet18Backbone,
        gaussians: Mapping[str, Tensor],
        level: str = "patch",
        top_k: int = 3,
    ) -> None:
        super().__init__()
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        self.backbone = backbone
        self.level, self.top_k = level, int(top_k)
        for name in GAUSSIAN_TENSORS:
            self.register_buffer(name, gaussians[name].detach().clone().double())

    def _cell_map(self, features: Tensor, images: Tensor) -> Tensor:
        cells = features.shape[-1]
        distances = mahalanobis(cell_vectors(features), self.cell_mean, self.cell_precision).view(-1, cells, cells)
        return distances * cell_mask(images, cells).to(distances.dtype)

    def cell_scores(self, images: Tensor) -> Tensor:
        """``(B, g, g)`` float64 cell distances, 0 on cells mostly outside the body."""
        return self._cell_map(patch_features(self.backbone, images), images)

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Top-k mean of the cell distances (patch level) or the body-average's distance (image level)."""
        if self.level == "patch":
            return super().score(images)
        averaged = body_average(patch_features(self.backbone, images), images)
        return mahalanobis(averaged, self.image_mean, self.image_precision), None

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """The cell features averaged over the body (B, C), for plots."""
        return {"h": body_average(patch_features(self.backbone, images), images)}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Backbone weights (``backbone.*``) and both Gaussians; ``level`` and ``top_k``."""
        tensors = {f"backbone.{k}": v for k, v in self.backbone.state_dict().items()}
        tensors.update({name: getattr(self, name) for name in GAUSSIAN_TENSORS})
        return tensors, {"level": self.level, "top_k": self.top_k}

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> PatchGaussianScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        backbone = ResNet18Backbone(in_channels=1)
        backbone.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("backbone.")}, strict=True)
        return cls(backbone, tensors, str(args["level"]), int(args["top_k"]))


@torch.no_grad()
def fit_gaussians(
    backbone: ResNet18Backbone, images: Tensor, masks: Tensor, *, shrinkage: float, batch_size: int = 64
) -> dict[str, Tensor]:
    """The Gaussians of the body cells (``cell_mean``, ``cell_precision``) and of the body-averaged features
    (``image_mean``, ``image_precision``) of uint8 normal ``images``/``masks``; precisions shrunk
    (:func:`gaussian_precision`); in eval mode on deterministic inputs."""
    from xrad.data.model_input import prepare_eval

    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    cells: MomentAccumulator | None = None
    averages: list[Tensor] = []
    for start in range(0, images.shape[0], batch_size):
        x = prepare_eval(images[start : start + batch_size].to(device), masks[start : start + batch_size].to(device))
        features = patch_features(backbone, x)
        inside = cell_mask(x, features.shape[-1]).flatten()
        if cells is None:
            cells = MomentAccumulator(features.shape[1])
        cells.add(cell_vectors(features)[inside].cpu())
        averages.append(body_average(features, x).double().cpu())
    backbone.train(was_training)
    if cells is None:
        raise ValueError("no normal training images to fit the Gaussians on")
    image_rows = MomentAccumulator(averages[0].shape[1])
    image_rows.add(torch.cat(averages))
    cell_mean, cell_cov = cells.moments()
    image_mean, image_cov = image_rows.moments()
    return {
        "cell_mean": cell_mean,
        "cell_precision": gaussian_precision(cell_cov, shrinkage),
        "image_mean": image_mean,
        "image_precision": gaussian_precision(image_cov, shrinkage),
    }
