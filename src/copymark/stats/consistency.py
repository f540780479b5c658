"""Which sample size makes published summary statistics agree with published test results.

A paper reports means and SDs per group, a sample size, and the p value of a Welch t test (or the
tightest TOST equivalence bound). With the means and SDs fixed, each of those results is a
monotone function of the group size ``n``: Welch's p and the tightest bound shrink as ``n``
grows. So each published figure pins down the ``n`` at which it is reproduced; if that ``n``
differs from the stated one, the figures are not mutually consistent at the stated design (or
the test was run on other units than stated). Published means and SDs are rounded, so each ``n``
is an interval: the functions here take exact values; :func:`rounding_corners` gives the corners
of the rounding box to evaluate them at.

Group sizes are ``n`` and ``ratio * n`` (real-valued; round as needed). Solved with Brent's
method on ``log n``, on log p for p values (they span many decades).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator

from scipy import optimize
from scipy import stats as _st

from copymark.errors import ConfigError
from copymark.stats.tost import tightest_bound
from copymark.stats.ttest import Summary, _se_df, pooled_sd

N_MIN, N_MAX = 2.0, 1e9


def _groups(a: Summary, b: Summary, n: float, ratio: float) -> tuple[Summary, Summary]:
    return Summary(a.mean, a.sd, n), Summary(b.mean, b.sd, n * ratio)  # type: ignore[arg-type]


def welch_log_p(a: Summary, b: Summary) -> float:
    """Natural log of the two-sided Welch p of ``a.mean - b.mean`` (finite down to p ~ 1e-300)."""
    se, df = _se_df(a, b, equal_var=False)
    return math.log(2.0) + float(_st.t.logsf(abs(a.mean - b.mean) / se, df))


def tost_p(a: Summary, b: Summary, bound: float, usevar_equal: bool = False) -> float:
    """TOST p (the larger one-sided p) for raw bounds ``[-bound, bound]``."""
    se, df = _se_df(a, b, equal_var=usevar_equal)
    diff = a.mean - b.mean
    return max(float(_st.t.sf((diff + bound) / se, df)), float(_st.t.cdf((diff - bound) / se, df)))


def _solve(f: Callable[[float], float]) -> float | None:
    """Root in ``n`` of ``f`` (monotone in n) on [N_MIN, N_MAX], or ``None`` when there is none.

    ``f`` may be -inf/+inf where a p value underflows; only its sign matters there.
    """

    def g(log_n: float) -> float:
        v = f(math.exp(log_n))
        return max(-1e300, min(1e300, v)) if not math.isnan(v) else v

    lo, hi = math.log(N_MIN + 1e-9), math.log(N_MAX)
    f_lo, f_hi = g(lo), g(hi)
    if math.isnan(f_lo) or math.isnan(f_hi) or (f_lo > 0) == (f_hi > 0):
        return None
    return math.exp(optimize.brentq(g, lo, hi, xtol=1e-12, rtol=1e-12))


def n_for_welch_p(a: Summary, b: Summary, p: float, ratio: float = 1.0) -> float | None:
    """Group size ``n`` (and ``ratio * n``) at which Welch's two-sided p equals ``p``; ``None`` if none.

    Needs ``a.mean != b.mean`` (otherwise p = 1 at every n).
    """
    if not 0 < p < 1:
        raise ConfigError(f"p={p} must lie in (0, 1)")
    if a.mean == b.mean:
        return None
    return _solve(lambda n: welch_log_p(*_groups(a, b, n, ratio)) - math.log(p))


def n_for_tightest_bound(
    a: Summary, b: Summary, bound: float, *, alpha: float = 0.05, in_d: bool = False, ratio: float = 1.0
) -> float | None:
    """``n`` at which the tightest TOST bound (Welch SE) equals ``bound`` (raw, or Cohen's d if ``in_d``)."""

    def excess(n: float) -> float:
        ga, gb = _groups(a, b, n, ratio)
        se, df = _se_df(ga, gb, equal_var=False)
        b_min = tightest_bound(ga.mean - gb.mean, se, df, alpha)
        return (b_min / pooled_sd(ga.sd, ga.n, gb.sd, gb.n) if in_d else b_min) - bound

    return _solve(excess)


def n_for_tost_p(
    a: Summary, b: Summary, bound: float, p: float, *, in_d: bool = False, ratio: float = 1.0
) -> float | None:
    """``n`` at which the TOST p (Welch SE) for bounds ``[-bound, bound]`` equals ``p``."""
    if not 0 < p < 1:
        raise ConfigError(f"p={p} must lie in (0, 1)")

    def excess(n: float) -> float:
        ga, gb = _groups(a, b, n, ratio)
        raw = bound * pooled_sd(ga.sd, ga.n, gb.sd, gb.n) if in_d else bound
        return math.log(max(tost_p(ga, gb, raw), 1e-300)) - math.log(p)

    return _solve(excess)


def rounding_corners(a: Summary, b: Summary, half_width: float) -> Iterator[tuple[Summary, Summary]]:
    """The 16 corners of the box of means and SDs that round to the published ones (``+/- half_width``)."""
    for da, db, sa, sb in itertools.product((-half_width, half_width), repeat=4):
        yield Summary(a.mean + da, max(a.sd + sa, 1e-12), a.n), Summary(b.mean + db, max(b.sd + sb, 1e-12), b.n)
