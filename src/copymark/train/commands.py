"""CLI commands of this package: ``copymark train ...`` and ``copymark translate``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

TRAIN_HELP = """Train an image-translation model (pix2pix, cyclegan, ugatit, srresnet, srgan).

Data layouts (--data DIR):

- pix2pix: DIR/A + DIR/B, paired by file stem.
- cyclegan, ugatit: DIR/trainA + DIR/trainB (or DIR/A + DIR/B), unpaired.
- srresnet, srgan: DIR/HR (or DIR) with HR images; LR made by bicubic downscaling unless DIR/LR_xN (N = the scale) holds them.
- --from-store STORE instead of --data: pix2pix, srresnet or srgan on the (query, answer) pairs of a `copymark extract` store (hard links into RUN_DIR/store_pairs).

GAN images must be --size x --size (a multiple of the generator's stride) unless --resize-policy resize|center_crop|random_crop says what to do; SR trains on random --size HR crops. The run folder gets config.json, log.txt, losses.jsonl, samples/*.png and checkpoints/; --resume continues it exactly from its latest checkpoint. Under torchrun the same command trains with DDP on every process.
"""


class Kind(str, Enum):
    pix2pix = "pix2pix"
    cyclegan = "cyclegan"
    ugatit = "ugatit"
    srresnet = "srresnet"
    srgan = "srgan"


class Amp(str, Enum):
    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"


class Policy(str, Enum):
    error = "error"
    resize = "resize"
    center_crop = "center_crop"
    random_crop = "random_crop"


def train_command(
    kind: Kind = typer.Argument(..., help="procedure"),
    data: Path | None = typer.Option(None, "--data", help="data folder (layouts above); not needed with --resume"),
    from_store: Path | None = typer.Option(
        None,
        "--from-store",
        help="train on the (query, answer) pairs of a `copymark extract` query store instead of --data",
    ),
    victim_id: str | None = typer.Option(
        None, "--victim-id", help="with --from-store: whose answers (needed when the store holds several victims)"
    ),
    run_dir: Path = typer.Option(..., "--run-dir", help="run folder to create (or to continue with --resume)"),
    size: int = typer.Option(256, "--size", help="training image side (SR: HR crop side)"),
    batch_size: int = typer.Option(1, "--batch-size", help="batch per process"),
    iters: int | None = typer.Option(None, "--iters", help="optimisation steps [default 1000]"),
    lr: float | None = typer.Option(None, "--lr", help="learning rate (default: the procedure's)"),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:N [default cpu]"),
    amp: Amp = typer.Option(Amp.off, "--amp", help="mixed precision (CUDA: bf16 or fp16)"),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last", help="NHWC on CUDA"),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the nets"),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --run-dir from its latest checkpoint"),
    save_every: int = typer.Option(0, "--save-every", help="checkpoint every N iterations (0: at the end only)"),
    sample_every: int = typer.Option(0, "--sample-every", help="sample grid every N iterations (0: at the end only)"),
    log_every: int = typer.Option(10, "--log-every"),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes"),
    resize_policy: Policy = typer.Option(
        Policy.error, "--resize-policy", help="what to do with images not --size x --size"
    ),
    net_config: str | None = typer.Option(
        None,
        "--net-config",
        help='JSON (inline or file) merged into the procedure config, e.g. \'{"generator": {"ngf": 32}}\'',
    ),
    vgg_weights: Path | None = typer.Option(
        None,
        "--vgg-weights",
        envvar="COPYMARK_VGG19_WEIGHTS",
        help="srgan: torchvision vgg19 state dict (.pth) for the perceptual loss",
    ),
    no_perceptual: bool = typer.Option(
        False, "--no-perceptual", help="srgan: train with pixel MSE instead of the VGG loss"
    ),
    init_from: Path | None = typer.Option(
        None, "--init-from", help="srgan: SRResNet run/checkpoint to start the generator from"
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    from rich.console import Console

    from copymark.config import parse_json_arg
    from copymark.errors import ConfigError
    from copymark.train import api

    console = Console(stderr=True)
    if resume:
        if data is not None or net_config is not None:
            console.print("[yellow]note:[/] --resume uses the run's stored config; --data/--net-config are ignored")
        result = api.resume(run_dir, device=device, progress=progress, iters=iters)
    else:
        if data is not None and from_store is not None:
            raise ConfigError("give either --data or --from-store, not both")
        if from_store is not None:
            from copymark.client.pairs import training_folder

            if kind not in (Kind.pix2pix, Kind.srresnet, Kind.srgan):
                raise ConfigError(
                    f"--from-store trains a paired surrogate; {kind.value} is unpaired",
                    hint="use pix2pix (style victims) or srresnet/srgan (super-resolution victims)",
                )
            sd = training_folder(from_store, run_dir / "store_pairs", victim_id)
            if (sd.scale > 1) != (kind != Kind.pix2pix):
                raise ConfigError(
                    f"the store holds answers of a {f'x{sd.scale} super-resolution' if sd.scale > 1 else 'style'} victim; "
                    f"{kind.value} does not fit",
                    hint="pix2pix for style victims, srresnet/srgan for super-resolution victims",
                )
            console.print(f"training on {sd.n_pairs} (query, answer) pairs from {from_store} (laid out in {sd.folder})")
            data = sd.folder
        if data is None:
            raise ConfigError(
                "--data (or --from-store) is required to start a run",
                hint="pass --data DIR, or --resume to continue one",
            )
        overrides = parse_json_arg(net_config, "--net-config")
        if lr is not None:
            overrides["lr"] = lr
        if kind == Kind.srgan:
            if no_perceptual:
                overrides["perceptual"] = False
            if vgg_weights is not None and not no_perceptual:
                overrides["vgg_weights"] = str(vgg_weights)
            if init_from is not None:
                overrides["init_from"] = str(init_from)
        cfg = api.make_train_config(
            kind.value,
            data,
            overrides,
            size=size,
            resize_policy=resize_policy.value,
            iters=iters or 1000,
            batch_size=batch_size,
            seed=seed,
            device=device or "cpu",
            amp=amp.value,
            channels_last=channels_last,
            compile=compile,
            num_workers=workers,
            log_every=log_every,
            sample_every=sample_every,
            save_every=save_every,
            progress=progress,
        )
        result = api.train(cfg, run_dir)
    import os

    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    losses = " ".join(f"{k}={v:.4g}" for k, v in result.last_losses.items())
    typer.echo(
        f"trained {kind.value}: {result.iterations} iterations, {result.images_per_second:.1f} images/s; {losses}"
    )
    if result.checkpoint is not None:
        typer.echo(f"checkpoint: {result.checkpoint}")


def translate_command(
    model: Path = typer.Option(..., "--model", help="net checkpoint folder, training run folder, or TorchScript .pt"),
    input: Path = typer.Option(..., "--input", help="folder of images"),
    output: Path = typer.Option(..., "--output", help="folder for the translated PNGs"),
    tile: int | None = typer.Option(
        None, "--tile", help="process images larger than N x N (input pixels) in overlapping tiles"
    ),
    overlap: int = typer.Option(32, "--overlap", help="tile overlap in input pixels"),
    device: str = typer.Option("cpu", "--device"),
    stride: int | None = typer.Option(None, "--stride", help="override the model's stride (TorchScript)"),
    scale: int | None = typer.Option(None, "--scale", help="override the model's scale (TorchScript)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Translate every image of a folder with a trained model (eval mode, deterministic, any size)."""
    from copymark.translate import load_translation_model, translate_folder

    m = load_translation_model(model, device, stride=stride, scale=scale)
    outs = translate_folder(m, input, output, tile=tile, overlap=overlap, progress=progress)
    typer.echo(
        f"translated {len(outs)} image(s) with {m.kind or 'model'} (scale {m.scale}, stride {m.stride}) into {output}"
    )


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``translate`` to ``app``."""
    app.command("train", help=TRAIN_HELP)(train_command)
    app.command("translate")(translate_command)
