"""Lightning callbacks of xrad: one progress display per stage, and a quiet console.

Lightning's own bar prints a line per redraw into log files and its banners ("GPU available", tips) on
every fit; a stage here shows one bar (a terminal) or a few plain lines (a file or a pipe) instead, with the
epoch, the loss and the validation AUROC once known.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import lightning as L

from xrad.utils.progress import progress

# Lightning loggers whose INFO records are banners and tips, not results.
_CHATTY = (
    "lightning.pytorch",
    "lightning.fabric",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
)


class StageProgress(L.Callback):
    """Progress of one stage over all its epochs (batches on a terminal, epochs in plain lines)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._stack: ExitStack | None = None
        self._bar: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        epochs = int(trainer.max_epochs or 1)
        batches = int(trainer.num_training_batches) if trainer.num_training_batches != float("inf") else 0
        self._stack = ExitStack()
        self._bar = self._stack.enter_context(progress(epochs * batches or None, f"[{self.stage}]", "step"))
        self._bar.update(trainer.current_epoch * batches)  # a resumed stage starts where it stopped

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._bar is None:
            return
        self._bar.update(1)

    def _show_metrics(self, trainer: L.Trainer, epochs_done: int) -> None:
        # The module logs its epoch metrics after the callbacks' epoch-end hooks have run, so they are read at
        # the next epoch's start and at the end of training.
        metrics = trainer.callback_metrics
        parts = [f"{epochs_done}/{trainer.max_epochs} epochs"]
        for key in ("train_loss", "valid_auroc", "n_spheres"):
            if key in metrics:
                parts.append(f"{key} {float(metrics[key]):.4g}")
        self._bar.set_postfix_str(", ".join(parts))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None and trainer.current_epoch > 0:
            self._show_metrics(trainer, trainer.current_epoch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None:
            self._show_metrics(trainer, trainer.current_epoch)
        self.teardown(trainer, pl_module, "fit")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self._bar = None, None


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's banners, tips and known-harmless warnings off for the duration (restored afterwards)."""
    loggers = [logging.getLogger(name) for name in _CHATTY]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
