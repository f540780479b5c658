"""Entry points behind ``copymark stego train`` and ``copymark stego detect-train``.

Both write a run folder (:mod:`copymark.runs`) and train on the shared loop
(:mod:`copymark.train.loop`: checkpoints, exact resume, divergence detection), then export the
trained model and evaluate it on held-out images:

``train_codec``
    En2D / GglNet from a cover folder and a secret folder. The last ``holdout`` images (in
    path order) of each folder are kept out of training; afterwards the codec is exported to
    ``<run>/codec/`` (a codec checkpoint, :func:`copymark.stego.codecs.load_codec`) and the
    quality report on the held-out pairs goes to ``metrics.json`` (key ``quality``) and
    ``visibility.png``.
``train_detector``
    XuNet / YeNet / SRNet from a cover folder and a stego folder paired by file name. Held-out
    pairs give ROC AUC and detection/false-alarm rates at 0.5 (key ``heldout``); the detector is
    exported to ``<run>/detector/``.

A run is resumed from its folder alone (``resume_codec`` / ``resume_detector``): the resolved
config is read back from ``config.json``, so the data, seed and schedule are the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError

from copymark.config import StrictModel, format_validation_error
from copymark.errors import ConfigError, DataError
from copymark.runs import Run
from copymark.stego.imagesets import ImageSet, check_size, load_image_set
from copymark.train.loop import LoopConfig, seed_everything, train_loop
from copymark.train.steganalysis import CoverStegoPairs, SteganalysisProcedure, SteganalysisTrainConfig
from copymark.train.stego import StegoPairs, StegoProcedure, StegoTrainConfig

CODEC_EXPORT = "codec"
DETECTOR_EXPORT = "detector"


class StegoDataConfig(StrictModel):
    covers: str
    secrets: str
    size: int = 64
    limit: int | None = Field(None, ge=1, description="use only the first LIMIT images of each folder")
    holdout: int = Field(16, ge=0, description="images of each folder kept out of training for the quality report")
    resize_policy: Literal["resize", "center_crop"] = "resize"


class StegoRunConfig(StrictModel):
    """The resolved config of a codec training run (its config.json)."""

    task: Literal["stego-train"] = "stego-train"
    procedure: StegoTrainConfig
    loop: LoopConfig
    data: StegoDataConfig


class DetectDataConfig(StrictModel):
    covers: str
    stegos: str
    limit: int | None = Field(None, ge=1)
    holdout: int = Field(64, ge=0, description="pairs kept out of training for the held-out AUC")


class DetectRunConfig(StrictModel):
    """The resolved config of a steganalyzer training run."""

    task: Literal["stego-detect-train"] = "stego-detect-train"
    procedure: SteganalysisTrainConfig
    loop: LoopConfig
    data: DetectDataConfig


def _split(s: ImageSet, holdout: int, what: str, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(s)
    if n - holdout < batch_size:
        raise DataError(
            f"{what}: {n} images leave {n - holdout} for training after holding out {holdout}, fewer than one batch of {batch_size}",
            hint="add images, lower --holdout, or lower --batch-size",
        )
    return s.images[: n - holdout], s.images[n - holdout :]


# ---------------------------------------------------------------------------------------------
# codecs


def _codec_data(cfg: StegoRunConfig) -> tuple[StegoPairs, torch.Tensor, torch.Tensor]:
    d = cfg.data
    check_size(d.size)
    if Path(d.covers).resolve() == Path(d.secrets).resolve():
        raise DataError(
            "--covers and --secrets are the same folder", hint="use disjoint image sets for covers and secrets"
        )
    covers = load_image_set(d.covers, d.size, d.limit, d.resize_policy, what="cover folder")
    secrets = load_image_set(d.secrets, d.size, d.limit, d.resize_policy, what="secret folder")
    c_train, c_hold = _split(covers, d.holdout, "cover folder", cfg.loop.batch_size)
    s_train, s_hold = _split(secrets, d.holdout, "secret folder", 1)
    return StegoPairs(c_train, s_train, seed=cfg.loop.seed), c_hold, s_hold


def _finish_codec(
    run: Run, proc: StegoProcedure, c_hold: torch.Tensor, s_hold: torch.Tensor, result: Any
) -> dict[str, Any]:
    from copymark.images import from_uint8
    from copymark.stego.codecs import NeuralCodec, save_codec
    from copymark.stego.quality import quality_report

    codec = NeuralCodec(proc.config.codec, proc.nets["codec"])
    save_codec(
        run.path / CODEC_EXPORT, codec, {"run": str(run.path), **proc.provenance(), "iterations": result.iterations}
    )
    out: dict[str, Any] = {
        "codec": str(run.path / CODEC_EXPORT),
        "iterations": result.iterations,
        "train_seconds": result.seconds,
    }
    k = min(len(c_hold), len(s_hold))
    if k:
        out["quality"] = quality_report(codec, from_uint8(c_hold[:k]), from_uint8(s_hold[:k]), out_dir=run.path)
        q = out["quality"]
        run.log(
            "held-out quality (%d pairs): stego PSNR %.2f dB SSIM %.4f, revealed secret PSNR %.2f dB SSIM %.4f",
            k,
            q["stego_psnr"]["mean"],
            q["stego_ssim"]["mean"],
            q["secret_psnr"]["mean"],
            q["secret_ssim"]["mean"],
        )
    run.update_metrics(out)
    return out


def train_codec(cfg: StegoRunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train a codec into a new run folder; returns the metrics written to metrics.json."""
    from copymark.runs import create_run

    dataset, c_hold, s_hold = _codec_data(cfg)
    run = create_run(run_dir, cfg.model_dump(), device=cfg.loop.device, seed=cfg.loop.seed)
    seed_everything(cfg.loop.seed)
    proc = StegoProcedure(cfg.procedure)
    result = train_loop(proc, dataset, cfg.loop, run)
    return _finish_codec(run, proc, c_hold, s_hold, result)


