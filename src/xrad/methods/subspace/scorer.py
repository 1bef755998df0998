"""Framework-free scorer of subspace Deep SAD: ‖e − P e‖² of h (or z) for the frozen projection P."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from xrad.methods.base import Scorer
from xrad.methods.encoder_state import encoder_args, encoder_from, encoder_tensors
from xrad.methods.subspace.projection import subspace_distance
from xrad.models.encoder import Encoder


class SubspaceScorer(Scorer):
    """Squared distance of the embedding to the ridge subspace of the normal training embeddings."""

    kind: ClassVar[str] = "subspace"
    projection: Tensor  # buffer (d, d)

    def __init__(self, encoder: Encoder, projection: Tensor, feature: str = "h") -> None:
        super().__init__()
        if feature not in ("h", "z"):
            raise ValueError(f"feature must be 'h' or 'z', got {feature!r}")
        self.encoder = encoder
        self.feature = feature
        # float32 on purpose: P's entries are in [0, 1] (its eigenvalues are σ²/(σ² + λ)), and scoring stays in
        # the network's precision (ONNX export, GPU).
        self.register_buffer("projection", projection.detach().clone().float())

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """‖e − P e‖²; no sphere."""
        h, z = self.encoder(images)
        return subspace_distance(h if self.feature == "h" else z, self.projection), None

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """h (B, 512) and z (B, 128)."""
        h, z = self.encoder(images)
        return {"h": h, "z": z}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Encoder weights and the ``projection``."""
        tensors = encoder_tensors(self.encoder)
        tensors["projection"] = self.projection
        args = encoder_args(self.encoder)
        args["feature"] = self.feature
        return tensors, args

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> SubspaceScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        return cls(encoder_from(tensors, args), tensors["projection"], feature=args["feature"])
