"""Throughput of the victim API, inline vs in the isolated model worker, vs the victim in-process.

Starts ``copymark serve`` as a subprocess on 127.0.0.1 (a free port) once per ``--isolation``
mode (default both: ``inline``, the model in an inference thread of the server, and
``worker``, the model in the supervised worker process that survives native crashes), sends
``--requests`` PNG images at each concurrency level (default 1, 8, 32) with an async httpx
client (one request per worker at a time, so concurrency = requests in flight), and records
requests/s and p50/p99 latency. Then it calls the same victim directly in-process on float
batches of ``min(concurrency, max_batch)`` images (what micro-batching can at best form) and
reports ``server_rps / direct_ips`` per mode, and the worker's cost as
``worker_rps / inline_rps``, ``worker_p50 - inline_p50`` and the difference in CPU time per
request of the whole server process tree (server + forkserver + worker; from /proc), which,
unlike wall-clock figures, hardly moves when other jobs share the machine. Everything is measured in the
same run, on the same images. Prints JSON (and writes it with ``--out``).

The server side pays for what the direct call does not: HTTP, PNG decode/encode, auth,
budget bookkeeping in SQLite, and queueing; the worker adds one round trip over a pipe per
batch (8-bit images as raw uint8 bytes both ways). The issue's target is >= 0.85 for a
ResNet-9 generator at 256 px (``--victim resnet9 --size 256``, on a GPU: ``--device cuda``).

``--classifier SPEC`` measures a served classifier instead (``POST /v1/classify``, JSON answers:
the label and top-5 probabilities); ``--classifier xunet`` serves a randomly initialised XuNet
steganalyzer (2 classes, ``--input-size`` = ``--size``), a small real conv net.

Examples::

    python benchmarks/serve_throughput.py                       # small CPU config, ~2 min
    python benchmarks/serve_throughput.py --classifier xunet --size 32 --isolation worker
    python benchmarks/serve_throughput.py --victim resnet9 --ngf 16 --size 128
    python benchmarks/serve_throughput.py --victim resnet9 --size 256 --requests 256 --device cuda
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
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
from copymark.serving.classifiers import load_classifier
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


def make_xunet(folder: Path) -> str:
    """A randomly initialised XuNet steganalyzer (N x 2 logits, any input size) as a checkpoint folder."""
    from copymark.nets.build import build_net, parse_net_config, save_net

    torch.manual_seed(0)
    cfg = parse_net_config({"kind": "xunet", "width": 8})
    save_net(
        folder, build_net(cfg).eval(), cfg, {"purpose": "serve_throughput benchmark", "class_names": ["cover", "stego"]}
    )
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


async def hammer(url: str, pngs: list[bytes], concurrency: int, route: str = "/v1/translate") -> dict[str, float]:
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
                r = await c.post(route, content=pngs[i])
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


def tree_cpu_seconds(root: int) -> float | None:
    """User + system CPU seconds of process ``root`` and all its descendants (Linux /proc; None elsewhere).

    The server's cost per request in CPU time is what isolation adds to, and unlike requests/s
    it barely moves when other jobs share the machine.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        fields = text[text.rindex(")") + 2 :].split()
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
    todo, total = [root], 0.0
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += [p for p, pp in parent.items() if pp == pid]
    return total


def median_stats(runs: list[dict]) -> dict:
    """Per-figure medians over repeated runs, with every run's requests/s kept."""
    keys = ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_request")
    out = {k: float(np.median([r[k] for r in runs])) for k in keys if all(r.get(k) is not None for r in runs)}
    out["rps_runs"] = [r["rps"] for r in runs]
    out["errors"] = sum(r["errors"] for r in runs)
    out["n"] = sum(r["n"] for r in runs)
    return out


