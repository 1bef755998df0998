"""Stage 1 from ImageNet weights: build the encoder, load a local torchvision ResNet-18 file into its
backbone (``imagenet.weights``; nothing is downloaded) and optionally fold ImageNet's input normalisation
into the first layer. Nothing is trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from xrad.errors import ConfigError
from xrad.methods.base import EncoderResult
from xrad.methods.contrastive.stage import load as load_encoder
from xrad.methods.contrastive.stage import new_encoder
from xrad.methods.imagenet.config import ImageNetConfig
from xrad.methods.stage_io import ENCODER_FILE, save_tensors
from xrad.models.resnet import ResNet18Backbone
from xrad.training.context import RunContext


@torch.no_grad()
def fold_input_normalisation(backbone: ResNet18Backbone, mean: float, std: float) -> None:
    """Make ``backbone(x)`` compute what it computed on ``(x − mean) / std``, without an extra layer.

    conv1 has no bias and is followed by bn1, so with W the kernel, conv(W, (x − m)/s) = conv(W/s, x) − (m/s)·ΣW
    (per output channel, exact away from the zero-padded border); the constant moves into bn1's running mean.
    In training mode BatchNorm removes any per-channel affine change of its input anyway; the fold matters for
    eval-mode embeddings (the centres are placed in eval mode, before any training).
    """
    if std <= 0:
        raise ConfigError(f"imagenet.std must be > 0 (got {std})")
    weight = backbone.conv1.weight
    shift = (mean / std) * weight.sum(dim=(1, 2, 3))
    weight.div_(std)
    backbone.bn1.running_mean.add_(shift)


def run(ctx: RunContext, stage: str, previous: Any = None) -> EncoderResult:
    """The ImageNet-initialised encoder, saved like a contrastive stage 1."""
    section: ImageNetConfig = ctx.config.section("imagenet")
    if not section.weights:
        raise ConfigError(
            "imagenet.weights is not set: give the path of a local torchvision ResNet-18 "
            "state_dict, e.g. --set imagenet.weights=/path/resnet18-f37072fd.pth "
            "(nothing is downloaded)"
        )
    encoder = new_encoder(ctx.config)
    encoder.backbone.load_torchvision_weights(Path(section.weights).expanduser())
    if section.normalise:
        fold_input_normalisation(encoder.backbone, section.mean, section.std)
    encoder = encoder.eval()
    if ctx.is_global_zero:
        save_tensors(ctx.stage_dir(stage) / ENCODER_FILE, encoder.state_dict())
    return EncoderResult(encoder)


load = load_encoder  # the saved initial encoder reloads like a contrastive one
