"""The subspace projection and its score as pure functions (checked against NumPy in tests/test_subspace.py).

The authors (reference-spec §8.4) built P = S (SᵀS + λI_N)⁻¹ Sᵀ with an N×N inverse (N = 10,000). The d×d form
P = S Sᵀ (S Sᵀ + λI_d)⁻¹ is the same matrix (push-through identity) at the cost of a d×d solve. Note what it
scores: e − P e = λ (S Sᵀ + λI)⁻¹ e, a ridge-whitened residual — for N < d it is (up to λ) the component of e
outside the span of the normal embeddings; for N ≫ d it weighs the low-variance directions of the normal data.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xrad.errors import ConfigError, DataError


def subspace_projection(embeddings: Tensor, lam: float = 1e-3, relative: bool = False) -> Tensor:
    """P = S Sᵀ (S Sᵀ + λI)⁻¹ (d, d) float64 for S = ``embeddings``ᵀ, the (N, d) normal embeddings as columns.

    With ``relative`` λ is ``lam`` times the mean eigenvalue of S Sᵀ (trace / d), so it sits on the scale of
    the data's own variances whatever N and the feature scale: λ ≈ that scale makes e − P e weigh each
    principal direction by (λ / (σᵢ + λ))², a soft residual outside the main directions of the normal data,
    where an absolute 1e-3 with N ≫ d leaves P ≈ I (reference-spec §8.4, defect 12)."""
    if lam <= 0:
        raise ConfigError(f"subspace lam must be > 0 (got {lam})")
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise DataError(
            f"the subspace needs a non-empty (N, d) array of normal training embeddings (got {tuple(embeddings.shape)})"
        )
    s = embeddings.detach().double().T  # (d, N)
    gram = s @ s.T  # S Sᵀ, (d, d), symmetric positive semi-definite
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    if relative:
        lam = lam * float(torch.trace(gram)) / gram.shape[0]
        if lam <= 0:
            raise DataError("the normal training embeddings are all zero: a relative subspace lam has no scale")
    # P = G (G + λI)⁻¹; G and (G + λI)⁻¹ commute, so P = (G + λI)⁻¹ G: one solve, no explicit inverse.
    projection: Tensor = torch.linalg.solve(gram + lam * eye, gram)
    return projection


def subspace_distance(e: Tensor, projection: Tensor) -> Tensor:
    """‖e − P e‖² per row of ``e`` (B, d) for the (d, d) ``projection`` P; (B,) in e's float dtype (≥ float32)."""
    if e.ndim != 2 or projection.shape != (e.shape[1], e.shape[1]):
        raise ValueError(f"e {tuple(e.shape)} and P {tuple(projection.shape)} must be (B, d) and (d, d)")
    dtype = torch.promote_types(e.dtype, torch.float32)
    x = e.to(dtype)
    residual = x - x @ projection.to(device=x.device, dtype=dtype).T  # rows: (P e)ᵀ = eᵀ Pᵀ
    return residual.pow(2).sum(dim=1)
