"""k-nearest-neighbour distance scoring (the kNN-100 ablation), chunked so memory stays bounded."""

from __future__ import annotations

import torch
from torch import Tensor

from xrad.errors import ConfigError
from xrad.losses import check_query_bank

__all__ = ["greedy_coreset", "knn_mean_distance", "nearest_distance"]


def knn_mean_distance(queries: Tensor, memory: Tensor, k: int = 100, chunk_size: int = 1024) -> Tensor:
    """Mean Euclidean distance of each query (Q, D) to its k nearest rows of ``memory`` (M, D); returns (Q,).

    Exhaustive (exact) search; k is capped at M. Queries are processed ``chunk_size`` at a time, so peak
    memory is O(chunk_size × M). Distances use the Gram expansion (BLAS speed) after centring both sets on the
    memory mean, which removes most of the ||q||² + ||m||² − 2q·m cancellation error; computed in float32
    or better. Differentiable in ``queries`` (Grad-CAM heatmaps of the kNN detector need it); scoring calls it
    under ``torch.no_grad``, so no graph is kept there.
    """
    if k < 1 or chunk_size < 1:
        raise ConfigError(f"k and chunk_size must be >= 1 (got k={k}, chunk_size={chunk_size})")
    check_query_bank(queries, memory, "the kNN memory bank", "the embeddings of the normal training images")
    dtype = torch.promote_types(torch.promote_types(queries.dtype, memory.dtype), torch.float32)
    mem = memory.detach().to(dtype)
    shift = mem.mean(dim=0, keepdim=True)
    mem = mem - shift
    mem_sq = mem.pow(2).sum(dim=1)
    k = min(int(k), mem.shape[0])
    out = []
    for start in range(0, queries.shape[0], chunk_size):
        q = queries[start : start + chunk_size].to(device=mem.device, dtype=dtype) - shift
        d2 = q.pow(2).sum(dim=1, keepdim=True) + mem_sq[None, :] - 2.0 * (q @ mem.T)
        nearest = torch.topk(d2, k, dim=1, largest=False, sorted=False).values
        out.append(nearest.clamp_min(0).sqrt().mean(dim=1))
    if not out:
        return torch.zeros(0, dtype=dtype, device=mem.device)
    return torch.cat(out)


def nearest_distance(queries: Tensor, memory: Tensor, query_chunk: int = 2048, memory_chunk: int = 65_536) -> Tensor:
    """Euclidean distance of each query (Q, D) to its nearest row of ``memory`` (M, D); returns (Q,).

    Exact. Both sets are walked in chunks and a running minimum is kept, so peak memory is
    O(query_chunk × memory_chunk) whatever M is: a PatchCore bank of millions of patch vectors is scored in a
    bounded footprint (``benchmarks/bench_patch_memory.py``). Same centring and Gram expansion as
    :func:`knn_mean_distance`.
    """
    check_query_bank(queries, memory, "the patch memory bank", "the patch features of the normal training images")
    dtype = torch.promote_types(torch.promote_types(queries.dtype, memory.dtype), torch.float32)
    shift = memory[: min(len(memory), 65_536)].to(dtype).mean(dim=0, keepdim=True)
    out = []
    for start in range(0, queries.shape[0], query_chunk):
        q = queries[start : start + query_chunk].to(device=memory.device, dtype=dtype) - shift
        q_sq = q.pow(2).sum(dim=1, keepdim=True)
        best = torch.full((q.shape[0],), float("inf"), dtype=dtype, device=q.device)
        for m_start in range(0, memory.shape[0], memory_chunk):
            m = memory[m_start : m_start + memory_chunk].to(dtype) - shift
            # In place: one (query_chunk × memory_chunk) matrix at a time, not three temporaries.
            d2 = (q @ m.T).mul_(-2.0).add_(q_sq).add_(m.pow(2).sum(dim=1)[None, :])
            best = torch.minimum(best, d2.amin(dim=1))
        out.append(best.clamp_min(0).sqrt())
    if not out:
        return torch.zeros(0, dtype=dtype, device=memory.device)
    return torch.cat(out)


def greedy_coreset(features: Tensor, n: int, seed: int = 0, projection_dim: int = 128) -> Tensor:
    """Indices of ``n`` rows chosen by greedy k-centre selection (PatchCore's coreset), in selection order.

    Each step adds the row farthest from those already chosen, so the subset covers the feature space with the
    smallest worst-case gap; distances are computed in a seeded random projection to ``projection_dim``
    dimensions (Johnson–Lindenstrauss), as PatchCore does, which keeps the O(n · N) selection fast. The first
    row is drawn with ``seed``. ``n`` ≥ N returns every row.
    """
    total = features.shape[0]
    if n >= total:
        return torch.arange(total)
    if n < 1:
        raise ConfigError(f"coreset size must be ≥ 1, got {n}")
    generator = torch.Generator().manual_seed(seed)
    x = features.float()
    if x.shape[1] > projection_dim:
        projection = torch.randn(x.shape[1], projection_dim, generator=generator) / projection_dim**0.5
        x = x @ projection
    chosen = torch.empty(n, dtype=torch.long)
    chosen[0] = int(torch.randint(total, (1,), generator=generator))
    gap = (x - x[chosen[0]]).pow(2).sum(dim=1)
    for i in range(1, n):
        chosen[i] = int(torch.argmax(gap))
        gap = torch.minimum(gap, (x - x[chosen[i]]).pow(2).sum(dim=1))
    return chosen
