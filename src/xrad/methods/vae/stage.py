"""The VAE's training stage: the autoencoder's ResNet-18 encoder (head to μ and log σ²) and mirrored decoder,
trained on the normal training images with the masked MSE + β·KLD of :func:`xrad.losses.vae_loss`.

The reparameterisation noise of each step comes from the run's seeded stream of that (epoch, batch) — the
stream the augmentation uses — so training is deterministic for a seed and a resumed run draws the same
noise as an uninterrupted one. The stage writes ``train/vae.safetensors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from xrad.config import Config
from xrad.data.model_input import prepare_eval
from xrad.errors import ConfigError
from xrad.evaluation.metrics import auroc
from xrad.losses import vae_loss
from xrad.methods.autoencoder.scorer import input_support
from xrad.methods.stage_io import load_tensors, save_tensors
from xrad.methods.vae.config import VAEConfig
from xrad.methods.vae.scorer import VAEScorer, vae_args, vae_scores
from xrad.models.vae import VariationalAutoencoder, build_vae
from xrad.training.augment import augment_ad
from xrad.training.context import RunContext
from xrad.training.loaders import train_loader
from xrad.training.module import StageModule

VAE_FILE = "vae.safetensors"


@dataclass
class VAEResult:
    """The trained VAE."""

    vae: VariationalAutoencoder

    def scorer(self, config: Config) -> VAEScorer:
        """The VAE with the configured image score."""
        v: VAEConfig = config.section("vae")
        return VAEScorer(self.vae, v.score, v.kld_weight, v.top_k_fraction, v.top_k_pixels, v.smooth)


def new_vae(config: Config) -> VariationalAutoencoder:
    """A freshly initialised VAE; its weights depend on the run's seed only."""
    v: VAEConfig = config.section("vae")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_vae(config.data.image_size, head_dims=config.model.head_dims, channels=v.decoder_channels)


class VAEModule(StageModule):
    """Trains the VAE; validation AUROC of the configured score."""

    def __init__(self, vae: VariationalAutoencoder, config: Config, metrics_path: Path | None, ctx: RunContext) -> None:
        super().__init__(config, config.pretrain, metrics_path)
        self.vae = vae
        self.ctx = ctx
        self.v: VAEConfig = config.section("vae")

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images, masks = batch["image"], batch["mask"]
        generator = self.augment_generator(batch_idx)
        x = (
            augment_ad(images, masks, self.v.augment, generator)
            if self.v.augment.enabled
            else prepare_eval(images, masks)
        )
        noise = torch.randn(x.shape[0], self.vae.latent_dim, generator=generator, device=x.device, dtype=x.dtype)
        recon, mu, logvar = self.vae(x, noise)
        loss = vae_loss(recon, x, input_support(x), mu, logvar, self.v.kld_weight)
        self.record_loss(loss, x.shape[0])
        return loss

    def score(self, x: Tensor) -> Tensor:
        """The configured image score of prepared images."""
        v = self.v
        return vae_scores(self.vae, x, v.score, v.kld_weight, v.top_k_fraction, v.top_k_pixels, v.smooth)

    def epoch_end(self) -> dict[str, float]:
        valid = self.ctx.banks.get("valid")
        if valid is None or not len(valid) or not self.trainer.is_global_zero:
            return {}
        scores = self.eval_outputs(valid.images, valid.masks, self.score, self.config.data.eval_batch_size)
        return {"valid_auroc": auroc(valid.labels.numpy(), scores.numpy())}


def run(ctx: RunContext, stage: str, previous: Any = None) -> VAEResult:
    """Train the VAE on the normal (and, if configured, known abnormal) train rows and save it."""
    cfg = ctx.config
    if cfg.pretrain.encoder_from:
        raise ConfigError(
            "pretrain.encoder_from is not supported by the vae detector (it trains its own encoder); remove it"
        )
    v: VAEConfig = cfg.section("vae")
    vae = new_vae(cfg)
    if cfg.pretrain.epochs > 0:
        rows = ctx.normal_train_rows() if v.exclude_known_abnormal else list(range(len(ctx.banks["train"])))
        loader = train_loader(
            ctx.banks["train"],
            rows,
            cfg.pretrain.batch_size,
            cfg.seed,
            cfg.data.workers,
            where="VAE training rows of the train split",
        )
        ctx.fit(stage, VAEModule(vae, cfg, ctx.metrics_path(stage), ctx), loader, cfg.pretrain.epochs)
    vae = vae.cpu().eval()
    if ctx.is_global_zero:
        save_tensors(
            ctx.stage_dir(stage) / VAE_FILE, vae.state_dict(), metadata={k: str(a) for k, a in vae_args(vae).items()}
        )
    return VAEResult(vae)


def load(ctx: RunContext, stage: str, previous: Any = None) -> VAEResult:
    """The finished VAE."""
    vae = new_vae(ctx.config)
    vae.load_state_dict(load_tensors(ctx.stage_dir(stage) / VAE_FILE), strict=True)
    return VAEResult(vae.eval())
