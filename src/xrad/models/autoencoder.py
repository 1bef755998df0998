"""Convolutional autoencoder: the shared ResNet-18 encoder plus a mirrored, resolution-agnostic decoder.

Used by the AE-pretraining baselines (Ruff et al.'s Deep SAD recipe) and the reconstruction-error detectors.
Unlike the authors' decoder (hard-wired to 512 px, a constant 16×16 map upsampled from a 1×1 vector, Tanh
output for [0, 1] inputs), the decoder here maps the vector to a learned 512×(S/32)×(S/32) map for any S
divisible by 32 and ends in a sigmoid, matching inputs in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from xrad.errors import ConfigError
from xrad.models.encoder import Encoder, build_encoder

__all__ = ["UpResBlock", "ResNet18Decoder", "Autoencoder", "build_autoencoder"]


class UpResBlock(nn.Module):
    """Residual block that doubles the resolution: the mirror of a stride-2 ResNet basic block.

    main: bilinear ×2 → conv3×3 (c_in→c_out) → BN → ReLU → conv3×3 → BN;
    shortcut: bilinear ×2 → conv1×1 (c_in→c_out) → BN; output ReLU(main + shortcut).
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        # Upsampling before the convs (instead of transposed convs) avoids checkerboard artefacts and keeps
        # the 3×3 convs on the finer grid, like a mirrored stride-2 conv.
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """(B, c_in, H, W) -> (B, c_out, 2H, 2W)."""
        x = self.up(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        up: Tensor = self.relu(out + self.shortcut(x))
        return up


class ResNet18Decoder(nn.Module):
    """Vector (B, in_dim) -> image (B, out_channels, S, S) in [0, 1], mirroring ResNet-18's 5 halvings.

    Linear(in_dim, base·(S/32)²) → reshape (base, S/32, S/32) → BN → ReLU → 5 :class:`UpResBlock` stages with
    output widths ``channels`` (default 256, 128, 64, 64, 32 at S/16 … S) → conv1×1 → sigmoid.
    The full-resolution stages are kept narrow because they dominate the cost on CPU.
    """

    def __init__(
        self,
        in_dim: int = 128,
        image_size: int = 512,
        out_channels: int = 1,
        base_channels: int = 512,
        channels: Sequence[int] = (256, 128, 64, 64, 32),
    ) -> None:
        super().__init__()
        if image_size < 32 or image_size % 32:
            raise ConfigError(
                f"decoder image_size must be a positive multiple of 32 (got {image_size}); "
                "set the preprocessing size to e.g. 64, 128, 256 or 512"
            )
        channels = tuple(int(c) for c in channels)
        if len(channels) != 5:
            raise ConfigError(f"decoder channels must list 5 stage widths (got {channels})")
        self.in_dim = in_dim
        self.image_size = image_size
        self.base_channels = base_channels
        self.seed_size = image_size // 32
        self.fc = nn.Linear(in_dim, base_channels * self.seed_size**2)
        self.bn0 = nn.BatchNorm2d(base_channels)
        self.relu = nn.ReLU(inplace=True)
        widths = (base_channels, *channels)
        self.stages = nn.Sequential(*(UpResBlock(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.head = nn.Conv2d(widths[-1], out_channels, 1)

    def forward(self, v: Tensor) -> Tensor:
        """Decode (B, in_dim) to (B, out_channels, image_size, image_size)."""
        x = self.fc(v).reshape(-1, self.base_channels, self.seed_size, self.seed_size)
        x = self.stages(self.relu(self.bn0(x)))
        return torch.sigmoid(self.head(x))


class Autoencoder(nn.Module):
    """Encoder (image → h → z) + decoder (z or h → image); ``forward(x) -> (recon, h, z)``.

    ``decode_from="z"`` puts the head's embedding in the bottleneck (Ruff et al.'s AE pretraining: the encoder
    transferred to Deep SAD is then the trained one); ``"h"`` decodes from the 512-d backbone features.
    """

    def __init__(self, encoder: Encoder, decoder: ResNet18Decoder, decode_from: str = "z") -> None:
        super().__init__()
        if decode_from not in ("z", "h"):
            raise ConfigError(f"decode_from must be 'z' or 'h' (got {decode_from!r})")
        self.encoder = encoder
        self.decoder = decoder
        self.decode_from = decode_from

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return the reconstruction (shape of x for x of size decoder.image_size), h and z."""
        h, z = self.encoder(x)
        recon = self.decoder(z if self.decode_from == "z" else h)
        return recon, h, z


def build_autoencoder(
    image_size: int,
    head_dims: Sequence[int] = (512, 256, 128),
    bias: bool = True,
    in_channels: int = 1,
    decode_from: str = "z",
    channels: Sequence[int] = (256, 128, 64, 64, 32),
) -> Autoencoder:
    """Build the 1-channel ResNet-18 autoencoder for square ``image_size`` inputs (multiple of 32)."""
    encoder = build_encoder(head_dims, bias=bias, in_channels=in_channels)
    in_dim = int(head_dims[-1]) if decode_from == "z" else encoder.backbone.out_dim
    decoder = ResNet18Decoder(in_dim=in_dim, image_size=image_size, out_channels=in_channels, channels=channels)
    return Autoencoder(encoder, decoder, decode_from=decode_from)
