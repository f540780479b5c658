"""The victim inference API through httpx's ASGI transport (real app, real SQLite, real PNGs)."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from servehelpers import (
    KEY,
    OTHER_KEY,
    CountingVictim,
    asgi_client,
    auth,
    png_header_only,
    rand_png,
    settings,
    to_uint8_array,
    write_keys,
)

from copymark.errors import ConfigError
from copymark.images import decode_image_bytes, quantize
from copymark.serving.metrics import parse_prometheus_text
from copymark.serving.models import load_model


def run(coro):
    return asyncio.run(coro)


def test_health_info_and_no_architecture(tmp_path):
    write_keys(tmp_path)
    victim = load_model("classical:bicubic_x4")

    async def go():
        async with asgi_client(victim, settings(tmp_path, max_pixels=5000)) as c:
            h = await c.get("/v1/health")
            i = await c.get("/v1/info")
            return h, i

    h, i = run(go())
    assert h.status_code == 200 and h.json()["status"] == "ok"
    info = i.json()
    assert info["task"] == "sr" and info["scale"] == 4 and info["limits"]["max_pixels"] == 5000
    text = json.dumps(info).lower()
    for secret in ("bicubic", "matlab", "stylization", "resnet", "unet"):
        assert secret not in text


def test_answer_is_deterministic_and_equals_in_process_victim(tmp_path):
    write_keys(tmp_path)
    victim = load_model("classical:stylize?sigma_s=20&sigma_r=0.3")
    png = rand_png(40, 56, seed=3)

    async def go():
        async with asgi_client(victim, settings(tmp_path)) as c:
            a = await c.post("/v1/translate", content=png, headers=auth())
            b = await c.post("/v1/translate", files={"image": ("x.png", png, "image/png")}, headers=auth())
            return a, b

    a, b = run(go())
    assert a.status_code == b.status_code == 200
    assert a.headers["content-type"] == "image/png" and a.headers["x-request-id"] != b.headers["x-request-id"]
    assert a.content == b.content  # same input (raw or multipart) -> byte-identical answer
    expected = quantize(victim(decode_image_bytes(png)[None]))[0]
    got = decode_image_bytes(a.content)
    assert got.shape == (3, 40, 56)
    assert torch.equal(got, expected)  # PNG round trip lossless: exactly the in-process victim's 8-bit output


def test_sr_victim_answer_shape(tmp_path):
    write_keys(tmp_path)
    victim = load_model("classical:bicubic_x4")

    async def go():
        async with asgi_client(victim, settings(tmp_path)) as c:
            return await c.post("/v1/translate", content=rand_png(12, 20), headers=auth())

    r = run(go())
    assert r.status_code == 200
    assert to_uint8_array(r.content).shape == (48, 80, 3)


def test_missing_and_wrong_keys(tmp_path):
    write_keys(tmp_path)
    v = CountingVictim().victim()

    async def go():
        async with asgi_client(v, settings(tmp_path)) as c:
            return [
                await c.post("/v1/translate", content=rand_png()),
                await c.post("/v1/translate", content=rand_png(), headers={"Authorization": "Basic abc"}),
                await c.post("/v1/translate", content=rand_png(), headers=auth("not-a-valid-key")),
            ]

    missing, basic, wrong = run(go())
    assert missing.status_code == 401 and missing.json()["error"] == "missing_key"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert basic.status_code == 401
    assert wrong.status_code == 403 and wrong.json() == {"error": "invalid_key", "detail": "unknown API key"}


def test_budget_charges_only_answers_and_survives_restart(tmp_path):
    write_keys(tmp_path, budget=3)
    cv = CountingVictim()

    async def first():
        async with asgi_client(cv.victim(), settings(tmp_path)) as c:
            bad = await c.post("/v1/translate", content=b"not an image", headers=auth())
            ok1 = await c.post("/v1/translate", content=rand_png(seed=1), headers=auth())
            ok2 = await c.post("/v1/translate", content=rand_png(seed=2), headers=auth())
            return bad, ok1, ok2

    bad, ok1, ok2 = run(first())
    assert bad.status_code == 415
    assert ok1.headers["x-budget-remaining"] == "2"  # the refused upload was not charged
    assert ok2.headers["x-budget-remaining"] == "1"

    async def second():  # a new app on the same keys file: the spent budget persists
        async with asgi_client(cv.victim(), settings(tmp_path)) as c:
            ok3 = await c.post("/v1/translate", content=rand_png(seed=3), headers=auth())
            over = await c.post("/v1/translate", content=rand_png(seed=4), headers=auth())
            metrics = parse_prometheus_text((await c.get("/metrics")).text)
            return ok3, over, metrics

    ok3, over, m = run(second())
    assert ok3.status_code == 200 and ok3.headers["x-budget-remaining"] == "0"
    assert over.status_code == 402 and over.json()["error"] == "budget_exhausted"
    assert over.headers["x-budget-remaining"] == "0"
    assert cv.images == 3
    assert m['copymark_rejects_total{reason="budget_exhausted"}'] == 1


def test_concurrent_requests_cannot_overspend_budget(tmp_path):
    write_keys(tmp_path, budget=2)
    cv = CountingVictim(delay_s=0.05)

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path, max_wait_ms=20)) as c:
            return await asyncio.gather(
                *(c.post("/v1/translate", content=rand_png(seed=i), headers=auth()) for i in range(6))
            )

    rs = run(go())
    codes = sorted(r.status_code for r in rs)
    assert codes == [200, 200, 402, 402, 402, 402]
    assert cv.images == 2


def test_idempotent_replay_is_free_and_checks_body(tmp_path):
    write_keys(tmp_path, budget=5)
    cv = CountingVictim()

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path)) as c:
            h = {**auth(), "Idempotency-Key": "q-1"}
            a = await c.post("/v1/translate", content=rand_png(seed=1), headers=h)
            b = await c.post("/v1/translate", content=rand_png(seed=1), headers=h)
            other = await c.post("/v1/translate", content=rand_png(seed=2), headers=h)
            return a, b, other

    a, b, other = run(go())
    assert a.status_code == b.status_code == 200 and a.content == b.content
    assert b.headers["idempotent-replay"] == "true" and b.headers["x-original-request-id"] == a.headers["x-request-id"]
    assert a.headers["x-budget-remaining"] == b.headers["x-budget-remaining"] == "4"
    assert other.status_code == 422 and other.json()["error"] == "idempotency_mismatch"
    assert cv.images == 1


def test_oversize_upload_413_by_header_and_by_stream(tmp_path):
    write_keys(tmp_path)
    cv = CountingVictim()
    big = rand_png(200, 200)  # ~120 kB of random pixels
    assert len(big) > 4096

    async def chunks():
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path, max_upload_bytes=4096)) as c:
            declared = await c.post("/v1/translate", content=big, headers=auth())
            streamed = await c.post("/v1/translate", content=chunks(), headers=auth())  # chunked, no length
            return declared, streamed

    declared, streamed = run(go())
    assert declared.status_code == 413 and declared.json()["error"] == "upload_too_large"
    assert "Transfer-Encoding" not in declared.request.headers
    assert streamed.status_code == 413 and "content-length" not in streamed.request.headers
    assert cv.images == 0


def test_pixel_limit_and_decompression_bomb_refused_from_header(tmp_path):
    write_keys(tmp_path)
    cv = CountingVictim()
    bomb = png_header_only(30000, 30000)  # 9e8 pixels claimed in 60 bytes; pixels undecodable
    mid = png_header_only(2000, 2000)  # over our limit, under Pillow's own bomb threshold
    with pytest.raises((OSError, SyntaxError, ValueError)):  # decoding it would fail: a 413 proves we never tried
        Image.open(io.BytesIO(mid)).load()

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path, max_pixels=1_000_000)) as c:
            return (
                await c.post("/v1/translate", content=bomb, headers=auth()),
                await c.post("/v1/translate", content=mid, headers=auth()),
                await c.post("/v1/translate", content=rand_png(1001, 1000), headers=auth()),
            )

    b, m, over = run(go())
    for r in (b, m, over):
        assert r.status_code == 413 and r.json()["error"] == "too_many_pixels", r.text
    assert "2000x2000" in m.json()["detail"]
    assert cv.images == 0


def test_corrupt_empty_and_missing_field(tmp_path):
    write_keys(tmp_path)
    cv = CountingVictim()
    png = rand_png(32, 32)

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path)) as c:
            return {
                "garbage": await c.post("/v1/translate", content=b"\x00\x01hello" * 10, headers=auth()),
                "truncated": await c.post("/v1/translate", content=png[: len(png) // 2], headers=auth()),
                "empty": await c.post("/v1/translate", content=b"", headers=auth()),
                "nofield": await c.post("/v1/translate", files={"photo": ("x.png", png, "image/png")}, headers=auth()),
            }

    r = run(go())
    assert r["garbage"].status_code == 415 and r["garbage"].json()["error"] == "unsupported_media"
    assert r["truncated"].status_code == 422 and r["truncated"].json()["error"] == "corrupt_image"
    assert r["empty"].status_code == 422 and r["empty"].json()["error"] == "empty_body"
    assert r["nofield"].status_code == 422 and r["nofield"].json()["error"] == "missing_field"
    for resp in r.values():
        assert set(resp.json()) == {"error", "detail"} and resp.headers["x-request-id"]
    assert cv.images == 0


def test_rate_limit_429_with_retry_after(tmp_path):
    write_keys(tmp_path, rate=2.0, burst=2)
    cv = CountingVictim()

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path)) as c:
            rs = [await c.post("/v1/translate", content=rand_png(seed=i), headers=auth()) for i in range(3)]
            await asyncio.sleep(0.6)  # one token refills at 2/s
            rs.append(await c.post("/v1/translate", content=rand_png(seed=9), headers=auth()))
            return rs

    rs = run(go())
    assert [r.status_code for r in rs] == [200, 200, 429, 200]
    limited = rs[2]
    assert limited.json()["error"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert 0 < int(limited.headers["x-retry-after-ms"]) <= 500


def test_queue_full_503(tmp_path):
    write_keys(tmp_path)
    cv = CountingVictim(delay_s=0.3)

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path, queue_size=1, max_batch=1, max_wait_ms=0)) as c:

            async def one(i):
                await asyncio.sleep(0.05 * i)  # arrive in order
                return await c.post("/v1/translate", content=rand_png(seed=i), headers=auth())

            return await asyncio.gather(*(one(i) for i in range(4)))

    rs = run(go())
    codes = [r.status_code for r in rs]
    # first runs, second waits in the queue, later ones find it full
    assert codes[:2] == [200, 200] and codes.count(503) == 2, codes
    full = rs[codes.index(503)]
    assert full.json()["error"] == "queue_full" and full.headers["retry-after"] == "1"


def test_micro_batching_batches_concurrent_requests_by_size(tmp_path):
    write_keys(tmp_path)
    cv = CountingVictim(delay_s=0.02)
    sizes = [(32, 32)] * 6 + [(24, 40)] * 4

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path, max_batch=8, max_wait_ms=200)) as c:
            rs = await asyncio.gather(
                *(
                    c.post("/v1/translate", content=rand_png(h, w, seed=i), headers=auth())
                    for i, (h, w) in enumerate(sizes)
                )
            )
            m = parse_prometheus_text((await c.get("/metrics")).text)
            return rs, m

    rs, m = run(go())
    assert all(r.status_code == 200 for r in rs)
    assert sum(cv.batch_sizes) == 10 and max(cv.batch_sizes) > 1, cv.batch_sizes
    assert len(cv.batch_sizes) < 10
    assert m["copymark_batch_size_count"] == len(cv.batch_sizes)  # batches the server reports
    assert m["copymark_batch_size_sum"] == 10
    # each answer is still its own image's answer
    for (h, w), r, i in zip(sizes, rs, range(10)):
        x = decode_image_bytes(rand_png(h, w, seed=i))[None]
        assert torch.equal(decode_image_bytes(r.content), quantize(cv(x))[0])
    assert m['copymark_requests_total{route="/v1/translate",status="200"}'] == 10


def test_lone_request_does_not_wait_for_batch(tmp_path):
    write_keys(tmp_path)
    cv = CountingVictim()

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path, max_wait_ms=2000)) as c:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            r = await c.post("/v1/translate", content=rand_png(), headers=auth())
            return r, loop.time() - t0

    r, dt = run(go())
    assert r.status_code == 200 and dt < 1.0


def test_victim_failure_is_500_json_and_not_charged(tmp_path):
    write_keys(tmp_path, budget=1)

    def broken(x):
        raise RuntimeError("boom")

    from copymark.serving.models import function_model

    async def go():
        async with asgi_client(function_model(broken, "broken"), settings(tmp_path)) as c:
            return await c.post("/v1/translate", content=rand_png(), headers=auth())

    r = run(go())
    assert r.status_code == 500 and r.json()["error"] == "victim_error"
    assert r.headers["x-budget-remaining"] == "1"


def test_inference_timeout_504(tmp_path):
    write_keys(tmp_path)
    cv = CountingVictim(delay_s=0.5)

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path, inference_timeout_s=0.1)) as c:
            return await c.post("/v1/translate", content=rand_png(), headers=auth())

    r = run(go())
    assert r.status_code == 504 and r.json()["error"] == "inference_timeout"


def test_unknown_route_json_404_and_metrics_format(tmp_path):
    write_keys(tmp_path, extra={OTHER_KEY: {"budget": 1}})
    cv = CountingVictim()

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path)) as c:
            nf = await c.get("/v2/nothing")
            await c.post("/v1/translate", content=rand_png(), headers=auth(OTHER_KEY))
            return nf, await c.get("/metrics")

    nf, metrics = run(go())
    assert nf.status_code == 404 and nf.json()["error"] == "http_error"
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert "# TYPE copymark_request_latency_seconds histogram" in text
    m = parse_prometheus_text(text)
    inf, count = (
        'copymark_request_latency_seconds_bucket{route="/v1/translate",le="+Inf"}',
        ('copymark_request_latency_seconds_count{route="/v1/translate"}'),
    )
    assert m[inf] == m[count] == 1
    assert m["copymark_answers_total"] == 1


def test_bad_keys_file_and_settings(tmp_path):
    (tmp_path / "keys.json").write_text(json.dumps({KEY: {"budget": 5, "rate": 3}}))
    with pytest.raises(ConfigError, match="rate"):
        from copymark.serving.settings import load_keys

        load_keys(tmp_path / "keys.json")
    (tmp_path / "keys.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_keys(tmp_path / "keys.json")
    with pytest.raises(ConfigError, match="not found"):
        load_keys(tmp_path / "missing.json")
    (tmp_path / "keys.json").write_text(json.dumps({"short": {"budget": 5}}))
    with pytest.raises(ConfigError, match="at least 8"):
        load_keys(tmp_path / "keys.json")


def test_usage_db_stores_key_hashes_not_keys(tmp_path):
    write_keys(tmp_path)
    cv = CountingVictim()

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path)) as c:
            return await c.post("/v1/translate", content=rand_png(), headers=auth())

    assert run(go()).status_code == 200
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("keys.json.usage.sqlite*"))
    assert raw and KEY.encode() not in raw
    _ = np  # numpy imported for helpers


def test_same_idempotency_key_in_flight_runs_victim_once(tmp_path):
    """A client that timed out and retries while its first request is still running gets the
    first request's answer, without a second victim call or charge."""
    write_keys(tmp_path, budget=10)
    cv = CountingVictim(delay_s=0.3)

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path)) as c:
            h = {**auth(), "Idempotency-Key": "same"}
            first = asyncio.ensure_future(c.post("/v1/translate", content=rand_png(seed=5), headers=h))
            await asyncio.sleep(0.1)
            second = await c.post("/v1/translate", content=rand_png(seed=5), headers=h)
            return await first, second

    a, b = run(go())
    assert a.status_code == b.status_code == 200 and a.content == b.content
    assert b.headers["idempotent-replay"] == "true"
    assert cv.images == 1
    assert a.headers["x-budget-remaining"] == "9"


