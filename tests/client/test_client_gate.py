"""The shared pace (:class:`RateGate`) against a reference token bucket, in virtual time.

Deterministic: a discrete-event simulation of ``concurrency`` workers, a network latency and a
token-bucket server (the classic definition, as the server's rate limiter: ``burst`` tokens,
refilled at ``rate`` per second, a 429 says how long until the next token, rounded up to the
millisecond as in ``X-Retry-After-Ms``). No wall-clock time is measured: the gate's clock is the
simulation's. This proves the learning rule itself; tests/client/test_client_pacing.py runs the
real client against the real server.
"""

from __future__ import annotations

import heapq
import math

import pytest

from copymark.client.http import RateGate


class Bucket:
    """Reference token bucket: take one token at time ``now`` or say how long until one is there."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst, self.tokens, self.last = rate, burst, float(burst), 0.0

    def take(self, now: float) -> float:
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def run_without_waiting(coro):
    """Run a coroutine that must not suspend (the gate is free at this instant); return its value."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the gate made a request wait although its turn had come")


def simulate(rate: float, burst: int, concurrency: int, n: int, latency: float) -> tuple[RateGate, int, float]:
    """Answer ``n`` requests; return the gate, the number of 429s and the virtual time taken."""
    clock = [0.0]
    gate = RateGate(clock=lambda: clock[0])
    bucket = Bucket(rate, burst)
    events: list[tuple[float, int, str, tuple]] = []
    seq = 0

    def push(t: float, kind: str, *data: object) -> None:
        nonlocal seq
        heapq.heappush(events, (t, seq, kind, data))
        seq += 1

    for _ in range(min(concurrency, n)):
        push(0.0, "ready")
    answered = n429 = 0
    started = min(concurrency, n)
    while events:
        t, _, kind, data = heapq.heappop(events)
        clock[0] = t
        if kind == "ready":
            if t < gate.next_at:  # not this worker's turn yet: wake at the gate's time and re-check
                push(gate.next_at, "ready")
                continue
            epoch = run_without_waiting(gate.wait())
            wait = bucket.take(t + latency / 2)  # the server sees it half a round trip later
            push(t + latency, "response", epoch, wait)
        else:
            epoch, wait = data
            if wait > 0:
                n429 += 1
                gate.on_429(epoch, math.ceil(wait * 1000) / 1000)
                push(t, "ready")  # the same request again, when the gate lets it
            else:
                answered += 1
                if started < n:
                    started += 1
                    push(t, "ready")
    assert answered == n
    return gate, n429, clock[0]


@pytest.mark.parametrize(
    "rate, burst, concurrency, latency",
    [(20, 40, 4, 0.005), (10, 20, 16, 0.02), (10, 1, 64, 0.05), (100, 5, 8, 0.001), (2, 1, 1, 0.2)],
)
def test_gate_learns_the_rate_with_few_429s_and_keeps_pace(rate, burst, concurrency, latency):
    n = 1000
    gate, n429, elapsed = simulate(rate, burst, concurrency, n, latency)
    # the learned interval never passes the server's 1/rate by more than the millisecond rounding
    assert 1 / rate - 1e-9 <= gate.interval <= 1 / rate + 1e-3
    # 429s: the first round already on its way, a few while learning, then none
    assert n429 <= concurrency + 3, n429
    # and the run keeps the key's pace: within 1% (the rounding) of the ideal time, plus a round trip
    ideal = (n - burst) / rate
    assert elapsed <= ideal * 1.01 + 2 * latency + 1 / rate


def test_an_unlimited_key_is_never_slowed():
    gate, n429, elapsed = simulate(rate=1e6, burst=10**6, concurrency=8, n=200, latency=0.01)
    assert n429 == 0 and gate.interval == 0.0
    assert elapsed == pytest.approx(200 / 8 * 0.01)  # back-to-back round trips, no pacing at all
