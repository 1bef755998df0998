"""Multi-sphere machinery (K-means centres, counts, pruning, radii) and chunked kNN scoring vs brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xrad.errors import DataError
from xrad.methods.knn.search import knn_mean_distance
from xrad.methods.multisphere.centres import (
    apply_min_abs,
    kmeans_centers,
    mean_center,
    prune_centers,
    prune_mask,
    sphere_counts,
    sphere_radii,
)


def _blobs(seed: int = 0, n: int = 60) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = np.array([[5.0, 5.0, 0.0], [-5.0, 0.0, 5.0], [0.0, -5.0, -5.0]])
    return (means[rng.integers(0, 3, size=n)] + rng.normal(scale=1.5, size=(n, 3))).astype(np.float32)


def test_kmeans_centers_reproducible_and_seed_dependent() -> None:
    x = _blobs()
    a, b = kmeans_centers(x, 8, seed=1), kmeans_centers(x, 8, seed=1)
    assert a.shape == (8, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, kmeans_centers(x, 8, seed=2))


def test_kmeans_min_abs_and_capped_k() -> None:
    x = np.array([[0.01, -0.02, 3.0], [0.05, -0.05, 3.0]] * 5, dtype=np.float32)  # 2 distinct points
    c = kmeans_centers(x, n_centers=100, seed=0, min_abs=0.1)
    assert c.shape == (2, 3)
    assert np.all(np.abs(c) >= 0.1 - 1e-7)
    np.testing.assert_allclose(np.sort(c[:, 0]), [0.1, 0.1])
    np.testing.assert_allclose(c[:, 1], [-0.1, -0.1])
    np.testing.assert_allclose(c[:, 2], [3.0, 3.0])
    np.testing.assert_allclose(apply_min_abs(np.array([[0.0, -0.0, 0.5]]), 0.2), [[0.2, 0.2, 0.5]])
    with pytest.raises(DataError):
        kmeans_centers(np.zeros((0, 3)), 4, seed=0)


def test_mean_center() -> None:
    x = np.array([[1.0, 0.02], [3.0, -0.1]])
    np.testing.assert_allclose(mean_center(x), [[2.0, -0.1]], rtol=1e-6)


def test_sphere_counts_and_pruning() -> None:
    counts = sphere_counts(torch.tensor([0, 0, 2, 2, 2, 1, 0, 0]), n_centers=5)
    assert counts.tolist() == [4, 1, 3, 0, 0]
    keep = prune_mask(torch.tensor([100, 6, 4, 0]), gamma=0.05)
    assert keep.tolist() == [True, True, False, False]
    assert prune_mask(torch.tensor([0, 0, 0]), gamma=0.05).all()  # never prunes everything
    assert prune_mask(torch.tensor([7, 3]), gamma=1.0).tolist() == [True, False]
    centers = torch.arange(8.0).reshape(4, 2)
    kept, mask = prune_centers(centers, torch.tensor([100, 6, 4, 0]))
    assert torch.equal(kept, centers[:2]) and mask.sum() == 2


def test_sphere_radii_safe_for_empty_and_single() -> None:
    d = torch.tensor([1.0, 4.0, 9.0, 16.0, 25.0, 49.0])
    idx = torch.tensor([0, 0, 0, 0, 0, 2])
    r = sphere_radii(d, idx, n_centers=3, quantile=0.5)
    assert r[0].item() == pytest.approx(3.0)  # median of distances 1..5
    assert torch.isnan(r[1])  # no sample
    assert r[2].item() == pytest.approx(7.0)  # one sample
    np.testing.assert_allclose(
        sphere_radii(d, idx, 3, 0.95)[0].item(), np.quantile(np.sqrt(d[:5].numpy()), 0.95), rtol=1e-6
    )


def _np_knn(q: np.ndarray, m: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(((q[:, None, :].astype(np.float64) - m[None].astype(np.float64)) ** 2).sum(-1))
    return np.sort(d, axis=1)[:, : min(k, len(m))].mean(axis=1)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
@pytest.mark.parametrize("k", [1, 5, 500])
def test_knn_mean_distance_matches_brute_force(chunk: int, k: int) -> None:
    rng = np.random.default_rng(chunk + k)
    q, m = rng.normal(size=(23, 16)).astype(np.float32), rng.normal(loc=3.0, size=(40, 16)).astype(np.float32)
    got = knn_mean_distance(torch.from_numpy(q), torch.from_numpy(m), k=k, chunk_size=chunk)
    assert got.shape == (23,)
    np.testing.assert_allclose(got.numpy(), _np_knn(q, m, k), rtol=1e-5)


def test_knn_query_in_memory_has_zero_nearest_distance() -> None:
    m = torch.randn(10, 4, generator=torch.Generator().manual_seed(0)) + 100.0  # far from the origin
    assert torch.allclose(knn_mean_distance(m[:3], m, k=1), torch.zeros(3), atol=1e-3)
    with pytest.raises(DataError):
        knn_mean_distance(m, m[:0], k=1)


def test_nearest_distance_equals_brute_force_whatever_the_chunks() -> None:
    from xrad.methods.knn.search import nearest_distance

    g = torch.Generator().manual_seed(3)
    queries, memory = torch.randn(37, 9, generator=g) * 3 + 1, torch.randn(101, 9, generator=g) * 3
    brute = torch.cdist(queries.double(), memory.double()).amin(dim=1)
    for query_chunk, memory_chunk in ((1, 1), (5, 7), (37, 101), (1000, 1000)):
        got = nearest_distance(queries, memory, query_chunk=query_chunk, memory_chunk=memory_chunk)
        torch.testing.assert_close(got.double(), brute, rtol=1e-5, atol=1e-5)
    assert torch.allclose(nearest_distance(memory[:4], memory), torch.zeros(4), atol=1e-3)  # members: distance 0


def test_greedy_coreset_is_the_k_centre_greedy_selection() -> None:
    from xrad.methods.knn.search import greedy_coreset

    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 5, generator=g)  # 5 dims ≤ the projection size: the exact distances are used
    chosen = greedy_coreset(x, 12, seed=4)
    assert len(set(chosen.tolist())) == 12
    # Brute force: each next index is the point farthest from the ones chosen before it.
    for i in range(1, 12):
        gap = torch.cdist(x, x[chosen[:i]]).amin(dim=1)
        assert int(chosen[i]) == int(torch.argmax(gap))
    assert torch.equal(greedy_coreset(x, 12, seed=4), chosen)  # seeded
    assert torch.equal(greedy_coreset(x, 100, seed=0), torch.arange(60))  # n ≥ N: everything
    # The coreset covers the set better than a random subset of the same size.
    random_rows = torch.randperm(60, generator=torch.Generator().manual_seed(0))[:12]
    assert torch.cdist(x, x[chosen]).amin(dim=1).max() < torch.cdist(x, x[random_rows]).amin(dim=1).max()
