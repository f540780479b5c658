"""Welch / Student t tests against scipy.stats.ttest_ind, and Cohen's d."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from copymark.errors import DataError
from copymark.stats import cohens_d, pooled_sd, student_t, summarize, welch_t


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_welch_matches_scipy(seed, alternative):
    rng = np.random.default_rng(seed)
    a = rng.normal(3.2, 1.6, size=37)
    b = rng.normal(2.9, 0.7, size=55)  # unequal sizes and variances: Welch differs from Student
    ours = welch_t(a, b, alternative=alternative)
    ref = stats.ttest_ind(a, b, equal_var=False, alternative=alternative)
    assert ours.t == pytest.approx(ref.statistic, rel=1e-12)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert ours.df == pytest.approx(ref.df, rel=1e-12)
    ci = ref.confidence_interval(0.95)
    if alternative == "two-sided":
        assert ours.ci == pytest.approx((ci.low, ci.high), rel=1e-10)
    st = student_t(a, b, alternative=alternative)
    ref2 = stats.ttest_ind(a, b, equal_var=True, alternative=alternative)
    assert st.t == pytest.approx(ref2.statistic, rel=1e-12)
    assert st.p == pytest.approx(ref2.pvalue, rel=1e-10)
    assert abs(st.t - ours.t) > 1e-3  # the two tests really differ here


def test_likert_integer_scores_match_scipy():
    rng = np.random.default_rng(5)
    a = rng.integers(1, 6, size=250)
    b = rng.integers(1, 6, size=240)
    ours = welch_t(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-10)


def test_cohens_d_and_pooled_sd():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 40), rng.normal(0.5, 2, 60)
    sa, sb = summarize(a), summarize(b)
    sp = np.sqrt(((40 - 1) * a.var(ddof=1) + (60 - 1) * b.var(ddof=1)) / 98)
    assert pooled_sd(sa.sd, sa.n, sb.sd, sb.n) == pytest.approx(sp, rel=1e-12)
    assert cohens_d(sa, sb) == pytest.approx((a.mean() - b.mean()) / sp, rel=1e-12)


def test_bad_input_is_a_clear_error():
    with pytest.raises(DataError, match="at least 2"):
        welch_t([1.0], [1.0, 2.0])
    with pytest.raises(DataError, match="NaN"):
        welch_t([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(DataError, match="zero variance"):
        welch_t([3, 3, 3], [3, 3])
