"""The one training loop every procedure shares.

A *procedure* (pix2pix, CycleGAN, U-GAT-IT, SRResNet/SRGAN here; classifier and stego
training elsewhere) only says **what one step does**. The loop owns everything else:
iterations, device placement, AMP, ``channels_last``, ``torch.compile``, DDP, data order,
logging, progress bar, sample grids, checkpoints, exact resume and divergence detection.

Writing a procedure
-------------------
Subclass :class:`Procedure` and, in ``__init__``, fill

* ``self.nets``: ``{name: nn.Module}`` — every module with trainable or persistent state;
* ``self.net_configs``: ``{name: NetConfig}`` — how :func:`copymark.nets.build.save_net` rebuilds
  each net (a net without a config cannot be checkpointed);
* ``self.optimizers``: ``{name: Optimizer}`` (see :func:`adam`), ``self.schedulers``:
  ``{name: LRScheduler}`` stepped once per iteration (see :func:`linear_decay`);
* ``export``: the name of the net ``copymark translate`` uses (e.g. ``"G"``), or ``None``.

and implement ``step(batch, ctx) -> {loss name: tensor or float}``. Inside ``step`` call nets
through ``self.net(name)`` (the loop may have wrapped them in DDP / ``torch.compile``; the plain
module stays in ``self.nets``) and nets frozen for the current update through
``self.frozen(name)`` (compiled, never DDP), run forward passes under ``with ctx.autocast():`` and update
with ``ctx.backward(loss)`` + ``ctx.step(optimizer)`` (or ``ctx.update(loss, optimizer)``), which
handle the fp16 GradScaler. Optional hooks: ``sample_images(batch)`` (rows of the sample grid),
``extra_state()`` / ``load_extra_state(state)`` (anything else to checkpoint, e.g. image
pools), ``provenance()``.

The dataset
-----------
A map-style dataset (``__len__``, ``__getitem__``) whose items collate into a batch (dicts of
tensors in :mod:`copymark.data`). Its order is a pure function of ``(seed, epoch)``
(:class:`EpochSampler`): iteration ``i`` is batch ``i mod B`` of epoch ``i div B``, so a resumed run
skips straight to the exact batch. ``dataset.set_epoch(epoch)`` is called when it exists (the
copymark datasets draw augmentations from generators seeded by (seed, epoch, index)); a
fresh DataLoader with a seeded generator is made per epoch, so nothing touches the global
RNG and ``num_workers`` does not change the data.

Entry points: :func:`train_loop` (everything above); for custom harnesses (the speed
benchmark) the same pieces one by one: :func:`place_procedure` (device, ``channels_last``,
cuDNN autotuning), :func:`wrap_nets` (DDP / compile), :class:`StepContext`, :func:`train_step`.

Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) the loop initialises the process
group from the environment (NCCL on CUDA, gloo on CPU), shards each epoch's permutation like
``DistributedSampler`` (padded to a multiple of the world size, rank ``r`` takes ``r::world``),
wraps nets that have trainable parameters in ``DistributedDataParallel``, averages the logged
losses over ranks, and only rank 0 writes to the run folder.

Checkpoints (see :mod:`copymark.train.checkpointing`) hold every net, optimizer, scheduler,
the AMP scaler, the RNG states (torch CPU + CUDA, NumPy, Python) and the iteration, so
``resume=True`` continues exactly: on CPU the final weights equal an uninterrupted run's
bitwise (tested). A loss that is NaN/inf, or whose magnitude exceeds ``max_loss``, stops
training with :class:`TrainingDiverged`; nothing is saved after the bad step, so the last
checkpoint on disk is the last good state.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader, Dataset

from copymark.config import StrictModel
from copymark.errors import ConfigError, CopymarkError, DataError
from copymark.runs import Run
from copymark.train import checkpointing as ck

LOSSES_FILE = "losses.jsonl"
SAMPLES_DIR = "samples"


class TrainingDiverged(CopymarkError):
    """A loss became NaN/inf or exploded; training stopped and the last good checkpoint was kept."""


class LoopConfig(StrictModel):
    """How the loop runs (not what it trains)."""

    iters: int = Field(1000, ge=1, description="total optimisation steps")
    batch_size: int = Field(1, ge=1, description="batch per process")
    seed: int = 0
    device: str = "cpu"
    amp: Literal["off", "bf16", "fp16"] = "off"
    channels_last: bool = Field(True, description="NHWC memory format for nets and batches (CUDA only)")
    compile: bool = Field(False, description="torch.compile the nets (CUDA)")
    cudnn_benchmark: bool = Field(True, description="cuDNN autotuning on CUDA (fixed input sizes)")
    num_workers: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    sample_every: int = Field(0, ge=0, description="0: only at the end")
    save_every: int = Field(0, ge=0, description="0: only at the end")
    keep_checkpoints: int = Field(2, ge=0, description="newest checkpoints kept; 0 keeps all")
    max_loss: float = Field(1e6, gt=0, description="a loss with larger magnitude counts as diverged")
    check_every: int = Field(
        10,
        ge=1,
        description="losses are copied to the host (and checked) every N iterations, and always before logging, samples and checkpoints",
    )
    sample_count: int = Field(4, ge=1, le=16)
    progress: bool = True


# ---------------------------------------------------------------------------------------------
# optimisers, schedules


def adam(
    params: Any, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999), weight_decay: float = 0.0
) -> torch.optim.Adam:
    """Adam with the GAN defaults of pix2pix/CycleGAN/U-GAT-IT (lr 2e-4, betas (0.5, 0.999))."""
    return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)


def linear_decay(
    optimizer: torch.optim.Optimizer, iters: int, decay_start: float = 0.5
) -> torch.optim.lr_scheduler.LambdaLR:
    """Constant LR for the first ``decay_start`` fraction of ``iters``, then linear decay to 0.

    The per-iteration form of pix2pix/CycleGAN's ``n_epochs`` + ``n_epochs_decay`` schedule
    (``decay_start=0.5`` is their 100 + 100 epochs; ``1.0`` keeps the LR constant).
    """
    if not 0.0 <= decay_start <= 1.0:
        raise ConfigError(f"decay_start must be in [0, 1], got {decay_start}")
    n_const = int(round(iters * decay_start))
    n_decay = max(1, iters - n_const)

    def factor(it: int) -> float:
        return 1.0 if it < n_const else max(0.0, 1.0 - (it - n_const) / n_decay)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------------------------
# procedure protocol


class StepContext:
    """What a procedure's ``step`` gets from the loop: AMP, scaler, device, iteration."""

    def __init__(self, device: torch.device, amp: str, scaler: torch.amp.GradScaler, world_size: int, rank: int):
        self.device = device
        self.amp = amp
        self.scaler = scaler
        self.world_size = world_size
        self.rank = rank
        self.iteration = 0

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision for forward passes (a no-op when AMP is off)."""
        if self.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.scaler.step(optimizer)

    def update(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """zero_grad, backward, step: one optimiser update from ``loss``."""
        optimizer.zero_grad(set_to_none=True)
        self.backward(loss)
        self.step(optimizer)


class Procedure:
    """Base class of training procedures; see the module docstring."""

    kind: str = "procedure"
    export: str | None = None

    def __init__(self) -> None:
        self.nets: dict[str, nn.Module] = {}
        self.net_configs: dict[str, Any] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.run_nets: dict[str, nn.Module] = {}
        self.frozen_nets: dict[str, nn.Module] = {}

    def net(self, name: str) -> nn.Module:
        """The module to call in ``step`` (DDP/compiled wrapper when the loop made one)."""
        if name not in self.run_nets:
            self.run_nets[name] = self.train_module(name)
        return self.run_nets[name]

    def frozen(self, name: str) -> nn.Module:
        """The module to call for a net whose parameters are frozen in this update (the
        discriminator in a generator step): compiled when the loop compiles, never DDP-wrapped
        (DDP would wait for gradients that never come)."""
        if name not in self.frozen_nets:
            self.frozen_nets[name] = self.train_module(name)
        return self.frozen_nets[name]

    def train_module(self, name: str) -> nn.Module:
        """What the loop wraps (DDP/compile) for net ``name``: the net itself by default; a
        procedure may return a thin wrapper whose ``forward`` gives training outputs."""
        return self.nets[name]

    def step(self, batch: Any, ctx: StepContext) -> Mapping[str, torch.Tensor | float]:
        raise NotImplementedError

    def sample_images(self, batch: Any) -> list[torch.Tensor]:
        """Rows of the sample grid (each ``N x 3 x H x W`` in [0, 1]); called in eval mode, no grad."""
        return []

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        pass

    def provenance(self) -> dict[str, Any]:
        return {}


def set_requires_grad(nets: list[nn.Module] | nn.Module, flag: bool) -> None:
    """Freeze/unfreeze nets (the discriminator while updating the generator)."""
    for n in nets if isinstance(nets, list) else [nets]:
        for p in n.parameters():
            p.requires_grad_(flag)


# ---------------------------------------------------------------------------------------------
# seeds, RNG state


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: Mapping[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(tuple(st["numpy"]))  # type: ignore[arg-type]
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in st and torch.cuda.is_available():
        states = st["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


# ---------------------------------------------------------------------------------------------
# data order


@dataclass
class EpochSampler:
    """Index batches of one epoch as a pure function of ``(seed, epoch)`` (plus rank/world).

    Each epoch is a fresh permutation from ``torch.Generator().manual_seed(seed * 1000003 + epoch)``,
    padded by wrapping around to a multiple of ``world`` and sharded ``rank::world`` (as
    ``DistributedSampler``), then cut into full batches (the remainder is dropped).
    """

    n: int
    batch_size: int
    seed: int = 0
    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        per_rank = math.ceil(self.n / self.world)
        if per_rank < self.batch_size:
            raise DataError(
                f"the dataset has {self.n} items, fewer than one batch of {self.batch_size}"
                + (f" per process x {self.world} processes" if self.world > 1 else ""),
                hint="add images or lower --batch-size",
            )

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.n / self.world) // self.batch_size

    def batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        total = math.ceil(self.n / self.world) * self.world
        perm = (perm * math.ceil(total / self.n))[:total]
        shard = perm[self.rank :: self.world]
        b = self.batch_size
        return [shard[i * b : (i + 1) * b] for i in range(len(shard) // b)]


def batches_from(
    dataset: Dataset,
    sampler: EpochSampler,
    start_iteration: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> Iterator[Any]:
    """Endless batches starting at global iteration ``start_iteration``."""
    from copymark.data.loading import collate

    bpe = sampler.batches_per_epoch
    epoch, pos = divmod(start_iteration, bpe)
    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        order = sampler.batches(epoch)[pos:]
        dl = DataLoader(
            dataset,
            batch_sampler=order,
            num_workers=num_workers,
            collate_fn=collate_fn or collate,
            pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(sampler.seed * 1000003 + epoch),
        )
        yield from dl
        epoch, pos = epoch + 1, 0


def to_device(batch: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(batch, torch.Tensor):
        t = batch.to(device, non_blocking=True)
        if channels_last and t.dim() == 4 and t.is_floating_point():
            t = t.contiguous(memory_format=torch.channels_last)
        return t
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    return batch


# ---------------------------------------------------------------------------------------------
# distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Join the process group torchrun describes in the environment (no-op when alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local)


def resolve_device(name: str, d: Dist) -> torch.device:
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available", hint="use --device cpu")
        if d.world > 1:
            return torch.device("cuda", d.local_rank)
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}", hint="use cpu, cuda or cuda:N") from None


# ---------------------------------------------------------------------------------------------
# the loop


@dataclass
class TrainResult:
    iterations: int
    last_losses: dict[str, float]
    seconds: float
    images_per_second: float
    checkpoint: Path | None
    resumed_from: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def _save(run: Run, proc: Procedure, it: int, scaler: torch.amp.GradScaler, cfg: LoopConfig) -> Path:
    for name, net in proc.nets.items():
        for pname, p in net.named_parameters():
            if not torch.isfinite(p).all():
                raise TrainingDiverged(
                    f"parameter {name}.{pname} is not finite at iteration {it}; not saving",
                    hint="the last good checkpoint is kept; resume it with a lower --lr or without --amp fp16",
                )
    missing = [n for n in proc.nets if n not in proc.net_configs]
    if missing:
        raise ConfigError(f"procedure {proc.kind}: no net config for {missing}; cannot checkpoint")
    state = {
        "iteration": it,
        "optimizers": {k: o.state_dict() for k, o in proc.optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in proc.schedulers.items()},
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
        "extra": proc.extra_state(),
    }
    meta = {
        "procedure": proc.kind,
        "export": proc.export,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "provenance": {"run": str(run.path), "procedure": proc.kind, **proc.provenance()},
    }
    nets = {k: (proc.nets[k], proc.net_configs[k]) for k in proc.nets}
    return ck.write_checkpoint(run.path, it, nets, state, meta, keep=cfg.keep_checkpoints)


def set_learning_rate(proc: Procedure, lr: float) -> None:
    """Make ``lr`` the base learning rate of every optimiser of ``proc`` from now on.

    A schedule keeps its shape: a parameter group at ``factor x base`` (e.g. half-way through a
    linear decay) moves to ``factor x lr``, and the scheduler's base becomes ``lr``.
    """
    by_optimizer = {id(s.optimizer): s for s in proc.schedulers.values()}
    for o in proc.optimizers.values():
        sched = by_optimizer.get(id(o))
        for i, g in enumerate(o.param_groups):
            base = sched.base_lrs[i] if sched is not None else g["lr"]
            g["lr"] = lr * (g["lr"] / base if base else 1.0)
            if "initial_lr" in g:
                g["initial_lr"] = lr
        if sched is not None:
            sched.base_lrs = [lr] * len(o.param_groups)


def _load(run: Run, proc: Procedure, scaler: torch.amp.GradScaler, device: torch.device) -> int:
    from copymark.checkpoints import load_checkpoint, load_strict

    ckpt = ck.latest_checkpoint(run.path)
    if ckpt is None:
        raise CopymarkError(f"{run.path} has no checkpoint to resume from", hint="start it again without --resume")
    for name, net in proc.nets.items():
        state, _ = load_checkpoint(ckpt / ck.NETS / name, map_location=device)
        load_strict(net, state, str(ckpt / ck.NETS / name))
    st = ck.read_state(ckpt)
    for k, o in proc.optimizers.items():
        o.load_state_dict(st["optimizers"][k])
    for k, s in proc.schedulers.items():
        s.load_state_dict(st["schedulers"][k])
    scaler.load_state_dict(st["scaler"])
    proc.load_extra_state(st.get("extra", {}))
    set_rng_state(st["rng"])
    return int(st["iteration"])


def _grid(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack rows of images (each N x 3 x H x W, resized to the first row's H x W) into one image."""
    import torch.nn.functional as F

    h, w = rows[0].shape[-2:]
    rs = [
        r.float().clamp(0, 1)
        if r.shape[-2:] == (h, w)
        else F.interpolate(r.float(), size=(h, w), mode="nearest").clamp(0, 1)
        for r in rows
    ]
    rs = [torch.cat(list(r), dim=-1) for r in rs]  # each row: 3 x H x (N*W)
    return torch.cat(rs, dim=-2).cpu()


