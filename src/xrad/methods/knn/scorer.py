"""Framework-free scorer of the kNN ablation: mean distance of h (or z) to its k nearest normal training
embeddings (chunked, exact)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from xrad.methods.base import Scorer
from xrad.methods.encoder_state import encoder_args, encoder_from, encoder_tensors
from xrad.methods.knn.search import knn_mean_distance
from xrad.models.encoder import Encoder


class KnnScorer(Scorer):
    """Mean distance to the k nearest normal training embeddings (the paper's kNN-100 ablation)."""

    kind: ClassVar[str] = "knn"
    memory: Tensor  # buffer (N, D)

    def __init__(
        self, encoder: Encoder, memory: Tensor, k: int = 100, chunk_size: int = 1024, feature: str = "h"
    ) -> None:
        super().__init__()
        if feature not in ("h", "z"):
            raise ValueError(f"feature must be 'h' or 'z', got {feature!r}")
        self.encoder = encoder
        self.k, self.chunk_size, self.feature = int(k), int(chunk_size), feature
        self.register_buffer("memory", memory.detach().clone().float())

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Mean distance to the k nearest memory rows; no sphere."""
        h, z = self.encoder(images)
        features = h if self.feature == "h" else z
        return knn_mean_distance(features, self.memory, k=self.k, chunk_size=self.chunk_size), None

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """h (B, 512) and z (B, 128)."""
        h, z = self.encoder(images)
        return {"h": h, "z": z}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Encoder weights and the ``memory`` bank."""
        tensors = encoder_tensors(self.encoder)
        tensors["memory"] = self.memory
        args = encoder_args(self.encoder)
        args.update({"k": self.k, "chunk_size": self.chunk_size, "feature": self.feature})
        return tensors, args

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> KnnScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        return cls(
            encoder_from(tensors, args),
            tensors["memory"],
            k=args["k"],
            chunk_size=args["chunk_size"],
            feature=args["feature"],
        )