def resume_codec(
    run_dir: str | Path, device: str | None = None, progress: bool | None = None, lr: float | None = None
) -> dict[str, Any]:
    """Continue a codec run from its latest checkpoint (exactly) and finish it.

    ``lr`` changes the learning rate from the checkpoint on (e.g. after the loop stopped a
    diverged run): the change is logged and recorded in metrics.json under ``lr_changes``;
    without it the resumed run equals an uninterrupted one bitwise on CPU.
    """
    from copymark.runs import open_run, read_json

    p = _require_run(run_dir)
    cfg = _read_config(StegoRunConfig, read_json(p / "config.json"), p)
    if device is not None:
        cfg.loop.device = device
    if progress is not None:
        cfg.loop.progress = progress
    dataset, c_hold, s_hold = _codec_data(cfg)
    run = open_run(p)
    seed_everything(cfg.loop.seed)
    proc = StegoProcedure(cfg.procedure)
    if lr is not None:
        from copymark.train import checkpointing as ck

        latest = ck.latest_checkpoint(p)
        at = ck.read_meta(latest)["iteration"] if latest is not None else 0
        proc.lr_override = lr
        run.log("resuming with lr %g instead of %g from iteration %s", lr, cfg.procedure.lr, at)
        run.update_metrics({"lr_changes": run.metrics().get("lr_changes", []) + [{"iteration": at, "lr": lr}]})
    result = train_loop(proc, dataset, cfg.loop, run, resume=True)
    return _finish_codec(run, proc, c_hold, s_hold, result)