def serve_and_hammer(spec: str, isolation: str, args: argparse.Namespace, keys: Path, pngs: list[bytes]) -> dict:
    """Start ``copymark serve --isolation ISOLATION`` and measure every concurrency level."""
    model_args = ["--victim", spec] if args.classifier is None else ["--classifier", spec]
    if args.classifier is not None and not spec.startswith("python:"):
        model_args += ["--input-size", str(args.size)]
    route = "/v1/translate" if args.classifier is None else "/v1/classify"
    levels = [int(c) for c in args.concurrency.split(",")]
    port = free_port()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = [
        sys.executable,
        "-m",
        "copymark.cli",
        "serve",
        *model_args,
        "--keys",
        str(keys),
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
        "--isolation",
        isolation,
    ]
    url = f"http://127.0.0.1:{port}"
    out: dict = {"levels": {}}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            wait_healthy(url, proc, timeout=300, poll_s=0.2)
        except RuntimeError as err:
            raise SystemExit(f"server did not start: {err}") from None
        asyncio.run(hammer(url, pngs[: min(8, len(pngs))], 2, route))  # warm-up (model, connections)
        with httpx.Client(base_url=url) as hc:  # the HTTP floor on this machine: a request that does nothing
            rtt = []
            for _ in range(30):
                t = time.perf_counter()
                hc.get("/v1/health")
                rtt.append(time.perf_counter() - t)
        out["health_rtt_ms"] = {
            "p50": float(np.percentile(rtt, 50) * 1000),
            "p99": float(np.percentile(rtt, 99) * 1000),
        }
        for c in levels:
            cpu0 = tree_cpu_seconds(proc.pid)
            stats = asyncio.run(hammer(url, pngs, c, route))
            cpu1 = tree_cpu_seconds(proc.pid)
            if cpu0 is not None and cpu1 is not None:
                stats["server_cpu_ms_per_request"] = (cpu1 - cpu0) * 1000 / stats["n"]
            out["levels"][str(c)] = stats
        metrics = httpx.get(f"{url}/metrics").text
        picked = ("copymark_batch_size_sum", "copymark_batch_size_count", "copymark_model_restarts_total")
        out["server_metrics"] = {
            ln.split()[0]: float(ln.split()[1]) for ln in metrics.splitlines() if ln.startswith(picked)
        }
    finally:
        proc.terminate()
        proc.wait(30)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--victim",
        default="classical:stylize?sigma_s=20&sigma_r=0.3",
        help="victim SPEC, or 'resnet9' for a random-init ResNet-9 generator",
    )
    ap.add_argument(
        "--classifier",
        default=None,
        help="measure a classifier SPEC at /v1/classify instead of --victim, or 'xunet' for a random-init XuNet",
    )
    ap.add_argument("--ngf", type=int, default=64, help="ResNet-9 width (with --victim resnet9)")
    ap.add_argument("--size", type=int, default=64, help="square input size in pixels")
    ap.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated concurrency levels")
    ap.add_argument("--isolation", default="inline,worker", help="comma-separated serve --isolation modes to compare")
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="serve each mode this many times, alternating modes; figures are medians over the repeats "
        "(a shared machine's load drifts: alternating repeats keep it from favouring one mode)",
    )
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in the server (and its worker) and in the direct run (same for all; 0: torch's "
        "default). 1 by default: on a shared, oversubscribed CPU, OpenMP spin-waiting makes 2+ threads erratic",
    )
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    modes = [m.strip() for m in args.isolation.split(",") if m.strip()]

    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    if args.classifier is not None:
        spec = make_xunet(tmp / "xunet") if args.classifier == "xunet" else args.classifier
    else:
        spec = make_resnet9(tmp / "resnet9", args.ngf) if args.victim == "resnet9" else args.victim
    (tmp / "keys.json").write_text(json.dumps({KEY: {"budget": 10**9, "rate_per_s": 1e6, "burst": 10**6}}))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.requests, 3, args.size, args.size, generator=g)
    pngs = [encode_png(img) for img in x]
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict = {
        "command": "python benchmarks/serve_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "victim": args.victim if args.classifier is None else None,
        "classifier": args.classifier,
        "ngf": args.ngf if args.victim == "resnet9" else None,
        "size": args.size,
        "requests": args.requests,
        "device": args.device,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "modes": {},
        "levels": {},
    }
    result["repeats"] = args.repeats
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    try:
        for _ in range(args.repeats):
            for mode in modes:
                runs[mode].append(serve_and_hammer(spec, mode, args, tmp / "keys.json", pngs))
        if args.classifier is None:
            victim = load_model(spec, args.device)
        else:
            size = None if spec.startswith("python:") else (args.size, args.size)
            victim = load_classifier(spec, args.device, input_size=size)
        for mode in modes:
            result["modes"][mode] = runs[mode][-1]
        for c in levels:
            d = direct(victim, x, min(c, args.max_batch), args.device)
            lvl: dict = {"direct": d}
            for mode in modes:
                srv = median_stats([r["levels"][str(c)] for r in runs[mode]])
                lvl[mode] = srv
                lvl[f"ratio_{mode}_to_direct"] = srv["rps"] / d["rps"]
            if "inline" in modes and "worker" in modes:
                lvl["worker_rps_over_inline"] = lvl["worker"]["rps"] / lvl["inline"]["rps"]
                lvl["worker_minus_inline_p50_ms"] = lvl["worker"]["p50_ms"] - lvl["inline"]["p50_ms"]
                if "server_cpu_ms_per_request" in lvl["worker"] and "server_cpu_ms_per_request" in lvl["inline"]:
                    lvl["worker_minus_inline_cpu_ms_per_request"] = (
                        lvl["worker"]["server_cpu_ms_per_request"] - lvl["inline"]["server_cpu_ms_per_request"]
                    )
            result["levels"][str(c)] = lvl
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for mode in modes:  # levels are reported above, side by side
        result["modes"][mode].pop("levels")
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