def test_slow_upload_408(tmp_path):
    write_keys(tmp_path)
    cv = CountingVictim()
    png = rand_png()

    async def trickle():
        yield png[:20]
        await asyncio.sleep(0.6)
        yield png[20:]

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path, read_timeout_s=0.2)) as c:
            return await c.post("/v1/translate", content=trickle(), headers=auth())

    r = run(go())
    assert r.status_code == 408 and r.json()["error"] == "upload_timeout"
    assert cv.images == 0


def test_min_side_and_aspect_ratio_refused_from_the_header(tmp_path):
    """A 1-pixel strip (the request that killed the cartoon server in issue 10) is refused from
    its header by the default limits, before a pixel is decoded and without a charge."""
    write_keys(tmp_path, budget=5)
    cv = CountingVictim()
    strip = png_header_only(100_000, 1)  # pixels undecodable: a 422 proves only the header was read

    async def go(**limits):
        async with asgi_client(cv.victim(), settings(tmp_path, **limits)) as c:
            return [
                await c.post("/v1/translate", content=body, headers=auth())
                for body in (strip, png_header_only(6, 40), rand_png(12, 200), rand_png(12, 20))
            ]

    strip_r, small, long, ok = run(go())
    assert strip_r.status_code == 422 and strip_r.json()["error"] == "image_too_small"
    assert "100000x1" in strip_r.json()["detail"] and strip_r.headers["x-budget-remaining"] == "5"
    assert small.status_code == 422 and small.json()["error"] == "image_too_small"
    assert long.status_code == 422 and long.json()["error"] == "aspect_ratio_too_large"
    assert "200x12" in long.json()["detail"]
    assert ok.status_code == 200 and cv.images == 1
    strip_r, small, long, ok = run(go(min_side=1, max_aspect=20))
    assert strip_r.status_code == 422 and strip_r.json()["error"] == "aspect_ratio_too_large"
    assert small.status_code == 422 and small.json()["error"] == "corrupt_image"  # allowed, then undecodable
    assert long.status_code == 200 and ok.status_code == 200
    assert cv.images == 3


