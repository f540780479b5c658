"""The client within its limits: one pace for all workers, rate-limit waits that are not failures,
no request the budget cannot pay for, and give-up errors whose hint matches the cause.

Against the real app: httpx's ASGI transport, or uvicorn on 127.0.0.1 (BackgroundServer).

The 429 bounds are counts derived from the key's limits, never timings. A client whose workers
each sleep until the next token and retry independently gets about ``concurrency - 1`` 429s per
answer once the burst is spent (every token is raced for). The shared pace learns the server's
interval from its hints: the first round of requests already on their way (``concurrency``),
a few while the interval is learned (another ``concurrency`` at most), then only the timing
noise of a busy machine: one per ten rate-limited answers is allowed. Rates are low (10-20/s)
so that any machine is faster than the key allows and the limit is really hit.
"""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
import torch

from copymark.client.http import (
    ApiClient,
    AuthError,
    BudgetExhausted,
    QueryError,
    RateLimited,
    RetryPolicy,
    ServerFailing,
    ServerUnavailable,
    Unreachable,
)
from copymark.client.queries import query_all
from copymark.client.store import QueryStore, sha256_hex
from copymark.images import encode_png
from copymark.serving.app import create_app
from copymark.serving.models import function_model
from copymark.serving.server import BackgroundServer
from copymark.serving.settings import ServeSettings

KEY = "pacing-test-key"


def _png(seed: int, side: int = 16) -> bytes:
    return encode_png(torch.rand(3, side, side, generator=torch.Generator().manual_seed(seed)))


def _items(n: int, offset: int = 0) -> list[tuple[bytes, str]]:
    return [(_png(offset + i), f"img{offset + i}") for i in range(n)]


def _app(tmp_path, budget=10_000, rate=1000.0, burst=1000, fn=None, **kw):
    (tmp_path / "keys.json").write_text(json.dumps({KEY: {"budget": budget, "rate_per_s": rate, "burst": burst}}))
    victim = function_model(fn or (lambda x: 1 - x), "invert")
    return create_app(victim, ServeSettings(keys_file=tmp_path / "keys.json", **kw))


async def _query(app, store, items, victim_id="v", **client_kw):
    async with app.router.lifespan_context(app):
        async with ApiClient("http://victim.test", KEY, transport=httpx.ASGITransport(app=app), **client_kw) as c:
            rep = await query_all(c, store, victim_id, items)
            return c, rep


def _bound_429(concurrency: int, answers: int, burst: int) -> float:
    """Two rounds of ``concurrency`` while learning, then at most one 429 per ten paced answers."""
    return 2 * concurrency + max(0, answers - burst) / 10


# ---------------------------------------------------------------------------------------------
# pacing


def test_rate_limit_waits_are_not_failed_attempts(tmp_path):
    """With no retries allowed at all, a rate-limited run still gets every answer: a 429 is a wait."""
    app = _app(tmp_path, rate=20.0, burst=1)
    store = QueryStore(tmp_path / "s")
    c, rep = asyncio.run(_query(app, store, _items(12), concurrency=4, retry=RetryPolicy(max_retries=0)))
    assert rep.answered == 12 and rep.stop_reason is None
    assert c.stats["status_429"] >= 1  # the limit was really hit
    assert c.stats.get("retries", 0) == 0  # and no 429 counted as a failed attempt
    assert c.stats["status_429"] <= _bound_429(4, 12, 1)


