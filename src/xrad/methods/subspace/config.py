"""The ``subspace`` config section (Lightning-free: the registry reads it without the training stack)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xrad.config import Config
from xrad.config.sections import Check


@dataclass
class SubspaceConfig:
    """Distance to the subspace of the normal training embeddings (the paper's "joint subspace" row).

    With S the (d, N) matrix of the embeddings ``feature`` (h: 512-d backbone, z: 128-d head) of the training
    images with semi-label ≠ −1, P = S Sᵀ (S Sᵀ + λI)⁻¹ (the d×d form) and the score is ‖e − P e‖².
    ``lam`` is λ (the authors' 1e-3); with ``lam_relative: true`` it is ``lam`` times the mean eigenvalue of
    S Sᵀ (trace / d) instead, a scale that does not move with N or the feature scale. ``max_embeddings``
    caps N (the authors stopped at 10,000; 0 = all).

    ``level: patch`` (:mod:`xrad.methods.subspace.patch_scorer`): the vectors are the cells of the backbone's
    layer2+layer3 map (:func:`xrad.models.patch.patch_features`, 384-d; ``feature`` is then unused) — S holds
    a seeded sample of at most ``max_patches`` body cells of the normal training images — and an image scores
    the mean of its ``top_k`` largest cell residuals. λ is absolute: S Sᵀ grows with the number of vectors.
    """

    lam: float = 1e-3
    lam_relative: bool = False
    feature: str = "h"
    max_embeddings: int = 0
    level: str = "image"
    top_k: int = 3
    max_patches: int = 20_000

    def checks(self) -> Iterable[Check]:
        return [
            ("lam", self.lam > 0, f"must be > 0 (the ridge keeps S Sᵀ + λI invertible), got {self.lam}"),
            ("feature", self.feature in ("h", "z"), f"must be one of ('h', 'z'), got {self.feature!r}"),
            ("max_embeddings", self.max_embeddings >= 0, "must be ≥ 0 (0 = every normal training image)"),
            ("level", self.level in ("image", "patch"), f"must be image or patch, got {self.level!r}"),
            ("top_k", self.top_k >= 1, "must be ≥ 1"),
            ("max_patches", self.max_patches >= 1, "must be ≥ 1"),
        ]


def patch_level_checks(config: Config) -> Iterable[Check]:
    """After a stage that yields a backbone only (a patch classifier) the subspace is of cells: level patch."""
    level = config.section("subspace").level
    return [("subspace.level", level == "patch", f"must be patch after a patch classifier's backbone, got {level!r}")]
