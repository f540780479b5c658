"""Steganalysis on the attacker's side: score images, detection rate, ROC AUC, detector checkpoints.

A steganalyzer (:mod:`copymark.nets.steganalysis`) gives every image a *stego score*, the
softmax probability of its "stego" output. At a threshold ``t`` an image is flagged as stego
when ``score >= t``. With known labels (1 = stego, 0 = cover) we report

* ``detection_rate``: the fraction of stego images flagged (true-positive rate),
* ``false_alarm_rate``: the fraction of covers flagged (false-positive rate),
* ``accuracy`` at ``t``, and the threshold-free ROC AUC.

:func:`roc_auc` is the Mann-Whitney form (probability that a random stego image scores above a
random cover, ties counting one half), which equals ``sklearn.metrics.roc_auc_score``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy.stats import rankdata

from copymark.checkpoints import load_checkpoint, load_strict, save_checkpoint
from copymark.config import parse_config
from copymark.errors import DataError, WeightsError
from copymark.nets.steganalysis import (
    SRNet,
    SRNetConfig,
    SteganalyzerConfig,
    XuNet,
    XuNetConfig,
    YeNet,
    YeNetConfig,
    build_steganalyzer,
    stego_score,
)

SteganalyzerKind = Literal["xunet", "yenet", "srnet"]
STEGANALYZER_KINDS: tuple[str, ...] = ("xunet", "yenet", "srnet")


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 = positive)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise DataError(f"roc_auc: {s.size} scores but {y.size} labels")
    if not np.isin(y, (0, 1)).all():
        raise DataError("roc_auc: labels must be 0 (cover) or 1 (stego)")
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError(f"roc_auc needs both classes; got {n_pos} stego and {n_neg} cover images")
    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def rates_at(scores: Any, labels: Any, threshold: float) -> dict[str, float]:
    """Detection rate (TPR), false-alarm rate (FPR) and accuracy when ``score >= threshold`` flags stego."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(int)
    flagged = s >= threshold
    pos, neg = y == 1, y == 0
    return {
        "threshold": float(threshold),
        "detection_rate": float(flagged[pos].mean()) if pos.any() else float("nan"),
        "false_alarm_rate": float(flagged[neg].mean()) if neg.any() else float("nan"),
        "accuracy": float((flagged == pos).mean()),
    }


def score_images(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Stego scores in [0, 1] (shape ``N``) of a batch, the model in eval mode, without gradients."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            out.append(stego_score(model(images[i : i + batch_size].to(dev, torch.float32))).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def parse_steganalyzer_config(data: dict[str, Any], where: str = "steganalyzer config") -> SteganalyzerConfig:
    """Validate a steganalyzer config dict, choosing the model by its ``kind``."""
    kind = data.get("kind")
    match kind:
        case "xunet":
            return parse_config(XuNetConfig, data, where)
        case "yenet":
            return parse_config(YeNetConfig, data, where)
        case "srnet":
            return parse_config(SRNetConfig, data, where)
    raise WeightsError(
        f"{where}: kind {kind!r} is not a steganalyzer (expected one of {', '.join(STEGANALYZER_KINDS)})",
        hint="pass a checkpoint written by `copymark stego detect-train`",
    )


def save_steganalyzer(
    folder: str | Path, model: XuNet | YeNet | SRNet, config: SteganalyzerConfig, provenance: dict[str, Any] | None = None
) -> Path:
    """Write a steganalyzer checkpoint folder (``model.safetensors`` + ``config.json``)."""
    return save_checkpoint(folder, model.state_dict(), config.model_dump(), provenance)


def load_steganalyzer(
    folder: str | Path, expected_kind: SteganalyzerKind | None = None, map_location: str | torch.device = "cpu"
) -> tuple[XuNet | YeNet | SRNet, SteganalyzerConfig, dict[str, Any]]:
    """Load a steganalyzer checkpoint -> ``(model in eval mode, config, meta)``."""
    state, meta = load_checkpoint(folder, map_location=map_location)
    cfg = dict(meta["config"])
    if expected_kind is not None and cfg.get("kind") != expected_kind:
        raise WeightsError(f"{folder}: checkpoint holds a {cfg.get('kind')!r} model, not a {expected_kind!r} steganalyzer")
    config = parse_steganalyzer_config(cfg, where=f"{folder}/config.json")
    model = build_steganalyzer(config)
    load_strict(model, state, str(folder))
    model.to(map_location).eval()
    return model, config, meta
