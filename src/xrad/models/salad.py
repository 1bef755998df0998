"""SALAD's autoencoders (Bozorgtabar et al. 2020): an encoder to an L2-normalised latent z and a decoder back.

Two networks, as in the paper:

- ``resnet18`` (the paper's MURA setting): xrad's 1-channel ResNet-18 backbone, a linear projection of its
  512-d pooled features to ``latent_dim`` (200) and L2 normalisation; the mirrored decoder is xrad's
  :class:`~xrad.models.autoencoder.ResNet18Decoder` reading z. Input size: a multiple of 32. Unlike the
  authors' code (ImageNet weights, a decoder fed from the layer-4 map instead of the latent), the network is
  trained from scratch and z is the bottleneck.
- ``conv6`` (the paper's NIH setting): a 6-stage convolutional encoder and a 6-stage up-sampling decoder
  without skip connections, batch norm + leaky ReLU after every convolution; widths ``width``·2^i
  (16 … 1024 with the paper's 16). Input size: a multiple of 64. Written from the paper's description.

Both decoders end in a sigmoid: inputs are in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from xrad.errors import ConfigError
from xrad.models.autoencoder import ResNet18Decoder
from xrad.models.resnet import ResNet18Backbone

__all__ = ["NETWORKS", "SaladEncoder", "SaladNet", "build_salad_encoder", "build_salad_net"]

NETWORKS = ("resnet18", "conv6")
_SLOPE = 0.1  # leaky ReLU slope


def _conv_bn_act(c_in: int, c_out: int, kernel: int = 3) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(_SLOPE, inplace=True),
    ]


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3×3 convolutions, each followed by batch norm and leaky ReLU."""
    return nn.Sequential(*_conv_bn_act(c_in, c_out), *_conv_bn_act(c_out, c_out))


class Conv6Encoder(nn.Module):
    """Image (B, 1, S, S) -> z (B, latent_dim), unnormalised: stem, 6 × (max-pool ×½, double conv), projection.

    The projection is a convolution whose kernel covers the whole S/64 map (the paper's 4×4 at 256 px).
    ``last_block`` is the last spatial stage (the Grad-CAM target).
    """

    def __init__(self, image_size: int, latent_dim: int = 200, width: int = 16, in_channels: int = 1) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(7)]
        self.stem = _double_conv(in_channels, widths[0])
        self.stages = nn.Sequential(
            *(nn.Sequential(nn.MaxPool2d(2), _double_conv(a, b)) for a, b in zip(widths[:-1], widths[1:]))
        )
        self.project = nn.Conv2d(widths[-1], latent_dim, image_size // 64, bias=False)

    @property
    def last_block(self) -> nn.Module:
        """The last down-sampling stage."""
        block: nn.Module = self.stages[-1]
        return block

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, S, S) -> (B, latent_dim)."""
        out: Tensor = self.project(self.stages(self.stem(x))).flatten(1)
        return out


class Conv6Decoder(nn.Module):
    """z (B, latent_dim) -> image (B, 1, S, S) in [0, 1]: a transposed convolution to the S/64 map, then
    6 × (bilinear ×2, 1×1 convolution halving the width, BN, leaky ReLU, double conv), a 1×1 convolution and a
    sigmoid. No skip connections."""

    def __init__(self, image_size: int, latent_dim: int = 200, width: int = 16, out_channels: int = 1) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(7)][::-1]
        seed = image_size // 64
        self.seed = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, widths[0], seed, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.LeakyReLU(_SLOPE, inplace=True),
        )
        self.stages = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    *_conv_bn_act(a, b, kernel=1),
                    _double_conv(b, b),
                )
                for a, b in zip(widths[:-1], widths[1:])
            )
        )
        self.head = nn.Conv2d(widths[-1], out_channels, 1)

    def forward(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, out_channels, S, S)."""
        x = self.stages(self.seed(z[:, :, None, None]))
        out: Tensor = self.head(x).sigmoid()
        return out


class ResNetLatentEncoder(nn.Module):
    """ResNet-18 backbone (h, 512-d) + a linear projection to ``latent_dim``; ``last_block`` is ``layer4``."""

    def __init__(self, latent_dim: int = 200, in_channels: int = 1) -> None:
        super().__init__()
        self.backbone = ResNet18Backbone(in_channels=in_channels)
        self.project = nn.Linear(self.backbone.out_dim, latent_dim)

    @property
    def last_block(self) -> nn.Module:
        """ResNet-18's last stage."""
        block: nn.Module = self.backbone.layer4
        return block

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, S, S) -> (B, latent_dim), unnormalised."""
        out: Tensor = self.project(self.backbone(x))
        return out


SaladEncoder = ResNetLatentEncoder | Conv6Encoder


class SaladNet(nn.Module):
    """Encoder + decoder; ``encode(x)`` is the L2-normalised latent z, ``forward(x) -> (recon, z)``."""

    encoder: SaladEncoder

    def __init__(self, encoder: SaladEncoder, decoder: nn.Module, network: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.network = network

    def encode(self, x: Tensor) -> Tensor:
        """The unit-norm latent z (B, latent_dim)."""
        return F.normalize(self.encoder(x), dim=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(reconstruction of x, z); the decoder reads the normalised z."""
        z = self.encode(x)
        return self.decoder(z), z


def _check_network(network: str, image_size: int) -> None:
    if network not in NETWORKS:
        raise ConfigError(f"SALAD network {network!r} is unknown; use one of {NETWORKS}")
    if network == "conv6" and (image_size < 64 or image_size % 64):
        raise ConfigError(f"the conv6 network needs an input size that is a multiple of 64 (got {image_size})")


def build_salad_encoder(network: str, image_size: int, latent_dim: int = 200, width: int = 16) -> SaladEncoder:
    """The encoder half of :func:`build_salad_net` (what the scorer keeps): image -> unnormalised latent."""
    _check_network(network, image_size)
    if network == "resnet18":
        return ResNetLatentEncoder(latent_dim)
    return Conv6Encoder(image_size, latent_dim, width)


def build_salad_net(
    network: str,
    image_size: int,
    latent_dim: int = 200,
    width: int = 16,
    decoder_channels: Sequence[int] = (256, 128, 64, 64, 32),
) -> SaladNet:
    """SALAD's autoencoder ``network`` (``resnet18`` or ``conv6``) for square 1-channel ``image_size`` inputs."""
    encoder = build_salad_encoder(network, image_size, latent_dim, width)
    decoder: nn.Module
    if network == "resnet18":
        decoder = ResNet18Decoder(in_dim=latent_dim, image_size=image_size, channels=decoder_channels)
    else:
        decoder = Conv6Decoder(image_size, latent_dim, width)
    return SaladNet(encoder, decoder, network)