def _write_samples(run: Run, proc: Procedure, batch: Any, it: int) -> Path | None:
    from copymark.images import save_image

    nets = list(proc.nets.values())
    modes = [n.training for n in nets]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for n in nets:
            n.eval()
        try:
            rows = proc.sample_images(batch)
        finally:
            for n, m in zip(nets, modes, strict=True):
                n.train(m)
    if not rows:
        return None
    return save_image(_grid([r.detach() for r in rows]), run.path / SAMPLES_DIR / f"iter-{it:08d}.png")


def place_procedure(proc: Procedure, cfg: LoopConfig, device: torch.device) -> bool:
    """Move nets (and any optimiser state) to ``device``, NHWC on CUDA when asked, train mode;
    enable cuDNN autotuning on CUDA. Returns whether batches should be channels_last too."""
    cuda = device.type == "cuda"
    channels_last = cfg.channels_last and cuda
    if cuda and cfg.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    for net in proc.nets.values():
        net.to(device)
        if channels_last:
            net.to(memory_format=torch.channels_last)
        net.train()
    for o in proc.optimizers.values():
        for st in o.state.values():
            for k, v in list(st.items()):
                if isinstance(v, torch.Tensor) and k != "step":
                    st[k] = v.to(device)
    return channels_last


def train_step(proc: Procedure, batch: Any, ctx: StepContext) -> Mapping[str, torch.Tensor | float]:
    """One iteration as the loop runs it: the procedure's step, the scaler update, the schedulers."""
    raw = proc.step(batch, ctx)
    ctx.scaler.update()
    for s in proc.schedulers.values():
        s.step()
    return raw


