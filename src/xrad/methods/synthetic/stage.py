"""Training the synthetic-anomaly detector: every batch is augmented normal training images and the same
images with one local corruption each; the patch classifier learns, cell by cell, which cells were changed.

Only images with semi-label ≠ −1 are used (unlabelled and known normal): the corruptions are the anomalies.
Corruptions are drawn from a NumPy generator seeded by (seed, rank, epoch, batch), like the augmentations,
so a resumed run plants exactly the corruptions of an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xrad.config import Config
from xrad.errors import DataError
from xrad.evaluation.metrics import auroc
from xrad.methods.base import Scorer
from xrad.methods.knn.patch_scorer import PatchKnnScorer, build_patch_memory
from xrad.methods.stage_io import MODEL_FILE, load_tensors, save_tensors
from xrad.methods.synthetic.config import SyntheticConfig
from xrad.methods.synthetic.gaussian import PatchGaussianScorer, fit_gaussians
from xrad.methods.synthetic.scorer import PatchClassifierScorer
from xrad.models.patch import PatchClassifier
from xrad.models.resnet import ResNet18Backbone
from xrad.training.augment import augment_ad_with_masks
from xrad.training.context import RunContext
from xrad.training.corruptions import corrupt_batch
from xrad.training.loaders import train_loader
from xrad.training.module import StageModule


@dataclass
class PatchClassifierResult:
    """The trained patch classifier and, for ``score: knn``, the memory bank of normal training cells, for
    ``score: gaussian*`` the Gaussians of their cells and body averages (tensors ``cell_mean`` ...)."""

    network: PatchClassifier
    memory: Tensor | None = None
    gaussians: dict[str, Tensor] | None = None

    @property
    def backbone(self) -> ResNet18Backbone:
        """The classifier's backbone, for a patch-level next stage (``subspace_synthetic``)."""
        return self.network.backbone

    def scorer(self, config: Config) -> Scorer:
        """The classifier with the configured image score, or PatchCore on its backbone."""
        section: SyntheticConfig = config.section("synthetic")
        if section.score == "knn":
            if self.memory is None:
                raise DataError("the synthetic detector's memory bank is missing; re-run its train stage")
            return PatchKnnScorer(self.network.backbone, self.memory, section.top_k, section.smooth)
        if section.score.startswith("gaussian"):
            if self.gaussians is None:
                raise DataError("the synthetic detector's Gaussians are missing; re-run its train stage")
            level = "image" if section.score == "gaussian_image" else "patch"
            return PatchGaussianScorer(self.network.backbone, self.gaussians, level, section.top_k)
        return PatchClassifierScorer(self.network, section.score, section.top_k)


def new_network(config: Config) -> PatchClassifier:
    """A freshly initialised patch classifier; its weights depend on the run's seed only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return PatchClassifier(hidden=config.section("synthetic").head_channels)


def cell_targets(changed: Tensor, cells: int, fraction: float) -> Tensor:
    """``(B, cells, cells)`` 0/1: cells of which more than ``fraction`` of the pixels were changed."""
    return (F.adaptive_avg_pool2d(changed, cells)[:, 0] > fraction).to(changed.dtype)


def positive_weights(targets: Tensor, pos_weight: float, balance: bool) -> Tensor:
    """Per-cell loss weights: 1 for negatives, ``pos_weight`` for positives — or, with ``balance``, the
    positives of each image rescaled so that every corrupted image's positives weigh the same in total (the
    batch's mean), so a gap of two cells counts as much as a plate of thirty."""
    positive = targets > 0.5
    weight = torch.where(positive, torch.full_like(targets, pos_weight), torch.ones_like(targets))
    if not balance:
        return weight
    counts = positive.flatten(1).sum(dim=1).to(targets.dtype)
    has = counts > 0
    if not bool(has.any()):
        return weight
    scale = torch.where(has, counts[has].mean() / counts.clamp_min(1.0), torch.ones_like(counts))
    return torch.where(positive, weight * scale[:, None, None], weight)


MEMORY_FILE = "memory.safetensors"  # the PatchCore bank of score: knn
GAUSSIAN_FILE = "gaussians.safetensors"  # the normal Gaussians of score: gaussian / gaussian_image


