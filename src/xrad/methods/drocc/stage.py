"""DROCC's one training stage (``train``): BCE on the training images plus adversarial negatives searched in
the annulus radius ≤ ‖x' − x‖ ≤ γ·radius around each normal image (:mod:`xrad.methods.drocc.annulus`).

Differences from the authors' DROCC run (reference-spec §8.2), and why: the projection is the Euclidean one
onto the annulus (theirs divided by the squared norm, γ = 0.5 < 1, so negatives were not where the method
puts them); the search is gradient ascent on the classifier's loss with normalised steps as in the reference
trainer (not Adam on h); the perturbation stays on body-part pixels; no CE-only warm-up on an all-normal
split (it teaches a constant); known anomalies can be used as labelled negatives; normal = 1.

``drocc.level: patch``: the classifier is :class:`~xrad.methods.drocc.scorer.DroccPatchScorer` (one logit per
feature-map cell) and each BCE term — the ascent's too — is the mean over the body cells of the images, every
cell labelled as its image (normal 1, known anomaly or adversarial negative 0): what is scored is what is
trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.functional import binary_cross_entropy_with_logits as bce

from xrad.config import Config
from xrad.data.model_input import prepare_eval
from xrad.evaluation.metrics import auroc
from xrad.methods.drocc.annulus import normalised_ascent_step, project_to_annulus
from xrad.methods.drocc.config import DroccConfig
from xrad.methods.drocc.scorer import DroccPatchScorer, DroccScorer
from xrad.methods.stage_io import MODEL_FILE, load_tensors, save_tensors
from xrad.models.patch import PATCH_CHANNELS, cell_mask
from xrad.models.resnet import ResNet18Backbone
from xrad.training.augment import augment_ad, batch_generator
from xrad.training.context import RunContext
from xrad.training.loaders import train_loader
from xrad.training.module import StageModule


@dataclass
class DroccResult:
    """The trained classifier, which is its own scorer."""

    classifier: DroccScorer | DroccPatchScorer

    def scorer(self, config: Config) -> DroccScorer | DroccPatchScorer:
        """The classifier."""
        return self.classifier


def new_classifier(config: Config) -> DroccScorer | DroccPatchScorer:
    """ResNet-18 (1 channel) + one logit (one per cell with ``drocc.level: patch``), seeded by the run's seed."""
    section: DroccConfig = config.section("drocc")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        backbone = ResNet18Backbone(in_channels=1)
        if section.level == "patch":
            return DroccPatchScorer(backbone, nn.Linear(PATCH_CHANNELS, 1), section.top_k)
        return DroccScorer(backbone, nn.Linear(backbone.out_dim, 1))


def drocc_bce(classifier: DroccScorer | DroccPatchScorer, x: Tensor, target: Tensor, body: Tensor) -> Tensor:
    """BCE of the normality logits of ``x`` against per-image ``target`` (B,): of the image logit, or — patch
    form — the mean over the body cells of ``body`` (the clean inputs, whose support x' shares) of every cell's."""
    if isinstance(classifier, DroccPatchScorer):
        logits = classifier.cell_logits(x)
        inside = cell_mask(body, logits.shape[-1]).to(logits.dtype)
        per_cell = bce(logits, target[:, None, None].expand_as(logits), reduction="none")
        return (per_cell * inside).sum() / inside.sum().clamp_min(1.0)
    return bce(classifier.logits(x), target)


