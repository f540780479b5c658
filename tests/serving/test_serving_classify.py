"""Served classifiers: ``POST /v1/classify`` through a real worker process and through the ASGI
transport; label-only answers; the same keys, budgets, limits and idempotency as translation;
bad input as 4xx JSON; specs that are no classifier refused at start."""

from __future__ import annotations

import asyncio
import io
import json
import os

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from scipy.special import softmax
from servehelpers import asgi_client, auth, png_header_only, settings, write_keys

from copymark.cli import main
from copymark.errors import ConfigError
from copymark.images import decode_image_bytes, encode_png
from copymark.serving.app import create_app
from copymark.serving.classifiers import load_classifier
from copymark.serving.metrics import parse_prometheus_text
from copymark.serving.models import TOP_K_DEFAULT, function_classifier
from copymark.serving.server import BackgroundServer

EXACT = "python:models_for_tests:exact_classifier"
COLOUR = "python:models_for_tests:colour_classifier"


def run(coro):
    return asyncio.run(coro)


def tinted_pngs(n: int, size: int = 32, seed: int = 1) -> list[bytes]:
    """Random 8-bit images with a random tint per image (so a classifier's labels vary)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        tint = torch.rand(3, 1, 1, generator=g)
        out.append(encode_png(torch.rand(3, size, size, generator=g) * tint))
    return out


def png_of(array: np.ndarray, mode: str | None = None, **info) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG", **info)
    return buf.getvalue()


@pytest.fixture
def exact_weights(tmp_path):
    from models_for_tests import exact_classifier_state

    p = tmp_path / "exact.safetensors"
    save_file(exact_classifier_state(), str(p))
    return p


def reference(pngs: list[bytes], weights) -> torch.Tensor:
    """The logits (float64) of the classifier run here, in process, one image at a time."""
    from models_for_tests import exact_classifier
    from safetensors.torch import load_file

    net = exact_classifier()
    net.load_state_dict(load_file(str(weights)))
    net.eval()
    with torch.inference_mode():
        return torch.cat([net(decode_image_bytes(p)[None]) for p in pngs]).double()


def test_classifier_in_worker_answers_as_in_process_and_survives_a_crash(tmp_path, exact_weights):
    """The answers of the worker-isolated server equal the net run here: same labels, the same
    float64 probabilities bit for bit (the net's float32 arithmetic is exact, see
    ExactClassifier, and the softmax is float64 on both sides), checked against scipy too."""
    write_keys(tmp_path, budget=100)
    model = load_classifier(EXACT, weights=exact_weights)
    pngs = tinted_pngs(10)
    logits = reference(pngs, exact_weights)
    labels = logits.argmax(1).tolist()
    assert len(set(labels)) >= 2  # the comparison is not of one constant answer
    app = create_app(model, settings(tmp_path, isolation="worker"))
    with BackgroundServer(app) as srv:
        assert app.state.copymark.runner.pid not in (None, os.getpid())
        answers = [httpx.post(f"{srv.url}/v1/classify", content=p, headers=auth()) for p in pngs]
        all_k = httpx.post(f"{srv.url}/v1/classify?top_k=100", content=pngs[0], headers=auth())
        one = httpx.post(f"{srv.url}/v1/classify?top_k=1", content=pngs[0], headers=auth())
        info = httpx.get(f"{srv.url}/v1/info").json()
        marked = np.asarray(Image.open(io.BytesIO(pngs[1]))).copy()
        marked[0, 0] = (255, 0, 255)  # ExactClassifier aborts the process on this
        crash = httpx.post(f"{srv.url}/v1/classify", content=png_of(marked), headers=auth(), timeout=120)
        after = httpx.post(f"{srv.url}/v1/classify", content=pngs[2], headers=auth(), timeout=120)
        usage = httpx.get(f"{srv.url}/v1/usage", headers=auth()).json()
    for r, label, z in zip(answers, labels, logits):
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["label"] == label and body["class_name"] is None
        top = body["top_k"]
        assert len(top) == TOP_K_DEFAULT and top[0]["label"] == label
        p = torch.softmax(z, 0)  # float64, as the server computes it
        order = sorted(range(5), key=lambda i: (-float(z[i]), i))
        assert [t["label"] for t in top] == order
        assert [t["probability"] for t in top] == [float(p[i]) for i in order]  # exact: JSON keeps float64
        # an independent softmax: float64 rounding of exp and a 5-term sum is within 8 * K ulps
        want = softmax(z.numpy())[order]
        np.testing.assert_allclose([t["probability"] for t in top], want, rtol=8 * 5 * np.finfo(np.float64).eps)
    assert len(all_k.json()["top_k"]) == 5 and one.json()["top_k"] == all_k.json()["top_k"][:1]
    assert info == {
        **info,
        "task": "classify",
        "victim_id": model.id,
        "output": "application/json",
        "num_classes": 5,
        "input_size": {"height": 32, "width": 32},
        "answer": "topk",
        "top_k_default": 5,
        "top_k_max": 100,
    }
    assert "exact" not in json.dumps(info).lower() and "conv" not in json.dumps(info).lower()
    assert crash.status_code == 500 and crash.json()["error"] == "model_crashed"
    assert after.status_code == 200 and after.json()["label"] == labels[2]
    assert usage["spent"] == 13  # 10 + 2 top_k variants + the answer after the crash; the crash is free


def test_label_only_mode_hides_scores(tmp_path):
    write_keys(tmp_path)
    model = load_classifier(COLOUR)
    red = png_of(np.tile(np.array([200, 10, 30], np.uint8), (16, 16, 1)))

    async def go():
        async with asgi_client(model, settings(tmp_path, classify_answer="label")) as c:
            a = await c.post("/v1/classify", content=red, headers=auth())
            b = await c.post("/v1/classify?top_k=3", content=red, headers={**auth(), "Idempotency-Key": "k1"})
            replay = await c.post("/v1/classify?top_k=1", content=red, headers={**auth(), "Idempotency-Key": "k1"})
            return a, b, replay, (await c.get("/v1/info")).json()

    a, b, replay, info = run(go())
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json() == {"label": 0, "class_name": "red"}  # names from the module
    assert "probab" not in a.text and "top_k" not in a.text
    assert replay.status_code == 200 and replay.headers["idempotent-replay"] == "true" and replay.content == b.content
    assert info["answer"] == "label" and "top_k_max" not in info and "top_k_default" not in info
    assert info["num_classes"] == 3 and info["input_size"] == {"height": 16, "width": 16}


def test_classify_budget_idempotency_rate_and_header_limits(tmp_path):
    """What translation guarantees holds for classification: only answers are charged, a
    replay is free and byte-identical (also past the budget), a reused Idempotency-Key with
    another image or top_k is refused, the rate limit answers 429 with Retry-After, header
    limits are checked before decoding, and every request is in the audit log and metrics."""
    slow_key = "slow-key-00001"
    write_keys(tmp_path, budget=2, extra={slow_key: {"budget": 10, "rate_per_s": 0.01, "burst": 1}})
    model = function_classifier(lambda x: x.mean(dim=(2, 3)), 3, (32, 32), class_names=("r", "g", "b"))
    a, b = tinted_pngs(2, seed=7)
    idem = {**auth(), "Idempotency-Key": "victim:abc"}

    async def go():
        s = settings(tmp_path, max_pixels=2048, request_log=tmp_path / "log.jsonl")
        async with asgi_client(model, s) as c:
            out = {
                "bad": await c.post("/v1/classify", content=b"not an image", headers=auth()),
                "huge": await c.post("/v1/classify", content=png_header_only(64, 64), headers=auth()),
                "first": await c.post("/v1/classify?top_k=2", content=a, headers=idem),
                "second": await c.post("/v1/classify", content=b, headers=auth()),
                "spent": await c.post("/v1/classify", content=b, headers=auth()),
                "replay": await c.post("/v1/classify?top_k=2", content=a, headers=idem),
                "other_image": await c.post("/v1/classify?top_k=2", content=b, headers=idem),
                "other_top_k": await c.post("/v1/classify?top_k=3", content=a, headers=idem),
                "slow1": await c.post("/v1/classify", content=a, headers=auth(slow_key)),
                "slow2": await c.post("/v1/classify", content=a, headers=auth(slow_key)),
            }
            out["metrics"] = parse_prometheus_text((await c.get("/metrics")).text)
            return out

    r = run(go())
    assert r["bad"].status_code == 415 and r["huge"].status_code == 413
    assert r["huge"].json()["error"] == "too_many_pixels"
    assert r["first"].status_code == 200 and r["first"].headers["x-budget-remaining"] == "1"
    assert len(r["first"].json()["top_k"]) == 2
    assert r["second"].status_code == 200 and r["second"].headers["x-budget-remaining"] == "0"
    assert r["spent"].status_code == 402 and r["spent"].json()["error"] == "budget_exhausted"
    assert r["replay"].status_code == 200 and r["replay"].content == r["first"].content
    assert r["replay"].headers["x-original-request-id"] == r["first"].headers["x-request-id"]
    for k in ("other_image", "other_top_k"):
        assert r[k].status_code == 422 and r[k].json()["error"] == "idempotency_mismatch", k
    assert r["slow1"].status_code == 200
    assert r["slow2"].status_code == 429 and r["slow2"].json()["error"] == "rate_limited"
    assert int(r["slow2"].headers["retry-after"]) >= 1 and int(r["slow2"].headers["x-retry-after-ms"]) > 0
    m = r["metrics"]
    assert m['copymark_requests_total{route="/v1/classify",status="200"}'] == 4
    assert m["copymark_answers_total"] == 3 and m["copymark_replays_total"] == 1
    assert m['copymark_rejects_total{reason="idempotency_mismatch"}'] == 2
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(log) == 10 and {e["route"] for e in log} == {"/v1/classify"}
    assert [e["status"] for e in log] == [415, 413, 200, 200, 402, 200, 422, 422, 200, 429]


def test_bad_inputs_are_4xx_json_and_free(tmp_path):
    """Wrong size (the expected one named), modes that would lose pixels (alpha, a transparent
    palette entry, CMYK), corrupt and empty bodies, a top_k out of range: 4xx JSON, never
    charged. A greyscale image (exact in RGB) is classified like its RGB copy; 16-bit grey is taken."""
    write_keys(tmp_path, budget=100)
    model = load_classifier(COLOUR)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((16, 16), 128, np.uint8)])
    palette = Image.fromarray(rgb).convert("P")
    buf = io.BytesIO()
    palette.save(buf, format="PNG", transparency=0)
    jpeg_cmyk = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(jpeg_cmyk, format="JPEG")
    good = png_of(rgb)
    cases = {
        "wide": (png_of(rng.integers(0, 256, (16, 17, 3), dtype=np.uint8)), 422, "wrong_input_size"),
        "small": (png_of(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)), 422, "wrong_input_size"),
        "rgba": (png_of(rgba), 422, "unsupported_image_mode"),
        "transparent_palette": (buf.getvalue(), 422, "unsupported_image_mode"),
        "cmyk": (jpeg_cmyk.getvalue(), 422, "unsupported_image_mode"),
        "corrupt": (good[:-30], 422, "corrupt_image"),
        "not_image": (b"\x00" * 64, 415, "unsupported_media"),
        "empty": (b"", 422, "empty_body"),
    }

    async def go():
        async with asgi_client(model, settings(tmp_path)) as c:
            got = {k: await c.post("/v1/classify", content=v[0], headers=auth()) for k, v in cases.items()}
            got["top_k_0"] = await c.post("/v1/classify?top_k=0", content=good, headers=auth())
            got["top_k_101"] = await c.post("/v1/classify?top_k=101", content=good, headers=auth())
            got["top_k_text"] = await c.post("/v1/classify?top_k=many", content=good, headers=auth())
            spent = (await c.get("/v1/usage", headers=auth())).json()["spent"]
            grey_answer = await c.post("/v1/classify", content=png_of(grey), headers=auth())
            rgb_of_grey = await c.post("/v1/classify", content=png_of(np.dstack([grey] * 3)), headers=auth())
            grey16 = await c.post("/v1/classify", content=png_of(grey.astype(np.uint16) * 257), headers=auth())
            return got, spent, grey_answer, rgb_of_grey, grey16

    got, spent, grey_answer, rgb_of_grey, grey16 = run(go())
    assert grey16.status_code == 200, grey16.text  # 16-bit grey: a fixed mapping to [0, 1]
    for name, (_, status, code) in cases.items():
        r = got[name]
        assert (r.status_code, r.json()["error"]) == (status, code), (name, r.text)
        assert set(r.json()) == {"error", "detail"}
    assert "takes exactly 16x16" in got["wide"].json()["detail"] and "17x16" in got["wide"].json()["detail"]
    assert "RGBA" in got["rgba"].json()["detail"]
    for name in ("top_k_0", "top_k_101", "top_k_text"):
        assert got[name].status_code == 422 and got[name].json()["error"] == "invalid_request", name
    assert spent == 0
    assert grey_answer.status_code == 200 and grey_answer.content == rgb_of_grey.content


def test_checkpoint_folder_serves_through_load_net(tmp_path):
    """A copymark checkpoint folder of a net that returns N x K logits (a steganalyzer, which
    takes any size, so --input-size declares one) serves as a classifier, with class names
    from its provenance or --class-names; its id hashes the net's files."""
    from copymark.nets.build import build_net, parse_net_config, save_net

    cfg = parse_net_config({"kind": "xunet", "width": 2})
    torch.manual_seed(0)
    net = build_net(cfg).eval()
    folder = save_net(tmp_path / "detector", net, cfg, {"class_names": ["cover", "stego"]})
    model = load_classifier(str(folder), input_size=(32, 32))
    assert model.num_classes == 2 and model.class_names == ("cover", "stego") and model.input_size == (32, 32)
    x = decode_image_bytes(tinted_pngs(1)[0])[None]
    with torch.inference_mode():
        assert torch.equal(model(x), net(x))
    assert model.source.kind == "label" and model.source.input_size == (32, 32)
    names = tmp_path / "names.txt"
    names.write_text("clean\nmarked\n")
    assert load_classifier(str(folder), input_size=(32, 32), class_names=names).class_names == ("clean", "marked")
    assert load_classifier(str(folder), input_size=(32, 32)).id == model.id
    (tmp_path / "three.json").write_text('["a", "b", "c"]')
    with pytest.raises(ConfigError, match="3 class names for a classifier of 2 classes"):
        load_classifier(str(folder), input_size=(32, 32), class_names=tmp_path / "three.json")
    with pytest.raises(ConfigError, match="declares no input_size") as ei:
        load_classifier(str(folder))
    assert "--input-size" in (ei.value.hint or "")


