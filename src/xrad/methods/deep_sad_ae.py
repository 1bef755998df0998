"""Deep SAD baselines of Table 1 on other initialisations than the contrastive pre-training.

Three methods, each stage ``finetune`` being the self-taught detector's multi-sphere Deep SAD stage
(:func:`xrad.methods.self_taught.run_finetune` — shared, not copied):

- ``deep_sad_ae`` (:data:`METHOD`): Ruff et al. [22] — stage ``pretrain`` trains the autoencoder of
  :mod:`xrad.methods.autoencoder`, then Deep SAD. ``finetune.n_spheres: 1`` is the uni-modal baseline
  (one centre, the mean embedding; "Ruff et al. [22]"), ``n_spheres > 1`` the multi-modal one ("Ruff et al.
  (Multi-Modal) AE": k-means centres and pruning). ``model.head_bias: false`` gives the bias-free head Deep
  SAD recommends (a biased network can map everything onto the centre).
- ``knn_ae`` (:data:`KNN_AE`): the "AE 100-NN" ablation — the same AE, then the kNN method's memory bank and
  :class:`~xrad.methods.scorers.KnnScorer` (``knn`` section).
- ``deep_sad_imagenet`` (:data:`IMAGENET`): "Ruff et al. (Multi-Modal) Image-Net" — stage ``pretrain`` loads
  ImageNet weights into the ResNet-18 from a local torchvision file (``imagenet.weights``; never downloaded)
  and trains nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from xrad.errors import ConfigError
from xrad.methods.autoencoder import load_ae_pretrain, run_ae_pretrain
from xrad.methods.baseline_sections import ImageNetConfig
from xrad.methods.knn_embedding import KnnEmbedding
from xrad.methods.scorers import SphereScorer
from xrad.methods.self_taught import (
    ENCODER_FILE,
    load_finetune,
    load_pretrain,
    new_encoder,
    run_finetune,
    save_tensors,
)
from xrad.models.resnet import ResNet18Backbone
from xrad.training.context import RunContext

__all__ = ["IMAGENET", "KNN_AE", "METHOD", "DeepSadAE", "DeepSadImageNet", "KnnAE", "fold_input_normalisation"]


class _DeepSad:
    """Shared shape: some ``pretrain`` producing ``state['encoder']``, then (multi-sphere) Deep SAD."""

    name = ""
    stages = ("pretrain", "finetune")

    def pretrain(self, ctx: RunContext) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def load_pretrain(self, ctx: RunContext) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def run_stage(self, stage: str, ctx: RunContext) -> None:
        """Run ``pretrain`` (the initialisation) or ``finetune`` (Deep SAD)."""
        if stage == "pretrain":
            self.pretrain(ctx)
        else:
            run_finetune(ctx)

    def load_stage(self, stage: str, ctx: RunContext) -> None:
        """Load a finished stage."""
        if stage == "pretrain":
            self.load_pretrain(ctx)
        else:
            load_finetune(ctx)

    def build_scorer(self, ctx: RunContext) -> SphereScorer:
        """The Deep SAD encoder + the surviving centres (one for the uni-modal variant)."""
        return SphereScorer(ctx.state["encoder_ad"], ctx.state["centers"][ctx.state["active"].bool()])


class DeepSadAE(_DeepSad):
    """Deep SAD (uni- or multi-modal) on an autoencoder-pretrained encoder (Ruff et al. [22])."""

    name = "deep_sad_ae"

    def pretrain(self, ctx: RunContext) -> None:
        """Train the autoencoder (or load it via ``pretrain.encoder_from``)."""
        run_ae_pretrain(ctx)

    def load_pretrain(self, ctx: RunContext) -> None:
        """Load the finished autoencoder."""
        load_ae_pretrain(ctx)


class KnnAE(KnnEmbedding):
    """kNN-100 on the autoencoder's embeddings ("AE 100-NN"), through the kNN method and scorer."""

    name = "knn_ae"

    def run_stage(self, stage: str, ctx: RunContext) -> None:
        """``pretrain``: the autoencoder; ``finetune``: the kNN memory bank."""
        if stage == "pretrain":
            run_ae_pretrain(ctx)
        else:
            super().run_stage(stage, ctx)

    def load_stage(self, stage: str, ctx: RunContext) -> None:
        """Load a finished stage."""
        if stage == "pretrain":
            load_ae_pretrain(ctx)
        else:
            super().load_stage(stage, ctx)


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


class DeepSadImageNet(_DeepSad):
    """Multi-sphere Deep SAD on an ImageNet-initialised ResNet-18 (weights from a local torchvision file)."""

    name = "deep_sad_imagenet"

    def pretrain(self, ctx: RunContext) -> None:
        """Build the encoder, load the ImageNet backbone weights; nothing is trained."""
        section: ImageNetConfig = ctx.config.section("imagenet")
        if not section.weights:
            raise ConfigError("imagenet.weights is not set: give the path of a local torchvision ResNet-18 "
                              "state_dict, e.g. --set imagenet.weights=/path/resnet18-f37072fd.pth "
                              "(nothing is downloaded)")
        encoder = new_encoder(ctx)
        encoder.backbone.load_torchvision_weights(Path(section.weights).expanduser())
        if section.normalise:
            fold_input_normalisation(encoder.backbone, section.mean, section.std)
        ctx.state["encoder"] = encoder.eval()
        if ctx.is_global_zero:
            save_tensors(ctx.stage_dir("pretrain") / ENCODER_FILE, encoder.state_dict())

    def load_pretrain(self, ctx: RunContext) -> None:
        """Load the saved initial encoder."""
        load_pretrain(ctx)


METHOD = DeepSadAE()
KNN_AE = KnnAE()
IMAGENET = DeepSadImageNet()
