"""The contract every detector follows, so that adding one is one module + one config.

Two halves, as in anomalib (field guide §3a):

- :class:`Scorer` — a plain ``torch.nn.Module`` that turns deterministic, masked float images
  ``(B, 1, S, S)`` into anomaly scores ``(B,)``. It is rebuilt from an artefact alone
  (:meth:`Scorer.from_artefact`), so scoring, the service and ONNX export never need Lightning.
- :class:`Stage` — the training side: a detector is a sequence of named stages (``pretrain``, ``finetune``
  ...) declared in its registry row; each stage module trains with the helpers of
  :class:`xrad.training.context.RunContext` (Lightning trainer, resume, logging) and returns a typed result;
  the last result assembles the trained scorer (:class:`FinalResult`).

This module imports only torch: Lightning lives in ``xrad.training`` and in the stage modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from xrad.models.encoder import Encoder
from xrad.models.patch import top_k_cell_mean, upsample_cell_map
from xrad.models.resnet import ResNet18Backbone

if TYPE_CHECKING:  # pragma: no cover
    from xrad.training.context import RunContext


class Scorer(nn.Module):
    """Framework-free scorer: ``forward(images) -> scores``; rebuilt from an artefact alone.

    Subclasses set :attr:`kind` (the key of its :class:`~xrad.methods.registry.ScorerRef`), implement
    :meth:`score` and :meth:`embed`, and say how they are saved (:meth:`artefact_state`) and rebuilt
    (:meth:`from_artefact`). Inputs are what :func:`xrad.data.model_input.prepare_eval` returns.
    """

    kind: ClassVar[str] = ""
    # The artefact's metadata, set when the scorer is loaded from an artefact (absent on a scorer built by
    # hand, or a plain mapping there); read it through the inference layer's ``meta_of``.
    artefact_meta: object

    def forward(self, images: Tensor) -> Tensor:
        """Anomaly scores ``(B,)``, higher = more abnormal."""
        return self.score(images)[0]

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Scores ``(B,)`` and, where meaningful, the index of the nearest sphere ``(B,)`` (else None)."""
        raise NotImplementedError

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """Named embeddings of the batch (e.g. ``h`` (B, 512) and ``z`` (B, 128)) for plots."""
        raise NotImplementedError

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """(tensors for safetensors, JSON-able constructor arguments) that :meth:`from_artefact` reads."""
        raise NotImplementedError

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> Scorer:
        """Rebuild the scorer from :meth:`artefact_state`'s output (as stored in an artefact)."""
        raise NotImplementedError

    def heatmap(self, images: Tensor) -> Tensor:
        """Where the score comes from: non-negative maps ``(B, 1, S, S)`` for prepared ``images``.

        Default: Grad-CAM of the score on the last convolutional block (:func:`xrad.models.gradcam.grad_cam`).
        A detector with a decoder overrides this with its per-pixel reconstruction error.
        """
        from xrad.models.gradcam import grad_cam

        return grad_cam(self, images)

    def artefact_meta_fields(self) -> dict[str, Any]:
        """Readable extras for ``artefact.json`` (e.g. the centres); none by default."""
        return {}

    @torch.no_grad()
    def score_batches(
        self, images: Tensor, masks: Tensor, batch_size: int = 64, with_embeddings: bool = False
    ) -> dict[str, Tensor]:
        """Score uint8 ``images``/``masks`` ``(N, 1, S, S)`` batch by batch on the scorer's device.

        Returns ``score`` (N,) float64, ``sphere`` (N,) int64 (−1 where not meaningful) and, with
        ``with_embeddings``, the :meth:`embed` outputs (float32, on the CPU).
        """
        from xrad.data.model_input import prepare_eval

        self.eval()
        device = next(iter(self.parameters()), torch.empty(0)).device
        scores: list[Tensor] = []
        spheres: list[Tensor] = []
        embeds: dict[str, list[Tensor]] = {}
        for start in range(0, images.shape[0], batch_size):
            x = prepare_eval(
                images[start : start + batch_size].to(device), masks[start : start + batch_size].to(device)
            )
            s, k = self.score(x)
            scores.append(s.detach().double().cpu())
            spheres.append(k.cpu().long() if k is not None else torch.full((x.shape[0],), -1, dtype=torch.long))
            if with_embeddings:
                for name, value in self.embed(x).items():
                    embeds.setdefault(name, []).append(value.detach().float().cpu())
        out = {
            "score": torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64),
            "sphere": torch.cat(spheres) if spheres else torch.zeros(0, dtype=torch.long),
        }
        out.update({name: torch.cat(parts) for name, parts in embeds.items()})
        return out


class CellMapScorer(Scorer):
    """A local detector: a ``(B, g, g)`` map of non-negative cell scores (:meth:`cell_scores`, 0 outside the
    body); the image score is the mean of its ``top_k`` largest cells and the heatmap is the map itself
    (upsampled), so what is drawn is what is scored. Subclasses implement :meth:`cell_scores` and set ``top_k``."""

    top_k: int

    def cell_scores(self, images: Tensor) -> Tensor:
        """``(B, g, g)`` non-negative cell scores of prepared ``images``, 0 on cells outside the body."""
        raise NotImplementedError

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Mean of the ``top_k`` largest cell scores (B,); no sphere at image level."""
        return top_k_cell_mean(self.cell_scores(images), self.top_k), None

    def heatmap(self, images: Tensor) -> Tensor:
        """The cell-score map, bilinearly upsampled to ``(B, 1, S, S)``."""
        with torch.no_grad():
            return upsample_cell_map(self.cell_scores(images).float(), tuple(images.shape[-2:]))


class ProvidesBackbone(Protocol):
    """A stage result that carries a feature extractor whose cell maps a patch-level next stage reads."""

    @property
    def backbone(self) -> ResNet18Backbone:
        """The trained ResNet-18 backbone (eval mode, on the CPU)."""
        ...


class ProvidesEncoder(Protocol):
    """A stage result that carries an :class:`~xrad.models.encoder.Encoder` for the next stage."""

    @property
    def encoder(self) -> Encoder:
        """The trained encoder (eval mode, on the CPU)."""
        ...


@dataclass
class EncoderResult:
    """A stage 1 that yields an encoder only (contrastive pre-training, ImageNet initialisation)."""

    encoder: Encoder


class FinalResult(Protocol):
    """The result of a detector's last stage: it assembles the trained :class:`Scorer`."""

    def scorer(self, config: Any) -> Scorer:
        """The framework-free scorer of the trained detector."""
        ...


class Stage(Protocol):
    """A detector stage: the module named by a :class:`~xrad.methods.registry.StageSpec` (Lightning side).

    ``previous`` is the result of the stage before it (None for the first). ``run`` trains (resuming from
    the stage's last checkpoint) and saves its output under ``ctx.stage_dir(stage)`` (global rank 0 only);
    ``load`` rebuilds the same result from that output, so a finished stage is never trained again.
    Results are typed dataclasses of the stage module; a last stage's result is a :class:`FinalResult`.
    """

    def run(self, ctx: RunContext, stage: str, previous: Any) -> Any:
        """Train the stage and return its result."""
        ...

    def load(self, ctx: RunContext, stage: str, previous: Any) -> Any:
        """Load the finished stage's saved result."""
        ...