def wrap_nets(proc: Procedure, cfg: LoopConfig, d: Dist, device: torch.device) -> None:
    """Give the procedure DDP (under torchrun) and/or ``torch.compile`` wrappers to call."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    proc.run_nets = {}
    proc.frozen_nets = {}
    for name, net in proc.nets.items():
        wrapped: nn.Module = proc.train_module(name)
        proc.frozen_nets[name] = torch.compile(wrapped) if cfg.compile else wrapped  # type: ignore[assignment]
        if d.world > 1 and any(p.requires_grad for p in net.parameters()):
            ids = [device.index] if device.type == "cuda" else None
            wrapped = DDP(wrapped, device_ids=ids, broadcast_buffers=True)
        if cfg.compile:
            wrapped = torch.compile(wrapped)  # type: ignore[assignment]
        proc.run_nets[name] = wrapped


def train_loop(
    proc: Procedure,
    dataset: Dataset,
    cfg: LoopConfig,
    run: Run | None,
    resume: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    lr: float | None = None,
) -> TrainResult:
    """Train ``proc`` on ``dataset`` for ``cfg.iters`` iterations; see the module docstring.

    ``run`` is the run folder (rank 0; other ranks may pass None). Seed the RNGs and build
    ``proc`` *before* calling (:func:`seed_everything`), so net initialisation is reproducible.
    ``resume`` continues from the run's latest checkpoint, or from iteration 0 when the run
    was stopped before its first checkpoint (the same seed gives the same start). ``lr``
    replaces the learning rate from the start point on (:func:`set_learning_rate`), e.g. to
    continue a diverged run from its last good checkpoint with a lower one.
    """
    d = setup_distributed(cfg.device)
    device = resolve_device(cfg.device, d)
    cuda = device.type == "cuda"
    if cfg.amp == "fp16" and not cuda:
        raise ConfigError("--amp fp16 needs CUDA", hint="use --amp bf16 on CPU, or --amp off")
    channels_last = place_procedure(proc, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    writer = run if d.main else None
    start = 0
    if resume:
        if run is None:
            raise CopymarkError("resume needs the run folder")
        has_checkpoint = ck.latest_checkpoint(run.path) is not None
        start = _load(run, proc, scaler, device) if has_checkpoint else 0
        if writer is not None:
            _truncate_losses(writer.path / LOSSES_FILE, start)
            if has_checkpoint:
                writer.log("resuming %s at iteration %d", proc.kind, start)
            else:
                writer.log("no checkpoint yet: training %s again from iteration 0 (same seed, same start)", proc.kind)
    if lr is not None:
        set_learning_rate(proc, lr)
    if not resume and writer is not None:
        writer.log(
            "training %s for %d iterations on %s (amp %s, world %d)", proc.kind, cfg.iters, device, cfg.amp, d.world
        )
    wrap_nets(proc, cfg, d, device)
    sampler = EpochSampler(len(dataset), cfg.batch_size, cfg.seed, d.rank, d.world)  # type: ignore[arg-type]
    ctx = StepContext(device, cfg.amp, scaler, d.world, d.rank)
    sample_batch = None
    if writer is not None:
        from copymark.data.loading import collate

        k = min(cfg.sample_count, len(dataset))  # type: ignore[arg-type]
        with torch.random.fork_rng(devices=[]):
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(0)  # type: ignore[attr-defined]
            sample_batch = to_device((collate_fn or collate)([dataset[i] for i in range(k)]), device, channels_last)
    data = batches_from(dataset, sampler, start, cfg.num_workers, pin_memory=cuda, collate_fn=collate_fn)
    history: list[dict[str, float]] = []
    last: dict[str, float] = {}
    pending: list[tuple[int, list[str], torch.Tensor]] = []
    checkpoint: Path | None = ck.latest_checkpoint(run.path) if (run is not None and resume) else None
    t0 = time.perf_counter()
    done_images = 0
    from copymark.progress import Progress

    # a bar on a terminal, plain periodic lines when output is redirected (the run's log.txt has every logged loss)
    progress = Progress(f"train {proc.kind}", cfg.iters, enabled=cfg.progress and d.main, start=start)
    try:
        with progress:
            for it in range(start + 1, cfg.iters + 1):
                ctx.iteration = it
                batch = to_device(next(data), device, channels_last)
                raw = train_step(proc, batch, ctx)
                pending.append((it, list(raw), _stack_losses(raw, device)))
                done_images += cfg.batch_size * d.world
                log_now = it % cfg.log_every == 0 or it == cfg.iters
                sample_now = bool(cfg.sample_every and it % cfg.sample_every == 0) or it == cfg.iters
                save_now = bool(cfg.save_every and it % cfg.save_every == 0) or it == cfg.iters
                if log_now or sample_now or save_now or len(pending) >= cfg.check_every:
                    # one device->host copy (and one all-reduce) for the whole window
                    rows = _flush_losses(pending, d)
                    pending = []
                    for it_i, vals in rows:
                        bad = {k: v for k, v in vals.items() if not math.isfinite(v) or abs(v) > cfg.max_loss}
                        if bad:
                            _diverged(writer, proc, it_i, bad, cfg, checkpoint, detected=it)
                    last = rows[-1][1]
                if log_now:
                    history.append({"iteration": it, **last})
                    if writer is not None:
                        lr = {f"lr_{k}": o.param_groups[0]["lr"] for k, o in proc.optimizers.items()}
                        _append_losses(writer.path / LOSSES_FILE, {"iteration": it, **last, **lr})
                        writer.log("iter %d %s", it, " ".join(f"{k}={v:.4g}" for k, v in last.items()))
                    progress.note = " ".join(f"{k} {v:.3g}" for k, v in list(last.items())[:4])
                if writer is not None and sample_batch is not None and sample_now:
                    _write_samples(writer, proc, sample_batch, it)
                if save_now:
                    if writer is not None:
                        checkpoint = _save(writer, proc, it, scaler, cfg)
                        writer.log("checkpoint %s", checkpoint.name)
                    if d.world > 1:
                        dist.barrier()
                progress.advance()
    finally:
        data.close()  # type: ignore[attr-defined]
    seconds = time.perf_counter() - t0
    result = TrainResult(
        iterations=cfg.iters,
        last_losses=last,
        seconds=seconds,
        images_per_second=done_images / seconds if seconds > 0 else 0.0,
        checkpoint=checkpoint,
        resumed_from=start,
        history=history,
    )
    if writer is not None and start >= cfg.iters:
        writer.log("nothing to do: the run already finished its %d iterations", cfg.iters)
    elif writer is not None:
        writer.update_metrics(
            {
                "iterations": cfg.iters,
                "final_losses": last,
                "train_seconds": seconds,
                "images_per_second": result.images_per_second,
            }
        )
        writer.log("done: %d iterations, %.1f images/s", cfg.iters, result.images_per_second)
    return result


def _stack_losses(raw: Mapping[str, torch.Tensor | float], device: torch.device) -> torch.Tensor:
    """The step's losses as one float64 vector on ``device`` (no host sync)."""
    if not raw:
        return torch.zeros(0, dtype=torch.float64, device=device)
    return torch.stack(
        [
            v.detach().reshape(()).to(device=device, dtype=torch.float64)
            if isinstance(v, torch.Tensor)
            else torch.tensor(float(v), dtype=torch.float64, device=device)
            for v in raw.values()
        ]
    )