class DroccModule(StageModule):
    """BCE (normal = 1) + λ·BCE(adversarial negatives, 0); validation AUROC of −logit each epoch."""

    def __init__(
        self, classifier: DroccScorer | DroccPatchScorer, config: Config, metrics_path: Path | None, ctx: RunContext
    ) -> None:
        section: DroccConfig = config.section("drocc")
        super().__init__(config, section, metrics_path)
        self.classifier = classifier
        self.ctx = ctx
        self.augment = section.augment

    def adversarial_negatives(self, x: Tensor, batch_idx: int) -> Tensor:
        """x' = x + h with h found by normalised ascent on BCE(logit(x + h), 0), projected onto the annulus
        after every step (so every returned h lies in it); no gradient flows to the weights from the search."""
        d: DroccConfig = self.section
        generator = batch_generator(self.config.seed * 1_000 + 7, self.current_epoch, batch_idx, device=x.device)
        support = (x > 0).to(x.dtype) if d.perturb_inside_mask else torch.ones_like(x)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * d.init_noise_std
        h = project_to_annulus(noise * support, d.radius, d.gamma)
        zeros = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for _ in range(d.ascent_num_steps):
            h = h.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = drocc_bce(self.classifier, x.detach() + h, zeros, x)
                (grad,) = torch.autograd.grad(loss, h)
            h = project_to_annulus(
                normalised_ascent_step(h.detach(), grad * support, d.ascent_step_size), d.radius, d.gamma
            )
        return (x + h).detach()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        d: DroccConfig = self.section
        images, masks, semi = batch["image"], batch["mask"], batch["semi_label"]
        if d.augment.enabled:
            x = augment_ad(images, masks, self.augment, self.augment_generator(batch_idx))
        else:
            x = prepare_eval(images, masks)
        normal = semi != -1
        loss = drocc_bce(self.classifier, x, normal.to(x.dtype), x)
        if self.current_epoch >= d.only_ce_epochs and d.lam > 0 and bool(normal.any()):
            x_adv = self.adversarial_negatives(x[normal], batch_idx)
            zeros = torch.zeros(x_adv.shape[0], device=x.device, dtype=x.dtype)
            loss = loss + d.lam * drocc_bce(self.classifier, x_adv, zeros, x[normal])
        self.record_loss(loss, x.shape[0])
        return loss

    def epoch_end(self) -> dict[str, float]:
        valid = self.ctx.banks.get("valid")
        if valid is None or not len(valid) or not self.trainer.is_global_zero:
            return {}
        scores = self.eval_outputs(
            valid.images, valid.masks, lambda x: self.classifier.score(x)[0], self.config.data.eval_batch_size
        )
        return {"valid_auroc": auroc(valid.labels.numpy(), scores.numpy())}


def training_rows(ctx: RunContext) -> list[int]:
    """Normal rows, plus the known anomalies with ``drocc.use_known_anomalies``."""
    if ctx.config.section("drocc").use_known_anomalies:
        return list(range(len(ctx.banks["train"])))
    return ctx.normal_train_rows()


def run(ctx: RunContext, stage: str, previous: Any = None) -> DroccResult:
    """Train the DROCC classifier."""
    cfg = ctx.config
    section: DroccConfig = cfg.section("drocc")
    classifier = new_classifier(cfg)
    if section.epochs > 0:
        module = DroccModule(classifier, cfg, ctx.metrics_path(stage), ctx)
        loader = train_loader(
            ctx.banks["train"],
            training_rows(ctx),
            section.batch_size,
            cfg.seed,
            cfg.data.workers,
            where="DROCC training rows of the train split",
        )
        ctx.fit(stage, module, loader, section.epochs)
    classifier = classifier.cpu().eval()
    if ctx.is_global_zero:
        tensors, _ = classifier.artefact_state()
        save_tensors(ctx.stage_dir(stage) / MODEL_FILE, tensors)
    return DroccResult(classifier)


def load(ctx: RunContext, stage: str, previous: Any = None) -> DroccResult:
    """The finished classifier."""
    tensors = load_tensors(ctx.stage_dir(stage) / MODEL_FILE)
    section: DroccConfig = ctx.config.section("drocc")
    scorer_class = DroccPatchScorer if section.level == "patch" else DroccScorer
    return DroccResult(scorer_class.from_artefact(tensors, {"in_channels": 1, "top_k": section.top_k}).eval())
