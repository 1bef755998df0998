"""Framework-free scorers of the encoder-based detectors (torch only; no Lightning).

- :class:`SphereScorer` — multi-sphere (or, with one centre, uni-modal) Deep SAD: the score is the
  Euclidean distance of z to the nearest surviving centre; the nearest centre is reported as ``sphere``.
- :class:`KnnScorer` — the kNN ablation: mean Euclidean distance of h (or z) to its k nearest normal
  training embeddings (chunked, exact).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from xrad.losses import nearest_center
from xrad.methods.base import Scorer
from xrad.methods.knn import knn_mean_distance
from xrad.models.encoder import Encoder, build_encoder

_ENC = "encoder."


def _encoder_args(encoder: Encoder) -> dict[str, Any]:
    linears = [m for m in encoder.head.modules() if isinstance(m, torch.nn.Linear)]
    dims = [linears[0].in_features] + [m.out_features for m in linears]
    return {"head_dims": dims, "head_bias": linears[0].bias is not None, "in_channels": 1}


def _encoder_from(tensors: dict[str, Tensor], args: dict[str, Any]) -> Encoder:
    encoder = build_encoder(args["head_dims"], bias=bool(args["head_bias"]), in_channels=int(args.get("in_channels", 1)))
    state = {k[len(_ENC):]: v for k, v in tensors.items() if k.startswith(_ENC)}
    encoder.load_state_dict(state, strict=True)
    return encoder


class SphereScorer(Scorer):
    """Distance to the nearest of the surviving centres (Eq. 2's score, s = min_k ||z − c_k||)."""

    kind: ClassVar[str] = "sphere"

    def __init__(self, encoder: Encoder, centers: Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("centers", centers.detach().clone().float())

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Distance to the nearest centre and that centre's index (into the surviving centres)."""
        _, z = self.encoder(images)
        sq, index = nearest_center(z, self.centers)
        return sq.clamp_min(0).sqrt(), index

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """h (B, 512) and z (B, 128)."""
        h, z = self.encoder(images)
        return {"h": h, "z": z}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Encoder weights (``encoder.*``) and ``centers``."""
        tensors = {_ENC + k: v for k, v in self.encoder.state_dict().items()}
        tensors["centers"] = self.centers
        return tensors, _encoder_args(self.encoder)

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> SphereScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        return cls(_encoder_from(tensors, args), tensors["centers"])


class KnnScorer(Scorer):
    """Mean distance to the k nearest normal training embeddings (the paper's kNN-100 ablation)."""

    kind: ClassVar[str] = "knn"

    def __init__(self, encoder: Encoder, memory: Tensor, k: int = 100, chunk_size: int = 1024,
                 feature: str = "h") -> None:
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
        tensors = {_ENC + k: v for k, v in self.encoder.state_dict().items()}
        tensors["memory"] = self.memory
        args = _encoder_args(self.encoder)
        args.update({"k": self.k, "chunk_size": self.chunk_size, "feature": self.feature})
        return tensors, args

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> KnnScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        return cls(_encoder_from(tensors, args), tensors["memory"], k=args["k"], chunk_size=args["chunk_size"],
                   feature=args["feature"])
