"""DROCC's adversarial search as pure functions: the annulus projection and one ascent step.

The authors' version (reference-spec §8.2) scaled h by clamp(‖h‖², γr, r)/‖h‖² — the squared norm, so the
result has norm clamp(‖h‖², …)/‖h‖, not in the annulus — with γ = 0.5 < 1. Here the projection is the
Euclidean one onto {h : r ≤ ‖h‖₂ ≤ γr}: rescale h to norm clamp(‖h‖, r, γr) (h itself when already inside).
"""

from __future__ import annotations

import torch
from torch import Tensor

from xrad.errors import ConfigError


def project_to_annulus(h: Tensor, radius: float, gamma: float) -> Tensor:
    """Per-sample projection of perturbations ``h`` (B, ...) onto radius ≤ ‖h_i‖₂ ≤ gamma·radius.

    A zero (or subnormal: its direction is lost to rounding) perturbation is sent to the constant direction.
    """
    if radius <= 0 or gamma < 1:
        raise ConfigError(f"the DROCC annulus needs radius > 0 and gamma ≥ 1 (got {radius}, {gamma})")
    flat = h.flatten(1)
    # Scale by the largest entry before the norm: squaring tiny entries (1e-160) underflows and would give
    # a wrong norm and direction; flat / peak has entries in [-1, 1], so its norm is exact to rounding.
    peak = flat.abs().amax(dim=1, keepdim=True)
    zero = peak < torch.finfo(flat.dtype).tiny
    unit = torch.where(zero, torch.ones_like(flat), flat / torch.where(zero, torch.ones_like(peak), peak))
    unit_norm = unit.norm(dim=1, keepdim=True)
    norm = torch.where(zero, torch.zeros_like(peak), peak * unit_norm)
    target = norm.clamp(radius, gamma * radius)
    projected: Tensor = (unit / unit_norm * target).reshape(h.shape)
    return projected


def normalised_ascent_step(h: Tensor, grad: Tensor, step_size: float) -> Tensor:
    """h + step·g/‖g‖ per sample (a zero gradient leaves the sample where it is)."""
    g = grad.flatten(1)
    g = g / g.norm(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)
    stepped: Tensor = h + step_size * g.reshape(h.shape)
    return stepped
