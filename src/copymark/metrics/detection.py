"""Detection metrics: ROC AUC and the rates at a threshold (steganalysis, evasion, ownership).

A detector gives every image a score; at a threshold ``t`` an image is flagged (positive)
when ``score >= t``. With known labels (1 = positive, e.g. stego; 0 = negative, e.g. cover):

* ``detection_rate``: the fraction of positives flagged (true-positive rate),
* ``false_alarm_rate``: the fraction of negatives flagged (false-positive rate),
* ``accuracy`` at ``t``, and the threshold-free ROC AUC (``sklearn.metrics.roc_auc_score``:
  the probability that a random positive scores above a random negative, ties counting one half).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from copymark.errors import DataError


def _scores_labels(scores: Any, labels: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise DataError(f"{what}: {s.size} scores but {y.size} labels")
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"{what}: labels must be 0 (negative, e.g. cover) or 1 (positive, e.g. stego)")
    if not np.isfinite(s).all():
        raise DataError(f"{what}: scores contain NaN or inf")
    return s, y.astype(int)


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 = positive)."""
    from sklearn.metrics import roc_auc_score

    s, y = _scores_labels(scores, labels, "roc_auc")
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError(f"roc_auc needs both classes; got {n_pos} positive and {n_neg} negative images")
    return float(roc_auc_score(y, s))


def rates_at(scores: Any, labels: Any, threshold: float) -> dict[str, float]:
    """Detection rate (TPR), false-alarm rate (FPR) and accuracy when ``score >= threshold`` flags.

    A rate over an empty class is NaN (no positives: no detection rate).
    """
    s, y = _scores_labels(scores, labels, "rates_at")
    flagged = s >= threshold
    pos, neg = y == 1, y == 0
    return {
        "threshold": float(threshold),
        "detection_rate": float(flagged[pos].mean()) if pos.any() else float("nan"),
        "false_alarm_rate": float(flagged[neg].mean()) if neg.any() else float("nan"),
        "accuracy": float((flagged == pos).mean()) if s.size else float("nan"),
    }
