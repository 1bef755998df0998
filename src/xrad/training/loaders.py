"""Loaders over in-memory image banks whose order is a pure function of (seed, epoch).

The loader yields uint8 batches only; augmentation runs inside the training step (seeded from
(seed, epoch, batch)), so a run resumed at an epoch boundary replays exactly the batches and
augmentations of an uninterrupted one. Under DDP, Lightning wraps :class:`EpochSampler` in its
``DistributedSamplerWrapper``, which forwards ``set_epoch`` and gives each rank a disjoint share.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from xrad.errors import DataError
from xrad.training.banks import BankDataset, ImageBank, seed_worker


class EpochSampler(Sampler[int]):
    """A permutation of ``range(n)`` drawn from a generator seeded with (seed, epoch); Lightning calls
    :meth:`set_epoch` at the start of every epoch (also after a resume)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = int(n), int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


def train_loader(
    bank: ImageBank, indices: list[int], batch_size: int, seed: int, workers: int = 0, where: str = "train split"
) -> DataLoader[dict[str, Tensor]]:
    """A shuffled training loader over ``bank[indices]`` (incomplete last batches dropped: BatchNorm and
    InfoNCE need more than one sample)."""
    if len(indices) < batch_size:
        raise DataError(
            f"{where}: {len(indices)} images, fewer than the batch size {batch_size}; "
            "lower the batch size (--set pretrain.batch_size=... / finetune.batch_size=...) or add images"
        )
    dataset = BankDataset(bank, indices)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed),
        drop_last=True,
        num_workers=workers,
        worker_init_fn=seed_worker if workers else None,
        persistent_workers=workers > 0,
    )


def split_indices(bank: ImageBank, split: str) -> list[int]:
    """Rows of ``bank`` belonging to ``split`` (train/valid/test)."""
    if "split" not in bank.frame.columns:
        raise DataError("manifest has no 'split' column; make one with `xrad split MANIFEST -o SPLIT_MANIFEST`")
    return [int(i) for i in (bank.frame["split"] == split).to_numpy().nonzero()[0]]
