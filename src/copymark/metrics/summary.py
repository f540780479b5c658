"""One summary convention: per-item values -> mean, std, n and a 95% CI.

Every table cell that stands for many per-image (or per-trial) numbers is made here: the
extraction evaluation (tables A/B/C and their baselines), ``copymark metrics``
(:mod:`copymark.metrics.folders`), the steganography quality report and the HTML reports, so
the same values give the same cell everywhere.

The convention, decided once:

* ``n`` counts every value given, finite or infinite. NaN is refused (a per-image metric that
  is NaN is a bug upstream, not a value to average).
* ``n = 0``: ``mean``, ``std`` and ``ci95`` are None.
* ``n = 1``: ``mean`` is the value; ``std`` and ``ci95`` are None (the spread of one value is
  undefined, not 0, and a bootstrap of one value is the point itself).
* Infinite values (PSNR of an output identical to its reference is +inf): counted in ``n``
  and in ``n_inf``; ``mean`` is the arithmetic mean with them (+inf when any value is +inf and
  none is -inf; None when both signs occur); ``std`` and ``ci95`` are None (undefined). The
  reader sees "mean inf, n_inf of n images identical" instead of a mean over the finite part
  that would silently drop the best images.
* Otherwise ``std`` is the sample standard deviation (ddof = 1) and ``ci95`` the percentile
  bootstrap 95% CI of the mean (:func:`copymark.stats.bootstrap_ci`, ``n_boot`` resamples,
  seeded, so the same values and seed give the same CI).

JSON: :meth:`Summary.to_dict` writes infinities as the strings ``"inf"`` / ``"-inf"`` (strict
JSON has no infinity; :func:`json_float`), so every metrics.json parses in any JSON reader.

The pure function :func:`summarize` and the streaming :class:`SummaryAccumulator` share one
``_update`` / ``_compute`` pair (the torchmetrics pattern), so there is one way to turn values
into a summary.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from copymark.errors import DataError

DEFAULT_N_BOOT = 2000
CI_LEVEL = 0.95
CONVENTION = (
    "mean, sample std (ddof 1), n and a percentile-bootstrap 95% CI of the mean; n = 1: std and CI none; "
    "infinite values (identical images) counted in n and n_inf, mean inf, std and CI none"
)


@dataclass(frozen=True)
class Summary:
    """Mean, std, n, count of infinite values and the 95% CI of the mean (see the module docstring)."""

    mean: float | None
    std: float | None
    n: int
    n_inf: int = 0
    ci95: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"mean", "std", "n", "n_inf", "ci95"}``, infinities as ``"inf"``."""
        return {
            "mean": json_float(self.mean),
            "std": json_float(self.std),
            "n": self.n,
            "n_inf": self.n_inf,
            "ci95": None if self.ci95 is None else [json_float(self.ci95[0]), json_float(self.ci95[1])],
        }


def json_float(x: float | None) -> float | str | None:
    """A float for JSON: ``None`` and NaN -> None, +-inf -> ``"inf"`` / ``"-inf"``, else the float."""
    if x is None or math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


# ---------------------------------------------------------------------------------------------
# the one _update / _compute pair


def _update(state: list[np.ndarray], values: Iterable[float] | np.ndarray | Any) -> None:
    """Append ``values`` (any iterable of numbers, numpy array or torch tensor) as float64."""
    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).ravel()
    if np.isnan(arr).any():
        raise DataError(
            f"summary: {int(np.isnan(arr).sum())} of {arr.size} values are NaN",
            hint="a per-image metric should never be NaN; check the images that produced it",
        )
    state.append(arr)


def _compute(state: list[np.ndarray], n_boot: int, seed: int) -> Summary:
    from copymark.stats.bootstrap import bootstrap_ci

    arr = np.concatenate(state) if state else np.empty(0, dtype=np.float64)
    n = int(arr.size)
    if n == 0:
        return Summary(None, None, 0)
    n_pos, n_neg = int(np.isposinf(arr).sum()), int(np.isneginf(arr).sum())
    if n_pos or n_neg:
        mean = None if (n_pos and n_neg) else (math.inf if n_pos else -math.inf)
        return Summary(mean, None, n, n_pos + n_neg, None)
    mean = float(arr.mean())
    if n == 1:
        return Summary(mean, None, 1)
    std = float(arr.std(ddof=1))
    lo, hi = bootstrap_ci(arr, n_boot=n_boot, seed=seed, level=CI_LEVEL)
    return Summary(mean, std, n, 0, (lo, hi))


# ---------------------------------------------------------------------------------------------
# the function and the accumulator


def summarize(values: Iterable[float] | np.ndarray | Any, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> Summary:
    """The :class:`Summary` of ``values`` (see the module docstring for the convention)."""
    state: list[np.ndarray] = []
    _update(state, values)
    return _compute(state, n_boot, seed)


class SummaryAccumulator:
    """Streaming :func:`summarize`: ``update`` with batches of values, ``compute`` at the end.

    Keeps one float64 per value (the bootstrap needs them all), never the images.
    """

    def __init__(self, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> None:
        self.n_boot, self.seed = n_boot, seed
        self.reset()

    def reset(self) -> None:
        self._state: list[np.ndarray] = []

    def update(self, values: Iterable[float] | np.ndarray | Any) -> None:
        _update(self._state, values)

    @property
    def values(self) -> np.ndarray:
        """Every value so far, in update order (float64)."""
        return np.concatenate(self._state) if self._state else np.empty(0, dtype=np.float64)

    def compute(self) -> Summary:
        return _compute(self._state, self.n_boot, self.seed)
