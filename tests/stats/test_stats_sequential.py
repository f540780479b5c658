"""The sequential ownership test: exact error rates at any stopping time (Monte Carlo), early decisions,
and the null-rate bound against scipy's Clopper-Pearson interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from copymark.errors import ConfigError
from copymark.stats.sequential import SequentialBinomial, binomial_tail, null_rate_upper


def _run(p: float, test: SequentialBinomial, rng: np.random.Generator, max_n: int) -> str | None:
    for x in rng.random(max_n) < p:
        if test.update(bool(x)) is not None:
            break
    return test.decision


@pytest.mark.parametrize("p_true", [0.1, 0.05])  # the null's bound, and an innocent model below it
def test_false_claims_stay_below_alpha_at_any_stopping_time(p_true):
    """Ville's inequality: an innocent model (p <= p0) is ever claimed with probability <= alpha,
    however long the owner keeps querying. 20,000 runs of up to 400 triggers at alpha = 0.05:
    the count of claims is Binomial(20,000, q) with q <= 0.05, so more than 1,100 (4.6 standard
    deviations above 1,000) would refute the bound."""
    rng = np.random.default_rng(0)
    runs = 20_000
    claims = sum(
        _run(p_true, SequentialBinomial(p0=0.1, p1=0.4, alpha=0.05, beta=0.05), rng, 400) == "owned"
        for _ in range(runs)
    )
    assert claims <= 1_100, claims


def test_missed_claims_stay_below_beta():
    rng = np.random.default_rng(1)
    runs = 20_000
    missed = sum(
        _run(0.4, SequentialBinomial(p0=0.1, p1=0.4, alpha=0.05, beta=0.05), rng, 400) == "not owned"
        for _ in range(runs)
    )
    assert missed <= 1_100, missed


def test_a_protected_model_is_claimed_within_a_few_triggers_at_one_in_a_million():
    t = SequentialBinomial(p0=0.05, p1=0.4, alpha=1e-6, beta=1e-3)
    n_needed = math.ceil(math.log(1e6) / math.log(0.4 / 0.05))  # all successes: 7 triggers
    for _ in range(1, 20):
        if t.update(True):
            break
    assert t.decision == "owned" and t.decided_at == n_needed == 7
    assert t.false_claim_bound <= 1e-6 and t.false_claim_bound == pytest.approx((0.05 / 0.4) ** 7)
    # after the decision, outcomes are ignored
    assert t.update(False) == "owned" and t.n == 7
    # a model answering like an innocent one (never the label) is declared "not owned"
    u = SequentialBinomial(p0=0.05, p1=0.4, alpha=1e-6, beta=1e-3)
    while u.update(False) is None:
        pass
    assert u.decision == "not owned" and u.decided_at == math.ceil(math.log(1e-3) / math.log(0.6 / 0.95))


def test_log_likelihood_ratio_matches_the_definition_and_successes_needed():
    t = SequentialBinomial(p0=0.02, p1=0.6, alpha=1e-6)
    outcomes = [True, False, True, True]
    for x in outcomes:
        t.update(x)
    lr = math.prod((0.6 / 0.02) if x else (0.4 / 0.98) for x in outcomes)
    assert t.log_lr == pytest.approx(math.log(lr), rel=1e-12) and t.successes == 3 and t.n == 4
    k = t.successes_needed()
    assert t.log_lr + k * math.log(30) >= -math.log(1e-6) > t.log_lr + (k - 1) * math.log(30)


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="p0"):
        SequentialBinomial(p0=0.5, p1=0.4)
    with pytest.raises(ConfigError, match="alpha"):
        SequentialBinomial(p0=0.1, p1=0.4, alpha=0)


def test_null_rate_upper_is_the_one_sided_clopper_pearson_bound():
    for k, m in [(0, 5000), (3, 5000), (40, 500), (1, 10)]:
        # the two-sided interval at level 1 - 2 * 0.001 has the one-sided 0.999 bound as its upper end
        ref = st.binomtest(k, m).proportion_ci(confidence_level=1 - 2 * 0.001, method="exact").high
        assert null_rate_upper(k, m, 0.999) == pytest.approx(ref, rel=1e-9)
    assert null_rate_upper(0, 5000, 0.999) == pytest.approx(1 - 0.001 ** (1 / 5000), rel=1e-9)
    assert null_rate_upper(7, 7) == 1.0
    with pytest.raises(ConfigError):
        null_rate_upper(3, 2)


def test_binomial_tail_is_the_exact_upper_tail():
    assert binomial_tail(0, 10, 0.3) == pytest.approx(1.0)
    assert binomial_tail(10, 10, 0.3) == pytest.approx(0.3**10)
    assert binomial_tail(4, 20, 0.1) == pytest.approx(st.binomtest(4, 20, 0.1, alternative="greater").pvalue)