def _read_config(model: Any, raw: dict[str, Any], p: Path) -> Any:
    """The run's resolved config, validated (a folder of another command is a clear error)."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(err, f"{p}/config.json"), hint="is this a run of this command?"
        ) from None


def _require_run(run_dir: str | Path) -> Path:
    p = Path(run_dir)
    if not (p / "config.json").is_file():
        raise ConfigError(
            f"{p} is not a run folder (no config.json); nothing to resume", hint="start the run without --resume"
        )
    return p


# ---------------------------------------------------------------------------------------------
# steganalyzers


def load_pairs(covers: str | Path, stegos: str | Path, limit: int | None = None) -> tuple[ImageSet, ImageSet]:
    """Covers and stegos matched by key (relative path stem), each at its stored size (never resized).

    Resizing would wash out the embedding, so every image must have the size of the first one.
    """
    from copymark.data.folders import image_files, image_size

    cover_files = image_files(covers, "cover folder", recursive=True)
    h, w = image_size(cover_files[0])
    if h != w:
        raise DataError(f"{cover_files[0]}: {h}x{w} is not square; steganalysis sets must be square images of one size")
    c = load_image_set(covers, h, policy="error", what="cover folder")
    s = load_image_set(stegos, h, policy="error", what="stego folder")
    c_idx = {k: i for i, k in enumerate(c.keys)}
    s_idx = {k: i for i, k in enumerate(s.keys)}
    common = [k for k in c.keys if k in s_idx]
    if not common:
        raise DataError(
            f"no cover in {covers} has a stego of the same name in {stegos} (e.g. {c.keys[:2]} vs {s.keys[:2]})",
            hint="name each stego image like its cover (`copymark stego hide` does)",
        )
    if limit is not None:
        common = common[:limit]
    ci = torch.tensor([c_idx[k] for k in common])
    si = torch.tensor([s_idx[k] for k in common])
    return ImageSet(c.images[ci], common), ImageSet(s.images[si], common)


def _detector_data(cfg: DetectRunConfig) -> tuple[CoverStegoPairs, torch.Tensor, torch.Tensor]:
    c, s = load_pairs(cfg.data.covers, cfg.data.stegos, cfg.data.limit)
    c_train, c_hold = _split(c, cfg.data.holdout, "cover/stego pairs", cfg.loop.batch_size)
    s_train, s_hold = s.images[: len(c_train)], s.images[len(c_train) :]
    return CoverStegoPairs(c_train, s_train, seed=cfg.loop.seed, augment=cfg.procedure.augment), c_hold, s_hold


def _finish_detector(
    run: Run, proc: SteganalysisProcedure, c_hold: torch.Tensor, s_hold: torch.Tensor, result: Any
) -> dict[str, Any]:
    from copymark.images import from_uint8
    from copymark.metrics.detection import rates_at, roc_auc
    from copymark.stego.detect import save_steganalyzer, score_images

    net = proc.nets["detector"].eval()
    save_steganalyzer(run.path / DETECTOR_EXPORT, net, proc.config.model, {"run": str(run.path), **proc.provenance()})
    out: dict[str, Any] = {
        "detector": str(run.path / DETECTOR_EXPORT),
        "iterations": result.iterations,
        "train_seconds": result.seconds,
    }
    if len(c_hold):
        sc = score_images(net, from_uint8(c_hold)).tolist()
        ss = score_images(net, from_uint8(s_hold)).tolist()
        scores, labels = sc + ss, [0] * len(sc) + [1] * len(ss)
        out["heldout"] = {"pairs": len(sc), "roc_auc": roc_auc(scores, labels), **rates_at(scores, labels, 0.5)}
        run.log(
            "held-out (%d pairs): ROC AUC %.4f, detection rate %.4f at 0.5",
            len(sc),
            out["heldout"]["roc_auc"],
            out["heldout"]["detection_rate"],
        )
    run.update_metrics(out)
    return out


def train_detector(cfg: DetectRunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train a steganalyzer into a new run folder; returns the metrics written to metrics.json."""
    from copymark.runs import create_run

    dataset, c_hold, s_hold = _detector_data(cfg)
    run = create_run(run_dir, cfg.model_dump(), device=cfg.loop.device, seed=cfg.loop.seed)
    seed_everything(cfg.loop.seed)
    proc = SteganalysisProcedure(cfg.procedure)
    result = train_loop(proc, dataset, cfg.loop, run)
    return _finish_detector(run, proc, c_hold, s_hold, result)


def resume_detector(run_dir: str | Path, device: str | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Continue a steganalyzer run from its latest checkpoint and finish it."""
    from copymark.runs import open_run, read_json

    p = _require_run(run_dir)
    cfg = _read_config(DetectRunConfig, read_json(p / "config.json"), p)
    if device is not None:
        cfg.loop.device = device
    if progress is not None:
        cfg.loop.progress = progress
    dataset, c_hold, s_hold = _detector_data(cfg)
    run = open_run(p)
    seed_everything(cfg.loop.seed)
    proc = SteganalysisProcedure(cfg.procedure)
    result = train_loop(proc, dataset, cfg.loop, run, resume=True)
    return _finish_detector(run, proc, c_hold, s_hold, result)
