"""ROC AUC and rates at a threshold, checked against an independent reference (Mann-Whitney U)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from copymark.errors import DataError
from copymark.metrics.detection import rates_at, roc_auc


def test_roc_auc_equals_the_mann_whitney_statistic():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 2, 200)
        y[:2] = [0, 1]
        s = rng.normal(size=200) + y * rng.uniform(0, 2)
        s[::7] = np.round(s[::7], 1)  # some ties: they count one half
        u = mannwhitneyu(s[y == 1], s[y == 0]).statistic
        assert roc_auc(s, y) == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()), abs=1e-12)
    assert roc_auc([0.1, 0.1, 0.1], [0, 1, 1]) == pytest.approx(0.5)
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        ([0.1, 0.2], [1, 1], "both classes"),
        ([0.1, 0.2], [1, 2], "labels must be 0"),
        ([0.1], [1, 0], "1 scores but 2"),
        ([float("nan"), 0.2], [1, 0], "NaN"),
    ],
)
def test_roc_auc_bad_input(scores, labels, match):
    with pytest.raises(DataError, match=match):
        roc_auc(scores, labels)


def test_rates_at_threshold():
    r = rates_at([0.9, 0.2, 0.6, 0.4], [1, 1, 0, 0], 0.5)
    assert r == {"threshold": 0.5, "detection_rate": 0.5, "false_alarm_rate": 0.5, "accuracy": 0.5}
    r = rates_at([0.9, 0.7], [1, 1], 0.8)  # no negatives: no false-alarm rate
    assert r["detection_rate"] == 0.5 and np.isnan(r["false_alarm_rate"])
