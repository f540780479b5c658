"""Solving for the sample size that reproduces a published figure: round trips against scipy/statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.weightstats import ttost_ind

from copymark.errors import ConfigError
from copymark.stats import Summary, pooled_sd, tost_from_stats
from copymark.stats.consistency import (
    n_for_tightest_bound,
    n_for_tost_p,
    n_for_welch_p,
    rounding_corners,
    tost_p,
    welch_log_p,
)


def with_moments(mean: float, sd: float, n: int, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).normal(size=n)
    return mean + sd * (z - z.mean()) / z.std(ddof=1)


A, B = Summary(3.20, 1.59, 0), Summary(2.91, 1.76, 0)  # n is what is solved for


@pytest.mark.parametrize("n_true,ratio", [(40, 1.0), (1250, 1.0), (2129, 1.0), (700, 1.5)])
def test_n_for_welch_p_inverts_scipy(n_true, ratio):
    ref = stats.ttest_ind_from_stats(A.mean, A.sd, n_true, B.mean, B.sd, n_true * ratio, equal_var=False)
    n = n_for_welch_p(A, B, ref.pvalue, ratio=ratio)
    assert n == pytest.approx(n_true, rel=1e-7)
    assert welch_log_p(Summary(A.mean, A.sd, n_true), Summary(B.mean, B.sd, n_true * ratio)) == pytest.approx(
        math.log(ref.pvalue), rel=1e-9
    )


def test_tiny_p_values_are_solved_on_the_log_scale():
    """p = 1e-200 is far below float precision of 1 - p; the search works on log p, and the search
    range reaches sizes where p underflows to 0 (only the sign matters there)."""
    n = n_for_welch_p(A, B, 1e-200)
    assert welch_log_p(Summary(A.mean, A.sd, n), Summary(B.mean, B.sd, n)) == pytest.approx(math.log(1e-200), rel=1e-8)


@pytest.mark.parametrize("n_true", [60, 800, 5000])
@pytest.mark.parametrize("in_d", [False, True])
def test_n_for_tightest_bound_and_tost_p_invert_statsmodels(n_true, in_d):
    a, b = Summary(A.mean, A.sd, n_true), Summary(B.mean, B.sd, n_true)
    t = tost_from_stats(a, b)
    bound = t.tightest_bound_d if in_d else t.tightest_bound
    assert n_for_tightest_bound(A, B, bound, in_d=in_d) == pytest.approx(n_true, rel=1e-7)
    # a wider bound and the TOST p statsmodels gives for it, on data with exactly these moments
    wide = 1.2 * bound
    raw = wide * pooled_sd(a.sd, a.n, b.sd, b.n) if in_d else wide
    x, y = with_moments(a.mean, a.sd, n_true, 1), with_moments(b.mean, b.sd, n_true, 2)
    p_sm, _, _ = ttost_ind(x, y, -raw, raw, usevar="unequal")
    assert tost_p(a, b, raw) == pytest.approx(p_sm, rel=1e-9)
    assert n_for_tost_p(A, B, wide, p_sm, in_d=in_d) == pytest.approx(n_true, rel=1e-6)


def test_unreachable_figures_have_no_n():
    same = Summary(3.0, 1.5, 0)
    assert n_for_welch_p(same, same, 0.01) is None  # equal means: p = 1 at every n
    assert n_for_tightest_bound(A, B, 0.2) is None  # below |diff| = 0.29: never established
    assert n_for_tost_p(A, B, 0.25, 0.04) is None  # a bound inside the difference: p >= 0.5
    with pytest.raises(ConfigError, match="p="):
        n_for_welch_p(A, B, 0.0)


def test_rounding_corners_round_to_the_published_values():
    a, b = Summary(3.20, 1.59, 10), Summary(2.91, 1.76, 10)
    corners = list(rounding_corners(a, b, 0.005))
    assert len(set(corners)) == 16
    for ca, cb in corners:
        assert (abs(ca.mean - 3.20), abs(cb.mean - 2.91), abs(ca.sd - 1.59), abs(cb.sd - 1.76)) == pytest.approx(
            (0.005,) * 4
        )
