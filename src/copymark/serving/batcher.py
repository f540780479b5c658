"""Dynamic micro-batching of concurrent requests.

Requests put their decoded image on a bounded asyncio queue (full queue -> :class:`QueueFull`,
which the API answers with 503). One worker task takes the first waiting image, then gathers
more for up to ``max_wait_ms`` or until ``max_batch`` images are waiting, groups them by image
size (only equal sizes stack into one tensor), and hands each group to the runner
(:mod:`copymark.serving.execution`: an inference thread, or the supervised worker process), so
the event loop keeps accepting, decoding and answering requests meanwhile. The runner returns
one result per image (an answer or the exception for that request), so one failing image does
not have to fail its batch. When nothing else is on its way (no request between arrival and
the queue) the worker does not wait at all, so a lone client pays no batching delay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import torch


class Runner(Protocol):
    """What the batcher needs of a runner (see :mod:`copymark.serving.execution`)."""

    def run(self, batch: torch.Tensor) -> Awaitable[list[torch.Tensor | BaseException]]: ...


class QueueFull(Exception):
    """The request queue is full; the client should retry later (HTTP 503)."""


@dataclass
class _Item:
    x: torch.Tensor  # 3 x H x W
    future: asyncio.Future[torch.Tensor]


class MicroBatcher:
    """Collects concurrent single-image requests into model batches."""

    def __init__(
        self,
        runner: Runner,
        max_batch: int,
        max_wait_ms: float,
        queue_size: int,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.runner = runner
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        self.on_batch = on_batch
        self.arriving = 0  # requests accepted but not yet queued (reading/decoding)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._worker(), name="copymark-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(QueueFull("server shutting down"))

    def depth(self) -> int:
        return self.queue.qsize()

    def submit(self, x: torch.Tensor) -> asyncio.Future[torch.Tensor]:
        """Queue one ``3 x H x W`` image; the future resolves to its answer. Raises QueueFull."""
        fut: asyncio.Future[torch.Tensor] = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Item(x, fut))
        except asyncio.QueueFull:
            raise QueueFull(f"{self.queue.maxsize} requests already waiting") from None
        return fut

    async def _gather(self) -> list[_Item]:
        loop = asyncio.get_running_loop()
        items = [await self.queue.get()]
        deadline = loop.time() + self.max_wait
        while len(items) < self.max_batch:
            try:
                items.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0 or self.arriving == 0:
                break  # nobody else is on the way: do not make a lone request wait
            try:
                items.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
        return items

    async def _worker(self) -> None:
        while True:
            items = await self._gather()
            groups: dict[tuple[int, ...], list[_Item]] = {}
            for it in items:
                if not it.future.done():  # the client may have gone (timeout, disconnect)
                    groups.setdefault(tuple(it.x.shape), []).append(it)
            for group in groups.values():
                if self.on_batch is not None:
                    self.on_batch(len(group))
                try:
                    results = await self.runner.run(torch.stack([it.x for it in group]))
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # noqa: BLE001 - a runner bug: every request of the batch gets it
                    results = [err] * len(group)
                for it, result in zip(group, results):
                    if it.future.done():
                        continue
                    if isinstance(result, BaseException):
                        it.future.set_exception(result)
                    else:
                        it.future.set_result(result)
