"""What the image and the patch forms of multi-sphere Deep SAD share: the sphere state and its pruning.

Centres, the active-sphere mask and an "initialised" flag are buffers, so checkpoints carry them and a resumed
run continues with the same spheres. Normal samples (or cells) per centre are counted during each epoch and
summed over DDP ranks before pruning (Algorithm 1, line 16), so every rank prunes the same spheres.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from xrad.config import Config
from xrad.evaluation.metrics import auroc
from xrad.losses import nearest_center
from xrad.methods.multisphere.centres import kmeans_centers, mean_center, prune_mask, sphere_counts
from xrad.training.context import RunContext
from xrad.training.module import StageModule


class SphereModule(StageModule):
    """A stage module owning ``finetune.n_spheres`` centres in the last head dimension's space."""

    # Buffers (registered in __init__), so checkpoints carry them.
    centers: Tensor  # (K, D)
    active: Tensor  # (K,) bool
    initialised: Tensor  # () bool

    def __init__(self, config: Config, metrics_path: Path | None, ctx: RunContext) -> None:
        super().__init__(config, config.finetune, metrics_path)
        self.ctx = ctx
        k, dim = config.finetune.n_spheres, config.model.head_dims[-1]
        self.register_buffer("centers", torch.zeros(k, dim))
        self.register_buffer("active", torch.ones(k, dtype=torch.bool))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        # Not a buffer: DDP re-broadcasts buffers from rank 0 at every forward, which would erase the
        # other ranks' counts. Reset at each epoch start, so checkpoints (taken at epoch ends) need none.
        self._counts = torch.zeros(k, dtype=torch.long)

    def init_centers(self) -> None:
        """Place the centres (each form from its own normal embeddings); called once, before training."""
        raise NotImplementedError

    @torch.no_grad()
    def init_centers_from(self, embed: Callable[[Tensor], Tensor]) -> None:
        """Centres from ``embed`` (prepared images → z) of the deterministic normal train images; rank 0
        computes, everyone receives the same centres."""
        centers = torch.zeros_like(self.centers)
        n_found = torch.zeros((), dtype=torch.long)
        trainer = self._trainer  # None when called outside fit (finetune.epochs = 0)
        if trainer is None or trainer.is_global_zero:
            bank = self.ctx.banks["train"]
            idx = torch.tensor(self.ctx.normal_train_rows())
            z = self.eval_outputs(bank.images[idx], bank.masks[idx], embed, self.config.data.eval_batch_size).numpy()
            found = self.find_centers(z)
            centers[: len(found)] = torch.from_numpy(found).to(centers)
            n_found = torch.tensor(len(found))
        if trainer is not None and trainer.world_size > 1:
            centers = trainer.strategy.broadcast(centers.cpu(), src=0).to(self.device)
            n_found = trainer.strategy.broadcast(n_found, src=0)
        self.set_centers(centers, int(n_found))

    def find_centers(self, z: np.ndarray) -> np.ndarray:
        """k-means centres of normal embeddings ``z`` (N, D), or their mean for one sphere."""
        fin = self.section
        if fin.n_spheres == 1:
            return mean_center(z, min_abs=fin.center_min_abs)
        return kmeans_centers(z, fin.n_spheres, seed=self.config.seed, min_abs=fin.center_min_abs)

    def set_centers(self, centers: Tensor, n_found: int) -> None:
        """Store the first ``n_found`` rows of ``centers`` (K, D) as the active spheres."""
        self.centers.copy_(centers)
        self.active.copy_(torch.arange(len(self.active), device=self.active.device) < n_found)
        self.initialised.fill_(True)

    def on_fit_start(self) -> None:
        if not bool(self.initialised):
            self.init_centers()

    def active_centers(self) -> tuple[Tensor, Tensor]:
        """(indices of the surviving centres, their coordinates)."""
        index = self.active.nonzero().flatten()
        return index, self.centers[index]

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._counts = torch.zeros(len(self.active), dtype=torch.long)

    @torch.no_grad()
    def count_normals(self, z: Tensor, index: Tensor, centers: Tensor) -> None:
        """Add normal embeddings ``z`` (N, D) to the per-centre counts of this epoch."""
        _, nearest = nearest_center(z.detach(), centers)
        # bincount on the CPU: CUDA's bincount refuses to run under deterministic mode.
        self._counts += sphere_counts(index[nearest].cpu(), len(self.active))

    def prune_and_validate(self, score: Callable[[Tensor], Tensor]) -> dict[str, float]:
        """Prune (after the warm-up), then validation AUROC of ``score`` with the surviving spheres."""
        counts = self.trainer.strategy.reduce(self._counts.to(self.device), reduce_op="sum")
        if self.current_epoch >= self.section.prune_warmup:
            index, _ = self.active_centers()
            keep = prune_mask(counts[index], self.section.gamma)
            self.active[index[~keep.to(index.device)]] = False
        metrics = {"n_spheres": float(self.active.sum())}
        valid = self.ctx.banks.get("valid")
        if valid is not None and len(valid) and self.trainer.is_global_zero:
            scores = self.eval_outputs(valid.images, valid.masks, score, self.config.data.eval_batch_size)
            metrics["valid_auroc"] = auroc(valid.labels.numpy(), scores.numpy())
        return metrics
