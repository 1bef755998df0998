"""Convolutional autoencoder baseline (Davletshina et al.; "AE" pre-training of Ruff et al. [22]).

The shared 1-channel ResNet-18 encoder (+ MLP head to the 128-d bottleneck z) and the mirrored decoder of
:mod:`xrad.models.autoencoder`, trained with the masked MSE (only body-part pixels count) on the normal
training images. As a detector (method ``autoencoder``) the image score is the masked MSE, the masked L1
or the mean of the top-k pixel errors (``ae.score``), and the heatmap is the per-pixel error map.

Its one stage is ``pretrain``, configured by the ``pretrain`` section (schedule) and the ``ae`` section
(architecture, score). The Deep SAD and kNN baselines (:mod:`xrad.methods.deep_sad_ae`) run the same
stage, so one AE run folder can feed all of them (``--set pretrain.encoder_from=AE_RUN``). The stage writes
``pretrain/autoencoder.safetensors`` (the whole AE) and ``pretrain/encoder.safetensors`` (its encoder, in
the format of the self-taught detector's stage 1).

Differences from the authors' AE (reference-spec §4, §5.4), and why: the decoder works at any size that is a
multiple of 32 and ends in a sigmoid for [0, 1] inputs (theirs is hard-wired to 512 px with a Tanh); the
whole encoder, head included, is what Deep SAD receives; known abnormal images are left out of training by
default (``ae.exclude_known_abnormal``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from xrad.training.augment import augment_ad, prepare_eval
from xrad.errors import ConfigError
from xrad.losses import masked_mse, reconstruction_scores
from xrad.methods.baseline_scorers import ReconstructionScorer, autoencoder_args, input_support
from xrad.methods.baseline_sections import AEConfig, check_ae
from xrad.methods.self_taught import (
    ENCODER_FILE,
    load_finished,
    load_tensors,
    normal_train_indices,
    save_tensors,
)
from xrad.models.autoencoder import Autoencoder, build_autoencoder
from xrad.training.context import RunContext
from xrad.training.loaders import train_loader
from xrad.training.module import StageModule, auroc

AE_FILE = "autoencoder.safetensors"

__all__ = [
    "AE_FILE",
    "METHOD",
    "AEModule",
    "AutoencoderMethod",
    "ae_section",
    "load_ae_pretrain",
    "new_autoencoder",
    "run_ae_pretrain",
]


def ae_section(ctx: RunContext) -> AEConfig:
    """The run's ``ae`` section (defaults when the YAML has none), checked."""
    section = ctx.config.section("ae")
    check_ae(section)
    return section


def new_autoencoder(ctx: RunContext) -> Autoencoder:
    """A freshly initialised autoencoder; its weights depend on the run's seed only."""
    cfg, ae = ctx.config, ae_section(ctx)
    if cfg.data.image_size % 32:
        raise ConfigError(f"data.image_size {cfg.data.image_size} must be a multiple of 32 for the autoencoder's "
                          "decoder; use e.g. --set data.image_size=64")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_autoencoder(cfg.data.image_size, head_dims=cfg.model.head_dims, bias=cfg.model.head_bias,
                                 decode_from=ae.decode_from, channels=ae.decoder_channels)


