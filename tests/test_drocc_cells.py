"""DROCC on feature vectors (``drocc_synthetic``'s stage 2): the annulus scale against NumPy, determinism, and
the one-class MLP ranking off-manifold points above held-out normals."""

from __future__ import annotations

import numpy as np
import torch

from xrad.evaluation.metrics import auroc
from xrad.methods.drocc.cells import fit_cell_classifier, median_nearest_distance
from xrad.methods.drocc.config import DroccCellsConfig
from xrad.methods.registry import load_config


def manifold(n: int, seed: int, off: float) -> torch.Tensor:
    """(n, 16) points near a 2-d plane of R^16 (the same plane for every seed), ``off`` = the s.d. of the
    isotropic noise that moves them off it."""
    basis = np.linalg.qr(np.random.default_rng(0).normal(size=(16, 2)))[0].T  # (2, 16)
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, 2)) @ basis * 3.0 + rng.normal(size=(n, 16)) * off
    return torch.tensor(points, dtype=torch.float32)


def test_the_annulus_scale_is_the_median_distance_to_the_nearest_other_vector() -> None:
    x = manifold(300, seed=1, off=0.1)
    d = np.linalg.norm(x.numpy()[:, None] - x.numpy()[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert np.isclose(median_nearest_distance(x, seed=0, queries=1000), np.median(d.min(axis=1)), rtol=1e-5)


def test_drocc_on_vectors_ranks_points_off_the_normal_manifold_above_held_out_normals() -> None:
    section = DroccCellsConfig(epochs=30, batch_size=128, hidden=64)
    fit = fit_cell_classifier(manifold(2000, seed=1, off=0.05), section, seed=0)
    normals, outliers = manifold(200, seed=2, off=0.05), manifold(200, seed=3, off=1.0)
    with torch.no_grad():
        logits = fit.head((torch.cat([normals, outliers]) - fit.mean) / fit.std)[:, 0]
    labels = np.r_[np.zeros(200), np.ones(200)]
    assert auroc(labels, (-logits).numpy()) >= 0.95
    assert fit.losses[-1] < fit.losses[0]  # it learnt something


def test_drocc_on_vectors_is_deterministic_for_a_seed_and_depends_on_it() -> None:
    section = DroccCellsConfig(epochs=2, batch_size=64, hidden=16)
    x = manifold(300, seed=1, off=0.05)
    a, b, c = (fit_cell_classifier(x, section, seed=s) for s in (0, 0, 1))
    for key, value in a.head.state_dict().items():
        assert torch.equal(value, b.head.state_dict()[key])
    assert not torch.equal(a.head[0].weight, c.head[0].weight)
    assert a.radius == b.radius > 0


def test_the_cpu_config_is_drocc_on_the_synthetic_detectors_cells() -> None:
    config = load_config("drocc_synthetic_cpu")
    assert config.section("drocc_cells").radius == 1.0 and config.section("synthetic").epochs == 32
