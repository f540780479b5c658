"""Train a translation model from folders into a run folder: what ``copymark train`` calls.

Data layouts (``--data DIR``):

=================  ===========================================================================
procedure          layout
=================  ===========================================================================
pix2pix            ``DIR/A`` and ``DIR/B`` paired by file stem (``A/x.png`` -> ``B/x.png``); the
                   pix2pix datasets' ``DIR/trainA`` + ``DIR/trainB`` are accepted too.
cyclegan, ugatit   ``DIR/trainA`` and ``DIR/trainB`` (CycleGAN / U-GAT-IT layout), or ``DIR/A`` and
                   ``DIR/B``; unpaired, any counts.
srresnet, srgan    ``DIR/HR`` (or ``DIR`` itself) with high-resolution images; LR images are made
                   by MATLAB-style bicubic downscaling, unless ``DIR/LR_x<scale>`` holds them
                   (matched by stem, each HR exactly ``scale`` x its LR).
=================  ===========================================================================

Sizes: GAN procedures train on ``size x size`` images, ``size`` a multiple of the generator's
stride (UNet: ``2**num_downs``; ResNet generator: 4; the full U-GAT-IT generator runs only at its
``img_size``, which follows ``--size``). Images of another size are an error naming the file
(checked up front from the headers) unless ``resize_policy`` says what to do: ``resize``
(bicubic), ``center_crop`` or ``random_crop`` (see :func:`copymark.data.apply_size_policy`).
SR procedures take random ``size x size`` HR crops (``size`` a multiple of the scale) and the
matching LR crops. Grayscale and palette images are converted to RGB on load (the project's
image convention). Every procedure adds random horizontal flips.

A run folder holds ``config.json`` (procedure + loop + data config), ``env.json``, ``log.txt``,
``losses.jsonl``, ``metrics.json``, ``samples/iter-*.png`` and ``checkpoints/`` (see
:mod:`copymark.train.checkpointing`). ``resume=True`` rebuilds everything from ``config.json``
(only ``device`` and ``progress`` may change) and continues from ``checkpoints/LATEST``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError
from torch.utils.data import Dataset

from copymark.config import StrictModel, format_validation_error
from copymark.errors import ConfigError, DataError
from copymark.train.cyclegan import CycleGAN, CycleGANConfig
from copymark.train.loop import (
    LoopConfig,
    Procedure,
    TrainResult,
    resolve_device,
    seed_everything,
    setup_distributed,
    train_loop,
)
from copymark.train.pix2pix import Pix2Pix, Pix2PixConfig
from copymark.train.sr import SRGANProcedure, SRGANTrainConfig, SRResNetProcedure, SRResNetTrainConfig
from copymark.train.ugatit import UGATIT, UGATITConfig

ProcedureKind = Literal["pix2pix", "cyclegan", "ugatit", "srresnet", "srgan"]
PROCEDURE_KINDS: tuple[str, ...] = ("pix2pix", "cyclegan", "ugatit", "srresnet", "srgan")
ProcedureConfig = Annotated[
    Pix2PixConfig | CycleGANConfig | UGATITConfig | SRResNetTrainConfig | SRGANTrainConfig,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(ProcedureConfig)


class DataConfig(StrictModel):
    dir: str
    size: int = Field(256, ge=4)
    resize_policy: Literal["error", "resize", "center_crop", "random_crop"] = "error"
    flip: bool = True


class TrainConfig(StrictModel):
    """Everything a run needs; stored as the run's config.json."""

    procedure: ProcedureConfig
    loop: LoopConfig = Field(default_factory=LoopConfig)
    data: DataConfig


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def procedure_config(kind: str, overrides: dict[str, Any] | None = None, where: str = "--net-config") -> Any:
    """The default config of procedure ``kind`` with ``overrides`` deep-merged into it."""
    if kind not in PROCEDURE_KINDS:
        raise ConfigError(f"unknown procedure {kind!r}", hint=f"one of {', '.join(PROCEDURE_KINDS)}")
    overrides = dict(overrides or {})
    if overrides.get("kind", kind) != kind:
        raise ConfigError(f"{where}: kind {overrides['kind']!r} does not match the procedure {kind!r}")
    defaults = _ADAPTER.validate_python({"kind": kind}).model_dump()
    try:
        return _ADAPTER.validate_python(_deep_merge(defaults, overrides))
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(err, where), hint=f"keys of {kind}: {', '.join(sorted(defaults))}"
        ) from None


