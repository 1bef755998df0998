"""Framework-free scorer of the variational autoencoder (torch only; no Lightning).

Scores are computed from the reconstruction of the posterior mean μ (no sampling, so they are deterministic):
masked MSE / L1, their top-k forms, the KL divergence of the posterior, or the per-image training objective
(see :class:`~xrad.methods.vae.config.VAEConfig`). The heatmap is the per-pixel reconstruction error inside
the body part (box-smoothed as the scores' when ``smooth`` > 0), as for the autoencoder; the mask is the
support of the prepared input (see :mod:`xrad.methods.autoencoder.scorer`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from xrad.losses import gaussian_kld, masked_error_map, reconstruction_scores
from xrad.methods.autoencoder.scorer import input_support
from xrad.methods.base import Scorer
from xrad.models.autoencoder import UpResBlock
from xrad.models.vae import VariationalAutoencoder, build_vae

__all__ = ["VAEScorer", "vae_args", "vae_from", "vae_scores"]

_VAE = "vae."


def vae_args(vae: VariationalAutoencoder) -> dict[str, Any]:
    """JSON-able arguments of :func:`xrad.models.vae.build_vae` that rebuild ``vae``."""
    head = list(vae.encoder.head.dims)
    return {
        "image_size": vae.decoder.image_size,
        "head_dims": [*head[:-1], vae.latent_dim],
        "in_channels": int(vae.encoder.backbone.in_channels),
        "channels": [int(block.conv1.out_channels) for block in vae.decoder.stages if isinstance(block, UpResBlock)],
    }


def vae_from(state: dict[str, Tensor], args: dict[str, Any]) -> VariationalAutoencoder:
    """Rebuild a VAE from :func:`vae_args` and its (un-prefixed) state_dict."""
    vae = build_vae(
        int(args["image_size"]),
        head_dims=args["head_dims"],
        in_channels=int(args.get("in_channels", 1)),
        channels=args["channels"],
    )
    vae.load_state_dict(state, strict=True)
    return vae


def vae_scores(
    vae: VariationalAutoencoder,
    images: Tensor,
    kind: str,
    kld_weight: float = 1.0,
    top_k_fraction: float = 0.05,
    top_k_pixels: int = 0,
    smooth: int = 0,
) -> Tensor:
    """Image scores (B,) of prepared ``images`` by score ``kind`` (the stage's validation uses it too);
    ``smooth`` applies to the reconstruction kinds only (``loss`` is the training objective, unsmoothed)."""
    recon, mu, logvar = vae(images)
    if kind == "kld":
        return gaussian_kld(mu, logvar)
    support = input_support(images)
    if kind == "loss":  # the per-image vae_loss: masked MSE + β · KLD / pixels
        mse = reconstruction_scores(recon, images, support, kind="mse")
        return mse + kld_weight * gaussian_kld(mu, logvar) / images[0].numel()
    return reconstruction_scores(
        recon, images, support, kind=kind, top_k_fraction=top_k_fraction, top_k_pixels=top_k_pixels, smooth=smooth
    )


class VAEScorer(Scorer):
    """Reconstruction error or KL divergence of a variational autoencoder (Davletshina et al.)."""

    kind: ClassVar[str] = "vae"

    def __init__(
        self,
        vae: VariationalAutoencoder,
        score_kind: str = "mse",
        kld_weight: float = 1.0,
        top_k_fraction: float = 0.05,
        top_k_pixels: int = 200,
        smooth: int = 0,
    ) -> None:
        super().__init__()
        self.vae = vae
        self.score_kind = str(score_kind)
        self.kld_weight = float(kld_weight)
        self.top_k_fraction = float(top_k_fraction)
        self.top_k_pixels = int(top_k_pixels)
        self.smooth = int(smooth)

    def reconstruct(self, images: Tensor) -> Tensor:
        """The reconstruction (B, 1, S, S) of the posterior mean of prepared images."""
        recon: Tensor = self.vae(images)[0]
        return recon

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Image scores (B,) of the configured kind; no sphere."""
        return vae_scores(
            self.vae, images, self.score_kind, self.kld_weight, self.top_k_fraction, self.top_k_pixels, self.smooth
        ), None

    def heatmap(self, images: Tensor) -> Tensor:
        """Per-pixel reconstruction error inside the body part (B, 1, S, S): absolute for the L1 scores,
        squared otherwise (the KLD has no pixels: its map is the squared error the objective adds it to);
        box-smoothed as the reconstruction scores' when ``smooth`` > 0."""
        pixel_kind = "l1" if self.score_kind.startswith("l1") else "mse"
        with torch.no_grad():
            recon = self.reconstruct(images)
            return masked_error_map(recon, images, input_support(images), kind=pixel_kind, smooth=self.smooth)

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """The encoder's h (B, 512) and the posterior mean μ as z."""
        h, params = self.vae.encoder(images)
        return {"h": h, "z": params.chunk(2, dim=1)[0]}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """VAE weights (``vae.*``); the architecture and the score settings as arguments."""
        tensors = {_VAE + k: v for k, v in self.vae.state_dict().items()}
        args = vae_args(self.vae)
        args.update(
            score_kind=self.score_kind,
            kld_weight=self.kld_weight,
            top_k_fraction=self.top_k_fraction,
            top_k_pixels=self.top_k_pixels,
            smooth=self.smooth,
        )
        return tensors, args

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> VAEScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        state = {k[len(_VAE) :]: v for k, v in tensors.items() if k.startswith(_VAE)}
        return cls(
            vae_from(state, args),
            args["score_kind"],
            args["kld_weight"],
            args["top_k_fraction"],
            args["top_k_pixels"],
            args.get("smooth", 0),  # artefacts written before smooth existed: no smoothing
        )
