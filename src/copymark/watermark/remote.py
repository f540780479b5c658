"""A suspect reached only through its API: the served classifier of ``copymark verify --model-url``.

Triggers go through the shared client (:class:`copymark.client.http.ApiClient`: budgets, 429
pacing, retries, typed errors) and :func:`copymark.client.queries.query_all` into a query store
in the verification's run folder, keyed by the suspect's id (``/v1/info``) and each trigger's
SHA-256. A rerun of an interrupted verification reads the answers already received from the
store and never sends a trigger twice (an answer the server kept but the store lost is a free
Idempotency-Key replay). A trigger the server refuses (4xx) counts as not answered with its label.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from copymark.client.http import ApiClient
from copymark.client.queries import query_all, stored_label
from copymark.client.store import QueryStore
from copymark.errors import ConfigError
from copymark.watermark.kit import OwnershipKit, check_kit_fits


class ApiSuspect:
    """A served classifier; call :meth:`attach_store` before :meth:`answers`, :meth:`close` after."""

    def __init__(self, runner: asyncio.Runner, client: ApiClient, info: dict[str, Any], kit: OwnershipKit, url: str):
        self.runner, self.client, self.info, self.kit, self.url = runner, client, info, kit, url
        self.victim_id = str(info.get("victim_id") or "")
        self.pngs = kit.trigger_pngs()
        self.shas = [hashlib.sha256(p).hexdigest() for p in self.pngs]
        self.store: QueryStore | None = None
        self.paid = 0

    @classmethod
    def connect(cls, url: str, api_key: str, kit: OwnershipKit, concurrency: int = 4) -> ApiSuspect:
        """Open a client, read ``/v1/info`` and refuse a suspect that cannot be this kit's model."""
        runner = asyncio.Runner()
        client = ApiClient(url, api_key, concurrency=concurrency)
        try:
            info = runner.run(client.info())
            if info.get("task") != "classify":
                raise ConfigError(
                    f"{url} serves a {info.get('task')!r} model, not a classifier",
                    hint="verification sends triggers to POST /v1/classify of a served classifier",
                )
            size = info.get("input_size") or {}
            check_kit_fits(kit, num_classes=int(info.get("num_classes") or 0), input_size=int(size.get("height") or 0))
            if size.get("width") != size.get("height"):
                raise ConfigError(
                    f"{url} takes {size.get('height')}x{size.get('width')} images; the kit's triggers are square"
                )
        except BaseException:
            runner.run(client.aclose())
            runner.close()
            raise
        return cls(runner, client, info, kit, url)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "api",
            "url": self.url,
            "victim_id": self.victim_id,
            "num_classes": self.info.get("num_classes"),
        }

    def attach_store(self, folder: str | Path) -> None:
        self.store = QueryStore(folder)

    @property
    def queries(self) -> int:
        """Answers received from this suspect for the kit's triggers (this run and any earlier one)."""
        if self.store is None:
            return 0
        return len(self.store.answered(self.victim_id) & set(self.shas))

    def answers(self, indices: list[int]) -> list[int | None]:
        """The suspect's labels for these triggers (from the store when already answered)."""
        assert self.store is not None, "attach_store first"
        items = [(self.pngs[i], f"trigger {self.kit.manifest.triggers[i].trigger_id}") for i in indices]
        report = self.runner.run(query_all(self.client, self.store, self.victim_id, items, answers="label"))
        self.paid += report.answered
        out: list[int | None] = []
        for i in indices:
            ans = stored_label(self.store, self.shas[i], self.victim_id)
            out.append(ans.label if ans is not None else None)
        if report.stop_error is not None:
            # what arrived before the stop is in the store; the caller records it and says how to resume
            raise report.stop_error
        return out

    def close(self) -> None:
        try:
            self.runner.run(self.client.aclose())
        finally:
            self.runner.close()
            if self.store is not None:
                self.store.close()