def test_model_output_is_checked_against_its_declaration(tmp_path):
    """The app does not assume an answer's shape: the model declares it and every answer is
    checked (shape, finite values) before it is encoded; a mismatch is a 500, not charged."""
    from copymark.serving.models import function_model

    write_keys(tmp_path, budget=5)
    cases = {
        "wrong_scale": function_model(lambda x: x, "wrong-scale", task="sr", scale=2),
        "nan": function_model(lambda x: x * float("nan"), "nan"),
        "one_channel": function_model(lambda x: x[:, :1], "grey"),
    }

    async def go(model):
        async with asgi_client(model, settings(tmp_path)) as c:
            return await c.post("/v1/translate", content=rand_png(16, 16), headers=auth())

    for name, model in cases.items():
        r = run(go(model))
        assert r.status_code == 500 and r.json()["error"] == "victim_error", (name, r.text)
        assert r.headers["x-budget-remaining"] == "5"
    assert "expected (1, 3, 32, 32)" in run(go(cases["wrong_scale"])).json()["detail"]
    assert "NaN" in run(go(cases["nan"])).json()["detail"]


def test_info_names_limits_and_model_interface_declares_outputs(tmp_path):
    write_keys(tmp_path)
    victim = load_model("classical:bicubic_x4")
    assert victim.output_shape(10, 12) == (3, 40, 48) and victim.media_type == "image/png"
    assert victim.public_info() == {"task": "sr", "victim_id": victim.id, "output": "image/png", "scale": 4}

    async def go():
        async with asgi_client(victim, settings(tmp_path, min_side=4, max_aspect=8, isolation="inline")) as c:
            return (await c.get("/v1/info")).json()

    info = run(go())
    assert info["limits"]["min_side"] == 4 and info["limits"]["max_aspect"] == 8
    assert info["victim_id"] == victim.id and info["scale"] == 4


