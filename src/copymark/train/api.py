"""The one run orchestrator: every training command (translation nets here; codecs and
steganalyzers in :mod:`copymark.stego.training`; classifiers and watermark embedding next)
starts, resumes and finishes its runs through :func:`start_run` / :func:`resume_run`.

A *run kind* (:class:`RunKind`) says what is specific to one kind of run:

* ``config_model``: its config (a :class:`RunConfig`: ``task``, ``loop``, ``init_from`` plus the
  kind's own ``procedure`` and ``data``), stored as the run's ``config.json``;
* ``data(config)``: check and read the data (folders, sizes, held-out split) -> :class:`RunData`;
* ``procedure(config)``: a fresh :class:`~copymark.train.loop.Procedure` (nets from the RNG);
* ``finish(run, proc, data, result)``: export and held-out report, what the command returns;
* ``continue_command(config, run_dir, iters)``: the command line of a longer run started from
  this one's weights (the hint when ``--resume --iters N`` asks for another length).

The orchestrator does the rest, once for every kind, in this order: refuse a ``--run-dir``
that already holds a run; join the DDP group (under ``torchrun``); check the device and AMP;
build the data; check the batch size against the data (per process); seed and build the
procedure (every rank builds the same initial nets); load ``init_from`` weights (strict); and
only then create the run folder and run :func:`~copymark.train.loop.train_loop`, then
``finish``. A refused start therefore leaves no folder (and a refused resume an untouched one).

Resume (:func:`resume_run`) reads ``config.json`` back (its ``task`` must be the kind's; only
the device and the progress bar may change, and the learning rate from the checkpoint on),
rebuilds everything from it, and continues exactly from ``checkpoints/LATEST`` (or from
iteration 0 when the run stopped before its first checkpoint). The command passes its run
kind, so the orchestrator never imports the layers above it.

``init_from`` (``--init-from``): a run folder, a training checkpoint, or a net checkpoint
folder. From a run or training checkpoint every net of the new procedure that the source holds
under the same name starts from it (pix2pix -> pix2pix: G and D; srresnet -> srgan: G, with a
fresh D), and the exported net (G, G_A, A2B, codec, detector) takes the source's exported net
when the names differ; a net checkpoint folder (e.g. ``RUN/codec``) initialises the exported
net. Each net must have exactly the architecture of the source (same config), else a
WeightsError naming the differing keys. Optimiser state and LR schedule start fresh: it is a
new run.

Translation runs (``copymark train``; data layouts in :mod:`copymark.train.folders`): a run
folder holds ``config.json`` (procedure + loop + data config), ``env.json``, ``log.txt``,
``losses.jsonl``, ``metrics.json``, ``samples/iter-*.png`` and ``checkpoints/`` (see
:mod:`copymark.train.checkpointing`).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import Field, TypeAdapter, ValidationError
from torch.utils.data import Dataset

from copymark.config import StrictModel, format_validation_error
from copymark.errors import ConfigError, WeightsError
from copymark.runs import Run
from copymark.train.cyclegan import CycleGAN, CycleGANConfig
from copymark.train.folders import DataConfig, build_dataset, generator_stride
from copymark.train.loop import (
    Dist,
    EpochSampler,
    LoopConfig,
    Procedure,
    TrainResult,
    resolve_device,
    seed_everything,
    setup_distributed,
    train_loop,
)
from copymark.train.pix2pix import Pix2Pix, Pix2PixConfig, unet_depth_for_size
from copymark.train.sr import SRGANProcedure, SRGANTrainConfig, SRResNetProcedure, SRResNetTrainConfig
from copymark.train.ugatit import UGATIT, UGATITConfig

__all__ = [
    "DataConfig",
    "RunConfig",
    "RunData",
    "RunKind",
    "TrainConfig",
    "build_dataset",
    "build_procedure",
    "generator_stride",
    "init_nets",
    "make_train_config",
    "procedure_config",
    "resume",
    "resume_run",
    "start_run",
    "train",
]


# ---------------------------------------------------------------------------------------------
# what a run kind provides


class RunConfig(StrictModel):
    """What every training run's config.json holds besides its procedure and data."""

    task: str
    loop: LoopConfig = Field(default_factory=LoopConfig)
    init_from: str | None = Field(
        None, description="run folder, training checkpoint or net checkpoint whose weights the nets start from"
    )


