"""The subspace stage: it trains nothing — it embeds the normal training images (semi-label ≠ −1,
deterministic inputs, eval mode) with the previous stage's encoder and freezes P = S Sᵀ (S Sᵀ + λI)⁻¹.

With ``subspace.level: patch`` the vectors are the body cells of the backbone's layer2+layer3 map (a seeded
sample of at most ``max_patches``) and the scorer is :class:`~xrad.methods.subspace.patch_scorer.SubspacePatchScorer`.

Like the kNN ablation it scores the very stage-1 encoder the other detectors are fine-tuned from (contrastive
for ``subspace``, the autoencoder's for ``subspace_ae``), so a benchmark shares that stage. ``subspace_synthetic``
reads the backbone of a trained patch classifier instead (cells only: there is no head to give h or z).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor

from xrad.config import Config
from xrad.data.model_input import prepare_eval
from xrad.errors import ConfigError
from xrad.methods.base import ProvidesBackbone, ProvidesEncoder
from xrad.methods.stage_io import load_tensors, save_tensors
from xrad.methods.subspace.config import SubspaceConfig
from xrad.methods.subspace.patch_scorer import SubspacePatchScorer
from xrad.methods.subspace.projection import subspace_projection
from xrad.methods.subspace.scorer import SubspaceScorer
from xrad.models.encoder import Encoder
from xrad.models.patch import body_cell_vectors, sample_cells
from xrad.models.resnet import ResNet18Backbone
from xrad.training.context import RunContext

SUBSPACE_FILE = "subspace.safetensors"


@dataclass
class SubspaceResult:
    """The previous stage's feature extractor and the frozen (d, d) projection: an :class:`Encoder` (image or
    patch level) or only a backbone (a patch classifier's: patch level only)."""

    features: Encoder | ResNet18Backbone  # an Encoder whenever subspace.level is image (_features_of checks)
    projection: Tensor

    def scorer(self, config: Config) -> SubspaceScorer | SubspacePatchScorer:
        """‖e − P e‖² on the configured feature (of every body cell, top-k mean, with ``level: patch``)."""
        sub: SubspaceConfig = config.section("subspace")
        if sub.level == "patch":
            return SubspacePatchScorer(_backbone(self.features), self.projection, sub.top_k)
        return SubspaceScorer(cast(Encoder, self.features), self.projection, feature=sub.feature)


def _backbone(features: Encoder | ResNet18Backbone) -> ResNet18Backbone:
    return features.backbone if isinstance(features, Encoder) else features


def _features_of(
    previous: ProvidesEncoder | ProvidesBackbone | None, stage: str, level: str
) -> Encoder | ResNet18Backbone:
    """The encoder of a pre-training stage, else (cells only: ``level`` patch) the backbone of a trained patch
    classifier."""
    if previous is None:
        raise ConfigError(
            f"the {stage} stage needs a finished pretrain stage in this run folder; "
            "run `xrad train --stage pretrain` (or all) first, or set pretrain.encoder_from"
        )
    encoder = getattr(previous, "encoder", None)
    if isinstance(encoder, Encoder):
        return encoder
    backbone = getattr(previous, "backbone", None)
    if not isinstance(backbone, ResNet18Backbone):
        raise ConfigError(f"the {stage} stage needs an encoder or a backbone from the stage before it")
    if level != "patch":
        raise ConfigError("subspace.level image needs an encoder with a head (h, z); use subspace.level: patch")
    return backbone


@torch.no_grad()
def run(ctx: RunContext, stage: str, previous: ProvidesEncoder | ProvidesBackbone | None) -> SubspaceResult:
    """Embed the normal training images and freeze the projection."""
    cfg = ctx.config
    sub: SubspaceConfig = cfg.section("subspace")
    features = _features_of(previous, stage, sub.level).eval().to(ctx.device)
    bank = ctx.banks["train"]
    idx = torch.tensor(ctx.normal_train_rows())
    if sub.max_embeddings:
        idx = idx[: sub.max_embeddings]
    parts = []
    for start in range(0, len(idx), cfg.data.eval_batch_size):
        rows = idx[start : start + cfg.data.eval_batch_size]
        x = prepare_eval(bank.images[rows].to(ctx.device), bank.masks[rows].to(ctx.device))
        if sub.level == "patch":  # the body cells of the feature map, each a vector of its own
            parts.append(body_cell_vectors(_backbone(features), x).cpu())  # float32: the projection casts
        else:
            h, z = cast(Encoder, features)(x)
            parts.append((h if sub.feature == "h" else z).cpu())
    vectors = torch.cat(parts)
    if sub.level == "patch":
        vectors = sample_cells(vectors, sub.max_patches, cfg.seed)
    projection = subspace_projection(vectors, sub.lam, relative=sub.lam_relative)
    if ctx.is_global_zero:
        save_tensors(ctx.stage_dir(stage) / SUBSPACE_FILE, {"projection": projection})
    return SubspaceResult(features.cpu(), projection)


def load(ctx: RunContext, stage: str, previous: ProvidesEncoder | ProvidesBackbone | None) -> SubspaceResult:
    """The frozen projection (with the previous stage's encoder or backbone)."""
    projection = load_tensors(ctx.stage_dir(stage) / SUBSPACE_FILE)["projection"]
    return SubspaceResult(_features_of(previous, stage, ctx.config.section("subspace").level), projection)