class SyntheticModule(StageModule):
    """Per-cell BCE on clean and corrupted views; validation AUROC of the configured image score."""

    pos_weight: Tensor  # buffer ()

    def __init__(self, network: PatchClassifier, config: Config, metrics_path: Path | None, ctx: RunContext) -> None:
        section: SyntheticConfig = config.section("synthetic")
        super().__init__(config, section, metrics_path)
        self.network = network
        self.ctx = ctx
        self.scorer = PatchClassifierScorer(network, section.score, section.top_k)
        self.register_buffer("pos_weight", torch.tensor(float(section.pos_weight)))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        clean, body = augment_ad_with_masks(
            batch["image"], batch["mask"], self.section.augment, self.augment_generator(batch_idx)
        )
        corrupted, changed = corrupt_batch(clean, body, self.numpy_generator(batch_idx), tuple(self.section.kinds))
        images = torch.cat([clean, corrupted])
        logits = self.network(images)
        targets = cell_targets(
            torch.cat([torch.zeros_like(changed), changed]), logits.shape[-1], self.section.cell_fraction
        )
        weight = positive_weights(targets, float(self.pos_weight), self.section.balance_positives)
        loss = F.binary_cross_entropy_with_logits(logits, targets, weight=weight)
        self.record_loss(loss, images.shape[0])
        return loss

    def epoch_end(self) -> dict[str, float]:
        valid = self.ctx.banks.get("valid")
        if valid is None or not len(valid) or not self.trainer.is_global_zero:
            return {}
        scores = self.eval_outputs(
            valid.images, valid.masks, lambda x: self.scorer.score(x)[0], self.config.data.eval_batch_size
        )
        return {"valid_auroc": auroc(valid.labels.numpy(), scores.numpy())}


def run(ctx: RunContext, stage: str, previous: Any = None) -> PatchClassifierResult:
    """Train the patch classifier on the normal training rows."""
    cfg = ctx.config
    section: SyntheticConfig = cfg.section("synthetic")
    network = new_network(cfg)
    if section.epochs > 0:
        module = SyntheticModule(network, cfg, ctx.metrics_path(stage), ctx)
        loader = train_loader(
            ctx.banks["train"],
            ctx.normal_train_rows(),
            section.batch_size,
            cfg.seed,
            cfg.data.workers,
            where="normal rows (semi-label ≠ −1) of the train split",
        )
        ctx.fit(stage, module, loader, section.epochs)
    network = network.cpu().eval()
    memory, gaussians = None, None
    bank, rows = ctx.banks["train"], ctx.normal_train_rows()
    if section.score == "knn":
        memory = build_patch_memory(
            network.backbone,
            bank.images[rows],
            bank.masks[rows],
            size=section.memory_size,
            smooth=section.smooth,
            seed=cfg.seed,
            batch_size=cfg.data.eval_batch_size,
        )
    if section.score.startswith("gaussian"):
        gaussians = fit_gaussians(
            network.backbone,
            bank.images[rows],
            bank.masks[rows],
            shrinkage=section.gaussian_shrinkage,
            batch_size=cfg.data.eval_batch_size,
        )
    if ctx.is_global_zero:
        save_tensors(ctx.stage_dir(stage) / MODEL_FILE, network.state_dict())
        if memory is not None:
            save_tensors(ctx.stage_dir(stage) / MEMORY_FILE, {"memory": memory})
        if gaussians is not None:
            save_tensors(ctx.stage_dir(stage) / GAUSSIAN_FILE, gaussians)
    return PatchClassifierResult(network, memory, gaussians)


def load(ctx: RunContext, stage: str, previous: Any = None) -> PatchClassifierResult:
    """The finished patch classifier."""
    network = new_network(ctx.config)
    network.load_state_dict(load_tensors(ctx.stage_dir(stage) / MODEL_FILE), strict=True)
    memory_path = ctx.stage_dir(stage) / MEMORY_FILE
    memory = load_tensors(memory_path)["memory"] if memory_path.is_file() else None
    gaussian_path = ctx.stage_dir(stage) / GAUSSIAN_FILE
    gaussians = load_tensors(gaussian_path) if gaussian_path.is_file() else None
    return PatchClassifierResult(network.eval(), memory, gaussians)
