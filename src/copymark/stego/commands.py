"""``copymark stego ...``: train, evaluate and use steganography codecs and steganalyzers.

Commands (heavy imports happen inside each command so ``copymark --help`` stays fast):

* ``stego train``        train En2D / GglNet on a cover and a secret folder (shared loop, resumable)
* ``stego report``       quality report of a codec checkpoint (or ``lsb``) on cover/secret folders
* ``stego hide``         write stego images (named like their covers) for a cover/secret folder
* ``stego reveal``       reveal the secrets of a folder of stego images
* ``stego detect-train`` train XuNet / YeNet / SRNet on paired cover/stego folders
* ``stego detect``       score images with a steganalyzer; detection rate, ROC AUC when labelled
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from copymark.config import parse_json_arg

stego_app = typer.Typer(
    help="Whole-image steganography (En2D, GglNet, LSB) and steganalysis (XuNet, YeNet, SRNet).",
    no_args_is_help=True,
)

CODEC_HELP = "a codec checkpoint folder (e.g. RUN/codec from `stego train`), or `lsb` for the classical baseline"


def _need(value: Any, flag: str, why: str = "") -> Any:
    from copymark.errors import ConfigError

    if value is None:
        raise ConfigError(f"missing {flag}" + (f" ({why})" if why else ""), hint="see --help")
    return value


def _echo_json(obj: Any) -> None:
    import os

    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    typer.echo(json.dumps(obj, indent=2, default=str))


def _get_codec(spec: str, bits: int, device: str = "cpu") -> Any:
    from copymark.stego.codecs import LSBCodec, LSBCodecConfig, load_codec

    if spec == "lsb":
        return LSBCodec(LSBCodecConfig(bits=bits))
    return load_codec(spec, map_location=device)


def _brief_quality(q: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v if not isinstance(v, dict) or "values" not in v else {kk: vv for kk, vv in v.items() if kk != "values"})
        for k, v in q.items()
    }


@stego_app.command("train")
def train_cmd(
    codec: str | None = typer.Option(None, "--codec", help="en2d or gglnet"),
    covers: Path | None = typer.Option(None, "--covers", help="folder of cover images"),
    secrets: Path | None = typer.Option(None, "--secrets", help="folder of secret images (disjoint from the covers)"),
    preset: str = typer.Option(
        "study",
        "--preset",
        help="study: the security study's settings per codec; recommended: the CPU setting (residual En2D, "
        "16-filter decoder, cosine schedule, batch 2); recommended-finetune: its second stage (cover MSE "
        "weighted 4x, half the lr; use with --init-from a recommended run). Explicit options override the preset.",
    ),
    schedule: str | None = typer.Option(
        None, "--schedule", help="learning-rate schedule: constant or cosine (to 0 at the end) [default: the preset's]"
    ),
    seed: int = typer.Option(
        0, "--seed", help="seed of initialisation, pairing and order (the study: 2022, 1211, 204, 109)"
    ),
    run_dir: Path = typer.Option(..., "--run-dir", help="run folder to create (or to continue with --resume)"),
    size: int = typer.Option(64, "--size", help="image size in px (multiple of 8, 32..256)"),
    iters: int | None = typer.Option(
        None, "--iters", help="optimisation steps [default 1000]; with --resume only the run's own (see --init-from)"
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", help="default: the study's (En2D 30, GglNet 20)"),
    lr: float | None = typer.Option(
        None,
        "--lr",
        help="default: the study's (En2D 1e-3, GglNet 1e-4); with --resume: a new lr from the checkpoint on",
    ),
    beta: float | None = typer.Option(
        None, "--beta", help="weight of the revealed-secret MSE (default En2D 1.0, GglNet 0.75)"
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N"),
    amp: str = typer.Option("off", "--amp", help="off, bf16 or fp16 (CUDA)"),
    holdout: int = typer.Option(
        16, "--holdout", help="images of each folder kept out of training for the quality report"
    ),
    limit: int | None = typer.Option(None, "--limit", help="use only the first LIMIT images of each folder"),
    net_config: str | None = typer.Option(
        None,
        "--net-config",
        help="architecture overrides as JSON, e.g. '{\"width\": 8}' (every key: `copymark nets show en2d|gglnet`)",
    ),
    init_from: Path | None = typer.Option(
        None,
        "--init-from",
        help="start the codec from a codec run (or its RUN/codec checkpoint) of the same architecture; "
        "a new run with fresh optimiser state",
    ),
    save_every: int = typer.Option(0, "--save-every", help="checkpoint every N iterations (0: only at the end)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --run-dir from its latest checkpoint"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train an En2D or GglNet codec; writes RUN/codec, metrics.json (held-out quality) and visibility.png.

    `--preset recommended` (En2D only) is the setting measured best on CPU budgets
    (benchmarks/stego_quality.py); follow it with a second run `--preset recommended-finetune
    --init-from FIRST_RUN` to trade some revealed-secret PSNR for stego-vs-cover PSNR.

    Everything (device and AMP, folders, sizes, batch vs images, net config, --init-from) is
    checked before the run folder is created. `--resume` continues exactly (only --device,
    --progress and --lr may change); a longer run is a new run: `--init-from OLD_RUN --iters N`.
    """
    from copymark.errors import ConfigError
    from copymark.stego.training import StegoDataConfig, StegoRunConfig, resume_codec, train_codec
    from copymark.train.loop import LoopConfig
    from copymark.train.stego import STUDY_DEFAULTS, preset_train_config

    if resume:
        out = resume_codec(run_dir, device=device, progress=progress, lr=lr, iters=iters)
    else:
        kind = _need(codec, "--codec", "en2d or gglnet")
        if kind not in STUDY_DEFAULTS:
            raise ConfigError(
                f"--codec {kind!r} is not a trainable codec", hint="use en2d or gglnet (lsb needs no training)"
            )
        _need(covers, "--covers")
        _need(secrets, "--secrets")
        from pydantic import ValidationError

        from copymark.config import format_validation_error

        try:
            proc, preset_bs = preset_train_config(
                preset,
                kind,
                lr=lr,
                beta=beta,
                schedule=schedule,
                arch=parse_json_arg(net_config, "--net-config", '{"width": 8}'),
            )
            bs = preset_bs if batch_size is None else batch_size
            loop = LoopConfig(
                iters=iters or 1000,
                batch_size=bs,
                seed=seed,
                device=device,
                amp=amp,
                save_every=save_every,
                progress=progress,
            )  # type: ignore[arg-type]
            data = StegoDataConfig(covers=str(covers), secrets=str(secrets), size=size, limit=limit, holdout=holdout)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, "stego train options")) from None
        cfg = StegoRunConfig(procedure=proc, loop=loop, data=data, init_from=str(init_from) if init_from else None)
        out = train_codec(cfg, run_dir)
    if "quality" in out:
        out = {**out, "quality": _brief_quality(out["quality"])}
    _echo_json(out)