@dataclass
class RunData:
    """A run kind's data: the training dataset, whatever ``finish`` needs (held-out sets), and
    the batch collation when the dataset's items are not the copymark dicts of tensors."""

    train: Dataset
    held_out: Any = None
    collate_fn: Callable[[list[Any]], Any] | None = None


C = TypeVar("C", bound=RunConfig)
R = TypeVar("R")


class RunKind(Generic[C, R]):
    """What one kind of training run adds to the orchestrator (see the module docstring)."""

    task: str = ""
    config_model: type[C]

    def data(self, config: C) -> RunData:
        raise NotImplementedError

    def procedure(self, config: C) -> Procedure:
        raise NotImplementedError

    def finish(self, run: Run | None, proc: Procedure, data: RunData, result: TrainResult) -> R:
        """Export and report on the main process (``run`` is None on the other DDP ranks)."""
        raise NotImplementedError

    def continue_command(self, config: C, run_dir: Path, iters: int) -> str:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# the orchestrator


def check_device(loop: LoopConfig, d: Dist | None = None) -> Any:
    """The device of ``loop``; device/AMP problems are errors before anything is written."""
    import torch

    device = resolve_device(loop.device, d or Dist())
    if loop.amp == "fp16" and device.type != "cuda":
        raise ConfigError("--amp fp16 needs CUDA", hint="use --amp bf16 on CPU, or --amp off")
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if device.index is not None and device.index >= n:
            raise ConfigError(
                f"--device {loop.device}: this machine has {n} CUDA device(s)",
                hint=f"use cuda:0 .. cuda:{max(n - 1, 0)}",
            )
        if loop.amp == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError("--amp bf16: this GPU does not support bfloat16", hint="use --amp fp16, or --amp off")
    return device


def _prepare(kind: RunKind[Any, Any], config: RunConfig, d: Dist, init: bool) -> tuple[Procedure, RunData, dict]:
    """Everything that can be refused, in order, before the run folder is touched."""
    check_device(config.loop, d)
    data = kind.data(config)
    EpochSampler(len(data.train), config.loop.batch_size, config.loop.seed, d.rank, d.world)  # type: ignore[arg-type]
    seed_everything(config.loop.seed + d.rank)
    if d.world > 1:  # identical initial nets on every rank (DDP also broadcasts rank 0's)
        seed_everything(config.loop.seed)
    proc = kind.procedure(config)
    if d.world > 1:
        seed_everything(config.loop.seed + d.rank)
    loaded = init_nets(proc, config.init_from) if init and config.init_from else {}
    return proc, data, loaded


def _record_init(run: Run | None, source: str | None, loaded: dict[str, str]) -> None:
    if run is None or not loaded:
        return
    run.log("initialised %s from %s", ", ".join(f"{k} ({v})" for k, v in loaded.items()), source)
    run.update_metrics({"init_from": {"source": source, "nets": loaded}})


def start_run(kind: RunKind[C, R], config: C, run_dir: str | Path) -> R:
    """Validate everything, then create the run folder in ``run_dir``, train it to the end and finish."""
    from copymark.runs import check_new_run_dir, create_run

    check_new_run_dir(run_dir)
    d = setup_distributed(config.loop.device)
    try:
        proc, data, loaded = _prepare(kind, config, d, init=True)
        run = (
            create_run(run_dir, config.model_dump(), device=config.loop.device, seed=config.loop.seed)
            if d.main
            else None
        )
        _record_init(run, config.init_from, loaded)
        result = train_loop(proc, data.train, config.loop, run, collate_fn=data.collate_fn)
        return kind.finish(run, proc, data, result)
    finally:
        _leave_group(d)


