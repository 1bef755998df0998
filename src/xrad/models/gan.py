"""DCGAN-style networks for the GAN detectors (1 channel, square inputs of a power-of-two size).

Radford et al.'s recipe, sized by two numbers: ``width`` (channels of the first discriminator / last generator
layer, their ndf/ngf) doubling at each halving of the resolution up to ``max_width``. The discriminator and the
encoder halve the image with 4×4 stride-2 convolutions down to 4×4 and end in a 4×4 valid convolution; the
generator mirrors that with transposed convolutions. Inputs are xrad's masked images in [0, 1], so the
generator ends in a sigmoid (DCGAN's tanh is for [−1, 1] images).

Spectral normalisation (Miyato et al. 2018) is an option of the critics (image, joint and code
discriminators); with it the image discriminator drops BatchNorm, as SN-GAN does. :class:`GanNetworks` holds
the networks of one variant: ``dcgan`` (G, D), ``bigan`` (G, E, joint D(x, z)), ``alpha_gan`` (G, E, D, code
discriminator C) and ``ocgan`` (E, G as an autoencoder, D).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from xrad.errors import ConfigError

__all__ = [
    "GAN_VARIANTS",
    "CodeDiscriminator",
    "ConvEncoder",
    "GanNetworks",
    "ImageDiscriminator",
    "ImageGenerator",
    "build_gan",
    "halvings",
]

GAN_VARIANTS = ("dcgan", "bigan", "alpha_gan", "ocgan")
_SLOPE = 0.2  # DCGAN's leaky-ReLU slope


def halvings(image_size: int) -> int:
    """How many stride-2 layers take ``image_size`` down to 4 (a power of two ≥ 16)."""
    n = int(round(math.log2(image_size))) if image_size > 0 else 0
    if image_size < 16 or 2**n != image_size:
        raise ConfigError(f"GAN image size must be a power of two ≥ 16 (got {image_size}); e.g. 64, 128 or 512")
    return n - 2


def _widths(image_size: int, width: int, max_width: int) -> list[int]:
    """Channels after each halving: width, 2·width, … capped at max_width."""
    return [min(width * 2**i, max_width) for i in range(halvings(image_size))]


def _sn(module: nn.Module, spectral: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module) if spectral else module


def _down_trunk(image_size: int, width: int, max_width: int, batchnorm: bool, spectral: bool) -> nn.Sequential:
    """(B, 1, S, S) → (B, C, 4, 4): conv4×4/2 → [BN] → leaky ReLU per halving (no BN on the first, as DCGAN)."""
    layers: list[nn.Module] = []
    c_in = 1
    for i, c_out in enumerate(_widths(image_size, width, max_width)):
        layers.append(_sn(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not (batchnorm and i > 0)), spectral))
        if batchnorm and i > 0:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(_SLOPE, inplace=True))
        c_in = c_out
    return nn.Sequential(*layers)


class ImageGenerator(nn.Module):
    """z (B, latent) → image (B, 1, S, S) in [0, 1]: convT4×4 to 4×4, then convT4×4/2 → BN → ReLU per doubling."""

    def __init__(self, image_size: int, latent_dim: int, width: int, max_width: int) -> None:
        super().__init__()
        widths = _widths(image_size, width, max_width)[::-1]  # coarse to fine
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.ConvTranspose2d(widths[-1], 1, 4, 2, 1))
        self.net = nn.Sequential(*layers)
        self.latent_dim = latent_dim

    def forward(self, z: Tensor) -> Tensor:
        """Generate (B, 1, S, S) from (B, latent_dim)."""
        return torch.sigmoid(self.net(z[:, :, None, None]))


class ConvEncoder(nn.Module):
    """image (B, 1, S, S) → code (B, latent): the discriminator's trunk with BatchNorm and a 4×4 valid conv."""

    def __init__(self, image_size: int, latent_dim: int, width: int, max_width: int) -> None:
        super().__init__()
        self.trunk = _down_trunk(image_size, width, max_width, batchnorm=True, spectral=False)
        self.head = nn.Conv2d(_widths(image_size, width, max_width)[-1], latent_dim, 4, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        """The code (B, latent_dim) of prepared images."""
        code: Tensor = self.head(self.trunk(x)).flatten(1)
        return code


class ImageDiscriminator(nn.Module):
    """D(x) → logit (B,); with ``latent_dim`` > 0 the joint discriminator D(x, z) of BiGAN/ALI.

    Joint form: the image trunk's 4×4 valid convolution gives ``hidden`` features, z passes a linear layer to
    ``hidden`` features, and the concatenation a two-layer MLP to the logit.
    """

    def __init__(
        self,
        image_size: int,
        width: int,
        max_width: int,
        spectral: bool = False,
        latent_dim: int = 0,
        hidden: int = 256,
    ) -> None:
        super().__init__()
        self.trunk = _down_trunk(image_size, width, max_width, batchnorm=not spectral, spectral=spectral)
        c = _widths(image_size, width, max_width)[-1]
        self.latent_dim = latent_dim
        if latent_dim <= 0:
            self.head: nn.Module = _sn(nn.Conv2d(c, 1, 4, 1, 0), spectral)
            return
        self.head = nn.Sequential(_sn(nn.Conv2d(c, hidden, 4, 1, 0), spectral), nn.LeakyReLU(_SLOPE, inplace=True))
        self.code = nn.Sequential(_sn(nn.Linear(latent_dim, hidden), spectral), nn.LeakyReLU(_SLOPE, inplace=True))
        self.joint = nn.Sequential(
            _sn(nn.Linear(2 * hidden, hidden), spectral),
            nn.LeakyReLU(_SLOPE, inplace=True),
            _sn(nn.Linear(hidden, 1), spectral),
        )

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        """Logits (B,) that ``x`` (with its code ``z`` for the joint form) is real."""
        features = self.head(self.trunk(x)).flatten(1)
        if self.latent_dim <= 0:
            logits: Tensor = features[:, 0]
            return logits
        if z is None:
            raise ValueError("the joint (BiGAN) discriminator needs the code z beside the image")
        joint: Tensor = self.joint(torch.cat([features, self.code(z)], dim=1))[:, 0]
        return joint


class CodeDiscriminator(nn.Module):
    """α-GAN's C(z) → logit (B,): an MLP telling prior samples from encoder codes (Rosca et al.: 3 layers of 750)."""

    def __init__(self, latent_dim: int, hidden: int = 750, spectral: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _sn(nn.Linear(latent_dim, hidden), spectral),
            nn.LeakyReLU(_SLOPE, inplace=True),
            _sn(nn.Linear(hidden, hidden), spectral),
            nn.LeakyReLU(_SLOPE, inplace=True),
            _sn(nn.Linear(hidden, 1), spectral),
        )

    def forward(self, z: Tensor) -> Tensor:
        """Logits (B,) that ``z`` is a prior sample."""
        logits: Tensor = self.net(z)[:, 0]
        return logits


class GanNetworks(nn.Module):
    """The networks of one GAN variant; absent ones are None (``encoder`` for DCGAN, ``code_discriminator``
    except for α-GAN)."""

    def __init__(
        self,
        variant: str,
        generator: ImageGenerator,
        discriminator: ImageDiscriminator,
        encoder: ConvEncoder | None = None,
        code_discriminator: CodeDiscriminator | None = None,
    ) -> None:
        super().__init__()
        self.variant = variant
        self.generator = generator
        self.discriminator = discriminator
        self.encoder = encoder
        self.code_discriminator = code_discriminator

    @property
    def latent_dim(self) -> int:
        """Size of the latent code."""
        return self.generator.latent_dim

    def discriminate(self, x: Tensor, code: Tensor | None = None) -> Tensor:
        """The image discriminator's logits; the joint one reads the encoder's code of ``x`` (or ``code``)."""
        if self.discriminator.latent_dim > 0:
            if code is None:
                code = self.encode(x)
            joint: Tensor = self.discriminator(x, code)
            return joint
        logits: Tensor = self.discriminator(x)
        return logits

    def encode(self, x: Tensor) -> Tensor:
        """E(x); a variant without an encoder is a programming error here."""
        if self.encoder is None:
            raise ValueError(f"the {self.variant} networks have no encoder")
        code: Tensor = self.encoder(x)
        return code


def build_gan(
    variant: str,
    image_size: int,
    latent_dim: int = 100,
    width: int = 64,
    max_width: int = 512,
    spectral_norm: bool = False,
    joint_hidden: int = 256,
    code_hidden: int = 750,
) -> GanNetworks:
    """The networks of ``variant`` (one of :data:`GAN_VARIANTS`) for ``image_size`` inputs."""
    if variant not in GAN_VARIANTS:
        raise ConfigError(f"GAN variant {variant!r} is unknown; use one of {GAN_VARIANTS}")
    generator = ImageGenerator(image_size, latent_dim, width, max_width)
    joint = latent_dim if variant == "bigan" else 0
    discriminator = ImageDiscriminator(image_size, width, max_width, spectral_norm, joint, joint_hidden)
    encoder = ConvEncoder(image_size, latent_dim, width, max_width) if variant != "dcgan" else None
    code = CodeDiscriminator(latent_dim, code_hidden, spectral_norm) if variant == "alpha_gan" else None
    return GanNetworks(variant, generator, discriminator, encoder, code)
