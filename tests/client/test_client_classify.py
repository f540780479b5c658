"""The client of a served classifier: ``ApiClient.classify`` parses label answers, retries and
paces like ``translate``, and ``query_all(answers="label")`` keeps each answer's JSON in the query
store keyed like image answers (victim id + input hash), so a rerun sends nothing twice.

Against the real app (httpx's ASGI transport, or uvicorn on 127.0.0.1). 429 bounds are counts
derived from the key's limits, as in test_client_pacing, never timings.
"""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest
import torch

from copymark.client.http import ApiClient, LabelAnswer, QueryError, RetryPolicy, ScoredLabel, parse_label_answer
from copymark.client.queries import query_all, stored_label
from copymark.client.store import QueryStore, sha256_hex
from copymark.images import encode_png
from copymark.serving.app import create_app
from copymark.serving.models import function_classifier, function_model
from copymark.serving.server import BackgroundServer
from copymark.serving.settings import ServeSettings

KEY = "classify-test-key"
NAMES = ("red", "green", "blue")


def _png(seed: int, side: int = 16) -> bytes:
    return encode_png(torch.rand(3, side, side, generator=torch.Generator().manual_seed(seed)))


def _items(n: int, offset: int = 0) -> list[tuple[bytes, str]]:
    return [(_png(offset + i), f"trigger{offset + i}") for i in range(n)]


def _colour(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3)) * 8


def _app(tmp_path, budget=10_000, rate=1000.0, burst=1000, fn=_colour, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "keys.json").write_text(json.dumps({KEY: {"budget": budget, "rate_per_s": rate, "burst": burst}}))
    model = function_classifier(fn, 3, (16, 16), name="colour", class_names=NAMES)
    return create_app(model, ServeSettings(keys_file=tmp_path / "keys.json", **kw))


async def _with_client(app, body, **client_kw):
    async with app.router.lifespan_context(app):
        async with ApiClient("http://victim.test", KEY, transport=httpx.ASGITransport(app=app), **client_kw) as c:
            return c, await body(c)


def _expected(png: bytes) -> tuple[int, list[float]]:
    from copymark.images import decode_image_bytes

    z = _colour(decode_image_bytes(png)[None])[0].double()
    return int(z.argmax()), torch.softmax(z, 0).tolist()


def test_classify_parses_the_answer_and_label_only_servers(tmp_path):
    png = _png(1)

    async def body(c):
        return await c.classify(png), await c.classify(png, top_k=2, idempotency_key="a"), await c.usage()

    _, (full, two, usage) = asyncio.run(_with_client(_app(tmp_path / "a"), body))
    label, probs = _expected(png)
    assert isinstance(full, LabelAnswer) and full.label == label and full.class_name == NAMES[label]
    assert [t.label for t in full.top_k] == sorted(range(3), key=lambda i: -probs[i])
    assert all(t.probability == probs[t.label] and t.class_name == NAMES[t.label] for t in full.top_k)
    assert len(two.top_k) == 2 and two.top_k == full.top_k[:2] and not two.replay
    assert full.request_id and full.budget_remaining == 10_000 - 1 and full.attempts == 1
    assert parse_label_answer(full.body) == LabelAnswer(full.label, full.class_name, full.top_k, full.body)
    assert usage["spent"] == 2 and usage["remaining"] == 10_000 - 2 and usage["burst"] == 1000

    async def label_only(c):
        return await c.classify(png, top_k=3)

    _, ans = asyncio.run(_with_client(_app(tmp_path / "b", classify_answer="label"), label_only))
    assert ans.label == label and ans.class_name == NAMES[label] and ans.top_k is None


@pytest.mark.parametrize(
    "body, why",
    [
        (b"<html>", "not JSON"),
        (b"[1, 2]", "integer 'label'"),
        (b'{"label": true, "class_name": null}', "integer 'label'"),
        (b'{"label": -1, "class_name": null}', "integer 'label'"),
        (b'{"label": 1, "class_name": 3}', "class_name"),
        (b'{"label": 1, "class_name": null, "top_k": []}', "non-empty list"),
        (
            b'{"label": 1, "class_name": null, "top_k": [{"label": 1, "class_name": null, "probability": 1.5}]}',
            "[0, 1]",
        ),
    ],
)
def test_a_body_that_is_no_label_answer_is_a_query_error(body, why):
    with pytest.raises(QueryError, match="not a label answer") as ei:
        parse_label_answer(body)
    assert why in ei.value.message
    ok = parse_label_answer(
        b'{"label": 2, "class_name": null, "top_k": [{"label": 2, "class_name": null, "probability": 1}]}'
    )
    assert ok.top_k == (ScoredLabel(2, None, 1.0),)


