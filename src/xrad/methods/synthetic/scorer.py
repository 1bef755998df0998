"""Framework-free scorer of the synthetic-anomaly detector: the patch map of a :class:`PatchClassifier`.

The image score is the largest cell probability inside the body (or the mean of the ``top_k`` largest):
one convincing local defect is enough to make an image abnormal, however normal the rest of it looks. The
heatmap is that probability map itself, upsampled to the input — no Grad-CAM needed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from xrad.methods.base import Scorer
from xrad.models.patch import PatchClassifier, cell_mask, top_k_cell_mean, upsample_cell_map


class PatchClassifierScorer(Scorer):
    """Per-cell probability of a local defect; image score = its maximum (or top-k mean) inside the body."""

    kind: ClassVar[str] = "patch_classifier"

    def __init__(self, network: PatchClassifier, score: str = "max", top_k: int = 4) -> None:
        super().__init__()
        self.network = network
        self.score_kind, self.top_k = str(score), int(top_k)

    def cell_probabilities(self, images: Tensor) -> Tensor:
        """``(B, S/8, S/8)`` probabilities, 0 on cells mostly outside the body."""
        logits = self.network(images)
        return torch.sigmoid(logits) * cell_mask(images, logits.shape[-1]).to(logits.dtype)

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """The largest cell probability (or the mean of the ``top_k`` largest)."""
        cells = self.cell_probabilities(images)
        if self.score_kind == "top_k":
            return top_k_cell_mean(cells, self.top_k), None
        return cells.flatten(1).amax(dim=1), None

    def heatmap(self, images: Tensor) -> Tensor:
        """The probability map, bilinearly upsampled to ``(B, 1, S, S)``."""
        with torch.no_grad():
            return upsample_cell_map(self.cell_probabilities(images), tuple(images.shape[-2:]))

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """The patch features averaged over the body (B, 384), for plots."""
        features = self.network.features(images)
        inside = cell_mask(images, features.shape[-1]).to(features.dtype)[:, None]
        return {"h": (features * inside).sum(dim=(2, 3)) / inside.sum(dim=(2, 3)).clamp_min(1.0)}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The network's weights (``network.*``); head width and score rule as arguments."""
        tensors = {f"network.{k}": v for k, v in self.network.state_dict().items()}
        return tensors, {"hidden": self.network.hidden, "score": self.score_kind, "top_k": self.top_k}

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> PatchClassifierScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        network = PatchClassifier(hidden=int(args["hidden"]))
        network.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("network.")}, strict=True)
        return cls(network, args["score"], args["top_k"])
