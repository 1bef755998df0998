"""DROCC: the annulus projection (property test), the ascent step, the adversarial search end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xrad.errors import ConfigError
from xrad.methods.drocc.annulus import normalised_ascent_step, project_to_annulus
from xrad.methods.drocc.stage import DroccModule, new_classifier
from xrad.methods.registry import load_config


@settings(max_examples=200, deadline=None)
@given(
    radius=st.floats(1e-3, 1e3),
    gamma=st.floats(1.0, 10.0),
    scale=st.floats(0.0, 1e4),
    seed=st.integers(0, 2**31 - 1),
    dim=st.integers(1, 64),
)
def test_every_projected_point_lies_in_the_annulus(
    radius: float, gamma: float, scale: float, seed: int, dim: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(5, 1, dim, generator=g, dtype=torch.float64) * scale
    h[0] = 0.0  # a zero perturbation must land in the annulus too
    out = project_to_annulus(h, radius, gamma)
    norms = out.flatten(1).norm(dim=1)
    assert bool((norms >= radius * (1 - 1e-9)).all()) and bool((norms <= gamma * radius * (1 + 1e-9)).all())
    # Points already inside are left alone; the others keep their direction (the Euclidean projection).
    before = h.flatten(1).norm(dim=1)
    inside = (before >= radius) & (before <= gamma * radius)
    assert torch.allclose(out[inside], h[inside])
    peak = h.flatten(1).abs().amax(dim=1, keepdim=True)
    moved = (~inside) & (peak[:, 0] >= torch.finfo(h.dtype).tiny)  # subnormal: no direction to keep
    # The direction of h, computed without squaring tiny entries (1e-160² underflows): h / its largest entry.
    direction = h.flatten(1) / peak.clamp_min(torch.finfo(h.dtype).tiny)
    cos = (out.flatten(1) * direction).sum(1)[moved] / (norms[moved] * direction.norm(dim=1)[moved])
    assert torch.allclose(cos, torch.ones_like(cos))


def test_projection_matches_numpy_and_refuses_gamma_below_one() -> None:
    rng = np.random.default_rng(0)
    h = rng.normal(size=(6, 10)) * rng.uniform(0.1, 30, size=(6, 1))
    n = np.linalg.norm(h, axis=1, keepdims=True)
    want = h / n * np.clip(n, 2.0, 6.0)
    np.testing.assert_allclose(project_to_annulus(torch.from_numpy(h), 2.0, 3.0).numpy(), want, rtol=1e-12)
    with pytest.raises(ConfigError, match="gamma"):
        project_to_annulus(torch.from_numpy(h), 2.0, 0.5)  # the authors' γ = 0.5


def test_ascent_step_is_a_unit_gradient_step() -> None:
    h, g = torch.zeros(2, 3), torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(normalised_ascent_step(h, g, 0.5).numpy(), [[0.3, 0.4, 0.0], [0.0, 0.0, 0.0]])


def test_adversarial_negatives_stay_in_the_annulus_inside_the_body() -> None:
    cfg = load_config("tiny_drocc", ["drocc.ascent_num_steps=3", "drocc.ascent_step_size=5.0"])
    module = DroccModule(new_classifier(cfg), cfg, None, ctx=None)  # type: ignore[arg-type]
    x = torch.rand(4, 1, 32, 32)
    x[:, :, :, :8] = 0.0  # background (outside the body part)
    x_adv = module.adversarial_negatives(x, batch_idx=0)
    h = x_adv - x
    norms = h.flatten(1).norm(dim=1)
    d = cfg.section("drocc")
    assert bool((norms >= d.radius * (1 - 1e-5)).all()) and bool((norms <= d.gamma * d.radius * (1 + 1e-5)).all())
    assert float(h[:, :, :, :8].abs().max()) == 0.0
    # The search is seeded by (seed, epoch, batch): the same batch gives the same negatives.
    assert torch.equal(x_adv, module.adversarial_negatives(x, batch_idx=0))
