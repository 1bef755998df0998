"""The ``joint`` config section (Lightning-free: the registry reads it without the training stack)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xrad.config.sections import Check


@dataclass
class JointConfig:
    """How joint Deep SAD balances its two terms (reference-spec §8.3).

    Loss = ``rec_weight``·s_rec·L_rec + (1 − ``rec_weight``)·s_sad·L_SAD, with L_rec the masked MSE of the
    autoencoder and L_SAD the (multi-sphere) Deep SAD term on z. With ``normalise_scales`` the scales s are
    1 / mean of each term over the normal training images at the start of the stage (the authors' way of
    putting the two on one footing; computed once, in eval mode, and kept in the checkpoint), else 1.
    Known anomalies take no part in L_rec (``exclude_known_abnormal``), as the authors did: the autoencoder
    should not learn to reconstruct them. The schedule, spheres and pruning are the ``finetune`` section's.
    """

    rec_weight: float = 0.6
    normalise_scales: bool = True
    exclude_known_abnormal: bool = True

    def checks(self) -> Iterable[Check]:
        return [("rec_weight", 0.0 <= self.rec_weight <= 1.0, f"must be in [0, 1], got {self.rec_weight}")]
