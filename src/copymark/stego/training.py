"""Codec and steganalyzer runs: what ``copymark stego train`` and ``stego detect-train`` add to
the one run orchestrator (:mod:`copymark.train.api`: validation before the run folder, seeding,
DDP, the shared loop, exact resume, ``--init-from``, the ``--iters`` refusal).

``CODEC_RUNS`` (:func:`train_codec` / :func:`resume_codec`)
    En2D / GglNet from a cover folder and a secret folder. The last ``holdout`` images (in
    path order) of each folder are kept out of training; afterwards the codec is exported to
    ``<run>/codec/`` (a codec checkpoint, :func:`copymark.stego.codecs.load_codec`) and the
    quality report on the held-out pairs goes to ``metrics.json`` (key ``quality``) and
    ``visibility.png``.
``DETECTOR_RUNS`` (:func:`train_detector` / :func:`resume_detector`)
    XuNet / YeNet / SRNet from a cover folder and a stego folder paired by file name. Held-out
    pairs give ROC AUC and detection/false-alarm rates at 0.5 (key ``heldout``); the detector is
    exported to ``<run>/detector/``.

A run is resumed from its folder alone: the resolved config is read back from ``config.json``
(its ``task`` says which of the two it is), so the data, seed and schedule are the same.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from copymark.config import StrictModel
from copymark.errors import DataError
from copymark.runs import Run
from copymark.stego.imagesets import ImageSet, check_size, load_image_set
from copymark.train.api import RunConfig, RunData, RunKind, loop_cli_args, resume_run, start_run
from copymark.train.loop import Procedure, TrainResult
from copymark.train.steganalysis import CoverStegoPairs, SteganalysisProcedure, SteganalysisTrainConfig
from copymark.train.stego import StegoPairs, StegoProcedure, StegoTrainConfig

STEGO_FLAGS = {"device": "--device", "amp": "--amp", "save_every": "--save-every"}
"""LoopConfig fields the ``stego train`` / ``detect-train`` options set (besides batch size and seed)."""
CODEC_EXPORT = "codec"
DETECTOR_EXPORT = "detector"


class StegoDataConfig(StrictModel):
    covers: str
    secrets: str
    size: int = 64
    limit: int | None = Field(None, ge=1, description="use only the first LIMIT images of each folder")
    holdout: int = Field(16, ge=0, description="images of each folder kept out of training for the quality report")
    resize_policy: Literal["resize", "center_crop"] = "resize"


class StegoRunConfig(RunConfig):
    """The resolved config of a codec training run (its config.json)."""

    task: Literal["stego-train"] = "stego-train"
    procedure: StegoTrainConfig
    data: StegoDataConfig


class DetectDataConfig(StrictModel):
    covers: str
    stegos: str
    limit: int | None = Field(None, ge=1)
    holdout: int = Field(64, ge=0, description="pairs kept out of training for the held-out AUC")


class DetectRunConfig(RunConfig):
    """The resolved config of a steganalyzer training run."""

    task: Literal["stego-detect-train"] = "stego-detect-train"
    procedure: SteganalysisTrainConfig
    data: DetectDataConfig


def _arch_overrides(net: StrictModel) -> dict[str, Any]:
    """The architecture fields of ``net`` that differ from its defaults (for ``--net-config``)."""
    default = type(net)().model_dump()
    return {k: v for k, v in net.model_dump().items() if k != "kind" and default.get(k) != v}


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


class CodecRuns(RunKind[StegoRunConfig, dict[str, Any]]):
    """``copymark stego train``: an En2D / GglNet codec, exported to RUN/codec with a held-out quality report."""

    task = "stego-train"
    config_model = StegoRunConfig

    def data(self, config: StegoRunConfig) -> RunData:
        dataset, c_hold, s_hold = _codec_data(config)
        return RunData(dataset, (c_hold, s_hold))

    def procedure(self, config: StegoRunConfig) -> Procedure:
        return StegoProcedure(config.procedure, iters=config.loop.iters)

    def finish(self, run: Run | None, proc: Procedure, data: RunData, result: TrainResult) -> dict[str, Any]:
        from copymark.images import from_uint8
        from copymark.stego.codecs import NeuralCodec, save_codec
        from copymark.stego.quality import quality_report

        if run is None:
            return {}
        assert isinstance(proc, StegoProcedure)
        c_hold, s_hold = data.held_out
        codec = NeuralCodec(proc.config.codec, proc.nets["codec"])  # type: ignore[arg-type]
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
                "held-out quality (%d pairs): stego PSNR %s dB SSIM %s, revealed secret PSNR %s dB SSIM %s",
                k,
                *(_fmt(q[key]["mean"]) for key in ("stego_psnr", "stego_ssim", "secret_psnr", "secret_ssim")),
            )
        run.update_metrics(out)
        return out

    def continue_command(self, config: StegoRunConfig, run_dir: Path, iters: int) -> str:
        p, d = config.procedure, config.data
        args = ["copymark", "stego", "train", "--codec", p.codec.kind, "--covers", d.covers, "--secrets", d.secrets]
        args += ["--size", str(d.size), "--holdout", str(d.holdout)] + (["--limit", str(d.limit)] if d.limit else [])
        args += loop_cli_args(config.loop, STEGO_FLAGS) + ["--lr", repr(p.lr), "--beta", repr(p.beta)]
        arch = _arch_overrides(p.codec)
        if arch:
            args += ["--net-config", json.dumps(arch)]
        args += ["--init-from", str(run_dir), "--iters", str(iters), "--run-dir", f"{run_dir}-{iters}"]
        return shlex.join(args)


CODEC_RUNS = CodecRuns()


def train_codec(cfg: StegoRunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train a codec into a new run folder; returns the metrics written to metrics.json."""
    return start_run(CODEC_RUNS, cfg, run_dir)


