"""Joint Deep SAD's second stage: the whole autoencoder of stage 1 keeps training on its reconstruction loss
while its encoder's z is pulled into (multi-)spheres by Deep SAD — one loss, one optimiser, one checkpoint.

``finetune.n_spheres: 1`` is the paper's joint Deep SAD (one mean centre), more spheres its joint
multi-sphere variant (k-means centres, the pruning of the self-taught detector). The score is the distance of
z to the nearest surviving centre (:class:`~xrad.methods.multisphere.scorer.SphereScorer`), so the artefact
is the one of every Deep SAD detector.

Differences from the authors' joint model (reference-spec §4, §8.3), and why: the encoder is xrad's shared
ResNet-18 + MLP head (theirs ended the SVDD head in an affine-free BatchNorm, which keeps z from shrinking
toward a centre); centres come from normal train images only (theirs included the known anomalies); the
loss scales are measured once in eval mode on deterministic inputs and live in the checkpoint, so a resumed
run uses the same ones.
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
from xrad.losses import masked_mse, multisphere_deep_sad, nearest_center
from xrad.methods.autoencoder.scorer import input_support
from xrad.methods.autoencoder.stage import AutoencoderResult, new_autoencoder
from xrad.methods.joint.config import JointConfig
from xrad.methods.multisphere.scorer import SphereScorer
from xrad.methods.multisphere.sphere_module import SphereModule
from xrad.methods.stage_io import MODEL_FILE, load_tensors, save_tensors
from xrad.models.autoencoder import Autoencoder
from xrad.models.encoder import Encoder
from xrad.training.augment import augment_ad
from xrad.training.context import RunContext
from xrad.training.loaders import train_loader

_AE = "ae."


@dataclass
class JointResult:
    """The jointly trained autoencoder, every centre and which of them survived pruning."""

    autoencoder: Autoencoder
    centers: Tensor
    active: Tensor

    @property
    def encoder(self) -> Encoder:
        """The autoencoder's encoder."""
        return self.autoencoder.encoder

    def scorer(self, config: Config) -> SphereScorer:
        """The encoder + the surviving centres."""
        return SphereScorer(self.autoencoder.encoder, self.centers[self.active.bool()])


class JointModule(SphereModule):
    """Reconstruction + (multi-sphere) Deep SAD on the same autoencoder, balanced by ``joint.rec_weight``."""

    scales: Tensor  # buffer (2,): s_rec, s_sad (checkpointed)

    def __init__(self, autoencoder: Autoencoder, config: Config, metrics_path: Path | None, ctx: RunContext) -> None:
        super().__init__(config, metrics_path, ctx)
        self.autoencoder = autoencoder
        self.joint: JointConfig = config.section("joint")
        self.augment = config.finetune.augment
        self.register_buffer("scales", torch.ones(2, dtype=torch.float64))

    @property
    def encoder(self) -> Encoder:
        """The autoencoder's encoder (not a second child module: BatchNorm recalibration runs the AE)."""
        return self.autoencoder.encoder

    def init_centers(self) -> None:
        """Centres from z of the normal train images, then the loss scales (once, before training)."""
        self.init_centers_from(lambda x: self.encoder(x)[1])
        if self.joint.normalise_scales:
            self.scales.copy_(self.measure_scales())

    @torch.no_grad()
    def measure_scales(self) -> Tensor:
        """1 / mean L_rec and 1 / mean L_SAD (unlabelled form, d²) over the deterministic normal train images."""
        bank = self.ctx.banks["train"]
        idx = torch.tensor(self.ctx.normal_train_rows())
        centers = self.active_centers()[1]

        def both(x: Tensor) -> Tensor:
            recon, _, z = self.autoencoder(x)
            err = ((recon - x).pow(2) * input_support(x)).flatten(1).sum(1) / input_support(x).flatten(1).sum(
                1
            ).clamp_min(1)
            return torch.stack([err, nearest_center(z, centers)[0]], dim=1)

        means = (
            self.eval_outputs(bank.images[idx], bank.masks[idx], both, self.config.data.eval_batch_size)
            .double()
            .mean(0)
        )
        return 1.0 / means.clamp_min(1e-12)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images, masks, semi = batch["image"], batch["mask"], batch["semi_label"]
        if self.section.augment.enabled:
            x = augment_ad(images, masks, self.augment, self.augment_generator(batch_idx))
        else:
            x = prepare_eval(images, masks)
        recon, _, z = self.autoencoder(x)
        rec_rows = semi != -1 if self.joint.exclude_known_abnormal else torch.ones_like(semi, dtype=torch.bool)
        support = input_support(x) * rec_rows.to(x.dtype)[:, None, None, None]
        rec = masked_mse(recon, x, support)
        index, centers = self.active_centers()
        sad = multisphere_deep_sad(z, centers, semi, eta=self.section.eta, eps=self.section.eps)
        w = self.joint.rec_weight
        loss = w * self.scales[0].to(rec.dtype) * rec + (1 - w) * self.scales[1].to(sad.dtype) * sad
        self.count_normals(z[semi != -1], index, centers)
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


def run(ctx: RunContext, stage: str, previous: AutoencoderResult | None) -> JointResult:
    """Joint training of the previous stage's autoencoder."""
    cfg = ctx.config
    if previous is None or not isinstance(previous, AutoencoderResult):
        raise ConfigError(
            f"the {stage} stage needs a finished autoencoder pretrain stage in this run folder; "
            "run `xrad train --stage pretrain` (or all) first, or set pretrain.encoder_from=AE_RUN"
        )
    # A copy: stage 1's autoencoder stays what stage 1 produced (the pretext embeddings of Fig. 9).
    module = JointModule(copy.deepcopy(previous.autoencoder), cfg, ctx.metrics_path(stage), ctx)
    bank = ctx.banks["train"]
    if cfg.finetune.epochs > 0:
        loader = train_loader(bank, list(range(len(bank))), cfg.finetune.batch_size, cfg.seed, cfg.data.workers)
        ctx.fit(stage, module, loader, cfg.finetune.epochs)
    else:
        module.init_centers()
    module = module.cpu().eval()
    result = JointResult(module.autoencoder, module.centers.clone(), module.active.clone())
    if ctx.is_global_zero:
        tensors = {_AE + k: v for k, v in module.autoencoder.state_dict().items()}
        tensors.update(centers=module.centers, active=module.active.to(torch.uint8), scales=module.scales)
        save_tensors(ctx.stage_dir(stage) / MODEL_FILE, tensors)
    return result


def load(ctx: RunContext, stage: str, previous: Any) -> JointResult:
    """The finished stage's autoencoder and centres."""
    tensors = load_tensors(ctx.stage_dir(stage) / MODEL_FILE)
    ae = new_autoencoder(ctx.config)
    ae.load_state_dict({k[len(_AE) :]: v for k, v in tensors.items() if k.startswith(_AE)}, strict=True)
    return JointResult(ae.eval(), tensors["centers"], tensors["active"].bool())