def test_specs_that_are_no_classifier_exit_2(tmp_path, capsys):
    """One-line errors at start, exit 2: an image model given as --classifier, a classifier
    checkpoint given as --victim, no or both model options, options that contradict the
    module, class names that do not fit, an unknown --answer."""
    from copymark.nets.build import build_net, parse_net_config, save_net

    keys = write_keys(tmp_path)
    unet_cfg = parse_net_config({"kind": "unet", "ngf": 2, "num_downs": 5})
    unet = save_net(tmp_path / "unet", build_net(unet_cfg), unet_cfg)
    fake = tmp_path / "classifier"  # what a classifier checkpoint's config.json looks like
    save_net(fake, build_net(unet_cfg), unet_cfg)
    meta = json.loads((fake / "config.json").read_text())
    meta["config"] = {"kind": "small_cnn", "num_classes": 10, "input_size": 32}
    (fake / "config.json").write_text(json.dumps(meta))
    (tmp_path / "two.json").write_text('["a", "b"]')
    cases = [
        (["--classifier", "python:models_for_tests:hanging_net?input_size=16"], "an image, not N x K logits"),
        (["--classifier", str(unet)], "declares no input_size"),
        (["--classifier", "classical:stylize"], "is an image filter, not a classifier"),
        (["--classifier", "python:models_for_tests:undeclared_classifier"], "declares no input_size"),
        (["--classifier", "python:models_for_tests:colour_classifier?input_size=32"], "contradicts"),
        (["--classifier", COLOUR, "--input-size", "8"], "contradicts"),
        (["--classifier", COLOUR, "--class-names", str(tmp_path / "two.json")], "2 class names"),
        (["--classifier", COLOUR, "--answer", "scores"], "--answer must be topk or label"),
        (["--classifier", EXACT], "no --weights were given"),
        (["--victim", str(fake)], "is a classifier"),
        (["--victim", "classical:stylize", "--answer", "label"], "are for --classifier"),
        ([], "exactly one of --victim"),
        (["--victim", "classical:stylize", "--classifier", COLOUR], "exactly one of --victim"),
    ]
    for args, expected in cases:
        assert main(["serve", *args, "--keys", str(keys)]) == 2, args
        err = capsys.readouterr().err
        assert expected in err, (args, err)
        assert err.startswith("error: ") and "Traceback" not in err and len(err.splitlines()) <= 2, err


