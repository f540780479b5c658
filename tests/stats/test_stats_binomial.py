"""Binomial helpers against scipy.stats.binomtest and the binomial tail."""

from __future__ import annotations

import pytest
from scipy import stats

from copymark.errors import ConfigError
from copymark.stats import binom_pvalue, binom_test, min_successes


def test_binom_test_matches_scipy():
    r = binom_test(17, 50, 0.1)
    ref = stats.binomtest(17, 50, 0.1, alternative="greater")
    assert r.pvalue == pytest.approx(ref.pvalue, rel=1e-12)
    ci = ref.proportion_ci(0.95, method="exact")
    assert r.ci == pytest.approx((ci.low, ci.high))
    assert r.proportion == 17 / 50
    # P(X >= 17), X ~ Bin(50, 0.1), by the tail directly
    assert r.pvalue == pytest.approx(stats.binom.sf(16, 50, 0.1), rel=1e-10)
    assert binom_pvalue(5, 10, 0.5, "two-sided") == pytest.approx(1.0)


@pytest.mark.parametrize("n,p0,alpha", [(100, 0.1, 0.05), (20, 0.5, 0.01), (1000, 0.001, 1e-6), (10, 0.5, 0.0001)])
def test_min_successes_is_the_critical_count(n, p0, alpha):
    k = min_successes(n, p0, alpha)
    tail = lambda j: stats.binom.sf(j - 1, n, p0)  # P(X >= j)
    if k <= n:
        assert tail(k) <= alpha
        assert binom_test(k, n, p0).pvalue <= alpha
    assert k == 0 or tail(k - 1) > alpha


def test_binom_bad_input():
    with pytest.raises(ConfigError):
        binom_test(11, 10, 0.5)
    with pytest.raises(ConfigError):
        binom_test(1, 10, 0.0)
