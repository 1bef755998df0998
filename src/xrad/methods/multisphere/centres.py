"""Multi-sphere machinery shared by the self-taught detector and the AE-pretrained multi-modal baseline.

Centre initialisation (K-means on normal embeddings, Deep SAD's ±min_abs guard), per-sphere sample counts,
the paper's pruning rule (Algorithm 1, lines 15–20) and per-sphere radii.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from xrad.errors import ConfigError, DataError

__all__ = [
    "apply_min_abs",
    "kmeans_centers",
    "mean_center",
    "sphere_counts",
    "prune_mask",
    "prune_centers",
    "sphere_radii",
]


def _as_embeddings(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(
            f"need a non-empty (N, D) array of normal embeddings to place centres "
            f"(got shape {x.shape}); check that the training split has unlabelled or "
            "known-normal images"
        )
    if not np.isfinite(x).all():
        raise DataError(
            "embeddings contain NaN/inf; the encoder diverged — lower the learning rate or check the inputs"
        )
    return x


def apply_min_abs(centers: np.ndarray, min_abs: float = 0.1) -> np.ndarray:
    """Push coordinates with |c| < min_abs to ±min_abs keeping their sign (0 → +min_abs).

    Deep SAD's guard: a centre coordinate near 0 can be matched trivially by a network whose last layer
    outputs zeros. ``min_abs=0`` disables it.
    """
    c = np.array(centers, dtype=np.float64, copy=True)
    small = np.abs(c) < min_abs
    c[small] = np.where(c[small] < 0, -min_abs, min_abs)
    return c


def kmeans_centers(embeddings: np.ndarray, n_centers: int, seed: int, min_abs: float = 0.1) -> np.ndarray:
    """K-means centres (K, D) float32 of normal embeddings (N, D), with the ±min_abs guard applied.

    sklearn KMeans with k-means++ init, n_init=10, ``random_state=seed`` (same seed, same centres).
    K = min(n_centers, number of distinct embeddings), so few or duplicated points never make K-means fail.
    """
    from sklearn.cluster import KMeans  # local: sklearn is slow to import and only needed here

    if n_centers < 1:
        raise ConfigError(f"n_centers must be >= 1 (got {n_centers})")
    x = _as_embeddings(embeddings)
    k = min(int(n_centers), len(np.unique(x, axis=0)))
    km = KMeans(n_clusters=k, init="k-means++", n_init=10, random_state=int(seed)).fit(x)
    return apply_min_abs(km.cluster_centers_, min_abs).astype(np.float32)


def mean_center(embeddings: np.ndarray, min_abs: float = 0.1) -> np.ndarray:
    """Uni-modal Deep SAD centre: the mean embedding (1, D) float32 with the ±min_abs guard."""
    x = _as_embeddings(embeddings)
    return apply_min_abs(x.mean(axis=0, keepdims=True), min_abs).astype(np.float32)


def sphere_counts(nearest_index: Tensor, n_centers: int) -> Tensor:
    """Number of samples assigned to each centre, (n_centers,) int64 (one bincount, no Python loop)."""
    return torch.bincount(nearest_index.reshape(-1).long(), minlength=n_centers)


def prune_mask(counts: Tensor, gamma: float = 0.05) -> Tensor:
    """Keep centre k iff n_k ≥ γ·max_j n_j (the paper's rule); a bool mask of the centres to keep.

    The most populated centre always satisfies the rule, so at least one centre survives; when all counts are
    0 (nothing observed) every centre is kept.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ConfigError(f"pruning gamma must be in [0, 1] (got {gamma})")
    c = counts.to(torch.float64)
    if c.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=counts.device)
    return c >= gamma * c.max()


def prune_centers(centers: Tensor, counts: Tensor, gamma: float = 0.05) -> tuple[Tensor, Tensor]:
    """Apply :func:`prune_mask`: return (surviving centres (K', D), the bool keep mask (K,))."""
    keep = prune_mask(counts, gamma)
    return centers[keep.to(centers.device)], keep


def sphere_radii(sq_dist: Tensor, index: Tensor, n_centers: int, quantile: float = 0.95) -> Tensor:
    """Per-centre radius (n_centers,): the ``quantile`` of the (non-squared) distances of its normal samples.

    Uses torch.quantile's linear interpolation (the authors took the lower order statistic). A centre with no
    sample gets NaN; a centre with one sample gets that sample's distance (the authors' code crashes on both).
    Radii are descriptive (the score is the distance to the nearest centre); computed once, so a loop over the
    K centres is fine.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ConfigError(f"radius quantile must be in [0, 1] (got {quantile})")
    dist = sq_dist.detach().double().clamp_min(0).sqrt().reshape(-1)
    idx = index.reshape(-1).to(dist.device)
    radii = torch.full((n_centers,), float("nan"), dtype=torch.float64, device=dist.device)
    for k in torch.unique(idx).tolist():
        if 0 <= k < n_centers:
            radii[k] = torch.quantile(dist[idx == k], quantile)
    return radii.to(sq_dist.dtype if sq_dist.is_floating_point() else torch.float32)
