"""The ``synthetic`` config section (Lightning-free: the registry reads it without the training stack)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from xrad.config.sections import CORRUPTION_KINDS, ADAugment, Check, Config, milestone_checks

SCORES = ("max", "top_k", "knn", "gaussian", "gaussian_image")


def _augment() -> ADAugment:
    # Pose and size vary; vertical flips and brightness do not help a local detector (measured on phantoms).
    return ADAugment(hflip=0.5, vflip=0.0, brightness=(1.0, 1.0), scale=(0.9, 1.1), rotation_deg=15.0)


@dataclass
class SyntheticConfig:
    """Training and scoring of the synthetic-anomaly patch classifier.

    Each batch holds ``batch_size`` augmented normal training images (semi-label ≠ −1) and the same images
    with one corruption of ``kinds`` each; a feature-map cell (8×8 input pixels) is a positive when more than
    ``cell_fraction`` of it was changed. Loss: binary cross-entropy per cell, positives weighted ``pos_weight``
    (they are rare); with ``balance_positives`` each corrupted image's positives are rescaled to the same
    total weight, so small defects (a gap, a screw) are not outweighed by large ones (a plate, a shifted
    bone). Score: the largest cell probability inside the body (``max``), or the mean of the
    ``top_k`` largest (``top_k``), or — ``knn``, PatchCore on the trained features — the mean of the ``top_k``
    largest distances of the cells to a memory bank of normal training cells (``memory_size`` of them, chosen
    by greedy coreset selection; features averaged over ``smooth``×``smooth`` cells), or — ``gaussian`` — the
    mean of the ``top_k`` largest Mahalanobis distances of the cells to a Gaussian of the normal training
    cells, or — ``gaussian_image`` — the distance of the body-averaged feature to a Gaussian of the normal
    images' (both Gaussians shrunk by ``gaussian_shrinkage`` × the mean variance; AnatPaste's density
    score, :mod:`xrad.methods.synthetic.gaussian`). ``schedule: onecycle``
    (warm-up then annealing) trains best from scratch.
    """

    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-5
    schedule: str = "onecycle"
    milestones: list[float] = field(default_factory=lambda: [0.7, 0.9])  # for schedule: step
    lr_gamma: float = 0.1
    kinds: list[str] = field(default_factory=lambda: ["bright_bar", "screws", "gap_across_bone", "step_across_bone"])
    pos_weight: float = 5.0
    balance_positives: bool = False
    cell_fraction: float = 0.05
    head_channels: int = 128
    score: str = "max"
    top_k: int = 4
    memory_size: int = 10_000
    smooth: int = 1
    gaussian_shrinkage: float = 0.01
    augment: ADAugment = field(default_factory=_augment)

    def checks(self) -> Iterable[Check]:
        unknown = sorted(set(self.kinds) - set(CORRUPTION_KINDS))
        return [
            ("epochs", self.epochs >= 0, "must be ≥ 0"),
            ("batch_size", self.batch_size >= 2, "must be ≥ 2 (BatchNorm)"),
            ("lr", self.lr > 0, "must be > 0"),
            ("weight_decay", self.weight_decay >= 0, "must be ≥ 0"),
            ("schedule", self.schedule in ("onecycle", "step"), f"must be onecycle or step, got {self.schedule!r}"),
            ("lr_gamma", self.lr_gamma > 0, "must be > 0"),
            (
                "kinds",
                bool(self.kinds) and not unknown,
                f"must list corruption kinds of {CORRUPTION_KINDS} (unknown: {unknown})",
            ),
            ("pos_weight", self.pos_weight > 0, "must be > 0"),
            ("cell_fraction", 0 < self.cell_fraction < 1, "must be in (0, 1)"),
            ("head_channels", self.head_channels >= 1, "must be ≥ 1"),
            ("score", self.score in SCORES, f"must be one of {SCORES}, got {self.score!r}"),
            ("top_k", self.top_k >= 1, "must be ≥ 1"),
            ("memory_size", self.memory_size >= 1, "must be ≥ 1"),
            ("smooth", self.smooth >= 1 and self.smooth % 2 == 1, "must be an odd number ≥ 1"),
            ("gaussian_shrinkage", self.gaussian_shrinkage > 0, "must be > 0 (the image-level covariance is singular)"),
            *milestone_checks(self.milestones),
        ]


def image_size_checks(config: Config) -> Iterable[Check]:
    """Cells are 8×8 input pixels: the network input must be a multiple of 8."""
    return [
        (
            "data.image_size",
            config.data.image_size % 8 == 0,
            f"{config.data.image_size} must be a multiple of 8 for the synthetic detector's cells",
        )
    ]