def _flush_losses(pending: list[tuple[int, list[str], torch.Tensor]], d: Dist) -> list[tuple[int, dict[str, float]]]:
    """Losses of the pending iterations as floats (one host copy), averaged over ranks under DDP."""
    flat = torch.cat([t for _, _, t in pending])
    if d.world > 1:
        dist.all_reduce(flat)
        flat = flat / d.world
    values = flat.cpu().tolist()
    out, i = [], 0
    for it, keys, t in pending:
        out.append((it, dict(zip(keys, values[i : i + t.numel()], strict=True))))
        i += t.numel()
    return out


def _diverged(
    writer: Run | None,
    proc: Procedure,
    it: int,
    bad: dict[str, float],
    cfg: LoopConfig,
    checkpoint: Path | None,
    detected: int,
) -> None:
    what = ", ".join(f"{k}={v}" for k, v in bad.items())
    kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint had been written yet"
    when = f" (noticed at iteration {detected})" if detected != it else ""
    msg = f"training {proc.kind} diverged at iteration {it}{when}: {what} (limit |loss| <= {cfg.max_loss:g}); stopped, {kept}"
    if writer is not None:
        writer.log("%s", msg)
        writer.update_metrics(
            {"diverged": {"iteration": it, "losses": bad, "checkpoint": str(checkpoint) if checkpoint else None}}
        )
    raise TrainingDiverged(
        msg,
        hint="resume from it with --resume and a lower --lr (or --amp off)"
        if checkpoint
        else "lower --lr, or check the data",
    )


def _append_losses(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _truncate_losses(path: Path, upto: int) -> None:
    """Drop logged rows after the resumed iteration (they belong to the lost future)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("iteration", 0) <= upto]
    from copymark.files import atomic_write_bytes

    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())