def resume_codec(
    run_dir: str | Path,
    device: str | None = None,
    progress: bool | None = None,
    lr: float | None = None,
    iters: int | None = None,
) -> dict[str, Any]:
    """Continue a codec run from its latest checkpoint (exactly) and finish it.

    ``lr`` changes the learning rate from the checkpoint on (e.g. after the loop stopped a
    diverged run): the change is logged and recorded in metrics.json under ``lr_changes``;
    without it the resumed run equals an uninterrupted one bitwise on CPU.
    """
    return resume_run(CODEC_RUNS, run_dir, device=device, progress=progress, iters=iters, lr=lr)


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


class DetectorRuns(RunKind[DetectRunConfig, dict[str, Any]]):
    """``copymark stego detect-train``: a steganalyzer, exported to RUN/detector with a held-out AUC."""

    task = "stego-detect-train"
    config_model = DetectRunConfig

    def data(self, config: DetectRunConfig) -> RunData:
        dataset, c_hold, s_hold = _detector_data(config)
        return RunData(dataset, (c_hold, s_hold))

    def procedure(self, config: DetectRunConfig) -> Procedure:
        return SteganalysisProcedure(config.procedure)

    def finish(self, run: Run | None, proc: Procedure, data: RunData, result: TrainResult) -> dict[str, Any]:
        from copymark.images import from_uint8
        from copymark.metrics.detection import rates_at, roc_auc
        from copymark.stego.detect import save_steganalyzer, score_images

        if run is None:
            return {}
        assert isinstance(proc, SteganalysisProcedure)
        c_hold, s_hold = data.held_out
        net = proc.nets["detector"].eval()
        save_steganalyzer(
            run.path / DETECTOR_EXPORT,
            net,  # type: ignore[arg-type]
            proc.config.model,
            {"run": str(run.path), **proc.provenance(), "iterations": result.iterations},
        )
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

    def continue_command(self, config: DetectRunConfig, run_dir: Path, iters: int) -> str:
        p, d = config.procedure, config.data
        args = [
            "copymark",
            "stego",
            "detect-train",
            "--model",
            p.model.kind,
            "--covers",
            d.covers,
            "--stegos",
            d.stegos,
        ]
        args += ["--holdout", str(d.holdout)] + (["--limit", str(d.limit)] if d.limit else [])
        args += loop_cli_args(config.loop, STEGO_FLAGS) + ["--lr", repr(p.lr)] + ([] if p.augment else ["--no-augment"])
        arch = _arch_overrides(p.model)
        if arch:
            args += ["--net-config", json.dumps(arch)]
        args += ["--init-from", str(run_dir), "--iters", str(iters), "--run-dir", f"{run_dir}-{iters}"]
        return shlex.join(args)


DETECTOR_RUNS = DetectorRuns()


def train_detector(cfg: DetectRunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train a steganalyzer into a new run folder; returns the metrics written to metrics.json."""
    return start_run(DETECTOR_RUNS, cfg, run_dir)


def resume_detector(
    run_dir: str | Path,
    device: str | None = None,
    progress: bool | None = None,
    lr: float | None = None,
    iters: int | None = None,
) -> dict[str, Any]:
    """Continue a steganalyzer run from its latest checkpoint and finish it (``lr``: as :func:`resume_codec`)."""
    return resume_run(DETECTOR_RUNS, run_dir, device=device, progress=progress, iters=iters, lr=lr)


def _fmt(v: object) -> str:
    """A summary's mean for the log: 4 significant digits, or as it is ("inf", None)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)
