"""Re-estimating BatchNorm running statistics for the current weights (no training framework needed)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["recalibrate_batchnorm"]


@torch.no_grad()
def recalibrate_batchnorm(
    module: nn.Module, batches: Iterable[Tensor], forward: Callable[[Tensor], Any] | None = None
) -> None:
    """Reset every tracked BatchNorm of ``module`` and re-estimate its running statistics as the cumulative
    average over ``batches`` (passed through ``forward``, default ``module``, in train mode).

    Running averages lag behind the weights when these move fast (few batches per epoch), and eval-mode
    outputs then disagree with train-mode ones — on small data badly enough to invert a ranking. No weight
    and no train-mode output changes. Momenta and the train/eval mode are restored afterwards. Every batch
    needs at least two samples (BatchNorm in train mode).
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    was_training = module.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over this pass
    module.train()
    try:
        for x in batches:
            (forward or module)(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        module.train(was_training)
