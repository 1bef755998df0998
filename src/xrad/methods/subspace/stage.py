"""The subspace stage: it trains nothing — it embeds the normal training images (semi-label ≠ −1,
deterministic inputs, eval mode) with the previous stage's encoder and freezes P = S Sᵀ (S Sᵀ + λI)⁻¹.

With ``subspace.level: patch`` the vectors are the body cells of the backbone's layer2+layer3 map (a seeded
sample of at most ``max_patches``) and the scorer is :class:`~xrad.methods.subspace.patch_scorer.SubspacePatchScorer`.

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
from xrad.methods.subspace.patch_scorer import SubspacePatchScorer
from xrad.methods.subspace.projection import subspace_projection
from xrad.methods.subspace.scorer import SubspaceScorer
from xrad.models.encoder import Encoder
from xrad.models.patch import cell_mask, cell_vectors, patch_features
from xrad.training.context import RunContext

SUBSPACE_FILE = "subspace.safetensors"


@dataclass
class SubspaceResult:
    """The encoder and the frozen (d, d) projection."""

    encoder: Encoder
    projection: Tensor

    def scorer(self, config: Config) -> SubspaceScorer | SubspacePatchScorer:
        """‖e − P e‖² on the configured feature (of every body cell, top-k mean, with ``level: patch``)."""
        sub: SubspaceConfig = config.section("subspace")
        if sub.level == "patch":
            return SubspacePatchScorer(self.encoder.backbone, self.projection, sub.top_k)
        return SubspaceScorer(self.encoder, self.projection, feature=sub.feature)


def _encoder_of(previous: ProvidesEncoder | None, stage: str) -> Encoder:
    if previous is None:
        raise ConfigError(
            f"the {stage} stage needs a finished pretrain stage in this run folder; "
            "run `xrad train --stage pretrain` (or all) first, or set pretrain.encoder_from"
        )
    return previous.encoder


def sample_normal_cells(cells: Tensor, max_patches: int, seed: int) -> Tensor:
    """At most ``max_patches`` rows of ``cells`` (N, C), a seeded uniform sample without replacement."""
    if len(cells) <= max_patches:
        return cells
    pick = torch.randperm(len(cells), generator=torch.Generator().manual_seed(seed))[:max_patches]
    return cells[pick.sort().values]


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
        x = prepare_eval(bank.images[rows].to(ctx.device), bank.masks[rows].to(ctx.device))
        if sub.level == "patch":  # the body cells of the feature map, each a vector of its own
            features = patch_features(encoder.backbone, x)
            inside = cell_mask(x, features.shape[-1]).flatten()
            parts.append(cell_vectors(features)[inside].cpu())  # float32: subspace_projection casts to float64
        else:
            h, z = encoder(x)
            parts.append((h if sub.feature == "h" else z).cpu())
    vectors = torch.cat(parts)
    if sub.level == "patch":
        vectors = sample_normal_cells(vectors, sub.max_patches, cfg.seed)
    projection = subspace_projection(vectors, sub.lam)
    if ctx.is_global_zero:
        save_tensors(ctx.stage_dir(stage) / SUBSPACE_FILE, {"projection": projection})
    return SubspaceResult(encoder.cpu(), projection)


def load(ctx: RunContext, stage: str, previous: ProvidesEncoder | None) -> SubspaceResult:
    """The frozen projection (with the previous stage's encoder)."""
    projection = load_tensors(ctx.stage_dir(stage) / SUBSPACE_FILE)["projection"]
    return SubspaceResult(_encoder_of(previous, stage), projection)
