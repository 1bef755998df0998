"""The Gaussian density read-out of the synthetic detector (``synthetic.score: gaussian | gaussian_image``):
the shrunk Mahalanobis distance and the batched moments equal their NumPy transcriptions; the fitted
Gaussian is that of the normal training images' body cells; planted bright squares rank above normals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xrad.methods.synthetic.gaussian import MomentAccumulator, gaussian_precision, mahalanobis


def test_the_shrunk_mahalanobis_distance_equals_numpy() -> None:
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
    queries = rng.normal(size=(7, 6)) * 3
    mean, cov = normal.mean(axis=0), np.cov(normal, rowvar=False)
    shrinkage = 0.05
    precision_np = np.linalg.inv(cov + shrinkage * np.trace(cov) / 6 * np.eye(6))
    expected = np.sqrt(np.einsum("nc,cd,nd->n", queries - mean, precision_np, queries - mean))

    precision = gaussian_precision(torch.from_numpy(cov), shrinkage)
    np.testing.assert_allclose(precision.numpy(), precision_np, rtol=1e-10)
    got = mahalanobis(torch.from_numpy(queries), torch.from_numpy(mean), precision)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    # The mean itself is at distance 0; shrinkage only ever shortens distances (a larger Σ).
    assert float(mahalanobis(torch.from_numpy(mean[None]), torch.from_numpy(mean), precision)[0]) == 0.0
    shrunk_more = gaussian_precision(torch.from_numpy(cov), 1.0)
    looser = mahalanobis(torch.from_numpy(queries), torch.from_numpy(mean), shrunk_more)
    assert bool((looser < got).all())


def test_features_without_variance_are_a_one_line_data_error() -> None:
    import pytest

    from xrad.errors import DataError

    with pytest.raises(DataError, match="no variance"):
        gaussian_precision(torch.zeros(4, 4, dtype=torch.float64), 0.01)


def test_moments_added_in_batches_equal_the_mean_and_covariance_of_all_rows() -> None:
    rows = np.random.default_rng(1).normal(loc=5.0, size=(103, 4))
    moments = MomentAccumulator(4)
    for start in range(0, len(rows), 25):
        moments.add(torch.from_numpy(rows[start : start + 25]).float())
    mean, cov = moments.moments()
    assert moments.count == 103
    np.testing.assert_allclose(mean.numpy(), rows.astype(np.float32).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(cov.numpy(), np.cov(rows.astype(np.float32), rowvar=False), rtol=1e-5, atol=1e-8)


def test_synthetic_detector_scored_by_a_gaussian_density(squares_split: Path, tmp_path: Path) -> None:
    from xrad.data.model_input import prepare_eval
    from xrad.inference.scoring import load_scorer
    from xrad.jobs.train import run_training
    from xrad.methods.synthetic.gaussian import PatchGaussianScorer
    from xrad.models.patch import body_cell_vectors
    from xrad.training.banks import load_image_bank

    overrides = ["synthetic.score=gaussian", "synthetic.top_k=2", "synthetic.epochs=2"]
    summary = run_training("tiny_synthetic", squares_split, tmp_path / "run", progress=False, overrides=overrides)
    scorer = load_scorer(tmp_path / "run" / "artefact")
    assert isinstance(scorer, PatchGaussianScorer) and scorer.level == "patch" and scorer.top_k == 2
    assert summary["test_auroc"] > 0.8  # a bright square is far from the normal cells' Gaussian

    # The stored cell Gaussian is that of the body cells of the train images not known to be abnormal.
    frame = pd.read_csv(squares_split)
    train = frame[(frame["split"] == "train") & (frame["semi_label"] != -1)].reset_index(drop=True)
    bank = load_image_bank(train, 32, workers=1, progress=False)
    with torch.no_grad():
        cells = body_cell_vectors(scorer.backbone.eval(), prepare_eval(bank.images, bank.masks)).double().numpy()
    np.testing.assert_allclose(scorer.cell_mean.numpy(), cells.mean(axis=0), rtol=1e-6, atol=1e-9)
    cov = np.cov(cells, rowvar=False)
    expected = np.linalg.inv(cov + 0.01 * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0]))
    np.testing.assert_allclose(scorer.cell_precision.numpy(), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())

    # Image level reads the same backbone and Gaussians, scoring the body-averaged feature instead.
    image_level = run_training(
        "tiny_synthetic",
        squares_split,
        tmp_path / "image",
        progress=False,
        overrides=[*overrides[:1], "synthetic.score=gaussian_image", *overrides[1:]],
    )
    again = load_scorer(tmp_path / "image" / "artefact")
    assert isinstance(again, PatchGaussianScorer) and again.level == "image"
    assert torch.equal(again.cell_mean, scorer.cell_mean)  # same seed, same training: same Gaussians
    assert image_level["test_auroc"] > 0.6
