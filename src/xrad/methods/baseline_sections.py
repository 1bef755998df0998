"""Config sections of the Table 1 baselines (``ae``, ``imagenet``, ``supervised``), registered on import.

Lightning-free on purpose: :func:`xrad.config.config_from_dict` imports this module (through
:data:`xrad.methods.registry.METHOD_SECTIONS`) before validating a baseline's YAML, and ``xrad score``
must stay light. The training hyper-parameters of the autoencoder reuse the ``pretrain`` section
(epochs, batch size, Adam lr, weight decay, milestones); Deep SAD on top of it reuses ``finetune``;
kNN reuses ``knn`` — so the baselines are configured exactly like the self-taught detector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xrad.config import ADAugment, register_section
from xrad.errors import ConfigError
from xrad.losses import RECONSTRUCTION_KINDS

__all__ = ["AEConfig", "ImageNetConfig", "SupervisedConfig", "check_ae", "check_supervised"]


def _no_augment() -> ADAugment:
    return ADAugment(enabled=False)


@dataclass
class AEConfig:
    """The convolutional autoencoder (shared ResNet-18 encoder + mirrored decoder, Davletshina et al.).

    Its training schedule is the ``pretrain`` section (paper: 100 epochs, batch 16, Adam 1e-4, ×0.1 at
    70/90). ``score`` is the image score of the ``autoencoder`` detector: ``mse`` (masked mean squared
    error), ``l1`` (masked mean absolute error) or ``topk`` (mean of the ``top_k_fraction`` largest masked
    squared pixel errors).
    """

    decode_from: str = "z"  # z: the 128-d head output is the bottleneck (Ruff et al.); h: the 512-d features
    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64, 64, 32])
    score: str = "mse"
    top_k_fraction: float = 0.05
    # Ruff et al. pre-train the AE on every training image; a reconstruction *detector* should not learn to
    # reconstruct the anomalies it is told about, so known abnormal rows (semi-label −1) are left out by default.
    exclude_known_abnormal: bool = True
    # The reconstruction target is the augmented image itself, so augmentation only widens what "normal" is.
    augment: ADAugment = field(default_factory=_no_augment)


@dataclass
class ImageNetConfig:
    """ImageNet-initialised encoder (Table 1 "Ruff et al. (Multi-Modal) Image-Net").

    ``weights``: path of a local torchvision ResNet-18 state_dict (``resnet18-f37072fd.pth`` from
    torchvision, or the same saved as .safetensors). Nothing is ever downloaded.
    ``normalise``: fold ImageNet's input normalisation (grey mean/std) into the first convolution and
    BatchNorm, so the pretrained filters see inputs on the scale they were trained on.
    """

    weights: str | None = None
    normalise: bool = True
    mean: float = 0.449  # ImageNet RGB means/stds averaged over the channels (grey input)
    std: float = 0.226


@dataclass
class SupervisedConfig:
    """Supervised ResNet-50 baseline: class-balanced BCE on the labelled train images (semi-label ≠ 0).

    No schedule is given in the paper; these are CPU-friendly defaults. ``pretrained``: optional local
    torchvision ResNet-50 state_dict to start from (None = random initialisation, as the paper's table).
    """

    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-6
    milestones: list[float] = field(default_factory=lambda: [0.7, 0.9])
    lr_gamma: float = 0.1
    pretrained: str | None = None
    augment: ADAugment = field(default_factory=ADAugment)


def check_ae(section: AEConfig) -> None:
    """Range/choice checks of the ``ae`` section (types are checked when the YAML is read)."""
    if section.decode_from not in ("z", "h"):
        raise ConfigError(f"ae.decode_from must be 'z' or 'h' (got {section.decode_from!r})")
    if section.score not in RECONSTRUCTION_KINDS:
        raise ConfigError(f"ae.score must be one of {RECONSTRUCTION_KINDS} (got {section.score!r})")
    if not 0.0 < section.top_k_fraction <= 1.0:
        raise ConfigError(f"ae.top_k_fraction must be in (0, 1] (got {section.top_k_fraction})")
    if len(section.decoder_channels) != 5 or min(section.decoder_channels) < 1:
        raise ConfigError(f"ae.decoder_channels must list 5 positive widths (got {section.decoder_channels})")


def check_supervised(section: SupervisedConfig) -> None:
    """Range checks of the ``supervised`` section."""
    if section.epochs < 0 or section.batch_size < 2 or section.lr <= 0:
        raise ConfigError("supervised: epochs must be ≥ 0, batch_size ≥ 2 (BatchNorm) and lr > 0")
    if any(not 0 < m <= 1 for m in section.milestones):
        raise ConfigError("supervised.milestones must be fractions of the epochs in (0, 1]")


register_section("ae", AEConfig)
register_section("imagenet", ImageNetConfig)
register_section("supervised", SupervisedConfig)
