"""The ``supervised`` config section (Lightning-free)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from xrad.config.sections import ADAugment, Check, milestone_checks


@dataclass
class SupervisedConfig:
    """Supervised ResNet-50 baseline: class-balanced BCE on the labelled train images (semi-label ≠ 0).

    No schedule is given in the paper; these are CPU-friendly defaults. ``pretrained``: optional local
    torchvision ResNet-50 state_dict to start from (None = random initialisation, as the paper's table).
    """

    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-6
    milestones: list[float] = field(default_factory=lambda: [0.7, 0.9])
    lr_gamma: float = 0.1
    pretrained: str | None = None
    augment: ADAugment = field(default_factory=ADAugment)

    def checks(self) -> Iterable[Check]:
        return [
            ("epochs", self.epochs >= 0, "must be ≥ 0"),
            ("batch_size", self.batch_size >= 2, "must be ≥ 2 (BatchNorm)"),
            ("lr", self.lr > 0, "must be > 0"),
            ("weight_decay", self.weight_decay >= 0, "must be ≥ 0"),
            ("lr_gamma", self.lr_gamma > 0, "must be > 0"),
            *milestone_checks(self.milestones),
        ]
