"""TOST equivalence test for two independent groups, bounds given in Cohen's d.

Two one-sided tests (Schuirmann 1987; Lakens 2017, "Equivalence Tests: A Practical Primer for t
Tests, Correlations, and Meta-Analyses", Soc Psychol Personal Sci 8(4)): with raw bounds
``low < 0 < high`` on ``mean_a - mean_b``, test H01: diff <= low (reject when t_low is large) and
H02: diff >= high (reject when t_high is small). Equivalence is concluded when both are
rejected at ``alpha``, i.e. ``p = max(p_low, p_high) < alpha``, which is the same as the
``1 - 2 alpha`` (90 % for alpha = .05) confidence interval of the difference lying inside the
bounds.

Bounds in Cohen's d are converted to raw units by multiplying by the pooled SD of the two
samples (as in the extraction paper's user study, d = +/-0.3). The t tests use Welch's
standard error and df by default (``usevar="unequal"``) or the pooled one (``"pooled"``),
matching ``statsmodels.stats.weightstats.ttost_ind`` given the converted bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy import stats as _st

from copymark.errors import ConfigError
from copymark.stats.ttest import Summary, _se_df, pooled_sd, summarize

UseVar = Literal["unequal", "pooled"]


@dataclass(frozen=True)
class TostResult:
    """Result of a TOST on ``mean_a - mean_b``.

    ``low_d``/``high_d``: bounds in Cohen's d; ``low``/``high``: the same in raw units
    (``d * sd_pooled``). ``p`` = max of the one-sided p values; ``ci`` is the
    ``1 - 2 alpha`` confidence interval of the difference. ``equivalent`` is ``p < alpha``.
    ``tightest_bound`` (raw) and ``tightest_bound_d``: the smallest symmetric bound
    ``[-b, b]`` the data establish at ``alpha``; see :func:`tightest_bound`.
    """

    diff: float
    sd_pooled: float
    cohens_d: float
    low_d: float
    high_d: float
    low: float
    high: float
    se: float
    df: float
    t_low: float
    p_low: float
    t_high: float
    p_high: float
    p: float
    ci: tuple[float, float]
    alpha: float
    usevar: str
    equivalent: bool
    tightest_bound: float
    tightest_bound_d: float

    def as_dict(self) -> dict:
        return asdict(self)

    def verdict(self) -> str:
        """One sentence in words: "equivalent" or "not equivalent", with the numbers."""
        word = "equivalent" if self.equivalent else "not equivalent"
        return (
            f"{word}: TOST p = {self.p:.4g} {'<' if self.equivalent else '>='} alpha = {self.alpha:g} "
            f"for bounds d = [{self.low_d:+.3g}, {self.high_d:+.3g}] "
            f"(raw [{self.low:+.3f}, {self.high:+.3f}]); "
            f"{100 * (1 - 2 * self.alpha):.0f}% CI of the difference [{self.ci[0]:+.3f}, {self.ci[1]:+.3f}]"
        )


def tightest_bound(diff: float, se: float, df: float, alpha: float = 0.05) -> float:
    """Smallest ``b`` such that the TOST with raw bounds ``[-b, b]`` concludes equivalence at ``alpha``.

    Both one-sided tests reject iff ``(diff + b) / se > t_c`` and ``(diff - b) / se < -t_c`` with
    ``t_c = t_{1-alpha}(df)``, i.e. iff ``b > |diff| + t_c se``: the larger end (in absolute value)
    of the ``1 - 2 alpha`` CI. At exactly this ``b`` the TOST p equals ``alpha``; any wider symmetric
    bound is established, any narrower one is not. (Welch's df and SE do not depend on the bound.)
    """
    return abs(diff) + float(_st.t.ppf(1.0 - alpha, df)) * se


def tost_from_stats(
    a: Summary, b: Summary, *, low_d: float = -0.3, high_d: float = 0.3, alpha: float = 0.05, usevar: UseVar = "unequal"
) -> TostResult:
    """TOST from summary statistics (mean, SD, n per group); see the module docstring."""
    if not low_d < high_d:
        raise ConfigError(f"equivalence bounds must satisfy low < high, got low_d={low_d}, high_d={high_d}")
    if not 0 < alpha < 0.5:
        raise ConfigError(f"alpha={alpha} must lie in (0, 0.5)")
    match usevar:
        case "unequal":
            equal_var = False
        case "pooled":
            equal_var = True
        case _:
            raise ConfigError(f"usevar={usevar!r} must be 'unequal' (Welch) or 'pooled'")
    sp = pooled_sd(a.sd, a.n, b.sd, b.n)
    low, high = low_d * sp, high_d * sp
    se, df = _se_df(a, b, equal_var)
    diff = a.mean - b.mean
    t_low = (diff - low) / se
    t_high = (diff - high) / se
    p_low = float(_st.t.sf(t_low, df))
    p_high = float(_st.t.cdf(t_high, df))
    q = float(_st.t.ppf(1.0 - alpha, df))
    p = max(p_low, p_high)
    b_min = tightest_bound(diff, se, df, alpha)
    return TostResult(
        diff=diff,
        sd_pooled=sp,
        cohens_d=diff / sp if sp > 0 else 0.0,
        low_d=low_d,
        high_d=high_d,
        low=low,
        high=high,
        se=se,
        df=df,
        t_low=t_low,
        p_low=p_low,
        t_high=t_high,
        p_high=p_high,
        p=p,
        ci=(diff - q * se, diff + q * se),
        alpha=alpha,
        usevar=usevar,
        equivalent=bool(p < alpha),
        tightest_bound=b_min,
        tightest_bound_d=b_min / sp if sp > 0 else float("inf"),
    )


def tost_ind(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    low_d: float = -0.3,
    high_d: float = 0.3,
    alpha: float = 0.05,
    usevar: UseVar = "unequal",
) -> TostResult:
    """TOST equivalence test of ``mean(a) - mean(b)`` with bounds in Cohen's d (default +/-0.3)."""
    return tost_from_stats(summarize(a, "a"), summarize(b, "b"), low_d=low_d, high_d=high_d, alpha=alpha, usevar=usevar)


@dataclass(frozen=True)
class TostOneSampleResult:
    """TOST of a mean (e.g. of paired differences) against raw bounds ``low < high``."""

    mean: float
    sd: float
    n: int
    low: float
    high: float
    se: float
    df: float
    t_low: float
    p_low: float
    t_high: float
    p_high: float
    p: float
    ci: tuple[float, float]
    alpha: float
    equivalent: bool

    def as_dict(self) -> dict:
        return asdict(self)


def tost_one_sample(
    values: Sequence[float] | np.ndarray, low: float, high: float, *, alpha: float = 0.05
) -> TostOneSampleResult:
    """TOST that the mean of ``values`` lies in the raw interval ``(low, high)``.

    With ``values = x - y`` of paired observations this is the paired TOST (same numbers as
    ``statsmodels.stats.weightstats.ttost_paired(x, y, low, high)``). The study analysis uses it
    on per-participant mean differences, a check that does not treat the ratings of one
    participant as independent.
    """
    if not low < high:
        raise ConfigError(f"equivalence bounds must satisfy low < high, got {low}, {high}")
    if not 0 < alpha < 0.5:
        raise ConfigError(f"alpha={alpha} must lie in (0, 0.5)")
    s = summarize(values, "values")
    se = s.sd / np.sqrt(s.n)
    df = float(s.n - 1)
    t_low, t_high = (s.mean - low) / se, (s.mean - high) / se
    p_low, p_high = float(_st.t.sf(t_low, df)), float(_st.t.cdf(t_high, df))
    q = float(_st.t.ppf(1 - alpha, df))
    p = max(p_low, p_high)
    return TostOneSampleResult(
        mean=s.mean,
        sd=s.sd,
        n=s.n,
        low=low,
        high=high,
        se=float(se),
        df=df,
        t_low=float(t_low),
        p_low=p_low,
        t_high=float(t_high),
        p_high=p_high,
        p=p,
        ci=(s.mean - q * se, s.mean + q * se),
        alpha=alpha,
        equivalent=bool(p < alpha),
    )
