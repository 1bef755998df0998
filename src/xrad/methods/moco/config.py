"""The ``moco`` config section (Lightning-free: the registry reads it without the training stack)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xrad.config.sections import Check


@dataclass
class MocoConfig:
    """MoCo v2 pre-training of the encoder (the paper's "He et al. [32]" row; MoCo v2's defaults).

    The query encoder is trained with InfoNCE between the query q of one view and the key k of the other view
    (from the momentum encoder), against the ``queue_size`` most recent keys as negatives, at ``temperature``.
    After every step the key encoder follows θ_k ← ``momentum``·θ_k + (1 − ``momentum``)·θ_q. Schedule and
    augmentation are the ``pretrain`` section's (its SimCLR-style views are MoCo v2's augmentation).
    """

    queue_size: int = 65_536
    momentum: float = 0.999
    temperature: float = 0.2

    def checks(self) -> Iterable[Check]:
        return [
            ("queue_size", self.queue_size >= 1, f"must be ≥ 1, got {self.queue_size}"),
            ("momentum", 0.0 <= self.momentum <= 1.0, f"must be in [0, 1], got {self.momentum}"),
            ("temperature", self.temperature > 0, f"must be > 0, got {self.temperature}"),
        ]
