"""The contract every detector follows, so that adding one is one module + one config.

Two halves, as in anomalib (field guide §3a):

- :class:`Scorer` — a plain ``torch.nn.Module`` that turns deterministic, masked float images
  ``(B, 1, S, S)`` into anomaly scores ``(B,)``. It is rebuilt from an artefact alone
  (:meth:`Scorer.from_artefact`), so scoring, the service and ONNX export never need Lightning.
- :class:`Method` — the training side: named stages (``pretrain``, ``finetune`` ...), each run by the
  method with the helpers of :class:`xrad.training.context.RunContext` (Lightning trainer, resume,
  logging), then :meth:`Method.build_scorer` assembles the trained scorer.

This module imports only torch: Lightning lives in ``xrad.training`` and in the methods' modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from xrad.training.context import RunContext


class Scorer(nn.Module):
    """Framework-free scorer: ``forward(images) -> scores``; rebuilt from an artefact alone.

    Subclasses set :attr:`kind` (its key in :data:`xrad.methods.registry.SCORERS`), implement
    :meth:`score` and :meth:`embed`, and say how they are saved (:meth:`artefact_state`) and rebuilt
    (:meth:`from_artefact`). Inputs are what :func:`xrad.training.augment.prepare_eval` returns.
    """

    kind: ClassVar[str] = ""

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

        Default: Grad-CAM of the score on the last convolutional block (:func:`xrad.inference.heatmaps.grad_cam`).
        A detector with a decoder overrides this with its per-pixel reconstruction error.
        """
        from xrad.inference.heatmaps import grad_cam

        return grad_cam(self, images)

    @torch.no_grad()
    def score_batches(self, images: Tensor, masks: Tensor, batch_size: int = 64,
                      with_embeddings: bool = False) -> dict[str, Tensor]:
        """Score uint8 ``images``/``masks`` ``(N, 1, S, S)`` batch by batch on the scorer's device.

        Returns ``score`` (N,) float64, ``sphere`` (N,) int64 (−1 where not meaningful) and, with
        ``with_embeddings``, the :meth:`embed` outputs (float32, on the CPU).
        """
        from xrad.training.augment import prepare_eval

        self.eval()
        device = next(iter(self.parameters()), torch.empty(0)).device
        scores, spheres, embeds = [], [], {}
        for start in range(0, images.shape[0], batch_size):
            x = prepare_eval(images[start:start + batch_size].to(device), masks[start:start + batch_size].to(device))
            s, k = self.score(x)
            scores.append(s.detach().double().cpu())
            spheres.append(k.cpu().long() if k is not None else torch.full((x.shape[0],), -1, dtype=torch.long))
            if with_embeddings:
                for name, value in self.embed(x).items():
                    embeds.setdefault(name, []).append(value.detach().float().cpu())
        out = {"score": torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64),
               "sphere": torch.cat(spheres) if spheres else torch.zeros(0, dtype=torch.long)}
        out.update({name: torch.cat(parts) for name, parts in embeds.items()})
        return out


class Method(Protocol):
    """A detector's training side. ``METHOD`` in each method module is an instance of this."""

    name: str
    stages: tuple[str, ...]  # in order; ``xrad train --stage`` picks among them

    def run_stage(self, stage: str, ctx: RunContext) -> None:
        """Train ``stage`` (resuming from its last checkpoint), put its result in ``ctx.state`` and save
        it under ``ctx.stage_dir(stage)`` (global rank 0 only) so a later run can :meth:`load_stage` it."""
        ...

    def load_stage(self, stage: str, ctx: RunContext) -> None:
        """Load a finished stage's saved result into ``ctx.state`` (the stage is then skipped)."""
        ...

    def build_scorer(self, ctx: RunContext) -> Scorer:
        """Assemble the trained :class:`Scorer` from ``ctx.state`` after the last stage."""
        ...
