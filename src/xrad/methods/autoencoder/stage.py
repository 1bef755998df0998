"""The autoencoder's training stage: the shared 1-channel ResNet-18 encoder (+ MLP head to the 128-d
bottleneck z) and the mirrored decoder of :mod:`xrad.models.autoencoder`, trained with the masked MSE (only
body-part pixels count) on the normal training images.

As a detector (``autoencoder``) it is the only stage; the Deep SAD and kNN baselines run it as their stage 1
(``deep_sad_ae``, ``knn_ae``), so one AE run folder can feed all of them (``--set pretrain.encoder_from=AE_RUN``).
The stage writes ``pretrain/autoencoder.safetensors`` (the whole AE) and ``pretrain/encoder.safetensors``
(its encoder, in the format of the contrastive stage 1).

Differences from the authors' AE (reference-spec §4, §5.4), and why: the decoder works at any size that is a
multiple of 32 and ends in a sigmoid for [0, 1] inputs (theirs is hard-wired to 512 px with a Tanh); the
whole encoder, head included, is what Deep SAD receives; known abnormal images are left out of training by
default (``ae.exclude_known_abnormal``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from xrad.config import Config
from xrad.data.model_input import prepare_eval
from xrad.evaluation.metrics import auroc
from xrad.losses import masked_mse, reconstruction_scores
from xrad.methods.autoencoder.config import AEConfig
from xrad.methods.autoencoder.scorer import ReconstructionScorer, autoencoder_args, input_support
from xrad.methods.stage_io import ENCODER_FILE, load_finished, load_tensors, save_tensors
from xrad.models.autoencoder import Autoencoder, build_autoencoder
from xrad.models.encoder import Encoder
from xrad.training.augment import augment_ad
from xrad.training.context import RunContext
from xrad.training.loaders import train_loader
from xrad.training.module import StageModule

AE_FILE = "autoencoder.safetensors"


@dataclass
class AutoencoderResult:
    """The trained autoencoder; its encoder feeds a second stage."""

    autoencoder: Autoencoder

    @property
    def encoder(self) -> Encoder:
        """The autoencoder's encoder (backbone + head)."""
        return self.autoencoder.encoder

    def scorer(self, config: Config) -> ReconstructionScorer:
        """The autoencoder with the configured image score."""
        ae: AEConfig = config.section("ae")
        return ReconstructionScorer(self.autoencoder, ae.score, ae.top_k_fraction, ae.top_k_pixels, ae.smooth)


def new_autoencoder(config: Config) -> Autoencoder:
    """A freshly initialised autoencoder; its weights depend on the run's seed only."""
    ae: AEConfig = config.section("ae")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_autoencoder(
            config.data.image_size,
            head_dims=config.model.head_dims,
            bias=config.model.head_bias,
            decode_from=ae.decode_from,
            channels=ae.decoder_channels,
        )


class AEModule(StageModule):
    """Trains the autoencoder with the masked MSE; validation AUROC of the configured reconstruction score."""

    def __init__(self, autoencoder: Autoencoder, config: Config, metrics_path: Path | None, ctx: RunContext) -> None:
        super().__init__(config, config.pretrain, metrics_path)
        self.autoencoder = autoencoder
        self.ctx = ctx
        self.ae: AEConfig = config.section("ae")
        self.augment = self.ae.augment

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images, masks = batch["image"], batch["mask"]
        if self.ae.augment.enabled:
            x = augment_ad(images, masks, self.augment, self.augment_generator(batch_idx))
        else:
            x = prepare_eval(images, masks)
        recon = self.autoencoder(x)[0]
        # The support of the masked input is the mask the scorer will use (see the scorer's module).
        loss = masked_mse(recon, x, input_support(x))
        self.record_loss(loss, x.shape[0])
        return loss

    def score(self, x: Tensor) -> Tensor:
        """The configured image score of prepared images."""
        return reconstruction_scores(
            self.autoencoder(x)[0],
            x,
            input_support(x),
            kind=self.ae.score,
            top_k_fraction=self.ae.top_k_fraction,
            top_k_pixels=self.ae.top_k_pixels,
            smooth=self.ae.smooth,
        )

    def epoch_end(self) -> dict[str, float]:
        valid = self.ctx.banks.get("valid")
        if valid is None or not len(valid) or not self.trainer.is_global_zero:
            return {}
        scores = self.eval_outputs(valid.images, valid.masks, self.score, self.config.data.eval_batch_size)
        return {"valid_auroc": auroc(valid.labels.numpy(), scores.numpy())}


def train_rows(ctx: RunContext) -> list[int]:
    """The AE's training rows: normal + unlabelled, or every train row when known anomalies are kept."""
    if ctx.config.section("ae").exclude_known_abnormal:
        return ctx.normal_train_rows()
    return list(range(len(ctx.banks["train"])))


def run(ctx: RunContext, stage: str, previous: Any = None) -> AutoencoderResult:
    """Train (or load via ``pretrain.encoder_from``) the autoencoder."""
    cfg = ctx.config
    if cfg.pretrain.encoder_from:
        ae = load_finished(
            cfg.pretrain.encoder_from,
            new_autoencoder(cfg),
            AE_FILE,
            "data.image_size, model.head_dims, model.head_bias, ae.decode_from and ae.decoder_channels",
        )
    else:
        ae = new_autoencoder(cfg)
        if cfg.pretrain.epochs > 0:
            module = AEModule(ae, cfg, ctx.metrics_path(stage), ctx)
            loader = train_loader(
                ctx.banks["train"],
                train_rows(ctx),
                cfg.pretrain.batch_size,
                cfg.seed,
                cfg.data.workers,
                where="autoencoder training rows of the train split",
            )
            ctx.fit(stage, module, loader, cfg.pretrain.epochs)
    ae = ae.cpu().eval()
    if ctx.is_global_zero:
        save_tensors(
            ctx.stage_dir(stage) / AE_FILE,
            ae.state_dict(),
            metadata={k: str(v) for k, v in autoencoder_args(ae).items()},
        )
        save_tensors(ctx.stage_dir(stage) / ENCODER_FILE, ae.encoder.state_dict())
    return AutoencoderResult(ae)


def load(ctx: RunContext, stage: str, previous: Any = None) -> AutoencoderResult:
    """The finished autoencoder."""
    ae = new_autoencoder(ctx.config)
    ae.load_state_dict(load_tensors(ctx.stage_dir(stage) / AE_FILE), strict=True)
    return AutoencoderResult(ae.eval())
