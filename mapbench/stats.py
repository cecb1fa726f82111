"""Summary statistics for tables: the mean with a 95% interval."""
from __future__ import annotations

import numpy as np


def mean_ci(values, method: str = "bootstrap", level: float = 0.95, n_boot: int = 2000,
            seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)`` of finite ``values``: a percentile bootstrap interval (fixed seed,
    reproducible) or ``method="se"``, mean -/+ 1.96 standard errors. NaN when empty."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if v.size == 1:
        return mean, mean, mean
    if method == "se":
        half = 1.959964 * v.std(ddof=1) / np.sqrt(v.size)
        return mean, mean - half, mean + half
    if method != "bootstrap":
        raise ValueError(f"interval method must be 'bootstrap' or 'se', got {method!r}")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return mean, float(lo), float(hi)
