"""Everything one running API owns: keys and their buckets, the usage ledger, metrics, the
runner and batcher of its model, in-flight Idempotency-Keys, inputs that broke the model, and
the audit log. Built by :func:`copymark.serving.app.create_app`, started and stopped by the
app's lifespan, reached by routes through :data:`copymark.serving.deps.StateDep`."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import OrderedDict
from typing import Any

from copymark.serving.batcher import MicroBatcher
from copymark.serving.execution import make_runner
from copymark.serving.http_errors import ApiError
from copymark.serving.limits import TokenBucket, UsageLedger, key_hash
from copymark.serving.metrics import Metrics
from copymark.serving.models import ServedModel
from copymark.serving.settings import KeyPolicy, ServeSettings, load_keys

POISON_MEMORY = 1024  # inputs that crashed or hung the model, refused without running it again


class AppState:
    def __init__(self, model: ServedModel, settings: ServeSettings):
        self.model = model
        self.settings = settings
        keys = load_keys(settings.keys_file)
        self.policies: dict[str, KeyPolicy] = {key_hash(k): v for k, v in keys.items()}
        self.buckets = {kh: TokenBucket(p.rate_per_s, p.burst) for kh, p in self.policies.items()}
        self.runner = make_runner(model, settings)
        self.ledger = UsageLedger(settings.usage_path(), settings.idempotency_cache)
        self.metrics = Metrics()
        self.batcher = MicroBatcher(
            self.runner, settings.max_batch, settings.max_wait_ms, settings.queue_size, on_batch=self.metrics.batch_size
        )
        self.inflight: dict[tuple[str, str], asyncio.Future[None]] = {}  # Idempotency-Keys being answered
        self._poison: OrderedDict[str, ApiError] = OrderedDict()
        self._log_lock = threading.Lock()
        self._log = open(settings.request_log, "a", buffering=1) if settings.request_log else None  # noqa: SIM115

    async def start(self) -> None:
        await asyncio.to_thread(self.runner.prepare)
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        await asyncio.to_thread(self.runner.close)
        self.ledger.close()
        if self._log is not None:
            self._log.close()

    def log(self, **entry: Any) -> None:
        if self._log is not None:
            with self._log_lock:
                self._log.write(json.dumps(entry, sort_keys=True) + "\n")
                self._log.flush()

    def poisoned(self, input_sha: str) -> ApiError | None:
        """The error an input got when it crashed or hung the model, if it did."""
        return self._poison.get(input_sha)

    def remember_poison(self, input_sha: str, err: ApiError) -> None:
        self._poison[input_sha] = err
        while len(self._poison) > POISON_MEMORY:
            self._poison.popitem(last=False)
