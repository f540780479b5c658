"""CLI commands of this package: ``copymark train ...``, ``copymark translate`` and ``copymark nets show``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

TRAIN_HELP = """Train an image-translation model (pix2pix, cyclegan, ugatit, srresnet, srgan).

Data layouts (--data DIR):

- pix2pix: DIR/A + DIR/B, paired by file stem.
- cyclegan, ugatit: DIR/trainA + DIR/trainB (or DIR/A + DIR/B), unpaired.
- srresnet, srgan: DIR/HR (or DIR) with HR images; LR made by bicubic downscaling unless DIR/LR_xN (N = the scale) holds them.
- --from-store STORE instead of --data: pix2pix, srresnet or srgan on the (query, answer) pairs of a `copymark extract` store (hard links into RUN_DIR/store_pairs).

GAN images must be --size x --size (a multiple of the generator's stride) unless --resize-policy resize|center_crop|random_crop says what to do; SR trains on random --size HR crops.

Defaults that follow --size (unless --net-config sets them): pix2pix's UNet depth generator.num_downs is the largest k <= 8 with 2^k dividing --size (128 -> 7 as the reference's unet_128, 256 -> 8 as unet_256, 64 -> 6, 32 -> 5; --size must be a multiple of 32); the full U-GAT-IT generator's img_size is --size. Every --net-config key with its default: `copymark nets show KIND`.

