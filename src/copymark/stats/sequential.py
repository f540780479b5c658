"""A sequential test of a success probability whose error rates hold at any stopping time.

Ownership verification asks a suspect model trigger after trigger whether it answers the
secret label (a success) and wants to stop as soon as the evidence is decisive. Two
hypotheses about the suspect's agreement rate ``p``:

* H0 (innocent): ``p <= p0``, where ``p0`` is the agreement rate of independently trained
  models, taken at an upper confidence bound (:func:`null_rate_upper`), never assumed 1/K;
* H1 (owned): ``p >= p1`` (``p1 > p0``, e.g. a conservative trigger accuracy of the protected
  model, below what it reached at protection time so that noise attacks still count).

:class:`SequentialBinomial` is Wald's sequential probability ratio test with the likelihood
ratio ``LR_n = prod (p1/p0)^x_i ((1-p1)/(1-p0))^(1-x_i)``, deciding "owned" when
``LR_n >= 1/alpha`` and "not owned" when ``LR_n <= beta``. Why the error rates hold exactly, not
only approximately as in Wald's classic bounds: under any ``p <= p0``, ``LR_n`` is a nonnegative
supermartingale with ``LR_0 = 1`` (its expected factor per trial is
``p p1/p0 + (1-p)(1-p1)/(1-p0) <= 1`` since it increases in ``p`` and equals 1 at ``p0``), so by
Ville's inequality ``P(sup_n LR_n >= 1/alpha) <= alpha``: the probability of ever claiming an
innocent model is at most ``alpha``, whatever the number of triggers, the order, or when the
owner stops (budget spent, triggers exhausted). Symmetrically ``1/LR_n`` is a supermartingale
under ``p >= p1``, so a protected model is declared "not owned" with probability at most
``beta``. The thresholds ``1/alpha`` and ``beta`` are slightly wider than Wald's
``(1-beta)/alpha`` and ``beta/(1-alpha)``; that is the price of the exact guarantee. At any
point, ``1/LR_n`` (capped at 1) bounds the false-claim probability of claiming now.

Why this test rather than a fixed-n binomial test with alpha spending: a Bonferroni split of
alpha over N looks is also valid but needs ``log(N)`` more evidence, and curtailing a fixed-n
test needs the critical count of the full design (tens of successes for alpha = 1e-6 at
``p0`` = 0.05 and 500 triggers); the SPRT claims a 99%-accurate model at ``alpha = 1e-6``,
``p0 = 0.05``, ``p1 = 0.5`` after six or seven triggers (``6 ln 10`` sits on ``ln 1e6``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from scipy import stats as _st

from copymark.errors import ConfigError

Decision = Literal["owned", "not owned"]


def null_rate_upper(agreements: int, trials: int, confidence: float = 0.999) -> float:
    """One-sided Clopper-Pearson upper bound of an agreement rate from ``agreements`` of ``trials``.

    With no agreement at all the bound is ``1 - (1 - confidence)^(1/trials)`` (about
    ``-ln(1 - confidence) / trials``): more null models and triggers give a tighter ``p0``.
    """
    if trials < 1 or not 0 <= agreements <= trials:
        raise ConfigError(f"need 0 <= agreements ({agreements}) <= trials ({trials}) and trials >= 1")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence {confidence} must lie in (0, 1)")
    if agreements == trials:
        return 1.0
    return float(_st.beta.ppf(confidence, agreements + 1, trials - agreements))


@dataclass
class SequentialBinomial:
    """Wald's SPRT of ``p <= p0`` against ``p >= p1`` with Ville-exact error rates (module docstring)."""

    p0: float
    p1: float
    alpha: float = 1e-6
    beta: float = 1e-3
    n: int = 0
    successes: int = 0
    log_lr: float = 0.0
    decision: Decision | None = None
    decided_at: int | None = None
    trace: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 < self.p0 < self.p1 < 1:
            raise ConfigError(
                f"need 0 < p0 ({self.p0:.3g}) < p1 ({self.p1:.3g}) < 1",
                hint="the null agreement rate must lie below the protected model's expected trigger accuracy",
            )
        for name, v in (("alpha", self.alpha), ("beta", self.beta)):
            if not 0 < v < 1:
                raise ConfigError(f"{name} {v} must lie in (0, 1)")
        self._up = math.log(self.p1 / self.p0)
        self._down = math.log((1 - self.p1) / (1 - self.p0))

    @property
    def upper(self) -> float:
        """log of the claim threshold ``1/alpha``."""
        return -math.log(self.alpha)

    @property
    def lower(self) -> float:
        """log of the "not owned" threshold ``beta``."""
        return math.log(self.beta)

    def update(self, success: bool) -> Decision | None:
        """Add one trigger's outcome; returns the decision once reached (later outcomes are ignored)."""
        if self.decision is not None:
            return self.decision
        self.n += 1
        self.successes += int(bool(success))
        self.log_lr += self._up if success else self._down
        self.trace.append(self.log_lr)
        if self.log_lr >= self.upper:
            self.decision, self.decided_at = "owned", self.n
        elif self.log_lr <= self.lower:
            self.decision, self.decided_at = "not owned", self.n
        return self.decision

    @property
    def false_claim_bound(self) -> float:
        """An upper bound of the probability that an innocent model (``p <= p0``) produces
        evidence this strong at some point: ``min(1, 1/LR_n)`` (Ville's inequality)."""
        return min(1.0, math.exp(-self.log_lr))

    @property
    def missed_claim_bound(self) -> float:
        """An upper bound of the probability that a protected model (``p >= p1``) produces
        evidence this weak at some point: ``min(1, LR_n)``."""
        return min(1.0, math.exp(self.log_lr))

    def successes_needed(self) -> int:
        """Consecutive successes from here that would reach the claim threshold."""
        if self.decision is not None:
            return 0
        return max(0, math.ceil((self.upper - self.log_lr) / self._up - 1e-12))


def binomial_tail(successes: int, n: int, p0: float) -> float:
    """``P(X >= successes)`` for ``X ~ Binomial(n, p0)``: the fixed-n false-claim probability.

    Exact for a number of triggers fixed in advance; after optional stopping use
    :attr:`SequentialBinomial.false_claim_bound` instead.
    """
    if not 0 <= successes <= n:
        raise ConfigError(f"need 0 <= successes ({successes}) <= n ({n})")
    return float(_st.binom.sf(successes - 1, n, p0))
