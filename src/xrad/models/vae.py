"""Variational autoencoder (Davletshina et al.): the autoencoder's ResNet-18 encoder and mirrored decoder of
:mod:`xrad.models.autoencoder`, with the head widened to (μ, log σ²) of a diagonal Gaussian in latent space.

Training decodes a reparameterised sample z = μ + σ·ε; the noise ε is passed in by the caller (drawn from the
run's seeded stream), so the network holds no randomness of its own. Without noise — evaluation, scoring,
BatchNorm recalibration — it decodes μ, so scores are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from xrad.errors import ConfigError
from xrad.models.autoencoder import ResNet18Decoder
from xrad.models.encoder import Encoder, build_encoder

__all__ = ["VariationalAutoencoder", "build_vae"]


class VariationalAutoencoder(nn.Module):
    """Encoder (image → h → [μ, log σ²]) + decoder (z → image); ``forward(x, noise) -> (recon, μ, log σ²)``."""

    def __init__(self, encoder: Encoder, decoder: ResNet18Decoder) -> None:
        super().__init__()
        if encoder.head.out_dim != 2 * decoder.in_dim:
            raise ConfigError(
                f"the VAE head must output 2 × the latent size ({2 * decoder.in_dim}), got {encoder.head.out_dim}"
            )
        self.encoder = encoder
        self.decoder = decoder

    @property
    def latent_dim(self) -> int:
        """The size of z."""
        return int(self.decoder.in_dim)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """μ and log σ² (B, latent_dim) of the posterior of each image."""
        _, params = self.encoder(x)
        mu, logvar = params.chunk(2, dim=1)
        return mu, logvar

    def forward(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction of z = μ + exp(½ log σ²)·noise (z = μ without noise), μ and log σ²."""
        mu, logvar = self.encode(x)
        z = mu if noise is None else mu + (0.5 * logvar).exp() * noise
        return self.decoder(z), mu, logvar


def build_vae(
    image_size: int,
    head_dims: Sequence[int] = (512, 256, 128),
    in_channels: int = 1,
    channels: Sequence[int] = (256, 128, 64, 64, 32),
) -> VariationalAutoencoder:
    """The 1-channel ResNet-18 VAE for square ``image_size`` inputs (a multiple of 32); the last entry of
    ``head_dims`` is the latent size (the head itself ends in twice that: μ and log σ²)."""
    dims = [int(d) for d in head_dims]
    latent = dims[-1]
    encoder = build_encoder([*dims[:-1], 2 * latent], bias=True, in_channels=in_channels)
    decoder = ResNet18Decoder(in_dim=latent, image_size=image_size, out_channels=in_channels, channels=channels)
    return VariationalAutoencoder(encoder, decoder)