def read_run_config(kind: RunKind[C, Any], run_dir: str | Path) -> C:
    """A run folder's config.json, validated as ``kind``'s (another command's run is a clear error)."""
    from copymark.runs import CONFIG, read_json

    p = Path(run_dir)
    if not (p / CONFIG).is_file():
        raise ConfigError(
            f"{p} is not a run folder (no config.json); nothing to resume", hint="start the run without --resume"
        )
    raw = read_json(p / CONFIG)
    default_task = kind.config_model.model_fields["task"].default
    _check_task(kind, raw.get("task", default_task) if isinstance(raw, dict) else None, p)
    try:
        return kind.config_model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(err, f"{p}/config.json"),
            hint="the run was made by another copymark version, or config.json was edited",
        ) from None


def _check_task(kind: RunKind[Any, Any], task: Any, where: Path) -> None:
    if task != kind.task:
        raise ConfigError(
            f"{where}: a {task!r} run, not a {kind.task!r} run",
            hint="resume a run with the command that started it (config.json names its task)",
        )


def resume_run(
    kind: RunKind[C, R],
    run_dir: str | Path,
    device: str | None = None,
    progress: bool | None = None,
    iters: int | None = None,
    lr: float | None = None,
) -> R:
    """Continue the run in ``run_dir`` exactly from its latest checkpoint, then finish it.

    Only ``device`` and ``progress`` may differ from the stored config; ``lr`` replaces the
    learning rate from the checkpoint on (logged, and listed in metrics.json under
    ``lr_changes``). ``iters`` other than the run's is refused with the command that starts a
    longer run from this one's weights.
    """
    from copymark.checkpoints import latest_checkpoint, read_meta
    from copymark.runs import open_run

    p = Path(run_dir)
    config = read_run_config(kind, p)
    if device is not None:
        config.loop.device = device
    if progress is not None:
        config.loop.progress = progress
    if iters is not None and iters != config.loop.iters:
        raise ConfigError(
            f"--iters {iters} differs from the run's {config.loop.iters}: the LR schedule depends on the length, "
            "so a run is resumed to its own length only",
            hint="train longer as a new run that starts from this one's weights (fresh optimiser and schedule): "
            + kind.continue_command(config, p, iters),
        )
    d = setup_distributed(config.loop.device)
    try:
        latest = latest_checkpoint(p)
        proc, data, loaded = _prepare(kind, config, d, init=latest is None)
        run = open_run(p) if d.main else None
        _record_init(run, config.init_from, loaded)
        if lr is not None and run is not None:
            at = int(read_meta(latest)["iteration"]) if latest is not None else 0
            run.log("resuming with lr %g from iteration %d", lr, at)
            run.update_metrics({"lr_changes": run.metrics().get("lr_changes", []) + [{"iteration": at, "lr": lr}]})
        writer = run if run is not None else Run(p, None)  # type: ignore[arg-type]
        result = train_loop(proc, data.train, config.loop, writer, resume=True, collate_fn=data.collate_fn, lr=lr)
        return kind.finish(run, proc, data, result)
    finally:
        _leave_group(d)


def _leave_group(d: Dist) -> None:
    import torch.distributed as dist

    if d.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# --init-from


def _config_diff(there: dict[str, Any], here: dict[str, Any]) -> str:
    keys = sorted(set(there) | set(here))
    diff = [f"{k}: {there.get(k, '-')} there, {here.get(k, '-')} here" for k in keys if there.get(k) != here.get(k)]
    return "; ".join(diff)