class AEModule(StageModule):
    """Trains the autoencoder with the masked MSE; validation AUROC of the configured reconstruction score."""

    def __init__(self, autoencoder: Autoencoder, config: Any, metrics_path: Path | None, ctx: RunContext) -> None:
        super().__init__(config, config.pretrain, metrics_path)
        self.autoencoder = autoencoder
        self.ctx = ctx
        self.ae = config.section("ae")
        self.augment = self.ae.augment

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images, masks = batch["image"], batch["mask"]
        if self.ae.augment.enabled:
            x = augment_ad(images, masks, self.augment, self.augment_generator(batch_idx))
        else:
            x = prepare_eval(images, masks)
        recon = self.autoencoder(x)[0]
        # The support of the masked input is the mask the scorer will use (see baseline_scorers).
        loss = masked_mse(recon, x, input_support(x))
        self.record_loss(loss, x.shape[0])
        return loss

    def score(self, x: Tensor) -> Tensor:
        """The configured image score of prepared images."""
        return reconstruction_scores(self.autoencoder(x)[0], x, input_support(x), kind=self.ae.score,
                                     top_k_fraction=self.ae.top_k_fraction)

    def epoch_end(self) -> dict[str, float]:
        valid = self.ctx.banks.get("valid")
        if valid is None or not len(valid) or not self.trainer.is_global_zero:
            return {}
        scores = self.eval_outputs(valid.images, valid.masks, self.score, self.config.data.eval_batch_size)
        return {"valid_auroc": auroc(valid.labels.numpy(), scores.numpy())}


def _autoencoder_from(source: str, ctx: RunContext) -> Autoencoder:
    """Load a finished AE: a run folder (its ``pretrain/autoencoder.safetensors``) or such a file."""
    return load_finished(source, new_autoencoder(ctx), AE_FILE, "data.image_size, model.head_dims, "
                         "model.head_bias, ae.decode_from and ae.decoder_channels")


def train_indices(ctx: RunContext) -> list[int]:
    """The AE's training rows: normal + unlabelled, or every train row when known anomalies are kept."""
    if ae_section(ctx).exclude_known_abnormal:
        return normal_train_indices(ctx)
    return list(range(len(ctx.banks["train"])))


def run_ae_pretrain(ctx: RunContext) -> None:
    """Train (or load via ``pretrain.encoder_from``) the AE → ``state['autoencoder']`` and ``state['encoder']``."""
    cfg = ctx.config
    if cfg.pretrain.encoder_from:
        ae = _autoencoder_from(cfg.pretrain.encoder_from, ctx)
    else:
        ae = new_autoencoder(ctx)
        if cfg.pretrain.epochs > 0:
            module = AEModule(ae, cfg, ctx.stage_dir("pretrain") / "metrics.csv", ctx)
            loader = train_loader(ctx.banks["train"], train_indices(ctx), cfg.pretrain.batch_size, cfg.seed,
                                  cfg.data.workers, where="autoencoder training rows of the train split")
            ctx.fit("pretrain", module, loader, cfg.pretrain.epochs)
    ae = ae.cpu().eval()
    ctx.state.update(autoencoder=ae, encoder=ae.encoder)
    if ctx.is_global_zero:
        save_tensors(ctx.stage_dir("pretrain") / AE_FILE, ae.state_dict(),
                     metadata={k: str(v) for k, v in autoencoder_args(ae).items()})
        save_tensors(ctx.stage_dir("pretrain") / ENCODER_FILE, ae.encoder.state_dict())


def load_ae_pretrain(ctx: RunContext) -> None:
    """Load a finished AE stage."""
    ae = new_autoencoder(ctx)
    ae.load_state_dict(load_tensors(ctx.stage_dir("pretrain") / AE_FILE), strict=True)
    ae.eval()
    ctx.state.update(autoencoder=ae, encoder=ae.encoder)


class AutoencoderMethod:
    """``METHOD`` of the reconstruction-error detector."""

    name = "autoencoder"
    stages = ("pretrain",)

    def run_stage(self, stage: str, ctx: RunContext) -> None:
        """Train the autoencoder."""
        run_ae_pretrain(ctx)

    def load_stage(self, stage: str, ctx: RunContext) -> None:
        """Load the finished autoencoder."""
        load_ae_pretrain(ctx)

    def build_scorer(self, ctx: RunContext) -> ReconstructionScorer:
        """The autoencoder with the configured image score."""
        ae = ae_section(ctx)
        return ReconstructionScorer(ctx.state["autoencoder"], ae.score, ae.top_k_fraction)


METHOD = AutoencoderMethod()
