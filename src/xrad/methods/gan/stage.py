"""The adversarial training stage of the GAN detectors, on Lightning's manual optimisation.

Per batch: ``d_steps`` updates of the critics (the image or joint discriminator, and α-GAN's code
discriminator), then one update of the generator (+ encoder), each player with its own Adam and learning rate
(two time-scale updates). The variant is the detector (``config.method``):

- ``dcgan``: D(x) against D(G(z)); G minimises the non-saturating −log D(G(z)).
- ``bigan`` (BiGAN/ALI): the joint D(x, E(x)) against D(G(z), z); E and G minimise the inverted labels.
- ``alpha_gan`` (Rosca et al. 2017): D(x) against D(G(E(x))) and D(G(z)); C(z) against C(E(x)); G minimises
  λ·L_rec plus its two adversarial terms, E minimises λ·L_rec − log C(E(x)) — each with its own gradient.
- ``ocgan`` (the one-class GAN baseline of the self-taught paper's Table 1, after Tang et al. 2019): E and G
  form an autoencoder trained with λ·L_rec − log D(G(E(x))); D tells images from their reconstructions and is
  the one-class classifier at scoring. Tang et al.'s third network (a second encoder) and U-Net skips are not
  reproduced: skips would let the generator copy the input.

Determinism and resume: prior samples z and augmentations come from the (seed, epoch, batch) stream
(:meth:`StageModule.augment_generator`), batches from the (seed, epoch) order, and both optimisers' states
travel in the checkpoint, so two runs with a seed give identical weights and a resumed run equals an
uninterrupted one. The stage writes ``train/model.safetensors`` (every network of the variant).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from xrad.config import Config
from xrad.data.model_input import prepare_eval
from xrad.evaluation.metrics import auroc
from xrad.losses import (
    alpha_gan_discriminator_loss,
    alpha_gan_encoder_loss,
    alpha_gan_generator_loss,
    bigan_encoder_generator_loss,
    discriminator_loss,
    generator_loss,
    masked_reconstruction_loss,
)
from xrad.methods.autoencoder.scorer import input_support
from xrad.methods.gan.config import GanConfig
from xrad.methods.gan.scorer import GanScorer, networks_from
from xrad.methods.stage_io import MODEL_FILE, load_tensors, save_tensors
from xrad.models.gan import GanNetworks
from xrad.training.augment import augment_ad
from xrad.training.context import RunContext
from xrad.training.loaders import train_loader
from xrad.training.module import StageModule


def architecture(config: Config) -> dict[str, Any]:
    """The arguments that rebuild the networks (stored with the scorer)."""
    gan: GanConfig = config.section("gan")
    return {
        "variant": config.method,
        "image_size": config.data.image_size,
        "latent_dim": gan.latent_dim,
        "width": gan.width,
        "max_width": gan.max_width,
        "spectral_norm": gan.spectral_norm,
        "joint_hidden": gan.joint_hidden,
        "code_hidden": gan.code_hidden,
    }


def score_settings(config: Config) -> dict[str, Any]:
    """The scorer's settings from the ``gan`` section."""
    gan: GanConfig = config.section("gan")
    return {
        "score": gan.score,
        "reconstruction_score": gan.reconstruction_score,
        "top_k_pixels": gan.top_k_pixels,
        "top_k_fraction": gan.top_k_fraction,
        "smooth": gan.smooth,
        "mix_weight": gan.mix_weight,
        "latent_steps": gan.latent_steps,
        "latent_lr": gan.latent_lr,
    }


@dataclass
class GanResult:
    """The trained networks of one GAN variant."""

    nets: GanNetworks

    def scorer(self, config: Config) -> GanScorer:
        """The configured score of the trained networks."""
        return GanScorer(self.nets, architecture(config), **score_settings(config))


