"""Throughput of the victim API vs the same victim called in-process, in one run.

Starts ``copymark serve`` as a subprocess on 127.0.0.1 (a free port), sends ``--requests``
PNG images at each concurrency level (default 1, 8, 32) with an async httpx client (one
request per worker at a time, so concurrency = requests in flight), and records requests/s
and p50/p99 latency. Then it calls the same victim directly in-process on float batches of
``min(concurrency, max_batch)`` images (what micro-batching can at best form) and reports the
ratio ``server_rps / direct_ips``. Prints JSON (and writes it with ``--out``).

The server side pays for what the direct call does not: HTTP, PNG decode/encode, auth,
budget bookkeeping in SQLite, and queueing. The issue's target is >= 0.85 for a ResNet-9
generator at 256 px (``--victim resnet9 --size 256``, on a GPU: ``--device cuda``).

Examples::

    python benchmarks/serve_throughput.py                       # small CPU config, ~1 min
    python benchmarks/serve_throughput.py --victim resnet9 --size 256 --requests 256 --device cuda
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from copymark.images import encode_png
from copymark.serving.models import load_model
from copymark.serving.server import wait_healthy

KEY = "benchmark-key-0001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_resnet9(folder: Path, ngf: int) -> str:
    """A randomly initialised ResNet-9 generator (CycleGAN's resnet_9blocks) as a checkpoint folder."""
    from copymark.nets.build import build_net, parse_net_config, save_net

    torch.manual_seed(0)
    cfg = parse_net_config({"kind": "resnet_gen", "ngf": ngf, "n_blocks": 9})
    save_net(folder, build_net(cfg).eval(), cfg, {"purpose": "serve_throughput benchmark"})
    return str(folder)


def stats(latencies: list[float], n: int, seconds: float) -> dict[str, float]:
    lat = np.asarray(latencies)
    return {
        "rps": n / seconds,
        "p50_ms": float(np.percentile(lat, 50) * 1000),
        "p99_ms": float(np.percentile(lat, 99) * 1000),
        "seconds": seconds,
        "n": n,
    }


async def hammer(url: str, pngs: list[bytes], concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    it = iter(range(len(pngs)))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120, limits=limits
    ) as c:

        async def worker() -> None:
            nonlocal errors
            for i in it:
                t0 = time.perf_counter()
                r = await c.post("/v1/translate", content=pngs[i])
                latencies.append(time.perf_counter() - t0)
                errors += r.status_code != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        dt = time.perf_counter() - t0
    out = stats(latencies, len(pngs), dt)
    out["errors"] = errors
    return out


def direct(victim, x: torch.Tensor, batch: int, device: str) -> dict[str, float]:
    """In-process throughput on float batches of ``batch`` images (no HTTP, no PNG)."""
    latencies: list[float] = []
    n = x.shape[0]
    victim(x[:batch])  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        t = time.perf_counter()
        y = victim(x[i : i + batch])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        _ = y
        latencies += [time.perf_counter() - t] * min(batch, n - i)
    return stats(latencies, n, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--victim",
        default="classical:stylize?sigma_s=20&sigma_r=0.3",
        help="victim SPEC, or 'resnet9' for a random-init ResNet-9 generator",
    )
    ap.add_argument("--ngf", type=int, default=64, help="ResNet-9 width (with --victim resnet9)")
    ap.add_argument("--size", type=int, default=64, help="square input size in pixels")
    ap.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated concurrency levels")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in the server and in the direct run (same for both; 0: torch's default). "
        "1 by default: on a shared, oversubscribed CPU, OpenMP spin-waiting makes 2+ threads erratic",
    )
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    spec = make_resnet9(tmp / "resnet9", args.ngf) if args.victim == "resnet9" else args.victim
    (tmp / "keys.json").write_text(json.dumps({KEY: {"budget": 10**9, "rate_per_s": 1e6, "burst": 10**6}}))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.requests, 3, args.size, args.size, generator=g)
    pngs = [encode_png(img) for img in x]
    port = free_port()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    cmd = [
        sys.executable,
        "-m",
        "copymark.cli",
        "serve",
        "--victim",
        spec,
        "--keys",
        str(tmp / "keys.json"),
        "--port",
        str(port),
        "--max-batch",
        str(args.max_batch),
        "--max-wait-ms",
        str(args.max_wait_ms),
        "--queue-size",
        str(max(64, 2 * max(levels))),
        "--max-pixels",
        str(args.size * args.size),
        "--device",
        args.device,
        "--log-level",
        "warning",
        "--threads",
        str(args.threads),
    ]
    url = f"http://127.0.0.1:{port}"
    result: dict = {
        "victim": args.victim,
        "size": args.size,
        "requests": args.requests,
        "device": args.device,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "levels": {},
    }
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            wait_healthy(url, proc, timeout=120, poll_s=0.2)
        except RuntimeError as err:
            raise SystemExit(f"server did not start: {err}") from None
        asyncio.run(hammer(url, pngs[: min(8, len(pngs))], 2))  # warm-up (model, connections)
        with httpx.Client(base_url=url) as hc:  # the HTTP floor on this machine: a request that does nothing
            rtt = []
            for _ in range(30):
                t = time.perf_counter()
                hc.get("/v1/health")
                rtt.append(time.perf_counter() - t)
        result["health_rtt_ms"] = {
            "p50": float(np.percentile(rtt, 50) * 1000),
            "p99": float(np.percentile(rtt, 99) * 1000),
        }
        for c in levels:
            result["levels"][str(c)] = {"server": asyncio.run(hammer(url, pngs, c))}
        metrics = httpx.get(f"{url}/metrics").text
        bs = [
            ln
            for ln in metrics.splitlines()
            if ln.startswith("copymark_batch_size_sum") or ln.startswith("copymark_batch_size_count")
        ]
        result["server_batches"] = {ln.split()[0]: float(ln.split()[1]) for ln in bs}
    finally:
        proc.terminate()
        proc.wait(30)
    victim = load_model(spec, args.device)
    shutil.rmtree(tmp, ignore_errors=True)
    for c in levels:
        d = direct(victim, x, min(c, args.max_batch), args.device)
        lvl = result["levels"][str(c)]
        lvl["direct"] = d
        lvl["ratio_server_to_direct"] = lvl["server"]["rps"] / d["rps"]
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
