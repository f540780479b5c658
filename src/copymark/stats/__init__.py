"""Statistics for copymark: t tests, TOST equivalence, power, bootstrap CIs, binomial and sequential tests.

Plain functions on numbers or arrays, each verified against a reference library or a published
worked example in tests/stats.
"""

from copymark.stats.binomial import BinomResult, binom_pvalue, binom_test, min_successes
from copymark.stats.bootstrap import bootstrap_ci, bootstrap_distribution
from copymark.stats.power import tost_ind_n, tost_ind_power, tost_min_bound, ttest_ind_n, ttest_ind_power
from copymark.stats.sequential import SequentialBinomial, binomial_tail, null_rate_upper
from copymark.stats.tost import TostOneSampleResult, TostResult, tost_from_stats, tost_ind, tost_one_sample
from copymark.stats.ttest import (
    Summary,
    TTestResult,
    cohens_d,
    pooled_sd,
    student_t,
    summarize,
    ttest_from_stats,
    welch_t,
)

__all__ = [
    "BinomResult",
    "binom_pvalue",
    "binom_test",
    "min_successes",
    "SequentialBinomial",
    "binomial_tail",
    "null_rate_upper",
    "bootstrap_ci",
    "bootstrap_distribution",
    "tost_ind_n",
    "tost_ind_power",
    "tost_min_bound",
    "ttest_ind_n",
    "ttest_ind_power",
    "TostOneSampleResult",
    "TostResult",
    "tost_from_stats",
    "tost_ind",
    "tost_one_sample",
    "Summary",
    "TTestResult",
    "cohens_d",
    "pooled_sd",
    "student_t",
    "summarize",
    "ttest_from_stats",
    "welch_t",
]