def init_nets(proc: Procedure, source: str | Path) -> dict[str, str]:
    """Load the weights of ``source`` into ``proc``'s nets (strict); returns ``{net: folder}``.

    See the module docstring for which nets a run folder, a training checkpoint or a net
    checkpoint folder initialises. Run before the optimisers take a step: weights are copied
    into the existing parameters, so the optimisers keep pointing at them.
    """
    from copymark.checkpoints import (
        NETS,
        WEIGHTS_FILE,
        find_training_checkpoint,
        load_checkpoint,
        load_strict,
        read_meta,
    )
    from copymark.nets.build import parse_net_config

    src = Path(source)
    hint = "pass a run folder, one of its checkpoints/iter-* folders, or a net checkpoint folder (model.safetensors + config.json)"
    if not src.exists():
        raise WeightsError(f"--init-from {src}: not found", hint=hint)
    folders: dict[str, Path] = {}
    if (src / WEIGHTS_FILE).is_file():
        if proc.export is None:
            raise WeightsError(
                f"--init-from {src}: {proc.kind} exports no net that a single net checkpoint could start"
            )
        folders[proc.export] = src
    else:
        ckpt = find_training_checkpoint(src)
        if ckpt is None:
            raise WeightsError(
                f"--init-from {src}: neither a net checkpoint nor a run / training checkpoint", hint=hint
            )
        held = (
            {f.name: f for f in sorted((ckpt / NETS).iterdir()) if (f / WEIGHTS_FILE).is_file()}
            if (ckpt / NETS).is_dir()
            else {}
        )
        folders = {name: held[name] for name in proc.nets if name in held}
        export = read_meta(ckpt).get("export")
        if proc.export is not None and proc.export not in folders and export in held:
            folders[proc.export] = held[str(export)]
        if not folders:
            raise WeightsError(
                f"--init-from {ckpt}: holds none of {proc.kind}'s nets ({', '.join(proc.nets)}); it has {', '.join(held) or 'none'}",
                hint="start from a run of a procedure with the same nets",
            )
    out: dict[str, str] = {}
    for name, folder in folders.items():
        state, meta = load_checkpoint(folder)
        try:
            there = parse_net_config(meta["config"], where=f"{folder}/config.json").model_dump()
        except ConfigError as err:
            raise WeightsError(err.message, hint="this checkpoint was written for another net layout") from None
        here = proc.net_configs[name].model_dump()
        if there != here:
            raise WeightsError(
                f"--init-from {folder}: its {name} has another architecture than this run's ({_config_diff(there, here)})",
                hint="give the new run the architecture of the run it starts from (the same --net-config), "
                "or start fresh without --init-from",
            )
        load_strict(proc.nets[name], state, str(folder))
        out[name] = str(folder)
    return out


# ---------------------------------------------------------------------------------------------
# translation runs (copymark train)

ProcedureKind = Literal["pix2pix", "cyclegan", "ugatit", "srresnet", "srgan"]
PROCEDURE_KINDS: tuple[str, ...] = ("pix2pix", "cyclegan", "ugatit", "srresnet", "srgan")
ProcedureConfig = Annotated[
    Pix2PixConfig | CycleGANConfig | UGATITConfig | SRResNetTrainConfig | SRGANTrainConfig,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(ProcedureConfig)


class TrainConfig(RunConfig):
    """Everything a translation run needs; stored as the run's config.json."""

    task: Literal["train"] = "train"
    procedure: ProcedureConfig
    data: DataConfig


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _overrides(base: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """The smallest overrides that :func:`_deep_merge` turns ``base`` into ``value`` with."""
    out: dict[str, Any] = {}
    for k, v in value.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            sub = _overrides(base[k], v)
            if sub:
                out[k] = sub
        elif base.get(k) != v or k not in base:
            out[k] = v
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
            format_validation_error(err, where),
            hint=f"keys of {kind}: {', '.join(sorted(defaults))} (all of them: `copymark nets show {kind}`)",
        ) from None


def size_defaults(kind: str, size: int, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The procedure settings that follow ``--size`` unless ``given`` (the overrides) sets them:
    pix2pix's UNet depth (:func:`~copymark.train.pix2pix.unet_depth_for_size`) and the full
    U-GAT-IT generator's ``img_size``."""
    gen = (given or {}).get("generator")
    gen = gen if isinstance(gen, dict) else {}
    if kind == "pix2pix" and "num_downs" not in gen:
        return {"generator": {"num_downs": unet_depth_for_size(size)}}
    if kind == "ugatit" and "img_size" not in gen:
        return {"generator": {"img_size": size}}
    return {}


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


def make_train_config(
    kind: str,
    data_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    size: int = 256,
    resize_policy: str = "error",
    init_from: str | Path | None = None,
    **loop: Any,
) -> TrainConfig:
    """Assemble a :class:`TrainConfig` (``loop`` keys are :class:`LoopConfig` fields).

    Settings that follow the size (:func:`size_defaults`) are filled in unless ``overrides`` sets them.
    """
    overrides = _deep_merge(size_defaults(kind, size, overrides), dict(overrides or {}))
    proc = procedure_config(kind, overrides)
    try:
        loop_cfg = LoopConfig(**loop)
        data = DataConfig(dir=str(data_dir), size=size, resize_policy=resize_policy)  # type: ignore[arg-type]
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "train options")) from None
    return TrainConfig(procedure=proc, loop=loop_cfg, data=data, init_from=str(init_from) if init_from else None)


