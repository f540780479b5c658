"""Prometheus text-format metrics, written by hand (no extra dependency).

Exposed at ``GET /metrics`` in the text exposition format 0.0.4 (each metric, its labels and
meaning are listed in docs/API.md): ``copymark_requests_total{route,status}`` and
``copymark_request_latency_seconds{route}`` (histogram) for the audited routes (the model's
route and ``/v1/usage``), ``copymark_rejects_total{reason}`` (by ``error`` code),
``copymark_batch_size`` (histogram of model batch sizes), ``copymark_answers_total``,
``copymark_replays_total``, ``copymark_queue_depth`` (gauge), ``copymark_model_restarts_total``
(restarts of the model worker after a crash or a hang; 0 for inline models).
"""

from __future__ import annotations

import threading
from collections import Counter

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.total += 1
        self.sum += v
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1

    def render(self, name: str, labels: str = "") -> list[str]:
        """Sample lines; ``labels`` (e.g. ``route="/v1/translate"``) go before ``le``."""
        pre = f"{labels}," if labels else ""
        tail = f"{{{labels}}}" if labels else ""
        lines = []
        for b, c in zip(self.buckets, self.counts):
            lines.append(f'{name}_bucket{{{pre}le="{b:g}"}} {c}')
        lines.append(f'{name}_bucket{{{pre}le="+Inf"}} {self.total}')
        lines.append(f"{name}_sum{tail} {self.sum:.6f}")
        lines.append(f"{name}_count{tail} {self.total}")
        return lines


class Metrics:
    """Thread-safe counters and histograms of one server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()  # (route, status)
        self.rejects: Counter[str] = Counter()
        self.latency: dict[str, Histogram] = {}  # route -> histogram
        self.batch = Histogram(BATCH_BUCKETS)
        self.answers = 0
        self.replays = 0
        self.queue_depth = 0
        self.model_restarts = 0

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, str(status))] += 1
            if route not in self.latency:
                self.latency[route] = Histogram(LATENCY_BUCKETS)
            self.latency[route].observe(seconds)

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejects[reason] += 1

    def batch_size(self, n: int) -> None:
        with self._lock:
            self.batch.observe(n)

    def answer(self, replay: bool = False) -> None:
        with self._lock:
            if replay:
                self.replays += 1
            else:
                self.answers += 1

    def render(self) -> str:
        with self._lock:
            out = [
                "# HELP copymark_requests_total Requests to the audited routes (the model's, /v1/usage), "
                "by route and HTTP status.",
                "# TYPE copymark_requests_total counter",
            ]
            out += [
                f'copymark_requests_total{{route="{r}",status="{s}"}} {n}'
                for (r, s), n in sorted(self.requests.items())
            ]
            out += [
                "# HELP copymark_rejects_total Requests refused, by error code.",
                "# TYPE copymark_rejects_total counter",
            ]
            out += [f'copymark_rejects_total{{reason="{r}"}} {n}' for r, n in sorted(self.rejects.items())]
            out += [
                "# HELP copymark_answers_total Requests answered by running the model (charged).",
                "# TYPE copymark_answers_total counter",
                f"copymark_answers_total {self.answers}",
                "# HELP copymark_replays_total Answers replayed from the Idempotency-Key cache (not charged).",
                "# TYPE copymark_replays_total counter",
                f"copymark_replays_total {self.replays}",
                "# HELP copymark_request_latency_seconds Latency of requests to the audited routes, by route "
                "(answers and errors alike).",
                "# TYPE copymark_request_latency_seconds histogram",
                *(
                    line
                    for r, h in sorted(self.latency.items())
                    for line in h.render("copymark_request_latency_seconds", f'route="{r}"')
                ),
                "# HELP copymark_batch_size Images per model call (dynamic micro-batching).",
                "# TYPE copymark_batch_size histogram",
                *self.batch.render("copymark_batch_size"),
                "# HELP copymark_queue_depth Requests waiting for the model.",
                "# TYPE copymark_queue_depth gauge",
                f"copymark_queue_depth {self.queue_depth}",
                "# HELP copymark_model_restarts_total Model worker restarts after a crash or a hang.",
                "# TYPE copymark_model_restarts_total counter",
                f"copymark_model_restarts_total {self.model_restarts}",
            ]
        return "\n".join(out) + "\n"


def parse_prometheus_text(text: str) -> dict[str, float]:
    """Parse ``name{labels} value`` lines into a dict (for tests and benchmarks)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out
