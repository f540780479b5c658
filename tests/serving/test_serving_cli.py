"""`copymark serve` and `copymark extract` as commands: bad input exits 2 with a message; a
real `copymark serve` subprocess answers and shuts down on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from servehelpers import KEY, auth, rand_png, write_keys

from copymark.cli import main
from copymark.serving.server import wait_healthy

ROOT = Path(__file__).resolve().parents[2]


def test_serve_bad_inputs_exit_2(tmp_path, capsys):
    keys = write_keys(tmp_path)
    assert main(["serve", "--victim", "classical:nope", "--keys", str(keys)]) == 2
    err = capsys.readouterr().err
    assert "unknown classical victim 'nope'" in err and "classical:stylize" in err
    assert main(["serve", "--victim", "classical:stylize", "--keys", str(tmp_path / "none.json")]) == 2
    assert "keys file not found" in capsys.readouterr().err
    assert main(["serve", "--victim", "classical:stylize", "--keys", str(keys), "--max-batch", "0"]) == 2
    assert "max_batch" in capsys.readouterr().err


def test_extract_bad_inputs_exit_2(tmp_path, capsys):
    from copymark.data.samples import samples_to_folder

    base = ["extract", "--api-key", KEY, "--budget", "3", "--store", str(tmp_path / "s"), "--size", "32"]
    samples_to_folder(tmp_path / "photos", names=["chelsea"], max_side=64)  # photos are checked before the server
    assert (
        main(base + ["--victim-url", "http://127.0.0.1:9", "--data", str(tmp_path / "photos"), "--strategy", "clever"])
        == 2
    )
    assert "strategy" in capsys.readouterr().err
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    assert (
        main(
            base
            + ["--victim-url", f"http://127.0.0.1:{port}", "--data", str(tmp_path / "photos"), "--max-retries", "1"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "gave up after 2 attempts" in err and "ConnectError" in err
    assert time.monotonic() - t0 < 20


def test_copymark_serve_subprocess(tmp_path):
    """The real `copymark serve --victim classical:cartoon`: answers, survives the request that
    killed it in issue 10 (a 100000 x 1 PNG, let through the header limits here: answered 200,
    or a 5xx JSON where OpenCV crashes on it in the model worker), and shuts down on SIGTERM."""
    from test_serving_isolation import answered_eventually, strip_png

    keys = write_keys(tmp_path, budget=5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "copymark.cli",
            "serve",
            "--victim",
            "classical:cartoon",
            "--keys",
            str(keys),
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--request-log",
            str(tmp_path / "log.jsonl"),
            "--min-side",
            "1",
            "--max-aspect",
            "1000000",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=60)
        r = httpx.post(f"{url}/v1/translate", content=rand_png(32, 32), headers=auth())
        assert r.status_code == 200 and r.headers["x-budget-remaining"] == "4"
        assert httpx.get(f"{url}/v1/info").json()["task"] == "style"
        strip = httpx.post(f"{url}/v1/translate", content=strip_png(), headers=auth(), timeout=120)
        assert strip.status_code == 200 or (strip.status_code >= 500 and "error" in strip.json()), strip.text
        ok = answered_eventually(url, rand_png(32, 32, seed=1))
        assert ok.status_code == 200
        assert ok.headers["x-budget-remaining"] == str(3 - (strip.status_code == 200))
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    # uvicorn shuts down gracefully, then re-raises the captured SIGTERM (exit status -15)
    assert proc.returncode in (0, -signal.SIGTERM)
    assert b"Traceback" not in proc.stderr.read()
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["status"] for e in log][0] == 200 and [e["status"] for e in log][-1] == 200


def test_background_server_has_no_nagle_delay(tmp_path):
    """Regression: a pre-bound socket with proto 0 made asyncio skip TCP_NODELAY, and every
    response waited ~40 ms for the client's delayed ACK."""
    import socket as so
    import statistics

    from servehelpers import CountingVictim, settings

    from copymark.serving.app import create_app
    from copymark.serving.server import BackgroundServer, bind_socket

    s = bind_socket()
    assert s.proto == so.IPPROTO_TCP
    s.close()
    write_keys(tmp_path)
    with BackgroundServer(create_app(CountingVictim().victim(), settings(tmp_path))) as srv:
        with httpx.Client(base_url=srv.url) as c:
            c.get("/v1/health")
            rtt = []
            for _ in range(15):
                t = time.perf_counter()
                c.get("/v1/health")
                rtt.append(time.perf_counter() - t)
    assert statistics.median(rtt) < 0.030, rtt


def test_extract_stops_cleanly_on_budget_and_wrong_key(tmp_path, capsys):
    from servehelpers import settings

    from copymark.client.store import QueryStore
    from copymark.data.samples import samples_to_folder
    from copymark.serving.app import create_app
    from copymark.serving.models import load_model
    from copymark.serving.server import BackgroundServer

    write_keys(tmp_path, budget=3)
    samples_to_folder(tmp_path / "photos", names=["chelsea"], max_side=80)
    with BackgroundServer(create_app(load_model("classical:cartoon"), settings(tmp_path))) as srv:
        base = [
            "extract",
            "--victim-url",
            srv.url,
            "--data",
            str(tmp_path / "photos"),
            "--budget",
            "5",
            "--size",
            "24",
            "--quiet",
        ]
        assert main(base + ["--api-key", KEY, "--store", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err
        assert "stopped after 3 of 5 answers" in err and "budget" in err and "keeps all 3 answers" in err
        assert main(base + ["--api-key", "wrong-key-42", "--store", str(tmp_path / "s2")]) == 2
        assert "refused the API key" in capsys.readouterr().err
    store = QueryStore(tmp_path / "s")
    assert store.counts()["answered"] == 3 and store.integrity_check().ok
