"""Stage 1 of the self-taught detector: contrastive pre-training of the encoder (Eq. 1, SimCLR InfoNCE,
or the supervised-contrastive pretext with ``pretrain.pretext: supcon``).

Under DDP, InfoNCE negatives are those of each rank's own batch (no cross-rank gather). With
``pretrain.encoder_from`` the stage loads a finished encoder (a run folder or a file) instead of training,
so a benchmark trains it once for every detector that shares it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from xrad.config import Config
from xrad.losses import info_nce, supervised_contrastive
from xrad.methods.base import EncoderResult
from xrad.methods.stage_io import ENCODER_FILE, load_finished, load_tensors, save_tensors
from xrad.models.encoder import Encoder, build_encoder
from xrad.training.augment import contrastive_views
from xrad.training.context import RunContext
from xrad.training.loaders import train_loader
from xrad.training.module import StageModule


class ContrastiveModule(StageModule):
    """InfoNCE (SimCLR) or supervised-contrastive pretext on two augmented views."""

    def __init__(self, encoder: Encoder, config: Config, metrics_path: Path | None) -> None:
        super().__init__(config, config.pretrain, metrics_path)
        self.encoder = encoder
        self.augment = config.pretrain.augment

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        v1, v2 = contrastive_views(batch["image"], batch["mask"], self.augment, self.augment_generator(batch_idx))
        _, z = self.encoder(torch.cat([v1, v2]))
        z1, z2 = z.chunk(2)
        if self.section.pretext == "supcon":
            loss = supervised_contrastive(z1, z2, (batch["semi_label"] == -1).long(), self.section.temperature)
        else:
            loss = info_nce(z1, z2, self.section.temperature)
        self.record_loss(loss, v1.shape[0])
        return loss


def new_encoder(config: Config) -> Encoder:
    """A freshly initialised encoder, its weights a function of the run's seed only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_encoder(config.model.head_dims, bias=config.model.head_bias)


def run(ctx: RunContext, stage: str, previous: Any = None) -> EncoderResult:
    """Train (or load via ``pretrain.encoder_from``) the contrastive encoder."""
    return train_encoder(ctx, stage, ContrastiveModule)


def train_encoder(
    ctx: RunContext, stage: str, module_class: Callable[[Encoder, Config, Path], StageModule]
) -> EncoderResult:
    """The pre-training stage every pretext shares: load a finished encoder (``pretrain.encoder_from``) or
    train a fresh one with ``module_class(encoder, config, metrics_path)`` over the train bank for
    ``pretrain.epochs``; the encoder is saved as the stage's file (SimCLR here, MoCo in methods.moco)."""
    cfg = ctx.config
    if cfg.pretrain.encoder_from:
        encoder = load_finished(
            cfg.pretrain.encoder_from, new_encoder(cfg), ENCODER_FILE, "model.head_dims and model.head_bias"
        )
    else:
        encoder = new_encoder(cfg)
        if cfg.pretrain.epochs > 0:
            module = module_class(encoder, cfg, ctx.metrics_path(stage))
            bank = ctx.banks["train"]
            loader = train_loader(bank, list(range(len(bank))), cfg.pretrain.batch_size, cfg.seed, cfg.data.workers)
            ctx.fit(stage, module, loader, cfg.pretrain.epochs)
    encoder = encoder.cpu().eval()
    if ctx.is_global_zero:
        save_tensors(ctx.stage_dir(stage) / ENCODER_FILE, encoder.state_dict())
    return EncoderResult(encoder)


def load(ctx: RunContext, stage: str, previous: Any = None) -> EncoderResult:
    """The finished stage's encoder (of any pretext: the file :func:`train_encoder` saved)."""
    encoder = new_encoder(ctx.config)
    encoder.load_state_dict(load_tensors(ctx.stage_dir(stage) / ENCODER_FILE), strict=True)
    return EncoderResult(encoder.eval())
