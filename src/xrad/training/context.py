"""What a method's stages get from the run: config, data, folders, and a resumable Lightning ``fit``.

:meth:`RunContext.fit` is the only place that builds a ``lightning.Trainer``: accelerator, devices,
strategy, precision and nodes come from the config's ``trainer`` section (or the CLI) and are passed
straight through — xrad has no device code of its own. Every epoch writes
``<stage>/checkpoints/last.ckpt``; calling ``fit`` again for an unfinished stage resumes from it.
"""

from __future__ import annotations

import os
import signal
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xrad.config import Config
from xrad.errors import DataError
from xrad.run_folder import RunFolder
from xrad.training.banks import ImageBank


def env_global_rank() -> int:
    """This process's global rank before a Trainer exists (0 when not launched by a DDP launcher).

    Lightning's launcher sets LOCAL_RANK/NODE_RANK for the processes it starts; torchrun and SLURM set RANK.
    Only "is it 0" matters here (which process writes files before training starts).
    """
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    return int(os.environ.get("LOCAL_RANK", 0)) + int(os.environ.get("NODE_RANK", 0))


@dataclass
class RunContext:
    """What the stages of one run share: config, image banks, folders, devices and the resumable fit."""

    config: Config
    run_dir: Path
    banks: dict[str, ImageBank]  # "train", "valid", "test" (valid/test may be empty)
    trainer_overrides: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    global_rank: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def is_global_zero(self) -> bool:
        """Whether this process writes the run's files."""
        return self.global_rank == 0

    @property
    def folder(self) -> RunFolder:
        """The run folder's file names."""
        return RunFolder(self.run_dir)

    def stage_dir(self, stage: str) -> Path:
        """``run_dir/<stage>``."""
        return self.folder.stage(stage)

    def metrics_path(self, stage: str) -> Path:
        """Where ``stage`` writes its per-epoch metrics."""
        return self.folder.stage_metrics(stage)

    def normal_train_rows(self) -> list[int]:
        """Train rows with semi-label ≠ −1 (unlabelled + known normal): the "normal" data of k-means and kNN."""
        semi = self.banks["train"].semi_labels
        rows = (semi != -1).nonzero().flatten().tolist()
        if not rows:
            raise DataError("the train split has no unlabelled or known-normal image; check the split manifest")
        return rows

    def trainer_kwargs(self, stage: str) -> dict[str, Any]:
        """Keyword arguments of ``lightning.Trainer`` for ``stage`` (without callbacks/loggers)."""
        t = self.config.trainer
        kwargs: dict[str, Any] = {
            "accelerator": t.accelerator,
            "devices": t.devices,
            "strategy": t.strategy,
            "precision": t.precision,
            "num_nodes": t.num_nodes,
            "log_every_n_steps": t.log_every_n_steps,
            "deterministic": self.config.deterministic,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            "limit_val_batches": 0,
            "default_root_dir": str(self.stage_dir(stage)),
        }
        kwargs.update(self.trainer_overrides)
        return kwargs

    def fit(self, stage: str, module: Any, loader: Any, epochs: int) -> Any:
        """Train ``module`` on ``loader`` for ``epochs`` epochs, resuming from the stage's last checkpoint.

        Returns the Trainer. Ctrl-C leaves the last finished epoch's checkpoint and raises
        KeyboardInterrupt (Lightning itself would call ``sys.exit(1)``).
        """
        import lightning as L
        from lightning.pytorch.callbacks import ModelCheckpoint
        from lightning.pytorch.loggers import CSVLogger

        stage_dir = self.stage_dir(stage)
        ckpt_dir = self.folder.checkpoints(stage)
        checkpoint = ModelCheckpoint(
            dirpath=str(ckpt_dir),
            filename="epoch{epoch:03d}",
            auto_insert_metric_name=False,
            every_n_epochs=1,
            save_top_k=1,
            save_last="link",
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )
        loggers: list[Any] = [CSVLogger(str(stage_dir), name="logs", version=0)]
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(str(stage_dir), name="tensorboard", version=0))
        except ModuleNotFoundError:  # tensorboard is optional
            pass
        kwargs = self.trainer_kwargs(stage)
        kwargs.setdefault("max_epochs", epochs)
        extra_callbacks = list(kwargs.pop("callbacks", []))
        from xrad.training.callbacks import StageProgress, quiet_lightning

        if self.progress:
            extra_callbacks.append(StageProgress(stage))
        # Lightning warns when an epoch has fewer batches than the logging interval: log at least once an epoch.
        kwargs["log_every_n_steps"] = max(1, min(int(kwargs.get("log_every_n_steps", 10)), len(loader)))
        last = ckpt_dir / "last.ckpt"
        ckpt_path = str(last) if last.exists() else None
        # torch checkpoints are zip archives whose index sits at the end: a file cut short by a crash or a
        # full disk fails this test at once, instead of deep inside Lightning with a zip-reader traceback.
        if ckpt_path is not None and not zipfile.is_zipfile(last):
            raise DataError(
                f"{last}: the {stage} stage's resume checkpoint is damaged (cut short?); delete "
                f"{ckpt_dir} to restart the {stage} stage from its first epoch"
            )
        with quiet_lightning():
            trainer = L.Trainer(callbacks=[*extra_callbacks, checkpoint], logger=loggers, **kwargs)
            # Lightning keeps the mode modules arrive in; a transferred encoder may be in eval mode.
            module.train()
            try:
                trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
            except SystemExit:
                if trainer.interrupted:  # Lightning turned Ctrl-C into sys.exit(1): an interruption
                    raise KeyboardInterrupt from None
                raise
            finally:
                # Lightning ignores further Ctrl-C during its shutdown; give the handler back.
                if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
                    try:
                        signal.signal(signal.SIGINT, signal.default_int_handler)
                    except ValueError:  # not the main thread
                        pass
        if trainer.interrupted:
            raise KeyboardInterrupt
        self.global_rank = trainer.global_rank
        self.device = module.device
        return trainer
