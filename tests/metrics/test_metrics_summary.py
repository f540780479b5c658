"""The one summary convention (mean, std, n, n_inf, CI) against numpy and scipy on generated values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from copymark.errors import DataError
from copymark.metrics.summary import Summary, SummaryAccumulator, json_float, summarize


@pytest.mark.parametrize("n", [2, 5, 40, 300])
def test_mean_std_match_numpy(n):
    x = np.random.default_rng(n).normal(30.0, 2.5, size=n)
    s = summarize(x, n_boot=500, seed=1)
    # the same float64 sums as numpy's: equal to a few ulps, not to a tuned tolerance
    assert s.mean == pytest.approx(float(np.mean(x)), rel=1e-14)
    assert s.std == pytest.approx(float(np.std(x, ddof=1)), rel=1e-12)
    assert (s.n, s.n_inf) == (n, 0)
    lo, hi = s.ci95
    assert lo <= s.mean <= hi


def test_ci_is_the_percentile_bootstrap_of_the_mean():
    """Our CI against scipy.stats.bootstrap (percentile method). The two draw different resamples,
    so they agree to Monte-Carlo error: with B resamples each, the 2.5% quantile of the bootstrap
    mean has SE about sqrt(p(1-p)/B) / phi(z_p) * sigma_mean; the difference of two independent
    estimates is sqrt(2) times that. We allow 5 of those SEs."""
    rng = np.random.default_rng(7)
    x = rng.gamma(2.0, 3.0, size=60)
    b = 20_000
    ours = summarize(x, n_boot=b, seed=3).ci95
    ref = stats.bootstrap((x,), np.mean, n_resamples=b, method="percentile", random_state=11).confidence_interval
    sigma_mean = x.std(ddof=1) / math.sqrt(len(x))
    p = 0.025
    se = math.sqrt(p * (1 - p) / b) / stats.norm.pdf(stats.norm.ppf(p)) * sigma_mean
    tol = 5 * math.sqrt(2) * se
    assert ours[0] == pytest.approx(ref.low, abs=tol)
    assert ours[1] == pytest.approx(ref.high, abs=tol)


def test_seeded_and_deterministic():
    x = np.random.default_rng(0).normal(size=25)
    assert summarize(x, 1000, seed=5) == summarize(list(x), 1000, seed=5)
    assert summarize(x, 1000, seed=5).ci95 != summarize(x, 1000, seed=6).ci95


def test_n_one_has_no_spread():
    s = summarize([31.5])
    assert s == Summary(mean=31.5, std=None, n=1, n_inf=0, ci95=None)
    assert s.to_dict() == {"mean": 31.5, "std": None, "n": 1, "n_inf": 0, "ci95": None}


def test_empty():
    assert summarize([]) == Summary(None, None, 0)


def test_infinite_values_counted_mean_inf_no_spread():
    vals = [30.0, math.inf, 28.0, math.inf]
    s = summarize(vals)
    assert s.n == 4 and s.n_inf == 2 and s.mean == math.inf and s.std is None and s.ci95 is None
    assert np.mean(vals) == s.mean  # numpy's mean of these values, too
    d = s.to_dict()
    assert d == {"mean": "inf", "std": None, "n": 4, "n_inf": 2, "ci95": None}
    json.dumps(d, allow_nan=False)  # strict JSON
    assert summarize([math.inf]).to_dict()["mean"] == "inf"  # n = 1 and infinite: one rule, no special case
    assert summarize([-math.inf, 1.0]).mean == -math.inf
    mixed = summarize([math.inf, -math.inf, 2.0])
    assert mixed.mean is None and mixed.n_inf == 2  # undefined, like numpy's nan, but never NaN in JSON


def test_nan_is_refused():
    with pytest.raises(DataError, match="NaN"):
        summarize([1.0, float("nan")])


def test_accumulator_equals_the_function():
    rng = np.random.default_rng(2)
    chunks = [rng.normal(size=k) for k in (3, 1, 7, 4)]
    acc = SummaryAccumulator(n_boot=800, seed=9)
    for i, c in enumerate(chunks):
        acc.update(torch.from_numpy(c) if i % 2 else c.tolist())  # tensors, lists, arrays alike
    assert acc.compute() == summarize(np.concatenate(chunks), n_boot=800, seed=9)
    assert acc.values.tolist() == np.concatenate(chunks).tolist()
    acc.reset()
    assert acc.compute().n == 0


def test_json_float():
    assert [json_float(x) for x in (1.5, math.inf, -math.inf, math.nan, None)] == [1.5, "inf", "-inf", None, None]
