"""``copymark classifier train`` and ``copymark classifier eval``: host classifiers from class folders."""

from __future__ import annotations

import json
from pathlib import Path

import typer

classifier_app = typer.Typer(
    help="Image classifiers (ResNet-18, a small CNN) from class folders: train, resume, evaluate.",
    no_args_is_help=True,
)

TRAIN_HELP = """Train an image classifier on class folders (the host model that `copymark protect` watermarks).

--data DIR holds DIR/CLASS/IMAGES (split train : val : test = 8 : 1 : 1 by a hash of each file's path, reproducible and recorded in RUN/split.json), or DIR/train/CLASS/ + DIR/test/CLASS/ (e.g. CIFAR-10's layout: test = DIR/test, and DIR/train is split train : val = 8 : 1). Class labels follow the sorted folder names.

Nets: resnet18 (torchvision's ResNet-18; the stem follows --size: 3x3 conv below 64 px, 3x3 conv + max-pool from 64 px, torchvision's 7x7 + max-pool from 128 px) or small_cnn. Recipe: SGD lr 0.1, momentum 0.9, weight decay 5e-4, cosine decay; random crop (4 px padding) and flips. Every key: `copymark nets show classifier`; the ACSAC19 reference's step decay: --net-config '{"optim": {"schedule": "step"}}'.

The run folder gets the exported model (RUN/model), split.json, metrics.json (accuracy of each split), checkpoints/ and log.txt. Everything is checked before the folder is created; --resume continues exactly from the latest checkpoint (only --device, --progress and --lr may change); a longer run is a new run: --init-from OLD_RUN --iters N. Under torchrun the same command trains with DDP.
"""


def _split(text: str) -> tuple[float, float, float]:
    from copymark.errors import ConfigError

    try:
        parts = [float(x) for x in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) != 3 or sum(parts) <= 0 or min(parts) < 0:
        raise ConfigError(f"--split {text!r}: expected TRAIN:VAL:TEST, e.g. 8:1:1 or 0.8:0.1:0.1")
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


@classifier_app.command("train", help=TRAIN_HELP)
def train_cmd(
    data: Path | None = typer.Option(None, "--data", help="class folders (layouts above); not needed with --resume"),
    run_dir: Path = typer.Option(..., "--run-dir", help="run folder to create (or to continue with --resume)"),
    net: str = typer.Option("resnet18", "--net", help="resnet18 or small_cnn"),
    size: int | None = typer.Option(None, "--size", help="image side in px [default: the first image's]"),
    split: str = typer.Option("8:1:1", "--split", help="train:val:test ratios"),
    split_salt: str = typer.Option("", "--split-salt", help="salt of the hashed split (another salt, another split)"),
    resize_policy: str = typer.Option("error", "--resize-policy", help="error, resize or center_crop"),
    iters: int | None = typer.Option(None, "--iters", help="optimisation steps [default 1000]"),
    batch_size: int = typer.Option(128, "--batch-size", help="batch per process"),
    lr: float | None = typer.Option(
        None, "--lr", help="base learning rate [default 0.1]; with --resume: a new lr from the checkpoint on"
    ),
    net_config: str | None = typer.Option(
        None,
        "--net-config",
        help='JSON (inline or file) merged into the procedure config, e.g. \'{"optim": {"schedule": "step"}, '
        '"net": {"widths": [8, 16]}}\'; every key: `copymark nets show classifier`',
    ),
    seed: int = typer.Option(0, "--seed"),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:N [default cpu]"),
    amp: str = typer.Option("off", "--amp", help="off, bf16 or fp16 (CUDA)"),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last", help="NHWC on CUDA"),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the net"),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes"),
    save_every: int = typer.Option(0, "--save-every", help="checkpoint every N iterations (0: at the end only)"),
    log_every: int = typer.Option(10, "--log-every"),
    init_from: Path | None = typer.Option(
        None, "--init-from", help="start from a classifier run or checkpoint of the same architecture (fresh optimiser)"
    ),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --run-dir from its latest checkpoint"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    from copymark.config import parse_json_arg
    from copymark.errors import ConfigError
    from copymark.train.classifier import make_classifier_config, resume_classifier, train_classifier

    if resume:
        out = resume_classifier(run_dir, device=device, progress=progress, iters=iters, lr=lr)
    else:
        from copymark.runs import check_new_run_dir

        if data is None:
            raise ConfigError("--data is required to start a run", hint="pass --data DIR, or --resume to continue one")
        check_new_run_dir(run_dir)
        overrides = parse_json_arg(net_config, "--net-config", '{"optim": {"schedule": "step"}}')
        if lr is not None:
            overrides = {**overrides, "optim": {**overrides.get("optim", {}), "lr": lr}}
        cfg = make_classifier_config(
            data, net, overrides, size=size, split=_split(split), salt=split_salt, resize_policy=resize_policy,
            init_from=init_from, iters=iters or 1000, batch_size=batch_size, seed=seed, device=device or "cpu",
            amp=amp, channels_last=channels_last, compile=compile, num_workers=workers, save_every=save_every,
            log_every=log_every, progress=progress,
        )  # fmt: skip
        out = train_classifier(cfg, run_dir)
    _report(out)


@classifier_app.command("eval")
def eval_cmd(
    model: Path = typer.Option(..., "--model", help="a classifier run folder, its model/ folder, or a protect run"),
    data: Path = typer.Option(..., "--data", help="class folders to evaluate on"),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="run folder to write (default runs/classifier-eval-DATE-TIME)"
    ),
    device: str = typer.Option("cpu", "--device"),
    resize_policy: str | None = typer.Option(
        None, "--resize-policy", help="error, resize or center_crop for images not of the model's input size"
    ),
    batch_size: int = typer.Option(256, "--batch-size"),
    workers: int = typer.Option(0, "--workers"),
) -> None:
    """Accuracy of a trained classifier on each split of --data (the model's recorded split when --data is its
    training folder, else the default 8:1:1 rule) and on all images; written to RUN/metrics.json."""
    from copymark.runs import new_run_dir
    from copymark.train.classifier import evaluate_classifier

    rd = run_dir or new_run_dir("runs", "classifier-eval")
    out = evaluate_classifier(model, data, rd, device, resize_policy, batch_size, workers)
    _report(out)
    typer.echo(f"run folder: {rd}")


def _report(out: dict) -> None:
    import os

    if int(os.environ.get("RANK", "0")) != 0 or not out:
        return
    keep = {k: out[k] for k in ("model", "iterations", "accuracy", "n") if k in out}
    typer.echo(json.dumps(keep, indent=2))


def register(app: typer.Typer) -> None:
    """Add ``copymark classifier ...`` to ``app``."""
    app.add_typer(classifier_app, name="classifier")
