"""Stage 2 of the self-taught detector (and of the Deep SAD baselines): multi-sphere semi-supervised Deep SAD
"MAD" (Eq. 2, Algorithm 1); ``finetune.n_spheres: 1`` is the uni-modal variant (Deep SAD with a mean centre).

Choices that differ from the authors' code (reference-spec §3–§5), and why:

- The whole encoder (backbone and head) is transferred from stage 1; the authors re-initialised the head,
  which discards the 128-d space that stage 1 organised and in which k-means places the centres
  (``finetune.transfer_head: false`` restores their behaviour).
- k-means runs on deterministic (:func:`~xrad.data.model_input.prepare_eval`) embeddings of the training
  images with semi-label ≠ −1, in eval mode; validation and test are never augmented.
- Centres, the active-sphere mask and an "initialised" flag are buffers, so checkpoints carry them and a
  resumed run continues with the same spheres. Counting uses ``bincount``; under DDP the per-rank counts
  are summed before pruning so all ranks prune the same spheres.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from xrad.config import Config
from xrad.data.model_input import prepare_eval
from xrad.errors import ConfigError
from xrad.losses import multisphere_deep_sad, nearest_center
from xrad.methods.base import ProvidesEncoder
from xrad.methods.contrastive.stage import new_encoder
from xrad.methods.multisphere.scorer import SphereScorer
from xrad.methods.multisphere.sphere_module import SphereModule
from xrad.methods.stage_io import MODEL_FILE, load_tensors, save_tensors
from xrad.models.encoder import Encoder
from xrad.models.heads import MLPHead
from xrad.training.augment import augment_ad
from xrad.training.context import RunContext
from xrad.training.loaders import train_loader


@dataclass
class SpheresResult:
    """The fine-tuned encoder, every centre and which of them survived pruning."""

    encoder: Encoder
    centers: Tensor  # (K, D), all initial centres
    active: Tensor  # (K,) bool

    def scorer(self, config: Config) -> SphereScorer:
        """The encoder + the surviving centres."""
        return SphereScorer(self.encoder, self.centers[self.active.bool()])


class MADModule(SphereModule):
    """Multi-sphere semi-supervised Deep SAD with per-epoch pruning of weak spheres."""

    def __init__(self, encoder: Encoder, config: Config, metrics_path: Path | None, ctx: RunContext) -> None:
        super().__init__(config, metrics_path, ctx)
        self.encoder = encoder
        self.augment = config.finetune.augment

    def init_centers(self) -> None:
        """k-means (or the mean, for one sphere) of deterministic normal train embeddings z."""
        self.init_centers_from(lambda x: self.encoder(x)[1])

    # -- training ----------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images, masks, semi = batch["image"], batch["mask"], batch["semi_label"]
        if self.section.augment.enabled:
            x = augment_ad(images, masks, self.augment, self.augment_generator(batch_idx))
        else:
            x = prepare_eval(images, masks)
        _, z = self.encoder(x)
        index, centers = self.active_centers()
        loss = multisphere_deep_sad(z, centers, semi, eta=self.section.eta, eps=self.section.eps)
        self.count_normals(z[semi != -1], index, centers)  # Algorithm 1 line 16, from this epoch's passes
        self.record_loss(loss, x.shape[0])
        return loss

    def epoch_end(self) -> dict[str, float]:
        """Prune (after the warm-up), then validation AUROC with the surviving spheres."""
        return self.prune_and_validate(self.score)

    def score(self, x: Tensor) -> Tensor:
        """Distance to the nearest surviving centre."""
        _, z = self.encoder(x)
        sq, _ = nearest_center(z, self.active_centers()[1])
        return sq.clamp_min(0).sqrt()


def _stage2_encoder(config: Config, encoder: Encoder) -> Encoder:
    encoder = copy.deepcopy(encoder)
    if not config.finetune.transfer_head:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + 1)
            encoder.head = MLPHead(config.model.head_dims, bias=config.model.head_bias)
    return encoder


def _require_previous(stage: str, previous: ProvidesEncoder | None) -> ProvidesEncoder:
    if previous is None:
        raise ConfigError(
            f"the {stage} stage needs a finished pretrain stage in this run folder; "
            "run `xrad train --stage pretrain` (or all) first, or set pretrain.encoder_from"
        )
    return previous


def run(ctx: RunContext, stage: str, previous: ProvidesEncoder | None) -> Any:
    """MAD fine-tuning of the previous stage's encoder (of its cells with ``finetune.level: patch``)."""
    cfg = ctx.config
    previous = _require_previous(stage, previous)
    if cfg.finetune.level == "patch":
        from xrad.methods.multisphere import patch_stage

        return patch_stage.run(ctx, stage, previous)
    module = MADModule(_stage2_encoder(cfg, previous.encoder), cfg, ctx.metrics_path(stage), ctx)
    bank = ctx.banks["train"]
    if cfg.finetune.epochs > 0:
        loader = train_loader(bank, list(range(len(bank))), cfg.finetune.batch_size, cfg.seed, cfg.data.workers)
        ctx.fit(stage, module, loader, cfg.finetune.epochs)
    else:
        module.init_centers()
    module = module.cpu().eval()
    result = SpheresResult(module.encoder, module.centers.clone(), module.active.clone())
    if ctx.is_global_zero:
        tensors = {f"encoder.{k}": v for k, v in module.encoder.state_dict().items()}
        tensors.update(centers=module.centers, active=module.active.to(torch.uint8))
        save_tensors(ctx.stage_dir(stage) / MODEL_FILE, tensors)
    return result


def load(ctx: RunContext, stage: str, previous: ProvidesEncoder | None) -> Any:
    """The finished stage's encoder and centres."""
    if ctx.config.finetune.level == "patch":
        from xrad.methods.multisphere import patch_stage

        return patch_stage.load(ctx, stage, _require_previous(stage, previous))
    tensors = load_tensors(ctx.stage_dir(stage) / MODEL_FILE)
    encoder = new_encoder(ctx.config)
    encoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")}, strict=True)
    return SpheresResult(encoder.eval(), tensors["centers"], tensors["active"].bool())
