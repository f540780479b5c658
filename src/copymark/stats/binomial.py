"""Binomial tests for match counts (e.g. watermark verification: how many of ``n`` trigger
images the suspect model answers with the secret label, against chance ``p0``).

Thin, named wrappers over ``scipy.stats.binomtest`` plus the critical count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from scipy import stats as _st

from copymark.errors import ConfigError

Alternative = Literal["two-sided", "greater", "less"]


@dataclass(frozen=True)
class BinomResult:
    """``k`` successes of ``n`` against null probability ``p0``; ``ci`` is Clopper-Pearson."""

    k: int
    n: int
    p0: float
    proportion: float
    pvalue: float
    ci: tuple[float, float]
    level: float
    alternative: str

    def as_dict(self) -> dict:
        return asdict(self)


def _check(k: int | None, n: int, p0: float) -> None:
    if n < 1:
        raise ConfigError(f"n={n} must be >= 1")
    if k is not None and not 0 <= k <= n:
        raise ConfigError(f"k={k} must lie in [0, n={n}]")
    if not 0 < p0 < 1:
        raise ConfigError(f"p0={p0} must lie in (0, 1)")


def binom_test(
    k: int, n: int, p0: float = 0.5, *, alternative: Alternative = "greater", level: float = 0.95
) -> BinomResult:
    """Exact binomial test of ``k`` successes in ``n`` trials against ``p0`` (default one-sided greater)."""
    _check(k, n, p0)
    r = _st.binomtest(int(k), int(n), p0, alternative=alternative)
    ci = r.proportion_ci(confidence_level=level, method="exact")
    return BinomResult(
        k=int(k),
        n=int(n),
        p0=p0,
        proportion=k / n,
        pvalue=float(r.pvalue),
        ci=(float(ci.low), float(ci.high)),
        level=level,
        alternative=alternative,
    )


def binom_pvalue(k: int, n: int, p0: float = 0.5, alternative: Alternative = "greater") -> float:
    """Just the p value of :func:`binom_test`."""
    return binom_test(k, n, p0, alternative=alternative).pvalue


def min_successes(n: int, p0: float, alpha: float = 0.05) -> int:
    """Smallest ``k`` with ``P(X >= k) <= alpha`` for ``X ~ Binomial(n, p0)`` (``n + 1`` if none).

    The one-sided "greater" test rejects exactly when the observed count is at least this.
    """
    _check(None, n, p0)
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha={alpha} must lie in (0, 1)")
    k = int(_st.binom.isf(alpha, n, p0)) + 1
    # guard against floating-point edges of isf: step to the exact boundary
    while k > 0 and _st.binom.sf(k - 2, n, p0) <= alpha:
        k -= 1
    while k <= n and _st.binom.sf(k - 1, n, p0) > alpha:
        k += 1
    return min(k, n + 1)
