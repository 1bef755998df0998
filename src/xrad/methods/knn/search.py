"""k-nearest-neighbour distance scoring (the kNN-100 ablation), chunked so memory stays bounded."""

from __future__ import annotations

import torch
from torch import Tensor

from xrad.errors import ConfigError, DataError

__all__ = ["knn_mean_distance"]


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
    if memory.ndim != 2 or memory.shape[0] == 0:
        raise DataError(f"the kNN memory bank is empty or not (M, D) (shape {tuple(memory.shape)}); "
                        "it needs the embeddings of the normal training images")
    if queries.ndim != 2 or queries.shape[1] != memory.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)} and memory {tuple(memory.shape)} dimensions differ")
    dtype = torch.promote_types(torch.promote_types(queries.dtype, memory.dtype), torch.float32)
    mem = memory.detach().to(dtype)
    shift = mem.mean(dim=0, keepdim=True)
    mem = mem - shift
    mem_sq = mem.pow(2).sum(dim=1)
    k = min(int(k), mem.shape[0])
    out = []
    for start in range(0, queries.shape[0], chunk_size):
        q = queries[start:start + chunk_size].to(device=mem.device, dtype=dtype) - shift
        d2 = q.pow(2).sum(dim=1, keepdim=True) + mem_sq[None, :] - 2.0 * (q @ mem.T)
        nearest = torch.topk(d2, k, dim=1, largest=False, sorted=False).values
        out.append(nearest.clamp_min(0).sqrt().mean(dim=1))
    if not out:
        return torch.zeros(0, dtype=dtype, device=mem.device)
    return torch.cat(out)
