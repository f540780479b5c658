"""A server one request cannot kill: the model in a supervised worker process (real uvicorn,
real worker processes, real native crashes and hangs from tests/serving/models_for_tests.py)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import torch
from servehelpers import CountingVictim, auth, rand_png, settings, write_keys

from copymark.errors import ConfigError
from copymark.images import decode_image_bytes, encode_png, quantize
from copymark.serving.app import create_app
from copymark.serving.execution import InlineRunner, ModelCrashed, WorkerRunner, make_runner
from copymark.serving.metrics import parse_prometheus_text
from copymark.serving.models import load_model
from copymark.serving.server import BackgroundServer

LOOSE = {"min_side": 1, "max_aspect": 1e6}  # let a 1-pixel strip reach the model


def strip_png(width: int = 100_000) -> bytes:
    """The request of issue 10: a width x 1 PNG, under both size limits."""
    return encode_png(torch.rand(3, 1, width, generator=torch.Generator().manual_seed(0)))


def marked_png(h: int = 24, w: int = 24, seed: int = 0) -> bytes:
    """A PNG whose top-left pixel is magenta: the test models' trigger."""
    x = torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))
    x[:, 0, 0] = torch.tensor([1.0, 0.0, 1.0])
    return encode_png(x)


def restarts(url: str) -> float:
    return parse_prometheus_text(httpx.get(f"{url}/metrics").text)["copymark_model_restarts_total"]


def answered_eventually(url: str, png: bytes, deadline_s: float = 120.0) -> httpx.Response:
    """Post until a 200 comes back; every answer before it must be a 5xx JSON error (a
    restarting worker), never a dead connection."""
    t_end = time.monotonic() + deadline_s
    while True:
        r = httpx.post(f"{url}/v1/translate", content=png, headers=auth(), timeout=60)
        if r.status_code == 200 or time.monotonic() > t_end:
            return r
        assert r.status_code >= 500 and set(r.json()) == {"error", "detail"}, r.text


def test_native_crash_answers_500_json_restarts_the_worker_and_charges_nothing(tmp_path):
    """Issue 10: a 100000 x 1 PNG made OpenCV double-free inside the cartoon filter and killed
    the server. Here the same abort (a real glibc double free) happens in the worker."""
    write_keys(tmp_path, budget=5)
    app = create_app(load_model("python:models_for_tests:crashing_cartoon"), settings(tmp_path, **LOOSE))
    assert app.state.copymark.runner.isolation == "worker"
    with BackgroundServer(app) as srv:
        r = httpx.post(f"{srv.url}/v1/translate", content=strip_png(), headers=auth(), timeout=120)
        assert r.status_code == 500 and r.json()["error"] == "model_crashed", r.text
        assert "SIGABRT" in r.json()["detail"]
        assert r.headers["x-budget-remaining"] == "5"
        png = rand_png(32, 40, seed=1)
        ok = answered_eventually(srv.url, png)
        assert ok.status_code == 200 and ok.headers["x-budget-remaining"] == "4"
        cartoon = load_model("classical:cartoon")  # the worker's answer is the real cartoon filter's
        assert torch.equal(decode_image_bytes(ok.content), quantize(cartoon(decode_image_bytes(png)[None]))[0])
        n = restarts(srv.url)
        assert n >= 1
        again = httpx.post(f"{srv.url}/v1/translate", content=strip_png(), headers=auth(), timeout=60)
        assert again.status_code == 500 and "not run again" in again.json()["detail"]
        assert restarts(srv.url) == n  # the remembered culprit did not cost another restart
        assert httpx.post(f"{srv.url}/v1/translate", content=png, headers=auth()).headers["x-budget-remaining"] == "3"


def test_hanging_model_answers_504_and_the_server_recovers(tmp_path):
    write_keys(tmp_path, budget=5)
    model = load_model("python:models_for_tests:hanging_net")
    with BackgroundServer(create_app(model, settings(tmp_path, inference_timeout_s=2.0))) as srv:
        r = httpx.post(f"{srv.url}/v1/translate", content=marked_png(), headers=auth(), timeout=60)
        assert r.status_code == 504 and r.json()["error"] == "inference_timeout", r.text
        assert r.headers["x-budget-remaining"] == "5"
        png = rand_png(16, 16, seed=2)
        ok = answered_eventually(srv.url, png)
        assert ok.status_code == 200
        assert torch.equal(decode_image_bytes(ok.content), quantize(1 - decode_image_bytes(png)))
        assert restarts(srv.url) >= 1
        assert ok.headers["x-budget-remaining"] == "4"


def test_a_crash_in_a_batch_fails_only_the_culprit():
    """Four images in one batch, one of which aborts the worker: the others are answered."""
    model = load_model("python:models_for_tests:crashing_cartoon")
    g = torch.Generator().manual_seed(3)
    batch = quantize(torch.rand(4, 3, 20, 24, generator=g))
    batch[2, :, 0, 0] = torch.tensor([1.0, 0.0, 1.0])
    runner = WorkerRunner(model, timeout_s=120)
    try:
        runner.prepare()
        results = asyncio.run(runner.run(batch))
        assert [type(r).__name__ for r in results] == ["Tensor", "Tensor", "ModelCrashed", "Tensor"]
        assert isinstance(results[2], ModelCrashed) and "SIGABRT" in str(results[2])
        for i in (0, 1, 3):
            assert torch.equal(results[i], model.answer(batch[i : i + 1])[0])
        assert runner.restarts >= 1
    finally:
        runner.close()


def test_isolation_auto_is_worker_for_specs_and_inline_for_callables(tmp_path):
    write_keys(tmp_path)
    spec_model, fn_model = load_model("classical:stylize"), CountingVictim().victim()
    assert isinstance(make_runner(spec_model, settings(tmp_path)), WorkerRunner)
    assert isinstance(make_runner(fn_model, settings(tmp_path)), InlineRunner)
    assert isinstance(make_runner(spec_model, settings(tmp_path, isolation="inline")), InlineRunner)
    with pytest.raises(ConfigError, match="in-process callable"):
        make_runner(fn_model, settings(tmp_path, isolation="worker"))