@stego_app.command("report")
def report_cmd(
    codec: str = typer.Option(..., "--codec", help=CODEC_HELP),
    covers: Path = typer.Option(..., "--covers", help="folder of cover images"),
    secrets: Path = typer.Option(..., "--secrets", help="folder of secret images (paired with covers in path order)"),
    run_dir: Path = typer.Option(..., "--run-dir", help="run folder to write (metrics.json, visibility.png)"),
    size: int = typer.Option(64, "--size"),
    limit: int | None = typer.Option(None, "--limit", help="use the first LIMIT pairs"),
    bits: int = typer.Option(4, "--bits", help="LSB codec: low bits carrying the secret"),
    n_visibility: int = typer.Option(8, "--n-visibility", help="rows of the visibility image"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Cover-vs-stego and secret-vs-revealed PSNR/SSIM, plus visibility images, into a run folder."""
    from copymark.runs import create_run
    from copymark.stego.imagesets import load_image_set
    from copymark.stego.quality import quality_report

    c = _get_codec(codec, bits, device)
    cs = load_image_set(covers, size, limit, what="cover folder")
    ss = load_image_set(secrets, size, limit, what="secret folder")
    n = min(len(cs), len(ss))
    run = create_run(run_dir, {"task": "stego-report", "codec": codec, "codec_config": c.config.model_dump(), "covers": str(covers),
                               "secrets": str(secrets), "size": size, "pairs": n}, device=device)  # fmt: skip
    report = quality_report(c, cs.floats()[:n], ss.floats()[:n], out_dir=run.path, n_visibility=n_visibility)
    run.update_metrics({"quality": report})
    _echo_json(_brief_quality(report))


@stego_app.command("hide")
def hide_cmd(
    codec: str = typer.Option(..., "--codec", help=CODEC_HELP),
    covers: Path = typer.Option(..., "--covers"),
    secrets: Path = typer.Option(
        ..., "--secrets", help="secret i goes into cover i (path order); secrets are reused cyclically"
    ),
    out: Path = typer.Option(..., "--out", help="folder for the stego PNGs (named like their covers)"),
    size: int = typer.Option(64, "--size"),
    limit: int | None = typer.Option(None, "--limit"),
    bits: int = typer.Option(4, "--bits", help="LSB codec: low bits carrying the secret"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Hide secrets in covers and write the stego images as 8-bit PNGs."""
    import torch

    from copymark.stego.imagesets import load_image_set, save_image_set

    c = _get_codec(codec, bits, device)
    cs = load_image_set(covers, size, limit, what="cover folder")
    ss = load_image_set(secrets, size, what="secret folder")
    idx = torch.arange(len(cs)) % len(ss)
    stegos = torch.cat([c.hide(cs.batch(slice(i, i + 64)), ss.batch(idx[i : i + 64])) for i in range(0, len(cs), 64)])
    files = save_image_set(stegos, cs.keys, out)
    _echo_json({"stegos": len(files), "out": str(out), "codec": c.kind})


@stego_app.command("reveal")
def reveal_cmd(
    codec: str = typer.Option(..., "--codec", help=CODEC_HELP),
    input: Path = typer.Option(..., "--input", help="folder of stego images (one size, never resized)"),
    out: Path = typer.Option(..., "--out", help="folder for the revealed secrets"),
    bits: int = typer.Option(4, "--bits"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Reveal the secret of every stego image in a folder."""
    import torch

    from copymark.data.folders import image_files, image_size
    from copymark.stego.imagesets import load_image_set, save_image_set

    c = _get_codec(codec, bits, device)
    h, _ = image_size(image_files(input, "stego folder", recursive=True)[0])
    st = load_image_set(input, h, policy="error", what="stego folder")
    rev = torch.cat([c.reveal(st.batch(slice(i, i + 64))) for i in range(0, len(st), 64)])
    files = save_image_set(rev, st.keys, out)
    _echo_json({"revealed": len(files), "out": str(out)})


@stego_app.command("detect-train")
def detect_train_cmd(
    covers: Path | None = typer.Option(None, "--covers", help="folder of cover images"),
    stegos: Path | None = typer.Option(None, "--stegos", help="folder of stego images named like their covers"),
    model: str | None = typer.Option(None, "--model", help="xunet, yenet or srnet"),
    run_dir: Path = typer.Option(..., "--run-dir"),
    seed: int = typer.Option(0, "--seed"),
    iters: int | None = typer.Option(
        None, "--iters", help="optimisation steps [default 1000]; with --resume only the run's own (see --init-from)"
    ),
    batch_size: int = typer.Option(16, "--batch-size", help="pairs per batch (2x images)"),
    lr: float | None = typer.Option(
        None, "--lr", help="[default 1e-3]; with --resume: a new lr from the checkpoint on"
    ),
    device: str = typer.Option("cpu", "--device"),
    amp: str = typer.Option("off", "--amp"),
    holdout: int = typer.Option(64, "--holdout", help="pairs kept out of training for the held-out AUC"),
    limit: int | None = typer.Option(None, "--limit"),
    augment: bool = typer.Option(
        True, "--augment/--no-augment", help="random flips/rotations, same for cover and stego"
    ),
    net_config: str | None = typer.Option(
        None,
        "--net-config",
        help="architecture overrides as JSON, e.g. '{\"width\": 4}' (every key: `copymark nets show xunet|yenet|srnet`)",
    ),
    init_from: Path | None = typer.Option(
        None,
        "--init-from",
        help="start the detector from a detector run (or its RUN/detector checkpoint) of the same architecture",
    ),
    save_every: int = typer.Option(0, "--save-every"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --run-dir from its latest checkpoint"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a steganalyzer on paired cover/stego batches; writes RUN/detector and the held-out AUC.

    Everything is checked before the run folder is created; `--resume` continues exactly, a
    longer run is a new run: `--init-from OLD_RUN --iters N`.
    """
    from pydantic import ValidationError

    from copymark.config import format_validation_error
    from copymark.errors import ConfigError
    from copymark.stego.training import DetectDataConfig, DetectRunConfig, resume_detector, train_detector
    from copymark.train.loop import LoopConfig
    from copymark.train.steganalysis import steganalysis_train_config

    if resume:
        out = resume_detector(run_dir, device=device, progress=progress, lr=lr, iters=iters)
    else:
        kind = _need(model, "--model", "xunet, yenet or srnet")
        if kind not in ("xunet", "yenet", "srnet"):
            raise ConfigError(f"--model {kind!r} is not a steganalyzer", hint="use xunet, yenet or srnet")
        _need(covers, "--covers")
        _need(stegos, "--stegos")
        try:
            arch = parse_json_arg(net_config, "--net-config", '{"width": 8}')
            proc = steganalysis_train_config(kind, lr=1e-3 if lr is None else lr, **arch)
            proc.augment = augment
            loop = LoopConfig(
                iters=iters or 1000,
                batch_size=batch_size,
                seed=seed,
                device=device,
                amp=amp,
                save_every=save_every,
                progress=progress,
            )  # type: ignore[arg-type]
            data = DetectDataConfig(covers=str(covers), stegos=str(stegos), limit=limit, holdout=holdout)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, "stego detect-train options")) from None
        cfg = DetectRunConfig(procedure=proc, loop=loop, data=data, init_from=str(init_from) if init_from else None)
        out = train_detector(cfg, run_dir)
    _echo_json(out)


@stego_app.command("detect")
def detect_cmd(
    model: Path = typer.Option(
        ..., "--model", help="steganalyzer checkpoint (e.g. RUN/detector from `stego detect-train`)"
    ),
    input: Path | None = typer.Option(None, "--input", help="folder of images to score (labels unknown)"),
    covers: Path | None = typer.Option(None, "--covers", help="folder of known covers (label 0)"),
    stegos: Path | None = typer.Option(None, "--stegos", help="folder of known stego images (label 1)"),
    threshold: float = typer.Option(0.5, "--threshold", help="flag an image as stego when its score >= T"),
    out: Path | None = typer.Option(None, "--out", help="per-image scores as .csv or .json"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Per-image stego scores, the detection rate at --threshold, and ROC AUC when labels are known."""
    from copymark.errors import ConfigError
    from copymark.stego.detect import detect_folders

    if input is None and covers is None and stegos is None:
        raise ConfigError("nothing to score", hint="pass --input DIR, or --covers DIR and/or --stegos DIR")
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise ConfigError(f"--out {out}: use a .csv or .json file name")
    summary = detect_folders(
        model, input=input, covers=covers, stegos=stegos, threshold=threshold, out=out, device=device
    )
    _echo_json(summary)


def register(app: typer.Typer) -> None:
    """Add ``copymark stego ...`` to ``app``."""
    app.add_typer(stego_app, name="stego")