def build_procedure(config: Any, iters: int) -> Procedure:
    """A fresh procedure (nets initialised from the current RNG state) for ``config``."""
    match config:
        case Pix2PixConfig():
            return Pix2Pix(config, iters)
        case CycleGANConfig():
            return CycleGAN(config, iters)
        case UGATITConfig():
            return UGATIT(config, iters)
        case SRGANTrainConfig():
            return SRGANProcedure(config, iters)
        case SRResNetTrainConfig():
            return SRResNetProcedure(config, iters)
        case _:
            raise ConfigError(f"not a procedure config: {type(config).__name__}")


def generator_stride(config: Any) -> int:
    match config:
        case Pix2PixConfig():
            return 2**config.generator.num_downs
        case CycleGANConfig():
            return 4
        case UGATITConfig():
            return 4
        case _:
            return config.generator.scale  # SR: HR crops must be multiples of the scale


def _pick_pair(root: Path, names: list[tuple[str, str]], what: str) -> tuple[Path, Path]:
    for a, b in names:
        if (root / a).is_dir() and (root / b).is_dir():
            return root / a, root / b
    tried = " or ".join(f"{a}/ + {b}/" for a, b in names)
    raise DataError(
        f"{root}: no {what} folders found (looked for {tried})", hint="see `copymark train --help` for the data layouts"
    )


def _check_sizes(files: list[Path], size: int, policy: str) -> None:
    """Up-front check from file headers, so a bad image fails now, not mid-training."""
    from copymark.data import image_size

    bad = []
    small = []
    for f in files:
        h, w = image_size(f)
        if (h, w) != (size, size):
            bad.append(f"{f.name} ({h}x{w})")
            if h < size or w < size:
                small.append(f"{f.name} ({h}x{w})")
    if bad and policy == "error":
        raise DataError(
            f"{len(bad)} image(s) in {files[0].parent} are not {size}x{size}: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}",
            hint="pass --resize-policy resize, center_crop or random_crop, or a matching --size",
        )
    if small and policy in ("center_crop", "random_crop"):
        raise DataError(
            f"{len(small)} image(s) in {files[0].parent} are smaller than the {size}x{size} crop: {', '.join(small[:4])}",
            hint="use --resize-policy resize or a smaller --size",
        )


def build_dataset(kind: str, data: DataConfig, proc_config: Any, seed: int) -> Dataset:
    """The dataset of procedure ``kind`` for ``data`` (see the module docstring for layouts)."""
    from copymark.data import PairedFolders, PairedRandomCrop, RandomHFlip, SRPairs, UnpairedFolders, image_files
    from copymark.data.transforms import Compose

    root = Path(data.dir)
    if not root.is_dir():
        raise DataError(
            f"data folder not found: {root}", hint="pass --data DIR (see `copymark train --help` for layouts)"
        )
    stride = generator_stride(proc_config)
    if data.size % stride:
        what = "the SR scale" if kind in ("srresnet", "srgan") else "the generator's stride"
        raise ConfigError(
            f"--size {data.size} is not a multiple of {what} ({stride})",
            hint=f"use e.g. --size {max(stride, data.size - data.size % stride)}",
        )
    flip = RandomHFlip() if data.flip else None
    if kind == "pix2pix":
        a, b = _pick_pair(root, [("A", "B"), ("trainA", "trainB")], "paired A/B")
        for d in (a, b):
            _check_sizes(image_files(d, f"folder {d.name}"), data.size, data.resize_policy)
        return PairedFolders(a, b, flip, size=data.size, resize_policy=data.resize_policy, seed=seed)
    if kind in ("cyclegan", "ugatit"):
        a, b = _pick_pair(root, [("trainA", "trainB"), ("A", "B")], "unpaired A/B")
        for d in (a, b):
            _check_sizes(image_files(d, f"folder {d.name}"), data.size, data.resize_policy)
        return UnpairedFolders(a, b, flip, size=data.size, resize_policy=data.resize_policy, seed=seed)
    # super-resolution
    scale = proc_config.generator.scale
    hr = root / "HR" if (root / "HR").is_dir() else root
    lr = hr.parent / f"LR_x{scale}" if (hr.parent / f"LR_x{scale}").is_dir() and hr != root else None
    from copymark.data import image_size

    small = [
        f"{f.name} ({h}x{w})"
        for f in image_files(hr, "HR folder")
        for h, w in [image_size(f)]
        if h < data.size or w < data.size
    ]
    if small:
        raise DataError(
            f"{len(small)} HR image(s) in {hr} are smaller than the {data.size}x{data.size} training crop: {', '.join(small[:4])}",
            hint="use a smaller --size (a multiple of the scale) or remove those images",
        )
    steps = [PairedRandomCrop(data.size // scale, scale)] + ([flip] if flip else [])
    return SRPairs(hr, lr, scale=scale, transform=Compose(steps), seed=seed)


def make_train_config(
    kind: str,
    data_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    size: int = 256,
    resize_policy: str = "error",
    **loop: Any,
) -> TrainConfig:
    """Assemble a :class:`TrainConfig` (``loop`` keys are :class:`LoopConfig` fields)."""
    overrides = dict(overrides or {})
    if kind == "ugatit":  # the full generator only runs at img_size: follow --size unless given
        gen = dict(overrides.get("generator", {}))
        gen.setdefault("img_size", size)
        overrides["generator"] = gen
    proc = procedure_config(kind, overrides)
    try:
        loop_cfg = LoopConfig(**loop)
        data = DataConfig(dir=str(data_dir), size=size, resize_policy=resize_policy)  # type: ignore[arg-type]
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "train options")) from None
    return TrainConfig(procedure=proc, loop=loop_cfg, data=data)


