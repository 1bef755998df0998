"""Framework-free scorer of (multi-sphere or uni-modal) Deep SAD: distance of z to the nearest centre."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from xrad.losses import nearest_center
from xrad.methods.base import Scorer
from xrad.methods.encoder_state import encoder_args, encoder_from, encoder_tensors
from xrad.models.encoder import Encoder


class SphereScorer(Scorer):
    """Distance to the nearest of the surviving centres (Eq. 2's score, s = min_k ||z − c_k||); the nearest
    centre is reported as ``sphere``."""

    kind: ClassVar[str] = "sphere"
    centers: Tensor  # buffer (K, D)

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
        tensors = encoder_tensors(self.encoder)
        tensors["centers"] = self.centers
        return tensors, encoder_args(self.encoder)

    def artefact_meta_fields(self) -> dict[str, Any]:
        """A readable copy of the centres and their number."""
        return {"centres": self.centers.tolist(), "n_spheres": int(self.centers.shape[0])}

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> SphereScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        return cls(encoder_from(tensors, args), tensors["centers"])
