"""SALAD's memory bank between rounds (torch only): the initial random unit vectors, the neighbourhood entropy
that picks the prototypical samples, and each prototypical sample's nearest bank entries.

The per-step update m_i ← normalise((1 − t)m_i + t·z_i) and the losses are pure functions of
:mod:`xrad.losses`. Everything here walks the bank in row chunks (O(chunk × N) memory) and breaks ties by the
lower index, so a round's choice is a deterministic function of the bank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_unit_bank", "bank_entropy", "prototypical_rows", "nearest_rows"]


def random_unit_bank(n: int, dim: int, seed: int) -> Tensor:
    """(n, dim) random unit vectors (directions uniform on the sphere), drawn from ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    return F.normalize(torch.randn(n, dim, generator=generator), dim=1)


def bank_entropy(memory: Tensor, temperature: float, chunk: int = 1024) -> Tensor:
    """H_i = −Σ_j p_ij log p_ij, p_i = softmax_j(m_iᵀm_j / τ) over the whole bank (self term included): (N,).

    A low entropy means m_i's probability mass sits on few entries — a tight neighbourhood."""
    out = []
    for start in range(0, memory.shape[0], chunk):
        log_p = torch.log_softmax(memory[start : start + chunk] @ memory.T / temperature, dim=1)
        out.append(-(log_p.exp() * log_p).sum(dim=1))
    return torch.cat(out) if out else memory.new_zeros(0)


def prototypical_rows(memory: Tensor, temperature: float, fraction: float, chunk: int = 1024) -> Tensor:
    """Bool (N,): the ``round(fraction·N)`` (at least 1) bank entries of lowest :func:`bank_entropy`."""
    n = memory.shape[0]
    count = min(n, max(1, round(fraction * n)))
    order = torch.sort(bank_entropy(memory, temperature, chunk), stable=True).indices
    chosen = torch.zeros(n, dtype=torch.bool, device=memory.device)
    chosen[order[:count]] = True
    return chosen


def nearest_rows(memory: Tensor, rows: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """(len(rows), k) indices of the k most cosine-similar bank entries to each ``rows`` entry, itself excluded,
    most similar first, ties by the lower index. k is capped at N − 1."""
    k = min(int(k), memory.shape[0] - 1)
    unit = F.normalize(memory, dim=1)
    out = []
    for start in range(0, rows.shape[0], chunk):
        block = rows[start : start + chunk]
        similarity = unit[block] @ unit.T
        similarity[torch.arange(block.shape[0]), block] = -float("inf")
        out.append(torch.sort(similarity, dim=1, descending=True, stable=True).indices[:, :k])
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long)
