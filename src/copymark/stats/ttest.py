"""Two-sample t tests on independent groups (Welch and Student), with Cohen's d.

Everything works from summary statistics (mean, SD, n) so that published results that report
only those can be reproduced; the array versions compute the summaries and call them. SDs are
sample SDs (``ddof=1``). Verified against ``scipy.stats.ttest_ind`` (tests/stats).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy import stats as _st

from copymark.errors import DataError

Alternative = Literal["two-sided", "less", "greater"]


@dataclass(frozen=True)
class Summary:
    """Mean, sample SD (ddof=1) and size of one group."""

    mean: float
    sd: float
    n: int


@dataclass(frozen=True)
class TTestResult:
    """A two-sample t test of ``mean(a) - mean(b)``.

    ``ci`` is the two-sided confidence interval of the difference at ``level``.
    """

    t: float
    df: float
    p: float
    diff: float
    se: float
    ci: tuple[float, float]
    level: float
    alternative: str
    equal_var: bool

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(values: Sequence[float] | np.ndarray, name: str = "sample") -> Summary:
    """Mean, sample SD and n of a 1-D sample; at least two finite values are required."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 2:
        raise DataError(
            f"{name} has {x.size} value(s); a t test needs at least 2 per group",
            hint="collect more ratings before analysing",
        )
    if not np.all(np.isfinite(x)):
        raise DataError(f"{name} contains NaN or infinite values", hint="drop missing ratings first")
    return Summary(mean=float(x.mean()), sd=float(x.std(ddof=1)), n=int(x.size))


def pooled_sd(sd1: float, n1: int, sd2: float, n2: int) -> float:
    """Pooled SD ``sqrt(((n1-1) sd1^2 + (n2-1) sd2^2) / (n1 + n2 - 2))`` (Cohen 1988).

    This is the standardiser of Cohen's d and the one used to turn equivalence bounds given
    in d into raw units (e.g. 0.894 for the Moery & Calin-Jageman example in Lakens' TOSTER).
    """
    return math.sqrt(((n1 - 1) * sd1**2 + (n2 - 1) * sd2**2) / (n1 + n2 - 2))


def cohens_d(a: Summary, b: Summary) -> float:
    """Standardised mean difference ``(mean_a - mean_b) / pooled_sd``."""
    s = pooled_sd(a.sd, a.n, b.sd, b.n)
    return (a.mean - b.mean) / s if s > 0 else math.copysign(math.inf, a.mean - b.mean) if a.mean != b.mean else 0.0


def _se_df(a: Summary, b: Summary, equal_var: bool) -> tuple[float, float]:
    if equal_var:
        sp = pooled_sd(a.sd, a.n, b.sd, b.n)
        return sp * math.sqrt(1.0 / a.n + 1.0 / b.n), float(a.n + b.n - 2)
    va, vb = a.sd**2 / a.n, b.sd**2 / b.n
    se = math.sqrt(va + vb)
    denom = va**2 / (a.n - 1) + vb**2 / (b.n - 1)
    df = (va + vb) ** 2 / denom if denom > 0 else float(a.n + b.n - 2)
    return se, df


def _p_value(t: float, df: float, alternative: str) -> float:
    match alternative:
        case "two-sided":
            return float(2.0 * _st.t.sf(abs(t), df))
        case "greater":
            return float(_st.t.sf(t, df))
        case "less":
            return float(_st.t.cdf(t, df))
        case _:
            raise DataError(f"alternative={alternative!r} is not one of two-sided, less, greater")


def ttest_from_stats(
    a: Summary, b: Summary, *, equal_var: bool = False, alternative: Alternative = "two-sided", level: float = 0.95
) -> TTestResult:
    """t test of ``a.mean - b.mean`` from summaries; Welch (unequal variances) by default."""
    for s, nm in ((a, "group a"), (b, "group b")):
        if s.n < 2:
            raise DataError(f"{nm} has n={s.n}; a t test needs at least 2 per group")
    se, df = _se_df(a, b, equal_var)
    diff = a.mean - b.mean
    if se == 0:
        raise DataError(
            "both groups have zero variance; the t statistic is undefined",
            hint="constant ratings cannot be tested; check the data",
        )
    t = diff / se
    q = float(_st.t.ppf(0.5 + level / 2.0, df))
    return TTestResult(
        t=t,
        df=df,
        p=_p_value(t, df, alternative),
        diff=diff,
        se=se,
        ci=(diff - q * se, diff + q * se),
        level=level,
        alternative=alternative,
        equal_var=equal_var,
    )


def welch_t(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    alternative: Alternative = "two-sided",
    level: float = 0.95,
) -> TTestResult:
    """Welch's unequal-variance t test of ``mean(a) - mean(b)`` (Satterthwaite df).

    Same t and p as ``scipy.stats.ttest_ind(a, b, equal_var=False)``; also returns the
    difference, its standard error and confidence interval.
    """
    return ttest_from_stats(summarize(a, "a"), summarize(b, "b"), equal_var=False, alternative=alternative, level=level)


def student_t(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    alternative: Alternative = "two-sided",
    level: float = 0.95,
) -> TTestResult:
    """Student's pooled-variance t test of ``mean(a) - mean(b)``."""
    return ttest_from_stats(summarize(a, "a"), summarize(b, "b"), equal_var=True, alternative=alternative, level=level)
