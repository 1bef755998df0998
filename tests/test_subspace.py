"""Subspace Deep SAD: the projection and score against NumPy transcriptions of reference-spec §8.4."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xrad.errors import ConfigError, DataError
from xrad.evaluation.metrics import auroc
from xrad.methods.subspace.projection import subspace_distance, subspace_projection


def np_projection_authors(s: np.ndarray, lam: float) -> np.ndarray:
    """The authors' N×N form: P = S (SᵀS + λI_N)⁻¹ Sᵀ, S (d, N)."""
    return s @ np.linalg.inv(s.T @ s + lam * np.eye(s.shape[1])) @ s.T


def np_projection_dxd(s: np.ndarray, lam: float) -> np.ndarray:
    """The d×d form of the issue: P = S Sᵀ (S Sᵀ + λI_d)⁻¹."""
    g = s @ s.T
    return g @ np.linalg.inv(g + lam * np.eye(s.shape[0]))


@pytest.mark.parametrize(("n", "d", "lam"), [(7, 12, 1e-3), (40, 6, 0.5), (12, 12, 2.0)])
def test_projection_equals_numpy_in_both_forms(n: int, d: int, lam: float) -> None:
    rng = np.random.default_rng(n * d)
    emb = rng.normal(size=(n, d))
    p = subspace_projection(torch.from_numpy(emb), lam).numpy()
    np.testing.assert_allclose(p, np_projection_dxd(emb.T, lam), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(p, np_projection_authors(emb.T, lam), rtol=1e-7, atol=1e-9)


def test_relative_lam_is_lam_times_the_mean_eigenvalue_and_ignores_the_feature_scale() -> None:
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(50, 6)) * np.array([5.0, 2.0, 1.0, 0.5, 0.1, 0.01])
    mean_eigenvalue = np.trace(emb.T @ emb) / 6
    p = subspace_projection(torch.from_numpy(emb), 0.3, relative=True).numpy()
    np.testing.assert_allclose(p, np_projection_dxd(emb.T, 0.3 * mean_eigenvalue), rtol=1e-9, atol=1e-12)
    scaled = subspace_projection(torch.from_numpy(1000.0 * emb), 0.3, relative=True).numpy()
    np.testing.assert_allclose(scaled, p, rtol=1e-8, atol=1e-12)  # an absolute λ would drift towards P = I
    absolute = subspace_projection(torch.from_numpy(1000.0 * emb), 0.3).numpy()
    assert np.abs(absolute - np.eye(6)).max() < np.abs(p - np.eye(6)).max()
    with pytest.raises(DataError):
        subspace_projection(torch.zeros(4, 3), 1.0, relative=True)


def test_distance_equals_numpy_residual() -> None:
    rng = np.random.default_rng(3)
    emb, e = rng.normal(size=(9, 5)), rng.normal(size=(4, 5))
    p = np_projection_dxd(emb.T, 0.1)
    want = np.array([np.sum((x - p @ x) ** 2) for x in e])
    got = subspace_distance(torch.from_numpy(e), torch.from_numpy(p)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # e − P e = λ (S Sᵀ + λI)⁻¹ e: the ridge-whitened residual of the spec.
    ridge = 0.1 * np.linalg.solve(emb.T @ emb + 0.1 * np.eye(5), e.T).T
    np.testing.assert_allclose(got, (ridge**2).sum(axis=1), rtol=1e-9)


def test_points_in_the_span_score_near_zero_and_off_span_points_do_not() -> None:
    """N < d: the normal embeddings span a 3-d subspace of R^16; anomalies leave it."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(16, 3)))[0]
    normal = rng.normal(size=(10, 3)) @ basis.T
    p = subspace_projection(torch.from_numpy(normal), 1e-6)
    test_normal = torch.from_numpy(rng.normal(size=(50, 3)) @ basis.T)
    test_abnormal = test_normal + 0.3 * torch.from_numpy(rng.normal(size=(50, 16)))
    scores = torch.cat([subspace_distance(test_normal, p), subspace_distance(test_abnormal, p)]).numpy()
    assert scores[:50].max() < 1e-6
    assert auroc(np.r_[np.zeros(50), np.ones(50)], scores) == 1.0


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="lam"):
        subspace_projection(torch.ones(3, 2), 0.0)
    with pytest.raises(DataError, match="normal training embeddings"):
        subspace_projection(torch.zeros(0, 4), 1e-3)


def test_the_subspace_of_a_patch_classifiers_backbone_is_refused_at_image_level() -> None:
    """A patch classifier has no head to give h or z: subspace_synthetic accepts only ``subspace.level: patch``,
    and says so when the config is read, before any training."""
    from xrad.methods.registry import load_config

    assert load_config("subspace_synthetic_cpu").section("subspace").level == "patch"
    with pytest.raises(ConfigError, match="subspace.level"):
        load_config("subspace_synthetic_cpu", ["subspace.level=image"])


def test_subspace_synthetic_freezes_the_projection_of_the_patch_classifiers_own_cells(tmp_path) -> None:
    """The artefact's backbone is the trained patch classifier's (stage pretrain), and its projection equals
    P rebuilt here from that backbone's body cells of the normal train images with the relative λ."""
    import pandas as pd
    from training_helpers import make_dataset

    from xrad.data.model_input import prepare_eval
    from xrad.inference.artefact import load_artefact
    from xrad.jobs.train import run_training
    from xrad.methods.stage_io import MODEL_FILE, load_tensors
    from xrad.models.patch import cell_mask, cell_vectors, patch_features
    from xrad.models.resnet import ResNet18Backbone
    from xrad.training.banks import load_image_bank

    manifest = make_dataset(tmp_path / "data")
    run_training("tiny_subspace_synthetic", manifest, tmp_path / "run", progress=False)
    classifier = load_tensors(tmp_path / "run" / "pretrain" / MODEL_FILE)
    tensors, _ = load_artefact(tmp_path / "run" / "artefact")
    weights = {k[9:]: v for k, v in tensors.items() if k.startswith("backbone.")}
    assert weights and all(torch.equal(v, classifier[f"backbone.{k}"]) for k, v in weights.items())

    backbone = ResNet18Backbone(in_channels=1)
    backbone.load_state_dict(weights)
    frame = pd.read_csv(manifest)
    normal = frame[(frame["split"] == "train") & (frame["semi_label"] != -1)].reset_index(drop=True)
    bank = load_image_bank(normal, 32, workers=1, progress=False)
    with torch.no_grad():
        x = prepare_eval(bank.images, bank.masks)
        maps = patch_features(backbone.eval(), x)
        cells = cell_vectors(maps)[cell_mask(x, maps.shape[-1]).flatten()]
    np.testing.assert_allclose(
        tensors["projection"].numpy(), subspace_projection(cells, 1.0, relative=True).numpy(), atol=1e-6
    )
