"""Steganalysis in use: score images, detector checkpoints, scoring folders.

A steganalyzer (:mod:`copymark.nets.steganalysis`) gives every image a *stego score*, the
softmax probability of its "stego" output; an image is flagged as stego when
``score >= threshold``. The detection rate, false-alarm rate and ROC AUC of those scores are
computed by :mod:`copymark.metrics.detection`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from copymark.checkpoints import read_checkpoint_meta
from copymark.errors import WeightsError
from copymark.metrics.detection import rates_at, roc_auc
from copymark.nets.build import load_net, save_net
from copymark.nets.steganalysis import SRNet, SteganalyzerConfig, XuNet, YeNet, stego_score

SteganalyzerKind = Literal["xunet", "yenet", "srnet"]
STEGANALYZER_KINDS: tuple[str, ...] = ("xunet", "yenet", "srnet")


def score_images(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Stego scores in [0, 1] (shape ``N``) of a batch, the model in eval mode, without gradients."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            out.append(stego_score(model(images[i : i + batch_size].to(dev, torch.float32))).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def save_steganalyzer(
    folder: str | Path,
    model: XuNet | YeNet | SRNet,
    config: SteganalyzerConfig,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write a steganalyzer checkpoint folder through the one net checkpoint path
    (:func:`copymark.nets.build.save_net`)."""
    return save_net(folder, model, config, provenance)


def load_steganalyzer(
    folder: str | Path, expected_kind: SteganalyzerKind | None = None, map_location: str | torch.device = "cpu"
) -> tuple[XuNet | YeNet | SRNet, SteganalyzerConfig, dict[str, Any]]:
    """Load a steganalyzer checkpoint -> ``(model in eval mode, config, meta)`` through
    :func:`copymark.nets.build.load_net` (strict weights); a checkpoint of another model is a WeightsError."""
    meta = read_checkpoint_meta(folder)
    kind = meta["config"].get("kind")
    if kind not in STEGANALYZER_KINDS:
        raise WeightsError(
            f"{folder}/config.json: kind {kind!r} is not a steganalyzer (expected one of {', '.join(STEGANALYZER_KINDS)})",
            hint="pass a checkpoint written by `copymark stego detect-train`",
        )
    if expected_kind is not None and kind != expected_kind:
        raise WeightsError(f"{folder}: checkpoint holds a {kind!r} model, not a {expected_kind!r} steganalyzer")
    model, config = load_net(folder, map_location, expected_kind=kind)
    return model, config, meta  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# scoring folders (``copymark stego detect``)


def _score_folder(
    model: torch.nn.Module, folder: str | Path, what: str, batch_size: int = 64
) -> list[tuple[str, float]]:
    """``(relative path, score)`` for every image of ``folder`` (recursive), each at its stored size."""
    from copymark.data.folders import image_files
    from copymark.images import load_image

    root = Path(folder)
    files = image_files(root, what, recursive=True)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    imgs = [load_image(f) for f in files]
    for i, x in enumerate(imgs):
        by_shape.setdefault(tuple(x.shape), []).append(i)
    scores = [0.0] * len(files)
    for idx in by_shape.values():
        s = score_images(model, torch.stack([imgs[i] for i in idx]), batch_size)
        for i, v in zip(idx, s.tolist(), strict=True):
            scores[i] = float(v)
    return [(f.relative_to(root).as_posix(), s) for f, s in zip(files, scores, strict=True)]


def detect_folders(
    model_dir: str | Path,
    input: str | Path | None = None,
    covers: str | Path | None = None,
    stegos: str | Path | None = None,
    threshold: float = 0.5,
    out: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score the images of ``input`` (unlabelled), ``covers`` (label 0) and ``stegos`` (label 1).

    Returns a summary: images scored, the fraction flagged at ``threshold`` per folder, and,
    when both covers and stegos are given, ROC AUC, detection rate, false-alarm rate and
    accuracy. ``out`` (``.csv`` or ``.json``) receives one row per image:
    ``set, file, score, flagged[, label]``.
    """
    import csv

    from copymark.files import atomic_write_bytes, atomic_write_json

    model, config, _ = load_steganalyzer(model_dir, map_location=device)
    rows: list[dict[str, Any]] = []
    for name, folder, label in (("input", input, None), ("covers", covers, 0), ("stegos", stegos, 1)):
        if folder is None:
            continue
        for f, s in _score_folder(model, folder, f"{name} folder"):
            rows.append({"set": name, "file": f, "score": s, "flagged": s >= threshold, "label": label})
    summary: dict[str, Any] = {
        "model": config.kind,
        "checkpoint": str(model_dir),
        "threshold": float(threshold),
        "images": len(rows),
    }
    for name in ("input", "covers", "stegos"):
        sel = [r for r in rows if r["set"] == name]
        if sel:
            summary[f"{name}_flagged_rate"] = float(np.mean([r["flagged"] for r in sel]))
    labelled = [r for r in rows if r["label"] is not None]
    if labelled and {r["label"] for r in labelled} == {0, 1}:
        s, y = [r["score"] for r in labelled], [r["label"] for r in labelled]
        summary["roc_auc"] = roc_auc(s, y)
        summary.update(rates_at(s, y, threshold))
    if out is not None:
        p = Path(out)
        if p.suffix.lower() == ".json":
            atomic_write_json(p, {"summary": summary, "scores": rows})
        else:
            import io

            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=["set", "file", "score", "flagged", "label"])
            w.writeheader()
            for r in rows:
                w.writerow({**r, "label": "" if r["label"] is None else r["label"]})
            atomic_write_bytes(p, buf.getvalue().encode())
        summary["scores_file"] = str(p)
    return summary
