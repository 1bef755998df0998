"""Supervised ResNet-50 baseline of Table 1: class-balanced binary cross-entropy on the labelled train images.

"Labelled" means semi-label ≠ 0: known normal (+1 → target 0) and known abnormal (−1 → target 1); the
unlabelled majority is not used. Class balance: ``pos_weight = n_neg / n_pos`` in ``BCEWithLogitsLoss``,
so both classes weigh the same in the loss whatever their counts. The score is the predicted probability
of "abnormal". One stage, ``train``, configured by the ``supervised`` section (schedule, augmentation,
optional local torchvision ResNet-50 weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xrad.config import Config
from xrad.data.model_input import prepare_eval
from xrad.errors import DataError
from xrad.evaluation.metrics import auroc
from xrad.methods.stage_io import MODEL_FILE, load_tensors, save_tensors
from xrad.methods.supervised.config import SupervisedConfig
from xrad.methods.supervised.scorer import ClassifierScorer
from xrad.models.resnet import ResNet50Backbone
from xrad.training.augment import augment_ad
from xrad.training.context import RunContext
from xrad.training.loaders import train_loader
from xrad.training.module import StageModule


@dataclass
class ClassifierResult:
    """The trained classifier, which is its own scorer."""

    classifier: ClassifierScorer

    def scorer(self, config: Config) -> ClassifierScorer:
        """The classifier."""
        return self.classifier


def labelled_rows(semi_labels: Tensor) -> tuple[list[int], Tensor]:
    """Rows with semi-label ≠ 0 and their BCE targets (1 = known abnormal, 0 = known normal)."""
    rows = (semi_labels != 0).nonzero().flatten()
    return rows.tolist(), (semi_labels[rows] == -1).float()


def new_classifier(ctx: RunContext) -> ClassifierScorer:
    """ResNet-50 (1 channel) + a linear logit; seeded by the run's seed, optionally from local torchvision weights."""
    section: SupervisedConfig = ctx.config.section("supervised")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.config.seed)
        backbone = ResNet50Backbone(in_channels=1)
        head = nn.Linear(backbone.out_dim, 1)
    if section.pretrained:
        backbone.load_torchvision_weights(Path(section.pretrained).expanduser())
    return ClassifierScorer(backbone, head)


class SupervisedModule(StageModule):
    """Class-balanced BCE on augmented labelled images; validation AUROC of the logits each epoch."""

    pos_weight: Tensor  # buffer (1,)

    def __init__(
        self,
        classifier: ClassifierScorer,
        config: Config,
        metrics_path: Path | None,
        ctx: RunContext,
        pos_weight: float,
    ) -> None:
        section = config.section("supervised")
        super().__init__(config, section, metrics_path)
        self.classifier = classifier
        self.ctx = ctx
        self.augment = section.augment
        self.register_buffer("pos_weight", torch.tensor([float(pos_weight)]))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images, masks = batch["image"], batch["mask"]
        if self.section.augment.enabled:
            x = augment_ad(images, masks, self.augment, self.augment_generator(batch_idx))
        else:
            x = prepare_eval(images, masks)
        target = (batch["semi_label"] == -1).to(x.dtype)
        loss = nn.functional.binary_cross_entropy_with_logits(
            self.classifier.logits(x), target, pos_weight=self.pos_weight
        )
        self.record_loss(loss, x.shape[0])
        return loss

    def epoch_end(self) -> dict[str, float]:
        valid = self.ctx.banks.get("valid")
        if valid is None or not len(valid) or not self.trainer.is_global_zero:
            return {}
        logits = self.eval_outputs(valid.images, valid.masks, self.classifier.logits, self.config.data.eval_batch_size)
        return {"valid_auroc": auroc(valid.labels.numpy(), logits.numpy())}


def run(ctx: RunContext, stage: str, previous: Any = None) -> ClassifierResult:
    """Train the classifier on the labelled train rows."""
    cfg = ctx.config
    section: SupervisedConfig = cfg.section("supervised")
    rows, targets = labelled_rows(ctx.banks["train"].semi_labels)
    n_pos, n_neg = int(targets.sum()), int(len(targets) - targets.sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError(
            f"the train split has {n_pos} known-abnormal and {n_neg} known-normal images; the supervised "
            "baseline needs both (make the split with --known-normal > 0 and --known-abnormal > 0)"
        )
    classifier = new_classifier(ctx)
    if section.epochs > 0:
        module = SupervisedModule(classifier, cfg, ctx.metrics_path(stage), ctx, n_neg / n_pos)
        loader = train_loader(
            ctx.banks["train"],
            rows,
            section.batch_size,
            cfg.seed,
            cfg.data.workers,
            where="labelled rows (semi-label ≠ 0) of the train split",
        )
        ctx.fit(stage, module, loader, section.epochs)
    classifier = classifier.cpu().eval()
    if ctx.is_global_zero:
        tensors, _ = classifier.artefact_state()
        save_tensors(ctx.stage_dir(stage) / MODEL_FILE, tensors)
    return ClassifierResult(classifier)


def load(ctx: RunContext, stage: str, previous: Any = None) -> ClassifierResult:
    """The finished classifier."""
    tensors = load_tensors(ctx.stage_dir(stage) / MODEL_FILE)
    return ClassifierResult(ClassifierScorer.from_artefact(tensors, {"in_channels": 1}).eval())
