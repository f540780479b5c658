"""The caller's HTTP client of a copymark API: budgeted, polite, retrying.

Used by extraction (querying a victim) and by ownership verification (querying a suspect).

:class:`ApiClient` wraps an ``httpx.AsyncClient``: a semaphore bounds concurrent requests,
each request has a timeout, and transient failures (connection errors, timeouts, 408, 429,
5xx) are retried with exponential backoff and "equal jitter" (half fixed, half random), or
after exactly the server's ``Retry-After`` (plus a little jitter) when it sends one.
Permanent refusals are not retried: 401/403 (key) stop everything with :class:`AuthError`,
402 (budget spent) stops everything with :class:`BudgetExhausted`; 413/415/422 fail only that
input.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from copymark.errors import CopymarkError

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class QueryError(CopymarkError):
    """A query failed for good."""

    def __init__(self, message: str, hint: str | None = None, status: int | None = None, request_id: str = ""):
        super().__init__(message, hint)
        self.status = status
        self.request_id = request_id


class AuthError(QueryError):
    """The server refused the API key (401/403): no query can succeed."""


class BudgetExhausted(QueryError):
    """The query budget (the server's or the local one) is spent."""


class ServerUnavailable(QueryError):
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


class ApiClient:
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
            base_url=self.base_url,
            transport=transport,
            headers=self._headers,
            timeout=httpx.Timeout(t, connect=min(10.0, t)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.local_budget = local_budget  # paid answers this client may still receive (None: no limit)
        self.server_budget_remaining: int | None = None
        self.stats: Counter[str] = Counter()
        self.waits: list[tuple[float | None, float]] = []  # (server's Retry-After or None, seconds slept)

    async def __aenter__(self) -> ApiClient:
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
            raise QueryError(f"server answered 200 with {resp.headers.get('content-type')!r}, not image/png")
        self.stats["replayed" if replay else "answered"] += 1
        if self.local_budget is not None and not replay:
            self.local_budget -= 1
        return Answer(
            resp.content, resp.headers.get("x-request-id", ""), self.server_budget_remaining, replay, attempts
        )

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
                    raise AuthError(
                        f"{what}: the server refused the API key ({problem})",
                        hint="check --api-key",
                        status=status,
                        request_id=rid,
                    )
                if status == 402:
                    raise BudgetExhausted(
                        f"{what}: the server says this key's query budget is spent ({problem})",
                        hint="the store keeps every answer received so far",
                        status=status,
                        request_id=rid,
                    )
                if status not in RETRYABLE_STATUS:
                    raise QueryError(f"{what}: {problem}", status=status, request_id=rid)
                wait = retry_after_seconds(resp)
            if attempt >= self.retry.max_retries:
                raise ServerUnavailable(
                    f"{what}: gave up after {attempt + 1} attempts (last: {problem})",
                    hint="is the server running and reachable?",
                    status=status,
                )
            if wait is not None:
                delay = wait + self._rng.uniform(0, 0.1 * max(wait, 0.05))  # honour Retry-After, desynchronise
            else:
                delay = backoff_delay(attempt, self.retry, self._rng)
            self.stats["retries"] += 1
            self.waits.append((wait, delay))
            attempt += 1
            await asyncio.sleep(delay)