def test_ten_per_second_key_at_concurrency_16_finishes_over_real_http(tmp_path):
    """Issue 11's evaluator key (10 requests/s) at a concurrency far above what it allows."""
    (tmp_path / "keys.json").write_text(json.dumps({KEY: {"budget": 1000, "rate_per_s": 10, "burst": 10}}))
    log = tmp_path / "requests.jsonl"
    app = create_app(
        function_model(lambda x: 1 - x, "invert"), ServeSettings(keys_file=tmp_path / "keys.json", request_log=log)
    )
    store = QueryStore(tmp_path / "s")

    async def go(url):
        async with ApiClient(url, KEY, concurrency=16, seed=1) as c:
            return c, await query_all(c, store, "v", _items(40))

    with BackgroundServer(app) as srv:
        c, rep = asyncio.run(go(srv.url))
    assert rep.answered == 40 and rep.stop_reason is None and store.counts("v")["answered"] == 40
    statuses = [json.loads(line)["status"] for line in log.read_text().splitlines()]
    assert statuses.count(200) == 40
    assert 1 <= statuses.count(429) == c.stats["status_429"] <= _bound_429(16, 40, 10), c.stats
    assert c.stats.get("retries", 0) == 0  # no 429 counted as a failure
    assert c.gate.interval > 0  # the pace was learned from the server's hints
    assert all(slept >= asked for asked, slept in c.waits if asked is not None)  # never earlier than asked


def test_a_wait_longer_than_allowed_gives_up_at_once_with_a_rate_limit_hint(tmp_path):
    app = _app(tmp_path, rate=0.01, burst=1)  # one token per 100 s
    store = QueryStore(tmp_path / "s")
    c, rep = asyncio.run(_query(app, store, _items(2), concurrency=1, retry=RetryPolicy(max_rate_wait_s=5)))
    assert rep.answered == 1 and isinstance(rep.stop_error, RateLimited)
    err = rep.stop_error
    assert err.cause == "rate_limit" and err.status == 429
    assert "rate limit of 0.01/s" in err.message and "--max-rate-wait 5 s" in err.message
    assert "rate limit" in err.hint and "reachable" not in err.hint
    assert c.stats["status_429"] == 1  # gave up on the first answer that asked too long a wait
    assert store.counts("v") == {"pending": 1, "answered": 1, "failed": 0}  # kept for a rerun


# ---------------------------------------------------------------------------------------------
# budget


def test_no_request_is_sent_that_the_budget_cannot_pay_for(tmp_path):
    app = _app(tmp_path, budget=5)
    store = QueryStore(tmp_path / "s")
    c, rep = asyncio.run(_query(app, store, _items(10), concurrency=4))
    assert rep.answered == 5 and "budget is spent" in rep.stop_reason
    assert isinstance(rep.stop_error, BudgetExhausted) and not rep.stop_error.local
    assert c.stats["sent"] == 5 and c.stats["status_402"] == 0  # X-Budget-Remaining said 0: nothing more sent
    assert rep.server_budget_remaining == 0 and rep.not_sent == 5
    assert store.counts("v") == {"pending": 0, "answered": 5, "failed": 0}  # unsent inputs are not registered


def test_inputs_sent_before_are_still_sent_when_the_budget_is_spent(tmp_path):
    """A run killed after the server answered: the rerun's queries are free replays, even at budget 0."""
    app = _app(tmp_path, budget=3)
    store = QueryStore(tmp_path / "s")
    lost = _items(3)

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with ApiClient("http://victim.test", KEY, transport=transport, concurrency=1) as c:
                for png, src in lost:  # answered and charged, but the answers never reach the store
                    sha = store.add_input(png, "v", src)
                    store.mark_sent(sha, "v")
                    await c.translate(png, idempotency_key=f"v:{sha}")
            async with ApiClient("http://victim.test", KEY, transport=transport, concurrency=1) as c:
                return c, await query_all(c, store, "v", lost + _items(2, offset=10))

    c, rep = asyncio.run(go())
    assert rep.replayed == 3 and rep.answered == 0 and "budget is spent" in rep.stop_reason
    assert c.stats["sent"] == 3 and c.stats["status_402"] == 0  # the two new inputs were never sent
    assert store.counts("v")["answered"] == 3


