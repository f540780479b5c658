"""Query store (real SQLite + files) and oracle client (against the real app via ASGI transport)."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3

import httpx
import numpy as np
import pytest
import torch

from copymark.client.http import (
    ApiClient,
    AuthError,
    BudgetExhausted,
    RetryPolicy,
    backoff_delay,
    retry_after_seconds,
)
from copymark.client.queries import query_all
from copymark.client.store import QueryStore, sha256_hex, store_pairs
from copymark.errors import DataError
from copymark.images import decode_image_bytes, encode_png, quantize
from copymark.serving.app import create_app
from copymark.serving.models import function_model
from copymark.serving.settings import ServeSettings

KEY = "oracle-test-key"


def _png(seed: int, h: int = 16, w: int = 16) -> bytes:
    return encode_png(torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed)))


def _invert(x: torch.Tensor) -> torch.Tensor:
    return 1.0 - x


# ---------------------------------------------------------------------------------------------
# store


def test_store_roundtrip_pairs_and_integrity(tmp_path):
    s = QueryStore(tmp_path / "store")
    shas = [s.add_input(_png(i), "v1", source=f"img{i}") for i in range(3)]
    assert s.add_input(_png(0), "v1") == shas[0]  # idempotent
    assert s.counts("v1") == {"pending": 3, "answered": 0, "failed": 0}
    for i, sha in enumerate(shas[:2]):
        s.record_answer(sha, "v1", _png(100 + i), request_id=f"r{i}")
    s.record_failure(shas[2], "v1", "HTTP 415")
    assert s.counts("v1") == {"pending": 0, "answered": 2, "failed": 1}
    pairs = s.pairs("v1")
    assert [p[0].read_bytes() for p in pairs] == [_png(0), _png(1)]
    assert [p[1].read_bytes() for p in pairs] == [_png(100), _png(101)]
    assert pairs[0][0].name == f"{shas[0]}.png" and pairs[0][0].parent.name == shas[0][:2]
    rep = s.integrity_check()
    assert rep.ok and rep.rows == 3 and rep.answered == 2 and rep.orphan_files == 0
    s.close()
    assert store_pairs(tmp_path / "store") == pairs
    with pytest.raises(DataError, match="not a query store"):
        store_pairs(tmp_path / "elsewhere")


def test_integrity_check_finds_missing_and_corrupt_files(tmp_path):
    s = QueryStore(tmp_path)
    a = s.add_input(_png(1), "v")
    b = s.add_input(_png(2), "v")
    s.record_answer(a, "v", _png(11))
    s.record_answer(b, "v", _png(12))
    assert s.integrity_check().ok
    s.answer_path(sha256_hex(_png(11))).unlink()
    p = s.input_path(b)
    p.write_bytes(p.read_bytes()[:-3] + b"xyz")
    rep = s.integrity_check()
    assert not rep.ok and len(rep.problems) == 2
    assert any("answer file missing" in m for m in rep.problems)
    assert any("does not hash" in m for m in rep.problems)


def test_crash_between_file_and_row_leaves_no_dangling_row(tmp_path, monkeypatch):
    """Kill the index write right after the answer file landed: the row stays pending, no row
    points at a missing file, and the leftover file is only an orphan."""
    s = QueryStore(tmp_path)
    sha = s.add_input(_png(1), "v")

    class Boom(Exception):
        pass

    real = s._db

    class CrashingDB:
        def execute(self, sql, *a):
            if sql.lstrip().startswith("UPDATE queries SET status='answered'"):
                raise Boom
            return real.execute(sql, *a)

    monkeypatch.setattr(s, "_db", CrashingDB())
    with pytest.raises(Boom):
        s.record_answer(sha, "v", _png(9))
    monkeypatch.setattr(s, "_db", real)
    assert s.status(sha, "v") == "pending"
    rep = s.integrity_check()
    assert rep.ok and rep.orphan_files == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_store_rejects_a_file_as_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        QueryStore(tmp_path / "f")


def test_store_rejects_non_store_files(tmp_path):
    (tmp_path / "index.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match="not a query store index"):
        QueryStore(tmp_path)


# ---------------------------------------------------------------------------------------------
# backoff and Retry-After parsing


def test_backoff_is_exponential_with_bounded_jitter():
    pol = RetryPolicy(backoff_base_s=0.1, backoff_max_s=1.0)
    rng = random.Random(0)
    for attempt in range(8):
        d = min(1.0, 0.1 * 2**attempt)
        samples = [backoff_delay(attempt, pol, rng) for _ in range(200)]
        assert min(samples) >= d / 2 and max(samples) <= d
        assert np.std(samples) > 0  # jitter really varies


def test_retry_after_parsing():
    def resp(**h):
        return httpx.Response(429, headers=h)

    assert retry_after_seconds(resp(**{"retry-after": "3"})) == 3.0
    assert retry_after_seconds(resp(**{"retry-after": "1", "x-retry-after-ms": "250"})) == 0.25
    assert retry_after_seconds(resp()) is None
    import time
    from email.utils import formatdate

    got = retry_after_seconds(resp(**{"retry-after": formatdate(time.time() + 30, usegmt=True)}))
    assert 25 < got <= 31


# ---------------------------------------------------------------------------------------------
# client against the real app (ASGI transport)


def _app(tmp_path, budget=100, rate=1000.0, burst=1000, fn=_invert, **kw):
    (tmp_path / "keys.json").write_text(json.dumps({KEY: {"budget": budget, "rate_per_s": rate, "burst": burst}}))
    return create_app(function_model(fn, "invert"), ServeSettings(keys_file=tmp_path / "keys.json", **kw))


async def _run_query_all(app, store, items, key=KEY, **client_kw):
    async with app.router.lifespan_context(app):
        client = ApiClient("http://victim.test", key, transport=httpx.ASGITransport(app=app), seed=0, **client_kw)
        async with client:
            info = await client.info()
            rep = await query_all(client, store, info["victim_id"], items)
            return client, info, rep


def test_query_all_stores_answers_and_never_requeries(tmp_path):
    app = _app(tmp_path)
    store = QueryStore(tmp_path / "store")
    items = [(_png(i), f"src{i}") for i in range(5)]
    client, info, rep = asyncio.run(_run_query_all(app, store, items, concurrency=3))
    assert rep.answered == 5 and rep.skipped == 0 and rep.stop_reason is None
    vid = info["victim_id"]
    for png, _ in items:
        sha = sha256_hex(png)
        assert store.status(sha, vid) == "answered"
    for inp, ans in store.pairs(vid):
        assert torch.equal(decode_image_bytes(ans.read_bytes()), quantize(1 - decode_image_bytes(inp.read_bytes())))
    # a second pass (plus one new image) sends only the new one
    app2 = _app(tmp_path)
    client2, _, rep2 = asyncio.run(_run_query_all(app2, store, items + [(_png(99), "new")]))
    assert rep2.skipped == 5 and rep2.answered == 1 and client2.stats["sent"] == 1
    assert store.integrity_check().ok


def test_client_honours_retry_after_on_429(tmp_path):
    app = _app(tmp_path, rate=5.0, burst=1)
    store = QueryStore(tmp_path / "store")
    items = [(_png(i), "") for i in range(4)]
    client, _, rep = asyncio.run(_run_query_all(app, store, items, concurrency=1))
    assert rep.answered == 4
    assert client.stats["status_429"] >= 1
    asked = [(a, s) for a, s in client.waits if a is not None]
    assert asked and all(slept >= a for a, slept in asked)  # never earlier than the server asked
    assert all(a <= 0.25 for a, _ in asked)  # the precise (ms) value was used, not the rounded-up 1 s


def test_wrong_key_stops_cleanly(tmp_path):
    app = _app(tmp_path)
    store = QueryStore(tmp_path / "store")

    async def go():
        async with app.router.lifespan_context(app):
            async with ApiClient("http://victim.test", "wrong-key-123", transport=httpx.ASGITransport(app=app)) as c:
                rep = await query_all(c, store, "v", [(_png(i), "") for i in range(3)])
                with pytest.raises(AuthError, match="refused the API key"):
                    await c.translate(_png(0))
                return c, rep

    c, rep = asyncio.run(go())
    assert "refused the API key" in rep.stop_reason and rep.answered == 0
    assert c.stats["status_403"] == 2 and c.stats.get("retries", 0) == 0  # no retry of a refused key
    assert store.counts("v")["answered"] == 0


def test_server_budget_exhaustion_stops_with_clear_message(tmp_path):
    app = _app(tmp_path, budget=3)
    store = QueryStore(tmp_path / "store")
    items = [(_png(i), "") for i in range(6)]
    client, info, rep = asyncio.run(_run_query_all(app, store, items, concurrency=1))
    assert rep.answered == 3 and "budget is spent" in rep.stop_reason
    assert rep.server_budget_remaining == 0
    assert store.counts(info["victim_id"])["answered"] == 3
    assert store.integrity_check().ok


def test_local_budget_is_respected(tmp_path):
    app = _app(tmp_path)
    store = QueryStore(tmp_path / "store")
    items = [(_png(i), "") for i in range(6)]
    client, _, rep = asyncio.run(_run_query_all(app, store, items, concurrency=2, local_budget=4))
    assert rep.answered == 4 and client.stats["sent"] == 4 and rep.stop_reason == "local budget spent"

    async def direct():
        c = ApiClient("http://x", KEY, local_budget=0)
        try:
            with pytest.raises(BudgetExhausted, match="local query budget"):
                await c.translate(_png(0))
        finally:
            await c.aclose()

    asyncio.run(direct())


def test_bad_input_fails_only_that_input(tmp_path):
    app = _app(tmp_path, max_pixels=300)
    store = QueryStore(tmp_path / "store")
    items = [(_png(1), "ok"), (_png(2, 40, 40), "too big"), (_png(3), "ok2")]
    client, info, rep = asyncio.run(_run_query_all(app, store, items, concurrency=1))
    assert rep.answered == 2 and rep.failed == 1 and "413" in rep.failures[0]
    assert store.status(sha256_hex(_png(2, 40, 40)), info["victim_id"]) == "failed"


def test_retries_5xx_then_gives_up_cleanly(tmp_path):
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("transient")
        return 1 - x

    app = _app(tmp_path, fn=flaky)
    store = QueryStore(tmp_path / "store")
    pol = RetryPolicy(max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05)
    client, _, rep = asyncio.run(_run_query_all(app, store, [(_png(1), "")], retry=pol))
    assert rep.answered == 1 and client.stats["status_500"] == 2 and client.stats["retries"] == 2

    def dead(x):
        raise RuntimeError("always")

    (tmp_path / "b").mkdir()  # a fresh server: the first one would replay its cached answer
    app2 = _app(tmp_path / "b", fn=dead)
    store2 = QueryStore(tmp_path / "store2")
    pol = RetryPolicy(max_retries=2, backoff_base_s=0.01, backoff_max_s=0.02)
    _, _, rep2 = asyncio.run(_run_query_all(app2, store2, [(_png(1), "")], retry=pol))
    assert rep2.answered == 0 and "gave up after 3 attempts" in rep2.stop_reason
    assert store2.counts()["pending"] == 1  # kept for a rerun


def test_store_index_readable_while_client_writes(tmp_path):
    """WAL lets another process (e.g. a monitoring test) read the index during a campaign."""
    s = QueryStore(tmp_path)
    s.add_input(_png(1), "v")
    con = sqlite3.connect(f"file:{tmp_path / 'index.sqlite'}?mode=ro", uri=True)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT COUNT(*) FROM queries").fetchone()[0] == 1
    con.close()


def test_answer_for_returns_verified_bytes_and_names_a_damaged_file(tmp_path):
    store = QueryStore(tmp_path / "s")
    sha = store.add_input(_png(1), "v1")
    assert store.answer_for(sha, "v1") is None  # pending: no answer yet
    ans = _png(2)
    ans_sha = store.record_answer(sha, "v1", ans)
    assert store.answer_for(sha, "v1") == ans
    assert store.answer_for(sha, "another-victim") is None  # keyed by the victim too
    p = store.answer_path(ans_sha)
    p.write_bytes(bytes([ans[0] ^ 0xFF]) + ans[1:])  # same size, one byte flipped
    with pytest.raises(DataError, match="does not match its hash"):
        store.answer_for(sha, "v1")
    p.unlink()
    with pytest.raises(DataError, match="answer file missing"):
        store.answer_for(sha, "v1")


def test_training_folder_first_n_in_campaign_order_with_a_source_record(tmp_path):
    from copymark.client.pairs import training_folder

    store = QueryStore(tmp_path / "s")
    shas = []
    for i in range(5):
        sha = store.add_input(_png(10 + i), "v1")
        store.record_answer(sha, "v1", _png(100 + i))
        shas.append(sha)
    store.set_campaign("v1", {"scale": 1, "task": "style", "budget": 5})
    store.close()
    sd = training_folder(tmp_path / "s", tmp_path / "pairs", first=3)
    assert sd.n_pairs == 3
    assert sorted(p.stem for p in (tmp_path / "pairs" / "A").iterdir()) == sorted(shas[:3])  # the first 3 registered
    src = json.loads((tmp_path / "pairs" / "source.json").read_text())
    assert (src["n_pairs"], src["store_answers"], src["first"], src["victim_id"]) == (3, 5, 3, "v1")
    sd = training_folder(tmp_path / "s", tmp_path / "pairs")  # all of them: the layout follows
    assert sd.n_pairs == 5 and len(list((tmp_path / "pairs" / "B").iterdir())) == 5
    with pytest.raises(DataError, match="holds 5 answers of victim v1, fewer than --first 6"):
        training_folder(tmp_path / "s", tmp_path / "pairs2", first=6)


def test_campaign_records_are_kept_per_victim(tmp_path):
    store = QueryStore(tmp_path / "s")
    store.set_campaign("v1", {"budget": 100, "strategy": "random"})
    store.set_campaign("v2", {"budget": 7, "strategy": "diverse"})
    assert store.campaign("v1")["budget"] == 100 and store.campaign("v2")["strategy"] == "diverse"
    assert store.campaign("v3") == {}
    store.set_meta("campaign", json.dumps({"budget": 3}))  # a store written before per-victim records
    assert store.campaign("v3") == {"budget": 3} and store.campaign("v1")["budget"] == 100


def test_label_answers_are_json_files_never_training_pairs(tmp_path):
    store = QueryStore(tmp_path / "s")
    img = store.add_input(_png(1), "translator")
    store.record_answer(img, "translator", _png(2))
    lab = store.add_input(_png(3), "classifier")
    body = b'{"label": 2, "class_name": "cat"}'
    sha = store.record_answer(lab, "classifier", body, kind="label")
    assert store.answer_path(sha, "label").suffix == ".json" and store.answer_path(sha, "label").read_bytes() == body
    assert store.answer_for(lab, "classifier") == body
    assert store.pairs("classifier") == [] and len(store.pairs("translator")) == 1
    rep = store.integrity_check()
    assert rep.ok and rep.answered == 2 and rep.orphan_files == 0
    store.answer_path(sha, "label").write_bytes(b'{"label": 3, "class_name": "dog"}')  # a changed label
    assert [d.what for d in store.integrity_check().damaged] == ["answer"]
    with pytest.raises(ValueError, match="answer kind"):
        store.record_answer(img, "translator", _png(2), kind="text")


def test_a_store_made_before_label_answers_opens_and_reads_as_images(tmp_path):
    import sqlite3

    root = tmp_path / "old"
    store = QueryStore(root)
    sha = store.add_input(_png(1), "v")
    store.record_answer(sha, "v", _png(2))
    store.close()
    with sqlite3.connect(root / "index.sqlite") as db:  # the schema of earlier versions: no answer_kind
        db.execute("ALTER TABLE queries DROP COLUMN answer_kind")
    again = QueryStore(root)
    assert again.answer_for(sha, "v") == _png(2) and len(again.pairs("v")) == 1 and again.integrity_check().ok
