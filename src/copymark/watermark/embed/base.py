"""What every embedding procedure shares: the host, its SGD update on main data plus triggers,
and the trigger batch of each iteration.

**Host update** (the ACSAC19 reference's "optimise DNNet" step, used unchanged by all three
methods): the trigger batch is appended to the main batch and the host takes one SGD step on
the cross-entropy of the concatenated batch (true labels for main images, verification labels
for triggers), with the :class:`~copymark.train.classifier.SGDRecipe` and its per-iteration
schedule.

**Trigger batches**: the triggers are taken in a fixed order, ``trigger_batch`` consecutive
ones per iteration, wrapping around (the reference cycles through its 25 batches of 20 the
same way). Which triggers iteration ``i`` uses is a function of ``i`` (and, under DDP, of the
rank: rank ``r`` of ``w`` takes the ``(i - 1) * w + r``-th batch), so a resumed run continues
with exactly the batches an uninterrupted one would.

**Cover negatives** (``cover_negatives`` in every method's config; off by default, as in the
reference): the bare covers of the iteration's triggers are appended too, with their own
classes. Without them a small host can key on the cover image itself and answer the bare cover
with the verification label (``cover_label_agreement`` in protect's metrics: 0.91-1.00 for the
end-to-end methods in benchmarks/results/protection_cifar10_cpu.json), so the evidence is a
memorised set of images rather than the hidden secret; with them the only difference between a
cover (its class) and its trigger (the verification label) is what the codec hid.

Trigger tensors live on the CPU and are copied to the training device on first use.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from copymark.train.classifier import SGDRecipe, accuracy, lr_schedule, sgd
from copymark.train.loop import Procedure, StepContext


def trigger_indices(iteration: int, n: int, batch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Positions of the triggers of ``iteration`` (1-based): ``batch`` consecutive ones, wrapping around."""
    start = ((iteration - 1) * world + rank) * batch
    return (torch.arange(batch) + start) % n


class EmbedProcedure(Procedure):
    """Base of the embedding procedures: net ``host`` (exported), its optimiser and schedule, triggers."""

    export = "host"

    def __init__(self, host_config: Any, optim: SGDRecipe, iters: int, labels: list[int], trigger_batch: int):
        from copymark.nets.build import build_net

        super().__init__()
        host = build_net(host_config)
        self.nets = {"host": host}
        self.net_configs = {"host": host_config}
        opt = sgd(host.parameters(), optim)
        self.optimizers = {"host": opt}
        self.schedulers = {"host": lr_schedule(opt, optim, iters)}
        self.trigger_batch = int(trigger_batch)
        self._cpu: dict[str, torch.Tensor] = {"labels": torch.as_tensor(labels, dtype=torch.long)}
        self._dev: dict[tuple[str, str], torch.Tensor] = {}

    @property
    def n_triggers(self) -> int:
        return len(self._cpu["labels"])

    def tensor(self, name: str, device: torch.device) -> torch.Tensor:
        key = (name, str(device))
        if key not in self._dev:
            self._dev[key] = self._cpu[name].to(device)
        return self._dev[key]

    def add_cover_negatives(self, covers: torch.Tensor, cover_labels: list[int]) -> None:
        """Append each iteration's bare covers with their own classes to the host's batch (see above)."""
        if len(covers) != self.n_triggers or len(cover_labels) != self.n_triggers:
            raise ValueError(f"{len(covers)} covers / {len(cover_labels)} labels for {self.n_triggers} triggers")
        self._cpu["negative_covers"] = covers.float()
        self._cpu["negative_labels"] = torch.as_tensor(cover_labels, dtype=torch.long)

    @property
    def uses_cover_negatives(self) -> bool:
        return "negative_covers" in self._cpu

    def trigger_batch_of(self, ctx: StepContext, *names: str) -> list[torch.Tensor]:
        """The tensors ``names`` (e.g. "covers", "secrets", "labels") at this iteration's trigger positions."""
        idx = trigger_indices(ctx.iteration, self.n_triggers, self.trigger_batch, ctx.rank, ctx.world_size)
        idx = idx.to(ctx.device)
        return [self.tensor(n, ctx.device).index_select(0, idx) for n in names]

    def host_update(
        self, x: torch.Tensor, y: torch.Tensor, triggers: torch.Tensor, labels: torch.Tensor, ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        """One SGD step of the host on the main batch with the trigger batch (and, with cover
        negatives, the same positions' bare covers with their own classes) appended."""
        n_t = len(triggers)
        if self.uses_cover_negatives:
            covers, cover_labels = self.trigger_batch_of(ctx, "negative_covers", "negative_labels")
            triggers, labels = torch.cat([triggers, covers.to(triggers.dtype)]), torch.cat([labels, cover_labels])
        inputs = torch.cat([x, triggers.to(x.dtype)])
        if inputs.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with ctx.autocast():
            logits = self.net("host")(inputs)
        loss = F.cross_entropy(logits.float(), torch.cat([y, labels]))
        ctx.update(loss, self.optimizers["host"])
        n = len(x)
        out = {
            "loss_host": loss.detach(),
            "acc_main": accuracy(logits[:n], y),
            "acc_trigger": accuracy(logits[n : n + n_t], labels[:n_t]),
        }
        if self.uses_cover_negatives:
            out["acc_cover"] = accuracy(logits[n + n_t :], labels[n_t:])
        return out


def step_decay(
    optimizer: torch.optim.Optimizer, at: tuple[float, ...], factor: float, iters: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate times ``factor`` at each fraction ``at`` of an ``iters``-long run (per iteration)."""
    steps = [int(round(a * iters)) for a in at]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: factor ** sum(it >= s for s in steps))


def frozen_while(nets: list[nn.Module]) -> Any:
    """Context manager: inside, ``nets`` have ``requires_grad=False`` and are in eval mode (restored after).

    Eval mode: a frozen net answers as it will at inference (BatchNorm with its running
    statistics), and a trigger-only batch does not move those statistics.
    """
    import contextlib

    @contextlib.contextmanager
    def cm() -> Any:
        params = [p for n in nets for p in n.parameters()]
        flags = [p.requires_grad for p in params]
        modes = [n.training for n in nets]
        for p in params:
            p.requires_grad_(False)
        for n in nets:
            n.eval()
        try:
            yield
        finally:
            for p, f in zip(params, flags):
                p.requires_grad_(f)
            for n, m in zip(nets, modes):
                n.train(m)

    return cm()


def reveal_parameters(codec: nn.Module) -> list[nn.Parameter]:
    """The parameters of a codec's revealing (decoder) part: En2D ``decoder``, GglNet ``reveal``."""
    for name in ("decoder", "reveal"):
        part = getattr(codec, name, None)
        if isinstance(part, nn.Module):
            return list(part.parameters())
    raise TypeError(f"{type(codec).__name__} has no decoder/reveal part")