def check_device(loop: LoopConfig, d: Any) -> None:
    """Device/AMP problems are errors before anything is written."""
    device = resolve_device(loop.device, d)
    if loop.amp == "fp16" and device.type != "cuda":
        raise ConfigError("--amp fp16 needs CUDA", hint="use --amp bf16 on CPU, or --amp off")


def train(config: TrainConfig, run_dir: str | Path) -> TrainResult:
    """Start a new run in ``run_dir`` and train it to the end."""
    from copymark.runs import create_run

    d = setup_distributed(config.loop.device)
    check_device(config.loop, d)
    dataset = build_dataset(config.procedure.kind, config.data, config.procedure, config.loop.seed)
    run = create_run(run_dir, config.model_dump(), device=config.loop.device, seed=config.loop.seed) if d.main else None
    seed_everything(config.loop.seed + d.rank)
    if d.world > 1:  # identical initial nets on every rank (DDP also broadcasts rank 0's)
        seed_everything(config.loop.seed)
    proc = build_procedure(config.procedure, config.loop.iters)
    if d.world > 1:
        seed_everything(config.loop.seed + d.rank)
    try:
        return train_loop(proc, dataset, config.loop, run)
    finally:
        _leave_group(d)


def _leave_group(d: Any) -> None:
    import torch.distributed as dist

    if d.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def resume(
    run_dir: str | Path, device: str | None = None, progress: bool | None = None, iters: int | None = None
) -> TrainResult:
    """Continue the run in ``run_dir`` from its latest checkpoint (exactly)."""
    from copymark.runs import open_run, read_json

    d = setup_distributed(device or "cpu")
    p = Path(run_dir)
    raw = read_json(p / "config.json")
    try:
        config = TrainConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, f"{p}/config.json")) from None
    if device is not None:
        config.loop.device = device
    if progress is not None:
        config.loop.progress = progress
    if iters is not None and iters != config.loop.iters:
        raise ConfigError(
            f"--iters {iters} differs from the run's {config.loop.iters}; the LR schedule depends on it",
            hint="resume without --iters (a longer run is a new run started from this one's weights)",
        )
    check_device(config.loop, d)
    dataset = build_dataset(config.procedure.kind, config.data, config.procedure, config.loop.seed)
    run = open_run(p) if d.main else None
    proc = build_procedure(config.procedure, config.loop.iters)
    from copymark.runs import Run

    try:
        return train_loop(proc, dataset, config.loop, run if run is not None else Run(p, None), resume=True)  # type: ignore[arg-type]
    finally:
        _leave_group(d)
