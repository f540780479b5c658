"""Power analysis: t test against statsmodels TTestIndPower; TOST power against a simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import TTestIndPower

from copymark.errors import ConfigError
from copymark.stats import tost_ind_n, tost_ind_power, tost_min_bound, ttest_ind_n, ttest_ind_power


@pytest.mark.parametrize(
    "d,alpha,power,ratio", [(0.3, 0.05, 0.8, 1.0), (0.5, 0.01, 0.9, 1.0), (0.2, 0.05, 0.8, 2.0), (0.8, 0.05, 0.95, 0.5)]
)
def test_ttest_sample_size_matches_statsmodels(d, alpha, power, ratio):
    ref = TTestIndPower().solve_power(effect_size=d, alpha=alpha, power=power, ratio=ratio)
    assert ttest_ind_n(d, alpha=alpha, power=power, ratio=ratio) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("alternative", ["two-sided", "larger", "smaller"])
def test_ttest_power_matches_statsmodels(alternative):
    for d, n in [(0.3, 50), (-0.4, 120), (0.1, 1250)]:
        ref = TTestIndPower().power(effect_size=d, nobs1=n, alpha=0.05, ratio=1.3, alternative=alternative)
        assert ttest_ind_power(d, n, alpha=0.05, ratio=1.3, alternative=alternative) == pytest.approx(ref, rel=1e-7)


def _simulated_tost_power(n, bound, true_d, alpha, reps, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(true_d, 1.0, size=(reps, n))
    b = rng.normal(0.0, 1.0, size=(reps, n))
    diff = a.mean(1) - b.mean(1)
    sp = np.sqrt((a.var(1, ddof=1) + b.var(1, ddof=1)) / 2)
    se = sp * np.sqrt(2 / n)
    df = 2 * n - 2
    # bounds in d converted with the *true* SD (1): the quantity the power formula models
    p1 = stats.t.sf((diff + bound) / se, df)
    p2 = stats.t.cdf((diff - bound) / se, df)
    return float(np.mean(np.maximum(p1, p2) < alpha))


@pytest.mark.parametrize("n,bound,true_d", [(40, 0.6, 0.0), (40, 0.6, 0.2), (15, 0.9, 0.0), (100, 0.3, 0.0)])
def test_tost_power_matches_simulation(n, bound, true_d):
    reps = 20000
    sim = _simulated_tost_power(n, bound, true_d, 0.05, reps, seed=11)
    exact = tost_ind_power(-bound, bound, n, alpha=0.05, true_d=true_d)
    se = np.sqrt(max(exact * (1 - exact), 1e-4) / reps)
    assert abs(sim - exact) < 4 * se + 1e-3, (sim, exact)


def test_tost_sample_size():
    # Normal approximation used by TOSTER's powerTOSTtwo: n = 2 (z_{1-a} + z_{1-b/2})^2 / bound^2 per group
    z = stats.norm.ppf(0.95) + stats.norm.ppf(1 - 0.2 / 2)
    approx = 2 * z**2 / 0.3**2  # 190.3
    n = tost_ind_n(0.3, alpha=0.05, power=0.8)
    assert approx < n < approx + 2  # the exact t-based size is slightly larger
    assert tost_ind_power(-0.3, 0.3, n) == pytest.approx(0.8, abs=1e-6)
    # the paper's design (125 x 10 ratings per model) has ~100% power for d = +/-0.3 ...
    assert tost_ind_power(-0.3, 0.3, 1250) > 0.999
    # ... and could establish bounds as small as d ~ 0.117 with 80% power
    b = tost_min_bound(1250)
    assert 0.10 < b < 0.13 and tost_ind_power(-b, b, 1250) == pytest.approx(0.8, abs=1e-6)


def test_power_bad_input():
    with pytest.raises(ConfigError):
        ttest_ind_n(0.0)
    with pytest.raises(ConfigError):
        tost_ind_n(0.1, true_d=0.2)
    with pytest.raises(ConfigError, match="alpha"):
        ttest_ind_power(0.3, 10, alpha=1.5)
