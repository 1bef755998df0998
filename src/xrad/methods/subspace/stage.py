"""The subspace stage: it trains nothing — it embeds the normal training images (semi-label ≠ −1,
deterministic inputs, eval mode) with the previous stage's encoder and freezes P = S Sᵀ (S Sᵀ + λI)⁻¹.

Like the kNN ablation it scores the very stage-1 encoder the other detectors are fine-tuned from (contrastive
for ``subspace``, the autoencoder's for ``subspace_ae``), so a benchmark shares that stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from xrad.config import Config
from xrad.data.model_input import prepare_eval
from xrad.errors import ConfigError
from xrad.methods.base import ProvidesEncoder
from xrad.methods.stage_io import load_tensors, save_tensors
from xrad.methods.subspace.config import SubspaceConfig
from xrad.methods.subspace.projection import subspace_projection
from xrad.methods.subspace.scorer import SubspaceScorer
from xrad.models.encoder import Encoder
from xrad.training.context import RunContext

SUBSPACE_FILE = "subspace.safetensors"


@dataclass
class SubspaceResult:
    """The encoder and the frozen (d, d) projection."""

    encoder: Encoder
    projection: Tensor

    def scorer(self, config: Config) -> SubspaceScorer:
        """‖e − P e‖² on the configured feature."""
        return SubspaceScorer(self.encoder, self.projection, feature=config.section("subspace").feature)


def _encoder_of(previous: ProvidesEncoder | None, stage: str) -> Encoder:
    if previous is None:
        raise ConfigError(
            f"the {stage} stage needs a finished pretrain stage in this run folder; "
            "run `xrad train --stage pretrain` (or all) first, or set pretrain.encoder_from"
        )
    return previous.encoder


@torch.no_grad()
def run(ctx: RunContext, stage: str, previous: ProvidesEncoder | None) -> SubspaceResult:
    """Embed the normal training images and freeze the projection."""
    cfg = ctx.config
    sub: SubspaceConfig = cfg.section("subspace")
    encoder = _encoder_of(previous, stage).eval().to(ctx.device)
    bank = ctx.banks["train"]
    idx = torch.tensor(ctx.normal_train_rows())
    if sub.max_embeddings:
        idx = idx[: sub.max_embeddings]
    parts = []
    for start in range(0, len(idx), cfg.data.eval_batch_size):
        rows = idx[start : start + cfg.data.eval_batch_size]
        h, z = encoder(prepare_eval(bank.images[rows].to(ctx.device), bank.masks[rows].to(ctx.device)))
        parts.append((h if sub.feature == "h" else z).double().cpu())
    projection = subspace_projection(torch.cat(parts), sub.lam)
    if ctx.is_global_zero:
        save_tensors(ctx.stage_dir(stage) / SUBSPACE_FILE, {"projection": projection})
    return SubspaceResult(encoder.cpu(), projection)


def load(ctx: RunContext, stage: str, previous: ProvidesEncoder | None) -> SubspaceResult:
    """The frozen projection (with the previous stage's encoder)."""
    projection = load_tensors(ctx.stage_dir(stage) / SUBSPACE_FILE)["projection"]
    return SubspaceResult(_encoder_of(previous, stage), projection)