def test_local_budget_counts_requests_in_flight(tmp_path):
    app = _app(tmp_path)
    store = QueryStore(tmp_path / "s")
    c, rep = asyncio.run(_query(app, store, _items(9), concurrency=4, local_budget=5))
    assert rep.answered == 5 and c.stats["sent"] == 5 and rep.stop_reason == "local budget spent"
    assert rep.stop_error.local


# ---------------------------------------------------------------------------------------------
# hints that match the cause


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused
    return port


def test_unreachable_server_is_the_only_cause_that_asks_if_it_runs(tmp_path):
    pol = RetryPolicy(max_retries=1, backoff_base_s=0.01, backoff_max_s=0.02)

    async def go():
        async with ApiClient(f"http://127.0.0.1:{_free_port()}", KEY, retry=pol) as c:
            await c.translate(_png(0))

    with pytest.raises(Unreachable) as ei:
        asyncio.run(go())
    assert ei.value.cause == "unreachable" and "gave up after 2 attempts" in ei.value.message
    assert "ConnectError" in ei.value.message and "is the server running and reachable" in ei.value.hint


def test_failing_server_timeouts_key_and_budget_each_get_their_own_hint(tmp_path):
    def dead(x):
        raise RuntimeError("always")

    pol = RetryPolicy(max_retries=1, backoff_base_s=0.01, backoff_max_s=0.02)
    store = QueryStore(tmp_path / "s")
    (tmp_path / "a").mkdir()
    _, rep = asyncio.run(_query(_app(tmp_path / "a", fn=dead), store, _items(1), retry=pol))
    err = rep.stop_error
    assert isinstance(err, ServerFailing) and isinstance(err, ServerUnavailable) and err.cause == "server_error"
    assert "HTTP 500" in err.message and "server's log" in err.hint and "running and reachable" not in err.hint

    def slow(x):
        import time

        time.sleep(0.5)
        return x

    (tmp_path / "b").mkdir()
    pol = RetryPolicy(max_retries=1, backoff_base_s=0.01, backoff_max_s=0.02, timeout_s=0.1)

    async def too_slow(url):  # httpx's ASGI transport has no timeouts: real HTTP here
        async with ApiClient(url, KEY, retry=pol) as c:
            return await query_all(c, store, "v", _items(1, offset=5))

    with BackgroundServer(_app(tmp_path / "b", fn=slow)) as srv:
        err = asyncio.run(too_slow(srv.url)).stop_error
    assert isinstance(err, Unreachable) and err.cause == "timeout"
    assert "ReadTimeout" in err.message and "--timeout 0.1 s" in err.hint and "running and reachable" not in err.hint

    (tmp_path / "c").mkdir()
    app = _app(tmp_path / "c")

    async def wrong_key():
        async with app.router.lifespan_context(app):
            async with ApiClient("http://victim.test", "not-the-key", transport=httpx.ASGITransport(app=app)) as c:
                return await query_all(c, store, "v", _items(1, offset=9))

    err = asyncio.run(wrong_key()).stop_error
    assert isinstance(err, AuthError) and "--api-key" in err.hint and "reachable" not in err.hint

    (tmp_path / "d").mkdir()
    _, rep = asyncio.run(_query(_app(tmp_path / "d", budget=0), store, _items(1, offset=20)))
    err = rep.stop_error
    assert isinstance(err, BudgetExhausted) and "larger budget" in err.hint and "reachable" not in err.hint


def test_a_refused_input_fails_alone_and_nothing_else_stops(tmp_path):
    app = _app(tmp_path, max_pixels=300)
    store = QueryStore(tmp_path / "s")
    items = [(_png(1), "ok"), (_png(2, side=40), "too big"), (_png(3), "ok2")]
    _, rep = asyncio.run(_query(app, store, items, concurrency=2))
    assert rep.answered == 2 and rep.failed == 1 and rep.stop_error is None
    assert store.status(sha256_hex(_png(2, side=40)), "v") == "failed"
    assert not isinstance(QueryError("x"), ServerUnavailable)