def test_classify_retries_transient_failures_and_a_wrong_size_fails_alone(tmp_path):
    calls = {"n": 0}
    lock = threading.Lock()

    def flaky(x):
        with lock:
            calls["n"] += 1
            if calls["n"] <= 2:
                raise RuntimeError("the GPU is busy")
        return _colour(x)

    pol = RetryPolicy(max_retries=3, backoff_base_s=0.01, backoff_max_s=0.02)

    async def body(c):
        ans = await c.classify(_png(5))
        with pytest.raises(QueryError) as ei:
            await c.classify(_png(6, side=20))
        return ans, ei.value

    c, (ans, err) = asyncio.run(_with_client(_app(tmp_path, fn=flaky), body, retry=pol))
    assert ans.attempts == 3 and ans.label == _expected(_png(5))[0] and c.stats["status_500"] == 2
    assert err.status == 422 and "wrong_input_size" in err.message and "16x16" in err.message
    assert c.stats["sent"] == 4  # the refused input was not retried


def test_classify_is_paced_by_the_servers_429_hints_over_real_http(tmp_path):
    app = _app(tmp_path, rate=20.0, burst=1, request_log=tmp_path / "log.jsonl")
    store = QueryStore(tmp_path / "s")

    async def go(url):
        async with ApiClient(url, KEY, concurrency=4, seed=1, retry=RetryPolicy(max_retries=0)) as c:
            return c, await query_all(c, store, "suspect", _items(12), answers="label")

    with BackgroundServer(app) as srv:
        c, rep = asyncio.run(go(srv.url))
    assert rep.answered == 12 and rep.stop_reason is None
    assert c.stats["status_429"] >= 1 and c.stats.get("retries", 0) == 0  # a 429 is a wait, not a failure
    assert c.stats["status_429"] <= 2 * 4 + (12 - 1) / 10  # as in test_client_pacing
    statuses = [json.loads(line)["status"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert statuses.count(200) == 12 and statuses.count(429) == c.stats["status_429"]


def test_label_answers_are_stored_like_image_answers_and_a_rerun_sends_nothing_twice(tmp_path):
    """The stored blob is the server's JSON as received, under (victim id, input hash); image
    answers of another victim in the same store are untouched; inputs sent before an
    interruption are free replays on the rerun, even with the budget spent."""
    (tmp_path / "img").mkdir()
    store = QueryStore(tmp_path / "store")
    triggers = _items(4)
    image_app = create_app(
        function_model(lambda x: 1 - x, "invert"), ServeSettings(keys_file=_keys(tmp_path / "img", 100))
    )

    async def images(c):
        return await query_all(c, store, "translator", triggers)

    _, rep = asyncio.run(_with_client(image_app, images))
    assert rep.answered == 4
    pngs_before = {sha256_hex(p): store.answer_for(sha256_hex(p), "translator") for p, _ in triggers}

    app = _app(tmp_path / "cls", budget=4)
    lost = triggers[:2]

    async def interrupted_then_rerun():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with ApiClient("http://victim.test", KEY, transport=transport) as c:
                for png, src in lost:  # answered and charged, but never stored (the run was killed)
                    sha = store.add_input(png, "suspect", src)
                    store.mark_sent(sha, "suspect")
                    await c.classify(png, idempotency_key=f"suspect:{sha}")
                for png, _ in triggers[2:]:  # spend the rest of the budget elsewhere
                    await c.classify(png)
            async with ApiClient("http://victim.test", KEY, transport=transport, concurrency=1) as c:
                first = await query_all(c, store, "suspect", triggers, answers="label")
                sent_first = c.stats["sent"]
                second = await query_all(c, store, "suspect", triggers, answers="label")
                return first, sent_first, second, c.stats["sent"]

    first, sent_first, second, sent_total = asyncio.run(interrupted_then_rerun())
    assert first.replayed == 2 and first.answered == 0 and "budget is spent" in first.stop_reason
    assert sent_first == 2  # the two never-sent inputs were not sent: the budget is spent
    assert second.skipped == 2 and sent_total == sent_first  # answered triggers are never sent again
    for png, _ in lost:
        sha = sha256_hex(png)
        ans = stored_label(store, sha, "suspect")
        assert ans is not None and ans.label == _expected(png)[0]
        assert json.loads(store.answer_for(sha, "suspect")) == json.loads(ans.body)
    assert stored_label(store, sha256_hex(triggers[3][0]), "suspect") is None
    assert {s: store.answer_for(s, "translator") for s in pngs_before} == pngs_before  # image answers unchanged
    assert store.counts("suspect") == {"pending": 0, "answered": 2, "failed": 0}


def _keys(d, budget):
    p = d / "keys.json"
    p.write_text(json.dumps({KEY: {"budget": budget, "rate_per_s": 1000.0, "burst": 1000}}))
    return p
