"""Percentile bootstrap confidence intervals.

``bootstrap_ci(values, n_boot, seed, level) -> (low, high)`` resamples the values with
replacement ``n_boot`` times (seeded numpy Generator), computes the statistic (the mean by
default) on each resample and returns the ``(1-level)/2`` and ``(1+level)/2`` quantiles. Work is
chunked so memory stays bounded for large samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from copymark.errors import ConfigError, DataError

Statistic = Callable[..., np.ndarray]


def bootstrap_distribution(
    values: Sequence[float] | np.ndarray, n_boot: int = 10000, seed: int = 0, statistic: Statistic = np.mean
) -> np.ndarray:
    """The ``n_boot`` bootstrap replicates of ``statistic`` (called as ``statistic(x, axis=1)``)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 1:
        raise DataError("bootstrap needs at least one value, got an empty sample")
    if not np.all(np.isfinite(x)):
        raise DataError("bootstrap sample contains NaN or infinite values", hint="drop missing values first")
    if n_boot < 1:
        raise ConfigError(f"n_boot={n_boot} must be >= 1")
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, min(n_boot, 2_000_000 // max(1, x.size)))
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        idx = rng.integers(0, x.size, size=(m, x.size))
        out[start : start + m] = statistic(x[idx], axis=1)
    return out


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    n_boot: int = 10000,
    seed: int = 0,
    level: float = 0.95,
    statistic: Statistic = np.mean,
) -> tuple[float, float]:
    """Percentile bootstrap CI ``(low, high)`` of ``statistic`` (default: the mean) at ``level``."""
    if not 0 < level < 1:
        raise ConfigError(f"level={level} must lie in (0, 1)")
    reps = bootstrap_distribution(values, n_boot=n_boot, seed=seed, statistic=statistic)
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