LOOP_FLAGS: dict[str, str] = {
    "device": "--device",
    "amp": "--amp",
    "save_every": "--save-every",
    "log_every": "--log-every",
    "sample_every": "--sample-every",
    "num_workers": "--workers",
}
"""LoopConfig fields and the ``copymark train`` options that set them."""


def loop_cli_args(loop: LoopConfig, flags: dict[str, str] | None = None) -> list[str]:
    """Command-line options that reproduce ``loop``: batch size, seed, and the ``flags``
    (field -> option; default :data:`LOOP_FLAGS`) whose values differ from the defaults."""
    default = LoopConfig()
    args = ["--batch-size", str(loop.batch_size), "--seed", str(loop.seed)]
    for key, flag in (LOOP_FLAGS if flags is None else flags).items():
        if getattr(loop, key) != getattr(default, key):
            args += [flag, str(getattr(loop, key))]
    return args


class TranslationRuns(RunKind[TrainConfig, TrainResult]):
    """``copymark train``: pix2pix, CycleGAN, U-GAT-IT, SRResNet, SRGAN from data folders."""

    task = "train"
    config_model = TrainConfig

    def data(self, config: TrainConfig) -> RunData:
        return RunData(build_dataset(config.procedure.kind, config.data, config.procedure, config.loop.seed))

    def procedure(self, config: TrainConfig) -> Procedure:
        return build_procedure(config.procedure, config.loop.iters)

    def finish(self, run: Run | None, proc: Procedure, data: RunData, result: TrainResult) -> TrainResult:
        return result  # the exported net is the last checkpoint's (copymark translate reads it)

    def continue_command(self, config: TrainConfig, run_dir: Path, iters: int) -> str:
        kind, data = config.procedure.kind, config.data
        base = make_train_config(kind, data.dir, size=data.size).procedure.model_dump()
        over = _overrides(base, config.procedure.model_dump())
        args = ["copymark", "train", kind, "--data", data.dir, "--size", str(data.size)]
        if data.resize_policy != "error":
            args += ["--resize-policy", data.resize_policy]
        args += loop_cli_args(config.loop)
        args += (["--no-channels-last"] if not config.loop.channels_last else []) + (
            ["--compile"] if config.loop.compile else []
        )
        if over:
            args += ["--net-config", json.dumps(over)]
        args += ["--init-from", str(run_dir), "--iters", str(iters), "--run-dir", f"{run_dir}-{iters}"]
        return shlex.join(args)


TRANSLATION = TranslationRuns()


def train(config: TrainConfig, run_dir: str | Path) -> TrainResult:
    """Start a new translation run in ``run_dir`` and train it to the end."""
    return start_run(TRANSLATION, config, run_dir)


def resume(
    run_dir: str | Path,
    device: str | None = None,
    progress: bool | None = None,
    iters: int | None = None,
    lr: float | None = None,
) -> TrainResult:
    """Continue the translation run in ``run_dir`` from its latest checkpoint (exactly)."""
    return resume_run(TRANSLATION, run_dir, device=device, progress=progress, iters=iters, lr=lr)
