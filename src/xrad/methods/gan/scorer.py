"""Framework-free scorer of the GAN detectors (torch only; no Lightning).

Scores (``score``, see :class:`~xrad.methods.gan.config.GanConfig`): the discriminators' "real" probabilities
turned into anomaly scores 1 − D (computed as σ(−logit) in float64, so confident logits keep their order),
the masked reconstruction error of G(E(x)) — DCGAN, which has no encoder, searches z for a bounded number of
Adam steps (:func:`search_latent`) — and their mixes. The heatmap is always the per-pixel reconstruction
error inside the body part (the support of the masked input, as the autoencoder's scorer defines it),
box-smoothed as the reconstruction score's when ``smooth`` > 0.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from xrad.losses import masked_error_map, reconstruction_scores
from xrad.methods.autoencoder.scorer import input_support
from xrad.methods.base import Scorer
from xrad.models.gan import GanNetworks, build_gan

__all__ = ["GanScorer", "search_latent"]

_NETS = "gan."
ARCHITECTURE_KEYS = (
    "variant",
    "image_size",
    "latent_dim",
    "width",
    "max_width",
    "spectral_norm",
    "joint_hidden",
    "code_hidden",
)
SCORE_KEYS = (
    "score",
    "reconstruction_score",
    "top_k_pixels",
    "top_k_fraction",
    "smooth",
    "mix_weight",
    "latent_steps",
    "latent_lr",
)


def search_latent(nets: GanNetworks, images: Tensor, steps: int, lr: float) -> Tensor:
    """AnoGAN's inverse problem, bounded: ``steps`` Adam steps on z (from one fixed prior sample) minimising
    each image's masked L1 between G(z) and the image; returns that z (B, latent).

    Each image's loss depends on its own z only (the generator runs in eval mode), so the result does not
    depend on which images share a batch. Only z receives gradients; the generator's weights are untouched.
    """
    support = input_support(images)
    area = support.flatten(1).sum(dim=1).clamp_min(1.0)
    # One fixed prior sample starts every search (z = 0 would sit on the generator's ReLU kinks, where the
    # gradient is exactly 0); the same start for every image keeps scores independent of the batch.
    start = torch.randn(nets.latent_dim, generator=torch.Generator().manual_seed(0))
    z = start.to(images.device).expand(images.shape[0], -1).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            error = ((nets.generator(z) - images).abs() * support).flatten(1).sum(dim=1) / area
            (z.grad,) = torch.autograd.grad(error.sum(), z)
            optimiser.step()
    return z.detach()


class GanScorer(Scorer):
    """Discriminator, code-discriminator and reconstruction scores of a trained GAN variant."""

    kind: ClassVar[str] = "gan"

    def __init__(self, nets: GanNetworks, architecture: dict[str, Any], **settings: Any) -> None:
        super().__init__()
        self.nets = nets
        self.architecture = {k: architecture[k] for k in ARCHITECTURE_KEYS}
        self.score_kind = str(settings.get("score", "discriminator"))
        self.reconstruction_score = str(settings.get("reconstruction_score", "mse"))
        self.top_k_pixels = int(settings.get("top_k_pixels", 0))
        self.top_k_fraction = float(settings.get("top_k_fraction", 0.05))
        self.smooth = int(settings.get("smooth", 0))
        self.mix_weight = float(settings.get("mix_weight", 0.1))
        self.latent_steps = int(settings.get("latent_steps", 50))
        self.latent_lr = float(settings.get("latent_lr", 0.05))

    def reconstruct(self, images: Tensor) -> Tensor:
        """G(E(x)), or for DCGAN G(z*) with z* from :func:`search_latent`; (B, 1, S, S)."""
        if self.nets.encoder is not None:
            code = self.nets.encode(images)
        else:
            code = search_latent(self.nets, images, self.latent_steps, self.latent_lr)
        recon: Tensor = self.nets.generator(code)
        return recon

    def _not_real(self, images: Tensor) -> Tensor:
        """1 − D(x) (BiGAN: 1 − D(x, E(x))), float64."""
        return torch.sigmoid(-self.nets.discriminate(images).double())

    def _code_not_real(self, images: Tensor) -> Tensor:
        """1 − C(E(x)), float64 (α-GAN)."""
        if self.nets.code_discriminator is None:
            raise ValueError(f"the {self.nets.variant} networks have no code discriminator")
        return torch.sigmoid(-self.nets.code_discriminator(self.nets.encode(images)).double())

    def _residual(self, images: Tensor) -> Tensor:
        recon = self.reconstruct(images)
        return reconstruction_scores(
            recon,
            images,
            input_support(images),
            kind=self.reconstruction_score,
            top_k_fraction=self.top_k_fraction,
            top_k_pixels=self.top_k_pixels,
            smooth=self.smooth,
        ).double()

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Image scores (B,) of the configured kind; no sphere."""
        kind = self.score_kind
        if kind == "discriminator":
            return self._not_real(images), None
        if kind == "code_discriminator":
            return self._code_not_real(images), None
        if kind == "mean_discriminators":
            return 0.5 * (self._not_real(images) + self._code_not_real(images)), None
        if kind == "reconstruction":
            return self._residual(images), None
        if kind == "residual_mix":
            w = self.mix_weight
            return (1.0 - w) * self._residual(images) + w * self._not_real(images), None
        raise ValueError(f"unknown GAN score {kind!r}")

    def heatmap(self, images: Tensor) -> Tensor:
        """The per-pixel reconstruction error inside the body part (B, 1, S, S) (absolute for l1, else squared),
        box-smoothed as the reconstruction score's when ``smooth`` > 0."""
        with torch.no_grad():
            recon = self.reconstruct(images)
            support = input_support(images)
            return masked_error_map(recon, images, support, kind=self.reconstruction_score, smooth=self.smooth)

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """The discriminator trunk's pooled features ``h`` and, with an encoder, the code ``z``."""
        out = {"h": self.nets.discriminator.trunk(images).mean(dim=(2, 3))}
        if self.nets.encoder is not None:
            out["z"] = self.nets.encode(images)
        return out

    def settings(self) -> dict[str, Any]:
        """The score settings (JSON-able)."""
        return {
            "score": self.score_kind,
            "reconstruction_score": self.reconstruction_score,
            "top_k_pixels": self.top_k_pixels,
            "top_k_fraction": self.top_k_fraction,
            "smooth": self.smooth,
            "mix_weight": self.mix_weight,
            "latent_steps": self.latent_steps,
            "latent_lr": self.latent_lr,
        }

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The networks' weights (``gan.*``); architecture and score settings as arguments."""
        tensors = {_NETS + k: v for k, v in self.nets.state_dict().items()}
        return tensors, {**self.architecture, **self.settings()}

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> GanScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        architecture = {k: args[k] for k in ARCHITECTURE_KEYS}
        nets = networks_from(architecture)
        nets.load_state_dict({k[len(_NETS) :]: v for k, v in tensors.items() if k.startswith(_NETS)}, strict=True)
        # A key an older artefact lacks takes the scorer's default, which is what that code scored with.
        return cls(nets.eval(), architecture, **{k: args[k] for k in SCORE_KEYS if k in args})


def networks_from(architecture: dict[str, Any]) -> GanNetworks:
    """Freshly built networks of an architecture mapping (:data:`ARCHITECTURE_KEYS`)."""
    return build_gan(
        str(architecture["variant"]),
        int(architecture["image_size"]),
        latent_dim=int(architecture["latent_dim"]),
        width=int(architecture["width"]),
        max_width=int(architecture["max_width"]),
        spectral_norm=bool(architecture["spectral_norm"]),
        joint_hidden=int(architecture["joint_hidden"]),
        code_hidden=int(architecture["code_hidden"]),
    )
