"""Percentile bootstrap CI: agrees with the t interval on normal data; coverage; seeding."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from copymark.errors import ConfigError, DataError
from copymark.stats import bootstrap_ci


def test_bootstrap_close_to_t_interval():
    x = np.random.default_rng(0).normal(10.0, 2.0, size=200)
    lo, hi = bootstrap_ci(x, n_boot=4000, seed=1, level=0.95)
    t_lo, t_hi = stats.t.interval(0.95, x.size - 1, loc=x.mean(), scale=stats.sem(x))
    width = t_hi - t_lo
    assert abs(lo - t_lo) < 0.1 * width and abs(hi - t_hi) < 0.1 * width
    assert lo < x.mean() < hi


def test_bootstrap_matches_scipy_percentile():
    x = np.random.default_rng(2).exponential(1.0, size=80)
    ours = bootstrap_ci(x, n_boot=5000, seed=0, level=0.9)
    ref = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=5000,
        method="percentile",
        confidence_level=0.9,
        random_state=np.random.default_rng(9),
    ).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), abs=0.04)


def test_bootstrap_coverage_on_normal_samples():
    rng = np.random.default_rng(3)
    hits = 0
    trials = 200
    for i in range(trials):
        x = rng.normal(0.0, 1.0, size=40)
        lo, hi = bootstrap_ci(x, n_boot=500, seed=i, level=0.9)
        hits += lo < 0.0 < hi
    # percentile intervals under-cover slightly for small n; 0.9 nominal
    assert 0.80 <= hits / trials <= 0.97


def test_bootstrap_seeded_and_other_statistic():
    x = np.arange(50.0)
    assert bootstrap_ci(x, 300, 7, 0.95) == bootstrap_ci(x, 300, 7, 0.95)
    assert bootstrap_ci(x, 300, 7, 0.95) != bootstrap_ci(x, 300, 8, 0.95)
    lo, hi = bootstrap_ci(x, 500, 0, 0.95, statistic=np.median)
    assert lo <= 24.5 <= hi


def test_bootstrap_bad_input():
    with pytest.raises(DataError):
        bootstrap_ci([], 100, 0, 0.95)
    with pytest.raises(ConfigError):
        bootstrap_ci([1.0, 2.0], 100, 0, 1.5)
