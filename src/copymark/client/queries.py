"""Resumable querying: many inputs through an :class:`~copymark.client.http.ApiClient` into a query store.

:func:`query_all` drives a list of query images through the client into a
:class:`~copymark.client.store.QueryStore`: inputs already answered for this victim are
skipped (never queried twice), each input is registered ``pending`` before its request goes
out and its answer is recorded the moment it arrives. Every request carries
``Idempotency-Key: <victim id>:<input sha256>``, so if a run is killed after the server
answered but before the answer was stored, the rerun's request is a free replay of the same
answer instead of a second paid query (on a server that keeps replies, as copymark's does).
Such inputs (sent before, never answered: ``attempts > 0`` in the store) are sent even when the
known budget is spent (``may_replay``); inputs never sent are not.

Pacing, budget admission and retries are the client's (:class:`~copymark.client.http.ApiClient`):
the workers here only take inputs off one queue, so any ``concurrency`` shares one pace.

Two kinds of victims: image models (``answers="image"``, :meth:`ApiClient.translate`; the
answer stored is the PNG) and classifiers (``answers="label"``, :meth:`ApiClient.classify`;
the answer stored is the server's JSON exactly as received, a small blob keyed like an image
answer: victim id + input hash, so a resumed verification never re-sends an answered
trigger). :func:`stored_label` reads one back as a :class:`~copymark.client.http.LabelAnswer`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from copymark.client.http import (
    ApiClient,
    AuthError,
    BudgetExhausted,
    LabelAnswer,
    QueryError,
    ServerUnavailable,
    parse_label_answer,
)
from copymark.client.store import QueryStore, sha256_hex


@dataclass
class QueryReport:
    """What :func:`query_all` did."""

    requested: int = 0  # inputs handed in
    skipped: int = 0  # already answered in the store: not sent
    answered: int = 0  # new paid answers stored
    replayed: int = 0  # answers recovered through Idempotency-Key replays (not charged)
    failed: int = 0  # inputs refused for good (413/415/422 ...)
    not_sent: int = 0  # left pending because the campaign stopped
    stop_reason: str | None = None
    stop_error: QueryError | None = None  # the error that stopped the run (its hint says what to do)
    server_budget_remaining: int | None = None
    failures: list[str] = field(default_factory=list)


async def query_all(
    client: ApiClient,
    store: QueryStore,
    victim_id: str,
    items: list[tuple[bytes, str]],
    on_progress: Callable[[str], None] | None = None,
    answers: Literal["image", "label"] = "image",
) -> QueryReport:
    """Query every ``(png, source)`` not yet answered for ``victim_id``; store each answer at once.

    ``answers``: ``"image"`` queries ``/v1/translate`` (PNG answers), ``"label"`` queries
    ``/v1/classify`` (JSON label answers, the server's default top_k). Stops early (rows stay
    ``pending``, a rerun resumes them) on budget exhaustion, a refused key, or an unreachable
    server; ``report.stop_reason`` says why.
    """
    if answers not in ("image", "label"):
        raise ValueError(f"answers must be 'image' or 'label', got {answers!r}")
    report = QueryReport(requested=len(items))
    done = store.answered(victim_id)
    todo: list[tuple[bytes, str, str]] = []
    seen: set[str] = set()
    for png, source in items:
        sha = sha256_hex(png)
        if sha in done or sha in seen:
            report.skipped += 1
            continue
        seen.add(sha)
        todo.append((png, source, sha))
    queue: asyncio.Queue[tuple[bytes, str, str]] = asyncio.Queue()
    for t in todo:
        queue.put_nowait(t)
    sent_before = store.sent_before(victim_id)  # may have been answered (and kept) by the server
    stop = asyncio.Event()

    def progress(kind: str) -> None:
        if on_progress is not None:
            on_progress(kind)

    def stop_with(err: QueryError) -> None:
        if report.stop_error is None:
            report.stop_error = err
            report.stop_reason = "local budget spent" if isinstance(err, BudgetExhausted) and err.local else err.message
        stop.set()

    async def worker() -> None:
        while not stop.is_set():
            try:
                png, source, sha = queue.get_nowait()
            except asyncio.QueueEmpty:
                return

            def register(png: bytes = png, source: str = source, sha: str = sha) -> None:
                store.add_input(png, victim_id, source)  # pending, file on disk, just before the request
                store.mark_sent(sha, victim_id)

            query = client.translate if answers == "image" else client.classify
            try:
                ans = await query(
                    png, idempotency_key=f"{victim_id}:{sha}", may_replay=sha in sent_before, on_send=register
                )
            except (AuthError, BudgetExhausted, ServerUnavailable) as err:
                stop_with(err)
                queue.put_nowait((png, source, sha))
                return
            except QueryError as err:
                store.record_failure(sha, victim_id, err.message, err.request_id)
                report.failed += 1
                report.failures.append(f"{source or sha[:12]}: {err.message}")
                progress("failed")
                continue
            store.record_answer(sha, victim_id, ans.body, ans.request_id, kind=answers)
            if ans.replay:
                report.replayed += 1
                progress("replayed")
            else:
                report.answered += 1
                progress("answered")

    n_workers = max(1, min(client.concurrency, len(todo)))
    await asyncio.gather(*(worker() for _ in range(n_workers)))
    report.not_sent = queue.qsize()
    report.server_budget_remaining = client.server_budget_remaining
    return report


def stored_label(store: QueryStore, input_sha: str, victim_id: str) -> LabelAnswer | None:
    """The label answer ``victim_id`` gave to the input with hash ``input_sha``, read back from
    the store (None when not answered); a damaged file is a DataError (the store checks its
    hash), a stored answer that is not a label answer a QueryError."""
    body = store.answer_for(input_sha, victim_id)
    return parse_label_answer(body) if body is not None else None