def test_copymark_serve_classifier_subprocess(tmp_path, exact_weights):
    """The real command: `copymark serve --classifier python:... --weights F --class-names F
    --answer label` answers labels with names and no scores, and stops on SIGTERM."""
    import signal
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from copymark.serving.server import wait_healthy

    root = Path(__file__).resolve().parents[2]
    keys = write_keys(tmp_path, budget=5)
    names = tmp_path / "names.json"
    names.write_text(json.dumps(["ant", "bee", "cat", "dog", "eel"]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root / "tests" / "serving")])}
    args = ["--classifier", EXACT, "--weights", str(exact_weights), "--class-names", str(names), "--answer", "label"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "copymark.cli", "serve", *args, "--keys", str(keys), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    pngs = tinted_pngs(3)
    try:
        wait_healthy(url, proc, timeout=120)
        info = httpx.get(f"{url}/v1/info").json()
        answers = [httpx.post(f"{url}/v1/classify", content=p, headers=auth()) for p in pngs]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    labels = reference(pngs, exact_weights).argmax(1).tolist()
    assert info["task"] == "classify" and info["answer"] == "label" and info["num_classes"] == 5
    for r, label in zip(answers, labels):
        assert r.status_code == 200 and r.json() == {"label": label, "class_name": "ant bee cat dog eel".split()[label]}
    err = proc.stderr.read().decode()
    assert f"serving classifier {info['victim_id']} (task classify)" in err and "Traceback" not in err
