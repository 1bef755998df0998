"""Framework-free scorer of SALAD (torch only; no Lightning): the encoder's unit-norm latent z against the
memory bank of the normal training images, scored by Eq. 4 (:func:`xrad.losses.arccos_knn_score`).

The artefact holds the encoder (the decoder is not needed to score) and the bank's normal rows only: the
entries of known anomalies are dropped when the scorer is built, as the paper says.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from xrad.losses import arccos_knn_score
from xrad.methods.base import Scorer
from xrad.models.salad import SaladEncoder, build_salad_encoder

_ENCODER = "encoder."


class SaladScorer(Scorer):
    """Eq. 4 weighted kNN of z over the normal bank entries (``formula: paper``: times N, in [0, 1])."""

    kind: ClassVar[str] = "salad"
    memory: Tensor

    def __init__(
        self,
        encoder: SaladEncoder,
        memory: Tensor,
        arch: dict[str, Any],
        k: int = 100,
        formula: str = "paper",
        chunk_size: int = 256,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.arch = dict(arch)  # network, image_size, latent_dim, width: rebuilds the encoder
        self.k, self.formula, self.chunk_size = int(k), str(formula), int(chunk_size)
        self.register_buffer("memory", memory.detach().clone().float())

    def latent(self, images: Tensor) -> Tensor:
        """The unit-norm z (B, latent_dim)."""
        return nn.functional.normalize(self.encoder(images), dim=1)

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Eq. 4 scores (B,); no sphere."""
        scores = arccos_knn_score(
            self.latent(images), self.memory, k=self.k, formula=self.formula, query_chunk=self.chunk_size
        )
        if self.formula == "paper":
            scores = scores * self.memory.shape[0]  # N·A = mean K nearest angle / mean angle: in [0, 1]
        return scores, None

    def heatmap(self, images: Tensor) -> Tensor:
        """Grad-CAM of the score on the encoder's last spatial block."""
        from xrad.models.gradcam import grad_cam

        return grad_cam(self, images, layer=self.encoder.last_block)

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """z (B, latent_dim)."""
        return {"z": self.latent(images)}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Encoder weights (``encoder.*``) and the normal ``memory``; the architecture and the score."""
        tensors = {_ENCODER + k: v for k, v in self.encoder.state_dict().items()}
        tensors["memory"] = self.memory
        args = {**self.arch, "k": self.k, "formula": self.formula, "chunk_size": self.chunk_size}
        return tensors, args

    def artefact_meta_fields(self) -> dict[str, Any]:
        """The bank's size."""
        return {"memory_entries": int(self.memory.shape[0])}

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> SaladScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        arch = {key: args[key] for key in ("network", "image_size", "latent_dim", "width")}
        encoder = build_salad_encoder(
            str(arch["network"]), int(arch["image_size"]), int(arch["latent_dim"]), int(arch["width"])
        )
        encoder.load_state_dict({k[len(_ENCODER) :]: v for k, v in tensors.items() if k.startswith(_ENCODER)})
        return cls(encoder, tensors["memory"], arch, args["k"], args["formula"], args["chunk_size"])
