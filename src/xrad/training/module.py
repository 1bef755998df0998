"""Lightning glue shared by the methods' LightningModules: optimiser/schedule, seeded augmentation
streams and epoch-level metrics (``<stage>/metrics.csv``).

A stage module subclasses :class:`StageModule`, implements ``training_step`` (calling
:meth:`StageModule.record_loss`) and optionally :meth:`StageModule.epoch_end` (pruning, validation).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from xrad.config import Config, milestone_epochs
from xrad.data.model_input import prepare_eval
from xrad.models import batchnorm
from xrad.training.augment import batch_generator, batch_numpy_generator
from xrad.training.banks import BankDataset
from xrad.utils.atomic import write_text

METRIC_COLUMNS = ("epoch", "train_loss", "valid_auroc", "n_spheres", "lr")


def write_metrics_row(path: Path, row: dict[str, Any]) -> None:
    """Add/replace the row of ``row['epoch']`` in an epoch-level CSV, dropping later epochs (a resumed run
    rewrites them), atomically."""
    rows: list[dict[str, str]] = []
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [r for r in csv.DictReader(handle) if int(r["epoch"]) < int(row["epoch"])]
    rows.append({k: _fmt(row.get(k)) for k in METRIC_COLUMNS})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(METRIC_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def _fmt(value: Any) -> str:
    """CSV cell: empty for missing/NaN, integers without ".0", floats at full precision."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


class StageModule(L.LightningModule):
    """Base of the stage modules: Adam with coupled L2 + MultiStepLR, epoch metrics, seeded streams."""

    def __init__(self, config: Config, section: Any, metrics_path: Path | None) -> None:
        super().__init__()
        self.config = config
        self.section = section  # the stage's config section (PretrainConfig / FinetuneConfig ...)
        self.metrics_path = metrics_path
        self._loss_sum = torch.zeros((), dtype=torch.float64)
        self._loss_count = 0

    # -- optimisation ------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """Adam (weight decay = coupled L2, the λ of Eq. 2) and ×lr_gamma at the milestone epochs; a section
        with ``schedule: onecycle`` gets a one-cycle schedule instead (warm-up to ``lr``, then annealing), which
        short from-scratch trainings converge better with."""
        betas = tuple(getattr(self.section, "betas", (0.9, 0.999)))  # a section may set Adam's betas (SALAD)
        optimizer = torch.optim.Adam(
            self.parameters(), lr=self.section.lr, betas=betas, weight_decay=self.section.weight_decay
        )
        if getattr(self.section, "schedule", "step") == "onecycle":
            total = max(1, int(self.trainer.estimated_stepping_batches))
            cycle = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=self.section.lr, total_steps=total, pct_start=0.15
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cycle, "interval": "step"}}
        milestones = milestone_epochs(self.section.milestones, self.section.epochs)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=self.section.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def augment_generator(self, batch_idx: int) -> torch.Generator:
        """The augmentation stream of this (seed, rank, epoch, batch): identical after a resume."""
        seed = self.config.seed * 1_000 + self.global_rank
        return batch_generator(seed, self.current_epoch, batch_idx, device=self.device)

    def numpy_generator(self, batch_idx: int) -> np.random.Generator:
        """A NumPy stream of this (seed, rank, epoch, batch), for draws made on the CPU (corruptions)."""
        seed = self.config.seed * 1_000 + self.global_rank
        return batch_numpy_generator(seed, self.current_epoch, batch_idx)

    # -- epoch bookkeeping -------------------------------------------------------------------------
    def record_loss(self, loss: Tensor, n: int) -> None:
        """Accumulate the epoch's mean training loss (weighted by batch size)."""
        self._loss_sum = self._loss_sum.to(self.device) + loss.detach().double() * n
        self._loss_count += n
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)

    def on_train_epoch_start(self) -> None:
        # Lightning keeps whatever train/eval mode the modules arrive in, and a transferred encoder or a
        # resumed run may arrive in eval mode: make every epoch train in train mode, whatever happened before.
        self.train()
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._loss_count = 0
        # The rate used during this epoch (the scheduler has already stepped by on_train_epoch_end).
        self._epoch_lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])

    def epoch_end(self) -> dict[str, float]:
        """Hook for subclasses at the end of each epoch (after the last step, before the checkpoint)."""
        return {}

    def on_train_epoch_end(self) -> None:
        totals = torch.stack(
            [
                self._loss_sum.to(self.device),
                torch.tensor(float(self._loss_count), dtype=torch.float64, device=self.device),
            ]
        )
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        metrics: dict[str, float] = {"train_loss": float(totals[0] / totals[1]) if totals[1] > 0 else math.nan}
        self.recalibrate_batchnorm()
        metrics.update(self.epoch_end())
        metrics["lr"] = self._epoch_lr
        self.log_dict(
            {k: float(v) for k, v in metrics.items() if not math.isnan(v)},
            on_step=False,
            on_epoch=True,
            sync_dist=False,
            rank_zero_only=True,
        )
        if self.metrics_path is not None and self.trainer.is_global_zero:
            write_metrics_row(self.metrics_path, {"epoch": self.current_epoch, **metrics})

    # -- evaluation --------------------------------------------------------------------------------
    def recalibrate_batchnorm(self) -> None:
        """Re-estimate every BatchNorm's running statistics on the un-augmented train images
        (:func:`xrad.models.batchnorm.recalibrate_batchnorm`), prepared exactly as evaluation and scoring
        prepare them, so eval-mode outputs match the current weights. It changes no weight and no train-mode
        output, so training is unaffected and a resumed run stays identical. Each top-level network child of
        the module is run on the batches.
        """
        dataset = getattr(self.trainer.train_dataloader, "dataset", None) if self._trainer else None
        if not isinstance(dataset, BankDataset) or len(dataset) < 2:
            return
        networks = [
            child
            for child in self.children()
            if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in child.modules())
        ]
        n, size = len(dataset), int(self.config.data.eval_batch_size)
        bounds = list(range(0, n, size)) + [n]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2:  # BatchNorm needs two samples per batch
            bounds.pop(-2)
        batches = (
            prepare_eval(dataset.bank.images[rows].to(self.device), dataset.bank.masks[rows].to(self.device))
            for rows in (dataset.indices[a:b] for a, b in zip(bounds[:-1], bounds[1:]))
        )
        batchnorm.recalibrate_batchnorm(self, batches, forward=lambda x: self.calibration_forward(networks, x))

    def calibration_forward(self, networks: list[nn.Module], x: Tensor) -> None:
        """One batch of :meth:`recalibrate_batchnorm`: each network child runs on the prepared images ``x``.
        A module whose networks take other inputs (a GAN's generator takes codes) runs its scoring path here."""
        for network in networks:
            network(x)

    @torch.no_grad()
    def eval_outputs(self, images: Tensor, masks: Tensor, fn: Any, batch_size: int) -> Tensor:
        """Apply ``fn`` to deterministic (``prepare_eval``) batches in eval mode; concatenated on the CPU."""
        was_training = self.training
        self.eval()
        try:
            outs = []
            for start in range(0, images.shape[0], batch_size):
                x = prepare_eval(
                    images[start : start + batch_size].to(self.device),
                    masks[start : start + batch_size].to(self.device),
                )
                outs.append(fn(x).detach().float().cpu())
            return torch.cat(outs) if outs else torch.zeros(0)
        finally:
            self.train(was_training)
