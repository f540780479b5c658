"""The attacker's oracle client: budgeted, polite, resumable queries to a victim API.

:class:`OracleClient` wraps an ``httpx.AsyncClient``: a semaphore bounds concurrent requests,
each request has a timeout, and transient failures (connection errors, timeouts, 408, 429,
5xx) are retried with exponential backoff and "equal jitter" (half fixed, half random), or
after exactly the server's ``Retry-After`` (plus a little jitter) when it sends one.
Permanent refusals are not retried: 401/403 (key) stop everything with :class:`AuthError`,
402 (budget spent) stops everything with :class:`BudgetExhausted`; 413/415/422 fail only that
input.

:func:`query_all` drives a list of query images through the client into a
:class:`~copymark.extraction.store.QueryStore`: inputs already answered for this victim are
skipped (never queried twice), each input is registered ``pending`` before its request goes
out and its answer is recorded the moment it arrives. Every request carries
``Idempotency-Key: <victim id>:<input sha256>``, so if a run is killed after the server
answered but before the answer was stored, the rerun's request is a free replay of the same
answer instead of a second paid query (on a server that keeps replies, as copymark's does).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from copymark.errors import CopymarkError
from copymark.extraction.store import QueryStore, sha256_hex

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class OracleError(CopymarkError):
    """A query failed for good."""

    def __init__(self, message: str, hint: str | None = None, status: int | None = None, request_id: str = ""):
        super().__init__(message, hint)
        self.status = status
        self.request_id = request_id


class AuthError(OracleError):
    """The server refused the API key (401/403): no query can succeed."""


class BudgetExhausted(OracleError):
    """The query budget (the server's or the local one) is spent."""


class OracleUnavailable(OracleError):
    """The server stayed unreachable or overloaded through every retry."""


@dataclass
class Answer:
    png: bytes
    request_id: str
    budget_remaining: int | None
    replay: bool
    attempts: int


@dataclass
class RetryPolicy:
    """How hard to try: ``max_retries`` retries after the first attempt, backoff in seconds."""

    max_retries: int = 8
    backoff_base_s: float = 0.25
    backoff_max_s: float = 20.0
    timeout_s: float = 60.0


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Exponential backoff with equal jitter: ``d/2 + U(0, d/2)``, ``d = min(max, base * 2^attempt)``."""
    d = min(policy.backoff_max_s, policy.backoff_base_s * (2.0**attempt))
    return d / 2 + rng.uniform(0, d / 2)


def retry_after_seconds(resp: httpx.Response) -> float | None:
    """Seconds the server asks us to wait: ``X-Retry-After-Ms`` (precise) or ``Retry-After``."""
    ms = resp.headers.get("x-retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = resp.headers.get("retry-after")
    if ra is None:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(ra)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _error_text(resp: httpx.Response) -> str:
    try:
        j = resp.json()
        return f"{j.get('error', '?')}: {j.get('detail', '')}"
    except ValueError:
        return resp.text[:200]


class OracleClient:
    """Async HTTP client of one victim API with one API key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        concurrency: int = 4,
        retry: RetryPolicy | None = None,
        seed: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        local_budget: int | None = None,
    ):
        if concurrency < 1:
            raise CopymarkError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self._sem = asyncio.Semaphore(concurrency)
        self._rng = random.Random(seed)
        self._headers = {"Authorization": f"Bearer {api_key}"}
        t = self.retry.timeout_s
        self._client = httpx.AsyncClient(
            base_url=self.base_url, transport=transport, headers=self._headers,
            timeout=httpx.Timeout(t, connect=min(10.0, t)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.local_budget = local_budget  # paid answers this client may still receive (None: no limit)
        self.server_budget_remaining: int | None = None
        self.stats: Counter[str] = Counter()
        self.waits: list[tuple[float | None, float]] = []  # (server's Retry-After or None, seconds slept)

    async def __aenter__(self) -> OracleClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def info(self) -> dict[str, object]:
        """``GET /v1/info`` (task, scale, victim id, limits), retried like queries."""
        async def once() -> httpx.Response:
            return await self._client.get("/v1/info")

        resp = await self._with_retries(once, what="GET /v1/info")
        return resp.json()

    async def translate(self, png: bytes, idempotency_key: str | None = None) -> Answer:
        """Send one image; return the victim's PNG answer (retrying transient failures)."""
        if self.local_budget is not None and self.local_budget <= 0:
            raise BudgetExhausted("local query budget spent", hint="raise --budget to query more")
        headers = {"Content-Type": "application/octet-stream"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        attempts = 0

        async def once() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            async with self._sem:
                self.stats["sent"] += 1
                return await self._client.post("/v1/translate", content=png, headers=headers)

        resp = await self._with_retries(once, what="POST /v1/translate")
        replay = resp.headers.get("idempotent-replay") == "true"
        remaining = resp.headers.get("x-budget-remaining")
        if remaining is not None and remaining.isdigit():
            self.server_budget_remaining = int(remaining)
        if resp.headers.get("content-type", "").split(";")[0] != "image/png":
            raise OracleError(f"server answered 200 with {resp.headers.get('content-type')!r}, not image/png")
        self.stats["replayed" if replay else "answered"] += 1
        if self.local_budget is not None and not replay:
            self.local_budget -= 1
        return Answer(resp.content, resp.headers.get("x-request-id", ""),
                      self.server_budget_remaining, replay, attempts)

    async def _with_retries(self, send: Callable[[], object], what: str) -> httpx.Response:
        attempt = 0
        while True:
            wait: float | None = None
            try:
                resp: httpx.Response = await send()  # type: ignore[misc]
            except httpx.TransportError as err:  # connect refused/reset, timeouts, protocol errors
                self.stats[f"error_{type(err).__name__}"] += 1
                problem = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                status = None
            else:
                if resp.status_code == 200:
                    return resp
                status = resp.status_code
                self.stats[f"status_{status}"] += 1
                rid = resp.headers.get("x-request-id", "")
                problem = f"HTTP {status} {_error_text(resp)}"
                remaining = resp.headers.get("x-budget-remaining")
                if remaining is not None and remaining.isdigit():
                    self.server_budget_remaining = int(remaining)
                if status in (401, 403):
                    raise AuthError(f"{what}: the server refused the API key ({problem})",
                                    hint="check --api-key", status=status, request_id=rid)
                if status == 402:
                    raise BudgetExhausted(f"{what}: the server says this key's query budget is spent ({problem})",
                                          hint="the store keeps every answer received so far", status=status,
                                          request_id=rid)
                if status not in RETRYABLE_STATUS:
                    raise OracleError(f"{what}: {problem}", status=status, request_id=rid)
                wait = retry_after_seconds(resp)
            if attempt >= self.retry.max_retries:
                raise OracleUnavailable(f"{what}: gave up after {attempt + 1} attempts (last: {problem})",
                                        hint="is the server running and reachable?", status=status)
            if wait is not None:
                delay = wait + self._rng.uniform(0, 0.1 * max(wait, 0.05))  # honour Retry-After, desynchronise
            else:
                delay = backoff_delay(attempt, self.retry, self._rng)
            self.stats["retries"] += 1
            self.waits.append((wait, delay))
            attempt += 1
            await asyncio.sleep(delay)


@dataclass
class QueryReport:
    """What :func:`query_all` did."""

    requested: int = 0  # inputs handed in
    skipped: int = 0  # already answered in the store: not sent
    answered: int = 0  # new paid answers stored
    replayed: int = 0  # answers recovered through Idempotency-Key replays (not charged)
    failed: int = 0  # inputs refused for good (413/415/422 ...)
    not_sent: int = 0  # left pending because the campaign stopped
    stop_reason: str | None = None
    server_budget_remaining: int | None = None
    failures: list[str] = field(default_factory=list)


async def query_all(
    client: OracleClient,
    store: QueryStore,
    victim_id: str,
    items: list[tuple[bytes, str]],
    on_progress: Callable[[str], None] | None = None,
) -> QueryReport:
    """Query every ``(png, source)`` not yet answered for ``victim_id``; store each answer at once.

    Stops early (rows stay ``pending``, a rerun resumes them) on budget exhaustion, a refused
    key, or an unreachable server; ``report.stop_reason`` says why.
    """
    report = QueryReport(requested=len(items))
    done = store.answered(victim_id)
    todo: list[tuple[bytes, str, str]] = []
    seen: set[str] = set()
    for png, source in items:
        sha = sha256_hex(png)
        if sha in done or sha in seen:
            report.skipped += 1
            continue
        seen.add(sha)
        todo.append((png, source, sha))
    queue: asyncio.Queue[tuple[bytes, str, str]] = asyncio.Queue()
    for t in todo:
        queue.put_nowait(t)
    stop = asyncio.Event()
    in_flight = [0]  # requests on the wire (each holds one unit of the local budget)

    def progress(kind: str) -> None:
        if on_progress is not None:
            on_progress(kind)

    async def worker() -> None:
        while not stop.is_set():
            try:
                png, source, sha = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            # reserve one paid answer of the local budget per request in flight; if the budget
            # is taken by requests in flight, wait: they may turn out free (replay) or fail
            while client.local_budget is not None and client.local_budget - in_flight[0] <= 0:
                if in_flight[0] == 0 or stop.is_set():
                    if in_flight[0] == 0:
                        report.stop_reason = report.stop_reason or "local budget spent"
                        stop.set()
                    queue.put_nowait((png, source, sha))
                    return
                await asyncio.sleep(0.005)
            store.add_input(png, victim_id, source)  # pending, file on disk, before the request
            store.mark_sent(sha, victim_id)
            in_flight[0] += 1
            try:
                ans = await client.translate(png, idempotency_key=f"{victim_id}:{sha}")
            except (AuthError, BudgetExhausted, OracleUnavailable) as err:
                report.stop_reason = report.stop_reason or err.message
                stop.set()
                queue.put_nowait((png, source, sha))
                return
            except OracleError as err:
                store.record_failure(sha, victim_id, err.message, err.request_id)
                report.failed += 1
                report.failures.append(f"{source or sha[:12]}: {err.message}")
                progress("failed")
                continue
            finally:
                in_flight[0] -= 1
            store.record_answer(sha, victim_id, ans.png, ans.request_id)
            if ans.replay:
                report.replayed += 1
                progress("replayed")
            else:
                report.answered += 1
                progress("answered")

    n_workers = max(1, min(client.concurrency, len(todo)))
    await asyncio.gather(*(worker() for _ in range(n_workers)))
    report.not_sent = queue.qsize()
    report.server_budget_remaining = client.server_budget_remaining
    return report
