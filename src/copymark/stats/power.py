"""Power and sample size for two-sample t tests and for TOST equivalence tests.

* :func:`ttest_ind_power` / :func:`ttest_ind_n`: classic power of the two-sample t test for a
  true standardised difference ``d`` (noncentral t, df = n1 + n2 - 2); the same model as
  ``statsmodels.stats.power.TTestIndPower`` (verified in tests/stats).
* :func:`tost_ind_power` / :func:`tost_ind_n`: power of the pooled-variance TOST to conclude
  equivalence within ``[low_d, high_d]`` when the true difference is ``true_d`` (default 0).
  Computed exactly by integrating over the sampling distribution of the SD: given the sample SD
  ``s`` the test rejects both one-sided nulls iff the observed difference falls in
  ``(low + t_c s se, high - t_c s se)``, a normal probability; ``s^2 df`` is chi-square(df).
  Verified against a Monte Carlo simulation of the test itself.

Sizes are per group (``n1``; ``n2 = ratio * n1``) and returned as floats: round up.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy import optimize, special
from scipy import stats as _st

from copymark.errors import ConfigError

Alternative = Literal["two-sided", "larger", "smaller"]

# Gauss-Legendre nodes/weights on (0, 1) for the TOST power integral
_X, _WL = special.roots_legendre(512)
_U, _W = (_X + 1.0) / 2.0, _WL / 2.0


def _check(alpha: float, power: float | None = None) -> None:
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha={alpha} must lie in (0, 1)")
    if power is not None and not 0 < power < 1:
        raise ConfigError(f"power={power} must lie in (0, 1)")


def ttest_ind_power(
    d: float, n1: float, *, alpha: float = 0.05, ratio: float = 1.0, alternative: Alternative = "two-sided"
) -> float:
    """Power of the two-sample t test to detect a true Cohen's d with ``n1`` and ``ratio*n1``."""
    _check(alpha)
    n2 = n1 * ratio
    df = n1 + n2 - 2
    ncp = d * math.sqrt(n1 * n2 / (n1 + n2))
    match alternative:
        case "two-sided":
            c = _st.t.ppf(1 - alpha / 2, df)
            return float(_st.nct.sf(c, df, ncp) + _st.nct.cdf(-c, df, ncp))
        case "larger":
            return float(_st.nct.sf(_st.t.ppf(1 - alpha, df), df, ncp))
        case "smaller":
            return float(_st.nct.cdf(_st.t.ppf(alpha, df), df, ncp))
        case _:
            raise ConfigError(f"alternative={alternative!r} must be two-sided, larger or smaller")


def _solve_n(fn, power: float, what: str) -> float:
    """Smallest (real) n1 with ``fn(n1) >= power``: bracket by doubling, then Brent's method."""
    lo = 2.0 + 1e-9
    if fn(lo) >= power:
        return lo
    hi = 4.0
    while True:
        v = fn(hi)
        if v == v and v >= power:  # (v == v) is False for NaN
            break
        if hi > 1e7:
            raise ConfigError(
                f"{what}: power {power} is not reachable with up to {hi:.0e} per group",
                hint="the effect or the equivalence bounds are too small",
            )
        lo, hi = hi, hi * 2
    return float(optimize.brentq(lambda n: fn(n) - power, lo, hi, xtol=1e-6))


def ttest_ind_n(
    d: float, *, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0, alternative: Alternative = "two-sided"
) -> float:
    """Size of group 1 (float; round up) for the t test to reach ``power`` at true effect ``d``."""
    _check(alpha, power)
    if d == 0:
        raise ConfigError("d=0: no sample size gives power above alpha for a null effect")
    return _solve_n(
        lambda n: ttest_ind_power(d, n, alpha=alpha, ratio=ratio, alternative=alternative), power, f"t test with d={d}"
    )


def tost_ind_power(
    low_d: float, high_d: float, n1: float, *, alpha: float = 0.05, true_d: float = 0.0, ratio: float = 1.0
) -> float:
    """Exact power of the pooled-variance TOST (see module docstring); bounds in Cohen's d."""
    _check(alpha)
    if not low_d < high_d:
        raise ConfigError(f"equivalence bounds must satisfy low < high, got {low_d}, {high_d}")
    n2 = n1 * ratio
    df = n1 + n2 - 2
    se = math.sqrt(1 / n1 + 1 / n2)  # SE of the difference in SD units
    tc = _st.t.ppf(1 - alpha, df)
    a_hi = (high_d - true_d) / se
    a_lo = (low_d - true_d) / se

    # integrate over the quantile u of the chi-square variable (smooth, bounded integrand on (0, 1))
    s = np.sqrt(_st.chi2.ppf(_U, df) / df)
    vals = np.clip(_st.norm.cdf(a_hi - tc * s) - _st.norm.cdf(a_lo + tc * s), 0.0, None)
    val = float(np.dot(_W, vals))
    return float(min(1.0, max(0.0, val)))


def tost_ind_n(
    bound_d: float, *, alpha: float = 0.05, power: float = 0.8, true_d: float = 0.0, ratio: float = 1.0
) -> float:
    """Size of group 1 (float; round up) for the TOST with bounds ``+/-bound_d`` to reach ``power``."""
    _check(alpha, power)
    if bound_d <= abs(true_d):
        raise ConfigError(f"bound_d={bound_d} must exceed |true_d|={abs(true_d)}")
    return _solve_n(
        lambda n: tost_ind_power(-bound_d, bound_d, n, alpha=alpha, true_d=true_d, ratio=ratio),
        power,
        f"TOST with bounds +/-{bound_d}",
    )


def tost_min_bound(n1: float, *, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0) -> float:
    """Smallest symmetric bound (in d) the TOST can establish with ``power`` at true d = 0 (sensitivity)."""
    _check(alpha, power)
    return float(
        optimize.brentq(lambda b: tost_ind_power(-b, b, n1, alpha=alpha, ratio=ratio) - power, 1e-6, 50.0, xtol=1e-8)
    )