def test_usage_endpoint_reports_the_callers_key_free_but_rate_limited(tmp_path):
    """GET /v1/usage: 401 / 403 like the model's route; the key's own budget, spending and
    limits; never charged (also for a spent key: no 402); one rate-limit token per call."""
    from copymark.serving.limits import key_hash

    tight = "tight-key-0001"
    write_keys(tmp_path, budget=2, extra={tight: {"budget": 5, "rate_per_s": 0.01, "burst": 2}})
    cv = CountingVictim()

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path, request_log=tmp_path / "log.jsonl")) as c:
            out = [await c.get("/v1/usage"), await c.get("/v1/usage", headers=auth("nope-nope-nope"))]
            out.append(await c.get("/v1/usage", headers=auth()))
            for seed in range(3):  # two answers, then 402
                out.append(await c.post("/v1/translate", content=rand_png(seed=seed), headers=auth()))
            out.append(await c.get("/v1/usage", headers=auth()))
            out += [await c.get("/v1/usage", headers=auth(tight)) for _ in range(3)]
            return out

    missing, wrong, fresh, a1, a2, spent_out, spent, t1, t2, t3 = run(go())
    assert missing.status_code == 401 and missing.json()["error"] == "missing_key"
    assert wrong.status_code == 403 and wrong.json()["error"] == "invalid_key"
    assert fresh.status_code == 200 and fresh.headers["x-budget-remaining"] == "2" and fresh.headers["x-request-id"]
    assert fresh.json() == {
        "key_id": key_hash(KEY)[:12],
        "budget": 2,
        "spent": 0,
        "remaining": 2,
        "rate_per_s": 1000.0,
        "burst": 1000,
    }
    assert [a1.status_code, a2.status_code, spent_out.status_code] == [200, 200, 402]
    assert spent.status_code == 200 and spent.json()["spent"] == 2 and spent.json()["remaining"] == 0
    assert cv.images == 2  # usage calls ran nothing and were charged nothing
    assert [t1.status_code, t2.status_code, t3.status_code] == [200, 200, 429]  # burst 2: the third waits
    assert t3.json()["error"] == "rate_limited" and int(t3.headers["retry-after"]) >= 1
    assert t1.json()["spent"] == 0 and t1.json()["rate_per_s"] == 0.01 and t1.json()["burst"] == 2
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    usage_lines = [e for e in log if e["route"] == "/v1/usage"]
    assert len(usage_lines) == 7 and usage_lines[2]["key"] == key_hash(KEY)[:12]
