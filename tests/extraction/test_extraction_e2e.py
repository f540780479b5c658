"""End to end over real HTTP: uvicorn on 127.0.0.1 (free port), real campaigns, faults.

Includes the kill test: ``copymark extract`` runs as a subprocess, is SIGKILLed mid-campaign
and rerun; no input reaches the victim twice, no answer is lost, the store is intact.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import torch

from copymark.cli import main as cli_main
from copymark.client.http import RetryPolicy
from copymark.client.store import QueryStore
from copymark.extraction.campaign import kcenter_order, run_campaign, select_order
from copymark.images import decode_image_bytes, quantize
from copymark.serving.app import create_app
from copymark.serving.metrics import parse_prometheus_text
from copymark.serving.models import ImageModel, function_model, load_model
from copymark.serving.server import BackgroundServer
from copymark.serving.settings import ServeSettings

KEY = "campaign-key-01"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from copymark.data.samples import samples_to_folder

    d = tmp_path_factory.mktemp("photos")
    samples_to_folder(d, names=["chelsea", "coffee", "astronaut"], max_side=96)
    return d


class SlowCounter:
    """Wrap a victim function: count images per input, optional delay per call."""

    def __init__(self, fn, delay_s: float = 0.0, first_delay_s: float | None = None):
        self.fn, self.delay_s, self.first_delay_s = fn, delay_s, first_delay_s
        self.calls = 0
        self.images = 0
        self.lock = threading.Lock()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
            self.images += x.shape[0]
        d = self.first_delay_s if first and self.first_delay_s is not None else self.delay_s
        if d:
            time.sleep(d)
        return self.fn(x)


def _server(d: Path, victim: ImageModel, budget: int = 1000, port: int = 0, **kw) -> BackgroundServer:
    keys = d / "keys.json"
    if not keys.exists():
        keys.write_text(json.dumps({KEY: {"budget": budget, "rate_per_s": 1000, "burst": 1000}}))
    kw.setdefault("request_log", d / "requests.jsonl")
    app = create_app(victim, ServeSettings(keys_file=keys, **kw))
    return BackgroundServer(app, port=port).start()


def _log(d: Path) -> list[dict]:
    p = d / "requests.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def _victim_runs_per_input(d: Path) -> Counter:
    """How often the victim really answered each input (200s that were not replays)."""
    return Counter(e["input_sha256"] for e in _log(d) if e["status"] == 200 and "replay_of" not in e)


def test_campaign_end_to_end_both_strategies(tmp_path, photos):
    victim = load_model("classical:stylize?sigma_s=20&sigma_r=0.3")
    srv = _server(tmp_path, victim)
    try:
        results = {}
        for strategy in ("random", "diverse"):
            res = run_campaign(
                srv.url,
                KEY,
                photos,
                budget=10,
                store_dir=tmp_path / strategy,
                strategy=strategy,
                size=32,
                seed=1,
                concurrency=3,
                progress=False,
            )
            assert res.answered_total == 10 and res.report.stop_reason is None
            assert res.victim_id == victim.id and res.task == "style"
            store = QueryStore(tmp_path / strategy)
            assert store.integrity_check().ok
            pairs = store.pairs(victim.id)
            assert len(pairs) == 10
            for inp, ans in pairs[:4]:  # each stored answer is the victim's answer to its stored input
                x = decode_image_bytes(inp.read_bytes())
                assert x.shape == (3, 32, 32)
                assert torch.equal(decode_image_bytes(ans.read_bytes()), quantize(victim(x[None]))[0])
            results[strategy] = {p[0].name for p in pairs}
            store.close()
        assert results["random"] != results["diverse"]
        # rerunning through the CLI with a larger budget only queries the difference
        before = parse_prometheus_text(httpx.get(f"{srv.url}/metrics").text)["copymark_answers_total"]
        rc = cli_main(
            [
                "extract",
                "--victim-url",
                srv.url,
                "--api-key",
                KEY,
                "--data",
                str(photos),
                "--budget",
                "13",
                "--store",
                str(tmp_path / "random"),
                "--size",
                "32",
                "--seed",
                "1",
                "--quiet",
            ]
        )
        assert rc == 0
        after = parse_prometheus_text(httpx.get(f"{srv.url}/metrics").text)["copymark_answers_total"]
        assert after - before == 3
        # crops both strategies picked were answered by the victim once (the second time: a free replay)
        assert max(_victim_runs_per_input(tmp_path).values()) == 1
    finally:
        srv.stop()


def test_selection_orders_are_deterministic_prefixes_and_diverse_covers_more(photos):
    a = select_order(photos, 24, 12, "diverse", seed=3)
    b = select_order(photos, 24, 12, "diverse", seed=3)
    assert [c.source for c in a] == [c.source for c in b]
    # pools of larger budgets contain smaller ones, and random lists them in the same relative order
    small = [c.source for c in select_order(photos, 24, 6, "random", seed=3)]
    big = [c.source for c in select_order(photos, 24, 18, "random", seed=3)]
    assert len(big) > len(small) and set(small) <= set(big)
    assert [s for s in big if s in set(small)] == small
    assert len(select_order(photos, 24, 18, "diverse", seed=3, n=5)) == 5
    import numpy as np

    feats = np.random.default_rng(0).standard_normal((300, 10)).astype(np.float32)
    o20, o40 = kcenter_order(feats, 20, 0), kcenter_order(feats, 40, 0)
    assert o40[:20] == o20 and len(set(o40)) == 40

    def radius(idx):  # the k-center objective: the farthest any point is from the chosen set
        z = feats[idx]
        return float(np.sqrt(((feats[:, None, :] - z[None]) ** 2).sum(-1)).min(1).max())

    rnd = np.random.default_rng(1).permutation(300)[:20]
    assert radius(o20) < radius(list(rnd))
    with pytest.raises(Exception, match="strategy"):
        select_order(photos, 24, 12, "clever", seed=0)


def test_slow_victim_client_timeout_then_retry_succeeds(tmp_path, photos):
    slow = SlowCounter(lambda x: 1 - x, first_delay_s=1.5)
    srv = _server(tmp_path, function_model(slow, "slow-invert"))
    try:
        pol = RetryPolicy(max_retries=8, backoff_base_s=0.05, backoff_max_s=0.2, timeout_s=0.5)
        res = run_campaign(
            srv.url,
            KEY,
            photos,
            budget=2,
            store_dir=tmp_path / "s",
            size=24,
            seed=0,
            concurrency=1,
            retry=pol,
            progress=False,
        )
        assert res.answered_total == 2 and res.report.stop_reason is None
        # the first request timed out on the client; its retry got the same answer without a second victim run
        assert slow.images == 2
        log = _log(tmp_path)
        assert sum(1 for e in log if "replay_of" in e) >= 1
        assert max(_victim_runs_per_input(tmp_path).values()) == 1
        store = QueryStore(tmp_path / "s")
        assert store.integrity_check().ok and sum(r["attempts"] for r in store.rows()) == 2  # rows sent once each
    finally:
        srv.stop()


def test_server_restart_mid_campaign_loses_nothing(tmp_path, photos):
    victim = function_model(SlowCounter(lambda x: 1 - x, delay_s=0.03), "restart-invert")
    srv = _server(tmp_path, victim, max_batch=1)
    port = srv.port
    pol = RetryPolicy(max_retries=2, backoff_base_s=0.05, backoff_max_s=0.1, timeout_s=5)
    out: dict = {}

    def campaign():
        out["res"] = run_campaign(
            srv.url,
            KEY,
            photos,
            budget=30,
            store_dir=tmp_path / "s",
            size=24,
            seed=2,
            concurrency=2,
            retry=pol,
            progress=False,
        )

    t = threading.Thread(target=campaign)
    t.start()
    db = tmp_path / "s" / "index.sqlite"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if db.exists():
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                n = con.execute("SELECT COUNT(*) FROM queries WHERE status='answered'").fetchone()[0]
            except sqlite3.OperationalError:
                n = 0
            con.close()
            if n >= 5:
                break
        time.sleep(0.01)
    srv.stop()  # graceful: requests in flight finish, new ones are refused
    t.join(30)
    first = out["res"]
    assert first.report.stop_reason and "gave up" in first.report.stop_reason  # clean stop, no crash
    assert 5 <= first.answered_total < 30
    store = QueryStore(tmp_path / "s")
    assert store.integrity_check().ok
    store.close()

    srv2 = _server(tmp_path, victim, max_batch=1, port=port)  # same port, same keys and usage db
    try:
        res = run_campaign(
            srv2.url,
            KEY,
            photos,
            budget=30,
            store_dir=tmp_path / "s",
            size=24,
            seed=2,
            concurrency=2,
            retry=pol,
            progress=False,
        )
        assert res.answered_total == 30 and res.report.stop_reason is None
        assert res.report.skipped == 0 and res.report.answered + res.report.replayed == 30 - first.answered_total
    finally:
        srv2.stop()
    runs = _victim_runs_per_input(tmp_path)
    assert len(runs) == 30 and max(runs.values()) == 1  # every input answered by the victim exactly once
    store = QueryStore(tmp_path / "s")
    assert store.integrity_check().ok and store.counts()["answered"] == 30


def test_kill_extract_subprocess_and_resume(tmp_path, photos):
    """THE kill test: SIGKILL `copymark extract` mid-campaign, rerun it, check everything."""
    victim = function_model(SlowCounter(lambda x: (1 - x).pow(0.7), delay_s=0.06), "kill-victim")
    srv = _server(tmp_path, victim, max_batch=2)
    store_dir = tmp_path / "store"
    cmd = [
        sys.executable,
        "-m",
        "copymark.cli",
        "extract",
        "--victim-url",
        srv.url,
        "--api-key",
        KEY,
        "--data",
        str(photos),
        "--budget",
        "40",
        "--store",
        str(store_dir),
        "--size",
        "24",
        "--seed",
        "5",
        "--concurrency",
        "4",
        "--quiet",
        "--max-retries",
        "3",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        db = store_dir / "index.sqlite"
        deadline = time.monotonic() + 60
        killed_at = None
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
                try:
                    killed_at = con.execute("SELECT COUNT(*) FROM queries WHERE status='answered'").fetchone()[0]
                except sqlite3.OperationalError:
                    killed_at = 0
                con.close()
                if killed_at >= 8:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.005)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr.read().decode()[-2000:])
        store = QueryStore(store_dir)
        mid = store.counts()
        assert store.integrity_check().ok  # consistent right after the kill
        assert 8 <= mid["answered"] < 40
        store.close()

        proc2 = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert proc2.returncode == 0, proc2.stderr[-2000:]
        summary = json.loads(proc2.stdout[proc2.stdout.index("{") :])
        assert summary["answered_total"] == 40 and summary["stop_reason"] is None
        metrics = parse_prometheus_text(httpx.get(f"{srv.url}/metrics").text)
    finally:
        srv.stop()
    store = QueryStore(store_dir)
    rep = store.integrity_check()
    assert rep.ok, rep.problems
    assert store.counts() == {"pending": 0, "answered": 40, "failed": 0}  # no answer lost
    runs = _victim_runs_per_input(tmp_path)
    assert len(runs) == 40 and max(runs.values()) == 1  # no input queried (run by the victim, charged) twice
    assert metrics["copymark_answers_total"] == 40  # exactly the budget was charged
    print(
        f"kill test: killed at {killed_at} answers; rerun summary {summary}; replays {metrics['copymark_replays_total']}"
    )
    # each stored answer is byte-identical to what the server logged for that input
    logged = {e["input_sha256"]: e["answer_sha256"] for e in _log(tmp_path) if "answer_sha256" in e}
    for row in store.rows():
        assert logged[row["input_sha"]] == row["answer_sha"]


def test_sr_campaign_answers_are_upscaled(tmp_path, photos):
    victim = load_model("classical:bicubic_x4")
    srv = _server(tmp_path, victim)
    try:
        res = run_campaign(
            srv.url, KEY, photos, budget=3, store_dir=tmp_path / "sr", size=16, seed=0, concurrency=2, progress=False
        )
    finally:
        srv.stop()
    assert (res.task, res.scale, res.answered_total) == ("sr", 4, 3)
    store = QueryStore(tmp_path / "sr")
    for inp, ans in store.pairs(victim.id):
        x = decode_image_bytes(inp.read_bytes())
        y = decode_image_bytes(ans.read_bytes())
        assert x.shape == (3, 16, 16) and y.shape == (3, 64, 64)
        assert torch.equal(y, quantize(victim(x[None]))[0])
