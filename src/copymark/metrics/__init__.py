"""copymark.metrics: pure metric functions and thin streaming accumulators.

- :mod:`~copymark.metrics.fidelity`: :func:`psnr`, :func:`ssim` (SR protocol: ``y_channel``,
  ``crop_border``, 8-bit ``quantize``), accumulators :class:`PSNR`, :class:`SSIM`.
- :mod:`~copymark.metrics.distribution`: FID (:func:`frechet_distance`, :func:`fid_from_features`,
  :class:`FeatureMoments`) and KID (:func:`kid_from_features`, :func:`mmd2_unbiased`) over an
  injected feature net; :class:`FeatureDistances` streams images through it.
- :mod:`~copymark.metrics.inception`: :func:`inception_v3_features`, the FID Inception-v3 with
  the standard 2015-12-05 weights from a local file.
- :mod:`~copymark.metrics.sliced_wasserstein`: sliced Wasserstein distance on Laplacian-pyramid patches
  (:func:`swd`, :class:`SWD`).
- :mod:`~copymark.metrics.folders`: :func:`compare_folders` / :func:`pair_folders`.
- :mod:`~copymark.metrics.summary`: the one summary convention (mean, std, n, n_inf, bootstrap
  95% CI; inf and n = 1 handled one way): :func:`summarize`, :class:`SummaryAccumulator`.

Names are imported lazily so that ``import copymark.metrics.commands`` (done by the CLI at
start-up) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "psnr": "fidelity",
    "ssim": "fidelity",
    "PSNR": "fidelity",
    "SSIM": "fidelity",
    "Summary": "summary",
    "summarize": "summary",
    "SummaryAccumulator": "summary",
    "json_float": "summary",
    "prepare_pair": "fidelity",
    "FeatureMoments": "distribution",
    "FeatureDistances": "distribution",
    "frechet_distance": "distribution",
    "fid_from_features": "distribution",
    "kid_from_features": "distribution",
    "mmd2_unbiased": "distribution",
    "KIDResult": "distribution",
    "inception_v3_features": "inception",
    "InceptionFeatures": "inception",
    "swd": "sliced_wasserstein",
    "SWD": "sliced_wasserstein",
    "SWDResult": "sliced_wasserstein",
    "laplacian_pyramid": "sliced_wasserstein",
    "compare_folders": "folders",
    "pair_folders": "folders",
    "FolderMetrics": "folders",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"copymark.metrics.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'copymark.metrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
