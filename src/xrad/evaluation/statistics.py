"""Replicate statistics: t-intervals of a mean, Welch t-tests and the papers' significance codes.

The papers reported ``mean ± 1.96·std`` over 2–4 replicates as a "95 % CI". That is neither a
confidence interval of the mean (it ignores √n and the t quantile) nor does it cover split variance
(all replicates shared one split). xrad reports the Student t-interval of the mean over replicates that
vary both the training seed and the split seed, and says so wherever it is printed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

# Upper bounds (inclusive) of p for each code, in the layout of the paper's Fig. 7 (reference-spec §6).
SIGNIFICANCE_CODES: tuple[tuple[float, str], ...] = ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, "."))
SIGNIFICANCE_LEGEND = "*** p ≤ 0.001, ** p ≤ 0.01, * p ≤ 0.05, . p ≤ 0.1, ns p > 0.1 (two-sided Welch t-test)"


def significance_code(p_value: float) -> str:
    """``***`` p ≤ 0.001, ``**`` (0.001, 0.01], ``*`` (0.01, 0.05], ``.`` (0.05, 0.1], else ``ns``.

    An undefined p (NaN, e.g. fewer than two replicates) is ``n/a``.
    """
    if p_value is None or not math.isfinite(p_value):
        return "n/a"
    for bound, code in SIGNIFICANCE_CODES:
        if p_value <= bound:
            return code
    return "ns"


def welch_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided Welch t-test (unequal variances) ignoring NaNs; ``(t, p)``, NaN when undefined."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size < 2 or y.size < 2:
        return float("nan"), float("nan")
    result = stats.ttest_ind(x, y, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float | int]:
    """Mean and Student t-interval of the mean of the finite ``values``: ``{mean, low, high, half_width, n}``.

    With one value the interval is undefined (NaN); with zero values everything is NaN.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return {
            "mean": float("nan"),
            "low": float("nan"),
            "high": float("nan"),
            "half_width": float("nan"),
            "n": 0,
        }
    mean = float(x.mean())
    if n < 2:
        half = float("nan")
    else:
        half = float(stats.t.ppf(0.5 + confidence / 2.0, df=n - 1) * x.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half, "half_width": half, "n": n}


def papers_band(values: Sequence[float], z: float = 1.96) -> dict[str, float | int]:
    """The papers' "95 % CI": mean ± z·std of the finite ``values`` (std as NumPy's default, ddof = 0), in the
    keys of :func:`t_interval`. A spread of the replicates, not an interval of the mean: offered beside the
    t-interval to compare with the published numbers, never instead of it."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        nan = float("nan")
        return {"mean": nan, "low": nan, "high": nan, "half_width": nan, "n": 0}
    mean, half = float(x.mean()), float(z * x.std())
    return {"mean": mean, "low": mean - half, "high": mean + half, "half_width": half, "n": int(x.size)}
