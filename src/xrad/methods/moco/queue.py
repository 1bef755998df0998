"""MoCo's moving parts as pure functions (checked against their formulas in tests/test_moco.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from xrad.errors import ConfigError


def momentum_update(key: Tensor, query: Tensor, momentum: float) -> Tensor:
    """θ_k ← m·θ_k + (1 − m)·θ_q (MoCo Eq. 2), returned as a new tensor."""
    if not 0.0 <= momentum <= 1.0:
        raise ConfigError(f"MoCo momentum must be in [0, 1] (got {momentum})")
    return momentum * key + (1.0 - momentum) * query.detach().to(key.dtype)


def enqueue(queue: Tensor, pointer: int, keys: Tensor) -> tuple[Tensor, int]:
    """Write ``keys`` (B, D) into the ring buffer ``queue`` (K, D) from row ``pointer`` on, wrapping around,
    so the oldest keys are replaced first; returns (new queue, new pointer). The result is that of writing
    the keys one after the other (with B > K the first B − K are overwritten within the batch)."""
    size, n = queue.shape[0], keys.shape[0]
    skip = max(0, n - size)  # keys that a sequential write would overwrite before the batch ends
    rows = (pointer + skip + torch.arange(n - skip, device=queue.device)) % size
    out = queue.clone()
    out[rows] = keys.detach().to(queue.dtype)[skip:]
    return out, int((pointer + n) % size)


def moco_info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.2) -> Tensor:
    """MoCo's InfoNCE: mean over the batch of −log softmax([q·k, q·queueᵀ] / τ)[0], on L2-normalised q, k and
    queue rows (k and the queue carry no gradient)."""
    if temperature <= 0:
        raise ConfigError(f"MoCo temperature must be > 0 (got {temperature})")
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.detach().float(), dim=1)
    negatives = F.normalize(queue.detach().float(), dim=1)
    logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ negatives.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