Everything (device and AMP, data folders, image sizes, batch vs data size, net config, --init-from) is checked before the run folder is created, so a refused start leaves nothing behind. The run folder gets config.json, log.txt, losses.jsonl, samples/*.png and checkpoints/; --resume continues it exactly from its latest checkpoint (only --device, --progress and --lr may change). A longer run is a new run started from this one's weights: --init-from OLD_RUN --iters N (the refused `--resume --iters N` prints the full command). Under torchrun the same command trains with DDP on every process.
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
    first: int | None = typer.Option(
        None, "--first", help="with --from-store: train on the first N answers in campaign order (a smaller budget)"
    ),
    run_dir: Path = typer.Option(..., "--run-dir", help="run folder to create (or to continue with --resume)"),
    size: int = typer.Option(256, "--size", help="training image side (SR: HR crop side)"),
    batch_size: int = typer.Option(1, "--batch-size", help="batch per process"),
    iters: int | None = typer.Option(None, "--iters", help="optimisation steps [default 1000]"),
    lr: float | None = typer.Option(
        None, "--lr", help="learning rate (default: the procedure's); with --resume: a new lr from the checkpoint on"
    ),
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
        help='JSON (inline or file) merged into the procedure config, e.g. \'{"generator": {"ngf": 32}}\'; '
        "every key with its default: `copymark nets show KIND`",
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
        None,
        "--init-from",
        help="start the nets from a run folder or checkpoint of the same architecture: every net of the same name "
        "(pix2pix: G and D; cyclegan: G_A, G_B, D_A, D_B; ugatit: all six; srgan from srresnet: G), or the exported "
        "net from a net checkpoint folder; fresh optimiser and LR schedule",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    from rich.console import Console

    from copymark.config import parse_json_arg
    from copymark.errors import ConfigError
    from copymark.train import api

    console = Console(stderr=True)
    if resume:
        if data is not None or net_config is not None or init_from is not None:
            console.print(
                "[yellow]note:[/] --resume uses the run's stored config; --data/--net-config/--init-from are ignored"
            )
        result = api.resume(run_dir, device=device, progress=progress, iters=iters, lr=lr)
    else:
        from copymark.runs import check_new_run_dir

        if first is not None and from_store is None:
            raise ConfigError("--first takes the first N answers of a query store; it needs --from-store")
        if data is not None and from_store is not None:
            raise ConfigError("give either --data or --from-store, not both")
        if data is None and from_store is None:
            raise ConfigError(
                "--data (or --from-store) is required to start a run",
                hint="pass --data DIR, or --resume to continue one",
            )
        if from_store is not None and kind not in (Kind.pix2pix, Kind.srresnet, Kind.srgan):
            raise ConfigError(
                f"--from-store trains a paired surrogate; {kind.value} is unpaired",
                hint="use pix2pix (style victims) or srresnet/srgan (super-resolution victims)",
            )
        check_new_run_dir(run_dir)
        overrides = parse_json_arg(net_config, "--net-config")
        if lr is not None:
            overrides["lr"] = lr
        if kind == Kind.srgan:
            if no_perceptual:
                overrides["perceptual"] = False
            if vgg_weights is not None and not no_perceptual:
                overrides["vgg_weights"] = str(vgg_weights)
        # a refused start leaves nothing behind, not even the store pairs laid out for it
        made = next((q for q in (run_dir, run_dir / STORE_PAIRS) if not q.exists()), None)
        try:
            if from_store is not None:
                data = _store_pairs(kind, from_store, run_dir, victim_id, console, first)
            cfg = api.make_train_config(
                kind.value,
                data,  # type: ignore[arg-type]
                overrides,
                size=size,
                resize_policy=resize_policy.value,
                init_from=init_from,
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
        except BaseException:
            if made is not None and made.exists() and not (run_dir / "config.json").exists():
                import shutil

                shutil.rmtree(made, ignore_errors=True)
            raise
    import os

    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    losses = " ".join(f"{k}={v:.4g}" for k, v in result.last_losses.items())
    typer.echo(
        f"trained {kind.value}: {result.iterations} iterations, {result.images_per_second:.1f} images/s; {losses}"
    )
    if result.checkpoint is not None:
        typer.echo(f"checkpoint: {result.checkpoint}")


STORE_PAIRS = "store_pairs"


def _store_pairs(
    kind: Kind, store: Path, run_dir: Path, victim_id: str | None, console: Any, first: int | None = None
) -> Path:
    """Lay a query store's pairs out in RUN_DIR/store_pairs (the training folder of ``--from-store``;
    its source.json records the store and the number of pairs trained on)."""
    from copymark.client.pairs import training_folder
    from copymark.errors import ConfigError

    sd = training_folder(store, run_dir / STORE_PAIRS, victim_id, first)
    if (sd.scale > 1) != (kind != Kind.pix2pix):
        raise ConfigError(
            f"the store holds answers of a {f'x{sd.scale} super-resolution' if sd.scale > 1 else 'style'} victim; "
            f"{kind.value} does not fit",
            hint="pix2pix for style victims, srresnet/srgan for super-resolution victims",
        )
    console.print(f"training on {sd.n_pairs} (query, answer) pairs from {store} (laid out in {sd.folder})")
    return sd.folder


def translate_command(
    model: Path = typer.Option(
        ...,
        "--model",
        help="net checkpoint folder, training run folder, TorchScript .pt, or onnx:PATH?OPTIONS, an ONNX graph "
        "(options and the PATH.json sidecar as for `copymark serve --victim onnx:`; --stride/--scale declare "
        "those two; --device cuda: onnxruntime's CUDA provider)",
    ),
    input: Path = typer.Option(..., "--input", help="folder of images"),
    output: Path = typer.Option(..., "--output", help="folder for the translated PNGs"),
    tile: int | None = typer.Option(
        None, "--tile", help="process images larger than N x N (input pixels) in overlapping tiles"
    ),
    overlap: int = typer.Option(32, "--overlap", help="tile overlap in input pixels"),
    device: str = typer.Option("cpu", "--device"),
    stride: int | None = typer.Option(
        None, "--stride", help="the model's stride (TorchScript: overrides it; ONNX: declares it, checked)"
    ),
    scale: int | None = typer.Option(
        None, "--scale", help="the model's scale (TorchScript: overrides it; ONNX: declares it, checked)"
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Translate every image of a folder with a trained model (eval mode, deterministic, any size)."""
    from copymark.translate import load_translation_model, translate_folder

    m = load_translation_model(model, device, stride=stride, scale=scale)
    outs = translate_folder(m, input, output, tile=tile, overlap=overlap, progress=progress)
    typer.echo(
        f"translated {len(outs)} image(s) with {m.kind or 'model'} (scale {m.scale}, stride {m.stride}) into {output}"
    )


nets_app = typer.Typer(
    help="What --net-config takes: every key with its default, per procedure and net kind.", no_args_is_help=True
)


@nets_app.command("show")
def nets_show_command(
    kind: str | None = typer.Argument(
        None,
        help="a procedure (pix2pix, cyclegan, ugatit, srresnet, srgan; classifier) or net kind (en2d, xunet, resnet18, ...)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print the keys as JSON"),
) -> None:
    """Every --net-config key of KIND with its type, default and description (no KIND: list the kinds).

    Procedures are what `copymark train KIND --net-config` takes; en2d/gglnet what `copymark stego
    train --codec KIND --net-config` takes; xunet/yenet/srnet what `copymark stego detect-train
    --model KIND --net-config` takes.
    """
    import json

    from copymark.train.describe import CLASSIFIER, all_kinds, render, show

    if kind is None:
        for k in all_kinds() + [CLASSIFIER]:
            s = show(k)
            typer.echo(f"{k:<17} {s.what}")
        return
    s = show(kind)
    if as_json:
        keys = [{"key": k.key, "type": k.type, "default": k.default, "description": k.description} for k in s.keys]
        typer.echo(json.dumps({"kind": s.kind, "command": s.command, "keys": keys, "notes": s.notes}, indent=2))
    else:
        typer.echo(render(s))


def register(app: typer.Typer) -> None:
    """Add ``train``, ``translate`` and ``nets show`` to ``app``."""
    app.command("train", help=TRAIN_HELP)(train_command)
    app.command("translate")(translate_command)
    app.add_typer(nets_app, name="nets")
