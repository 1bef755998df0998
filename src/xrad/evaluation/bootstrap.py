"""Cluster bootstrap: resample top-level units (patients, else studies, else images) with replacement.

A resample is represented by the multiplicity of each unit (a row of a ``(B, n_units)`` count matrix
drawn from a multinomial), so the metrics in :mod:`xrad.evaluation.metrics` evaluate all ``B`` resamples
in a few vectorised passes instead of ``B`` Python calls. Intervals are percentile intervals of the
resampled statistic; resamples where the statistic is undefined (e.g. no abnormal unit drawn) are dropped
and counted.
"""

from __future__ import annotations

import numpy as np


def resample_counts(n_units: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """``(n_bootstrap, n_units)`` multiplicities: each row is one resample of ``n_units`` units."""
    rng = np.random.default_rng(seed)
    if n_units == 0 or n_bootstrap == 0:
        return np.zeros((n_bootstrap, n_units), dtype=np.int64)
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_bootstrap)


def row_weights(counts: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per-row weights ``(B, n_rows)``: a row inherits the multiplicity of its unit."""
    return counts[:, np.asarray(codes, dtype=np.int64)]


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float, int]:
    """``(low, high, n_valid)``: the central ``confidence`` percentile interval of the finite samples."""
    samples = np.asarray(samples, dtype=np.float64)
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan"), 0
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high), int(finite.size)


def summarise(point: float, samples: np.ndarray | None, confidence: float = 0.95) -> dict[str, float | int | None]:
    """A JSON-able ``{value, low, high, n_resamples}`` entry (no interval when ``samples`` is None)."""
    entry: dict[str, float | int | None] = {"value": _clean(point)}
    if samples is not None:
        low, high, n_valid = percentile_interval(samples, confidence)
        entry.update(low=_clean(low), high=_clean(high), n_resamples=n_valid)
    return entry


def _clean(value: float) -> float | None:
    """NaN → None so the JSON is standard (``null``) and readable by any tool."""
    value = float(value)
    return None if not np.isfinite(value) else value