def new_networks(config: Config) -> GanNetworks:
    """Freshly initialised networks; their weights depend on the run's seed only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return networks_from(architecture(config))


def _parameters(*modules: nn.Module | None) -> list[nn.Parameter]:
    return [p for m in modules if m is not None for p in m.parameters()]


class GanModule(StageModule):
    """One adversarial game per batch: critics first, then generator (+ encoder); manual optimisation."""

    def __init__(self, nets: GanNetworks, config: Config, metrics_path: Path | None, ctx: RunContext) -> None:
        gan: GanConfig = config.section("gan")
        super().__init__(config, gan, metrics_path)
        self.automatic_optimization = False
        self.nets = nets
        self.gan = gan
        self.ctx = ctx

    def configure_optimizers(self) -> Any:
        """Adam for the critics (``lr_discriminator``) and for generator + encoder (``lr_generator``)."""
        g, n = self.gan, self.nets
        critics = torch.optim.Adam(
            _parameters(n.discriminator, n.code_discriminator),
            lr=g.lr_discriminator,
            betas=g.betas,
            weight_decay=g.weight_decay,
        )
        players = torch.optim.Adam(
            _parameters(n.generator, n.encoder), lr=g.lr_generator, betas=g.betas, weight_decay=g.weight_decay
        )
        return [critics, players]

    # -- the game ----------------------------------------------------------------------------------
    def critic_loss(self, x: Tensor, z: Tensor) -> Tensor:
        """The critics' loss on real images ``x`` and prior samples ``z`` (generated images detached)."""
        n = self.nets
        with torch.no_grad():
            code = n.encode(x) if n.encoder is not None else None
            sample = n.generator(z) if n.variant != "ocgan" else None
            recon = n.generator(code) if code is not None and n.variant in ("alpha_gan", "ocgan") else None
        if n.variant == "dcgan":
            return discriminator_loss(n.discriminator(x), n.discriminator(sample))
        if n.variant == "bigan":
            return discriminator_loss(n.discriminator(x, code), n.discriminator(sample, z))
        if n.variant == "ocgan":
            return discriminator_loss(n.discriminator(x), n.discriminator(recon))
        assert n.code_discriminator is not None and code is not None  # alpha_gan
        image = alpha_gan_discriminator_loss(n.discriminator(x), n.discriminator(recon), n.discriminator(sample))
        return image + discriminator_loss(n.code_discriminator(z), n.code_discriminator(code))

    def player_step(self, x: Tensor, z: Tensor) -> Tensor:
        """Backpropagate the generator's (and encoder's) loss into their parameters only; returns the loss."""
        n, g = self.nets, self.gan
        players = _parameters(n.generator, n.encoder)
        if n.variant == "dcgan":
            loss = generator_loss(n.discriminator(n.generator(z)))
            self.manual_backward(loss, inputs=players)
            return loss
        code = n.encode(x)
        if n.variant == "bigan":
            loss = bigan_encoder_generator_loss(n.discriminator(x, code), n.discriminator(n.generator(z), z))
            self.manual_backward(loss, inputs=players)
            return loss
        recon = n.generator(code)
        rec = masked_reconstruction_loss(recon, x, input_support(x), g.reconstruction_loss)
        if n.variant == "ocgan":
            loss = g.reconstruction_weight * rec + generator_loss(n.discriminator(recon))
            self.manual_backward(loss, inputs=players)
            return loss
        assert n.code_discriminator is not None and n.encoder is not None  # alpha_gan
        # Rosca et al. give G and E different losses: each is differentiated for its own network only.
        g_loss = alpha_gan_generator_loss(
            n.discriminator(recon), n.discriminator(n.generator(z)), rec, g.reconstruction_weight
        )
        e_loss = alpha_gan_encoder_loss(n.code_discriminator(code), rec, g.reconstruction_weight)
        self.manual_backward(g_loss, inputs=list(n.generator.parameters()), retain_graph=True)
        self.manual_backward(e_loss, inputs=list(n.encoder.parameters()))
        return g_loss + e_loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        images, masks = batch["image"], batch["mask"]
        stream = self.augment_generator(batch_idx)
        x = (
            augment_ad(images, masks, self.gan.augment, stream)
            if self.gan.augment.enabled
            else prepare_eval(images, masks)
        )
        critics, players = cast(list[Any], self.optimizers())
        latent = (x.shape[0], self.nets.latent_dim)
        for _ in range(self.gan.d_steps):
            critic = self.critic_loss(x, torch.randn(latent, generator=stream, device=x.device))
            critics.zero_grad()
            self.manual_backward(critic)
            critics.step()
        players.zero_grad()
        player = self.player_step(x, torch.randn(latent, generator=stream, device=x.device))
        players.step()
        self.record_loss(critic.detach() + player.detach(), x.shape[0])

    # -- evaluation --------------------------------------------------------------------------------
    def calibration_forward(self, networks: list[nn.Module], x: Tensor) -> None:
        """The scoring path: E(x), G(E(x)) (DCGAN: G of prior samples from a fixed stream) and D."""
        n = self.nets
        code = n.encode(x) if n.encoder is not None else None
        if code is None:
            stream = torch.Generator(device=x.device).manual_seed(self.config.seed)
            n.generator(torch.randn(x.shape[0], n.latent_dim, generator=stream, device=x.device))
        else:
            n.generator(code)
        n.discriminate(x, code)

    def epoch_end(self) -> dict[str, float]:
        valid = self.ctx.banks.get("valid")
        if valid is None or not len(valid) or not self.trainer.is_global_zero:
            return {}
        scorer = GanScorer(self.nets, architecture(self.config), **score_settings(self.config))
        scores = self.eval_outputs(
            valid.images, valid.masks, lambda x: scorer.score(x)[0], self.config.data.eval_batch_size
        )
        return {"valid_auroc": auroc(valid.labels.numpy(), scores.numpy())}


def train_rows(ctx: RunContext) -> list[int]:
    """The normal + unlabelled train rows, or every train row when known anomalies are kept."""
    if ctx.config.section("gan").exclude_known_abnormal:
        return ctx.normal_train_rows()
    return list(range(len(ctx.banks["train"])))


def run(ctx: RunContext, stage: str, previous: Any = None) -> GanResult:
    """Train the configured GAN variant and save its networks."""
    cfg = ctx.config
    gan: GanConfig = cfg.section("gan")
    nets = new_networks(cfg)
    if gan.epochs > 0:
        module = GanModule(nets, cfg, ctx.metrics_path(stage), ctx)
        loader = train_loader(
            ctx.banks["train"],
            train_rows(ctx),
            gan.batch_size,
            cfg.seed,
            cfg.data.workers,
            where=f"{cfg.method}'s rows of the train split (gan.batch_size)",
        )
        ctx.fit(stage, module, loader, gan.epochs)
    nets = nets.cpu().eval()
    if ctx.is_global_zero:
        save_tensors(ctx.stage_dir(stage) / MODEL_FILE, nets.state_dict())
    return GanResult(nets)


def load(ctx: RunContext, stage: str, previous: Any = None) -> GanResult:
    """The finished networks."""
    nets = new_networks(ctx.config)
    nets.load_state_dict(load_tensors(ctx.stage_dir(stage) / MODEL_FILE), strict=True)
    return GanResult(nets.eval())
