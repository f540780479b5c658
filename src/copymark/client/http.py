"""The caller's HTTP client of a copymark API: budgeted, paced, retrying.

Used by extraction (querying a victim: :meth:`ApiClient.translate`, PNG answers) and by
ownership verification (querying a suspect classifier: :meth:`ApiClient.classify`, label
answers). The API itself is described in docs/API.md.

:class:`ApiClient` wraps an ``httpx.AsyncClient``; a semaphore bounds the requests in flight
and each request has a timeout. Three things keep it within the limits it is given:

* **One pace for all workers** (:class:`RateGate`). Every request of a client passes one shared
  gate. After a 429 the gate holds *all* requests until the time the server named
  (``X-Retry-After-Ms``, else ``Retry-After``) and from then on lets them out one at a time,
  spaced by an interval learned from the server's hints (see :class:`RateGate`), so the
  workers do not all fire again at the same instant and the 429s stop after a few.
* **A rate-limit wait is not a failure.** A 429 does not count as a failed attempt; a request
  gives up on the rate limit only when the waits the server asked of it add up to more than
  ``RetryPolicy.max_rate_wait_s`` (or one wait alone is longer than that).
* **Never a request the budget cannot pay for.** The client remembers ``X-Budget-Remaining``
  and admits a paid request only while ``remaining - paid requests in flight > 0`` (and the
  local budget, if any, allows it); a request that may be a free Idempotency-Key replay of an
  answer the server kept is admitted anyway (``may_replay``).

Transient failures (connection errors, timeouts, 408, 5xx) are retried up to
``RetryPolicy.max_retries`` times with exponential backoff and "equal jitter" (half fixed,
half random), or after the server's ``Retry-After`` when it sends one. Permanent refusals are
not retried: 401/403 (key) stop everything with :class:`AuthError`, 402 (budget spent) with
:class:`BudgetExhausted`; 413/415/422 fail only that input. When a request gives up, the
error says why, and its hint matches the cause: :class:`RateLimited` (the key's rate),
:class:`ServerFailing` (the server answers, with errors), :class:`Unreachable` (no answer at
all: "is the server running and reachable?"). All three are :class:`ServerUnavailable`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from pydantic import Field

from copymark.config import StrictModel
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

    def __init__(self, message: str, hint: str | None = None, status: int | None = None, request_id: str = ""):
        super().__init__(message, hint, status, request_id)
        self.local = False  # True: this client's own limit (local_budget), not the server's


class ServerUnavailable(QueryError):
    """A query gave up: the server could not serve it through every retry or wait allowed.

    ``cause`` says why: ``"unreachable"`` (no HTTP answer: connection refused or reset),
    ``"timeout"`` (connected, but no answer within the timeout), ``"server_error"`` (the server
    kept answering 5xx/408) or ``"rate_limit"`` (the key's rate limit would hold it back longer
    than allowed). Raised as one of the subclasses below.
    """

    cause = "unreachable"


class Unreachable(ServerUnavailable):
    """No HTTP answer through every retry: connection refused or reset, or timeouts."""

    cause = "unreachable"


class ServerFailing(ServerUnavailable):
    """The server answered, but with 5xx/408 errors, through every retry."""

    cause = "server_error"


class RateLimited(ServerUnavailable):
    """The key's rate limit (429) would hold the request back longer than ``max_rate_wait_s``."""

    cause = "rate_limit"


@dataclass
class Answer:
    """An image answer of ``POST /v1/translate``."""

    png: bytes
    request_id: str
    budget_remaining: int | None
    replay: bool
    attempts: int

    @property
    def body(self) -> bytes:
        """The bytes a query store keeps (the PNG)."""
        return self.png


@dataclass(frozen=True)
class ScoredLabel:
    """One of the top-k classes of a label answer."""

    label: int
    class_name: str | None
    probability: float


@dataclass
class LabelAnswer:
    """A classifier's answer of ``POST /v1/classify``: the label, its class name if the server
    knows names, and the top-k classes with probabilities unless the server hides scores
    (``top_k`` None). ``body`` is the JSON exactly as received (what a query store keeps; the
    evidence of what the server said). See :func:`parse_label_answer`."""

    label: int
    class_name: str | None
    top_k: tuple[ScoredLabel, ...] | None
    body: bytes
    request_id: str = ""
    budget_remaining: int | None = None
    replay: bool = False
    attempts: int = 0


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_name(v: object) -> bool:
    return v is None or isinstance(v, str)


def parse_label_answer(body: bytes) -> LabelAnswer:
    """The JSON of a label answer (from the server, or read back from a query store) ->
    :class:`LabelAnswer`; anything else is a :class:`QueryError` saying what is wrong."""

    def bad(why: str) -> QueryError:
        return QueryError(f"not a label answer ({why}): {body[:120]!r}", status=200)

    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad("not JSON") from None
    if not isinstance(obj, dict) or not _is_int(obj.get("label")) or not _is_name(obj.get("class_name")):
        raise bad("needs an integer 'label' >= 0 and a 'class_name' string or null")
    top: tuple[ScoredLabel, ...] | None = None
    raw = obj.get("top_k")
    if raw is not None:
        if not isinstance(raw, list) or not raw:
            raise bad("'top_k' must be a non-empty list")
        items = []
        for t in raw:
            p = t.get("probability") if isinstance(t, dict) else None
            if (
                not isinstance(t, dict)
                or not _is_int(t.get("label"))
                or not _is_name(t.get("class_name"))
                or not isinstance(p, (int, float))
                or isinstance(p, bool)
                or not 0.0 <= p <= 1.0
            ):
                raise bad("each 'top_k' entry needs a 'label', a 'class_name' and a 'probability' in [0, 1]")
            items.append(ScoredLabel(t["label"], t["class_name"], float(p)))
        top = tuple(items)
    return LabelAnswer(obj["label"], obj["class_name"], top, bytes(body))


class RetryPolicy(StrictModel):
    """How hard to try, and how long to wait.

    ``max_retries``: retries after the first attempt for *transient failures* (connection
    errors, timeouts, 408, 5xx), with exponential backoff between ``backoff_base_s`` and
    ``backoff_max_s``. ``max_rate_wait_s``: the total of the waits a request may be asked for
    by the server's rate limit (429) before it gives up; rate-limit waits are never counted as
    failed attempts. ``timeout_s``: per request.
    """

    max_retries: int = Field(default=8, ge=0)
    backoff_base_s: float = Field(default=0.25, gt=0)
    backoff_max_s: float = Field(default=20.0, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)
    max_rate_wait_s: float = Field(default=300.0, ge=0)


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


def budget_remaining(resp: httpx.Response) -> int | None:
    """``X-Budget-Remaining`` as an int (None when absent or malformed)."""
    v = resp.headers.get("x-budget-remaining")
    return int(v) if v is not None and v.isdigit() else None


def _error_text(resp: httpx.Response) -> str:
    try:
        j = resp.json()
        return f"{j.get('error', '?')}: {j.get('detail', '')}"
    except ValueError:
        return resp.text[:200]


class RateGate:
    """One pace for every request of a client, learned from the server's 429 hints.

    State: ``next_at`` (no request starts before this monotonic time) and ``interval`` (the
    spacing between request starts; 0 until the first 429, so an unlimited key is never
    slowed down). :meth:`wait` lets one request out at ``next_at`` and moves ``next_at`` one
    interval on; requests that wake together re-check, so they leave one at a time.

    Learning: a token-bucket server at rate ``r`` answers a 429 with the time until its next
    token, ``w = (1 - tokens) / r``. If the previous request was answered and this one was
    sent ``interval`` later, the bucket had at least ``interval * r`` tokens, so
    ``w <= 1/r - interval``: ``interval + w`` never passes the server's ``1/r`` (beyond
    timing noise) and reaches it after the first 429 that follows an answer sent at the
    token's time. So the interval grows by ``w`` on a 429, but only for a request sent under
    the current interval (``epoch``): the 429s of requests already on their way when the
    interval changed carry old news and only move ``next_at``. Each 429 also holds every
    request until the time the server named.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_interval_s: float = 60.0):
        self.clock = clock
        self.max_interval_s = max_interval_s
        self.interval = 0.0
        self.next_at = 0.0
        self.epoch = 0

    async def wait(self) -> int:
        """Wait for this request's turn; return the epoch it is sent under. No await when free."""
        while True:
            now = self.clock()
            if now >= self.next_at:
                self.next_at = now + self.interval
                return self.epoch
            await asyncio.sleep(self.next_at - now)

    def on_429(self, epoch: int, wait_s: float) -> None:
        """A request sent under ``epoch`` got a 429 asking to wait ``wait_s`` seconds."""
        self.next_at = max(self.next_at, self.clock() + wait_s)
        if epoch == self.epoch:
            self.interval = min(self.max_interval_s, self.interval + wait_s)
            self.epoch += 1

    def hold(self, wait_s: float) -> None:
        """The server asked every request to wait (e.g. 503 with Retry-After): pause, learn nothing."""
        self.next_at = max(self.next_at, self.clock() + wait_s)

    @property
    def rate_per_s(self) -> float | None:
        """The learned request rate (None before any 429)."""
        return 1.0 / self.interval if self.interval > 0 else None


class ApiClient:
    """Async HTTP client of one victim API with one API key (see the module docstring)."""

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
        self.gate = RateGate()
        self.local_budget = local_budget  # paid answers this client may still receive (None: no limit)
        self.server_budget_remaining: int | None = None  # the lowest X-Budget-Remaining seen
        self._in_flight = 0  # admitted requests (each may be charged), not yet finished
        self._admission = asyncio.Condition()
        self.stats: Counter[str] = Counter()
        self.waits: list[tuple[float | None, float]] = []  # (server's Retry-After or None, seconds until re-sent)

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

        resp, _ = await self._with_retries(once, what="GET /v1/info", paced=False)
        return resp.json()

    # -- budget admission ------------------------------------------------------------------------

    async def _admit(self, may_replay: bool) -> None:
        """Wait until the budgets can pay for one more request in flight, then count it in.

        A request that ``may_replay`` is not held back by the server's budget (a replay is free,
        and a 402 costs nothing), only by the local one.
        """
        async with self._admission:
            while True:
                local_ok = self.local_budget is None or self.local_budget - self._in_flight > 0
                remaining = self.server_budget_remaining
                server_ok = may_replay or remaining is None or remaining - self._in_flight > 0
                if local_ok and server_ok:
                    self._in_flight += 1
                    return
                if self._in_flight == 0:
                    raise self._budget_error(local=not local_ok)
                await self._admission.wait()  # requests in flight may turn out free (replays) or fail

    def _budget_error(self, local: bool) -> BudgetExhausted:
        if local:
            err = BudgetExhausted("local query budget spent", hint="raise --budget to query more")
            err.local = True
            return err
        return BudgetExhausted(
            f"the server says this key's query budget is spent (X-Budget-Remaining: {self.server_budget_remaining});"
            " not sending more",
            hint="the store keeps every answer received so far; ask the API's owner for a larger budget",
        )

    async def _release(self) -> None:
        async with self._admission:
            self._in_flight -= 1
            self._admission.notify_all()

    def _note_budget(self, resp: httpx.Response) -> None:
        b = budget_remaining(resp)
        if b is not None:
            # responses of concurrent requests arrive out of order: the lowest value is the newest
            self.server_budget_remaining = (
                b if self.server_budget_remaining is None else min(b, self.server_budget_remaining)
            )

    # -- queries ----------------------------------------------------------------------------------

    async def translate(
        self,
        png: bytes,
        idempotency_key: str | None = None,
        may_replay: bool = False,
        on_send: Callable[[], None] | None = None,
    ) -> Answer:
        """Send one image; return the victim's PNG answer (pacing, admitting and retrying it).

        ``may_replay``: this exact request (same ``idempotency_key``) may have been answered
        before, so it may be a free replay; it is sent even when the known budget is spent.
        ``on_send`` is called once, just before the request first goes out (a query store
        counts the attempt there).
        """
        resp, attempts, replay = await self._query(
            "/v1/translate", png, "image/png", idempotency_key, may_replay, on_send
        )
        return Answer(
            resp.content, resp.headers.get("x-request-id", ""), self.server_budget_remaining, replay, attempts
        )

    async def classify(
        self,
        png: bytes,
        idempotency_key: str | None = None,
        top_k: int | None = None,
        may_replay: bool = False,
        on_send: Callable[[], None] | None = None,
    ) -> LabelAnswer:
        """Send one image to a classifier (``POST /v1/classify``); return its parsed label answer.

        The same pacing, budget admission, retries and typed errors as :meth:`translate` (and
        the same ``may_replay`` / ``on_send``). ``top_k``: how many of the most probable classes
        to ask for (the server's default when None; a label-only server ignores it). The image
        must be exactly the classifier's input size (``/v1/info``): the server refuses others
        with 422, which fails this input only (:class:`QueryError`).
        """
        params = {"top_k": str(top_k)} if top_k is not None else None
        resp, attempts, replay = await self._query(
            "/v1/classify", png, "application/json", idempotency_key, may_replay, on_send, params
        )
        parsed = parse_label_answer(resp.content)
        parsed.request_id = resp.headers.get("x-request-id", "")
        parsed.budget_remaining = self.server_budget_remaining
        parsed.replay, parsed.attempts = replay, attempts
        return parsed

    async def usage(self) -> dict[str, object]:
        """``GET /v1/usage``: this key's budget, spent, remaining, rate_per_s and burst (free;
        it takes one rate-limit token on the server, so it is paced like a query)."""

        async def once() -> httpx.Response:
            return await self._client.get("/v1/usage")

        resp, _ = await self._with_retries(once, what="GET /v1/usage", paced=True)
        return resp.json()

    async def _query(
        self,
        path: str,
        png: bytes,
        media_type: str,
        idempotency_key: str | None,
        may_replay: bool,
        on_send: Callable[[], None] | None,
        params: dict[str, str] | None = None,
    ) -> tuple[httpx.Response, int, bool]:
        """One paid query: admitted against the budgets, paced, retried; ``(200 response,
        sends, replay)``. A 200 of another media type than ``media_type`` is a QueryError."""
        await self._admit(may_replay)
        headers = {"Content-Type": "application/octet-stream"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key

        first = True

        async def once() -> httpx.Response:
            nonlocal first
            if first and on_send is not None:
                on_send()
            first = False
            self.stats["sent"] += 1
            return await self._client.post(path, content=png, headers=headers, params=params)

        try:
            resp, attempts = await self._with_retries(once, what=f"POST {path}", paced=True)
            replay = resp.headers.get("idempotent-replay") == "true"
            if resp.headers.get("content-type", "").split(";")[0] != media_type:
                raise QueryError(
                    f"POST {path}: server answered 200 with {resp.headers.get('content-type')!r}, not {media_type}",
                    hint="is the URL the right kind of model? /v1/info says its task",
                    status=200,
                    request_id=resp.headers.get("x-request-id", ""),
                )
            self.stats["replayed" if replay else "answered"] += 1
            if self.local_budget is not None and not replay:
                self.local_budget -= 1
        finally:
            await self._release()
        return resp, attempts, replay

    async def _with_retries(
        self, send: Callable[[], Awaitable[httpx.Response]], what: str, paced: bool
    ) -> tuple[httpx.Response, int]:
        """Send until a 200; return it and the number of sends. Raises the errors of the module doc.

        ``paced``: the request goes through the client's :class:`RateGate` (queries do; ``info``
        is not rate-limited).
        """
        failures = 0  # transient failures so far (429s are not failures)
        rate_waited = 0.0  # total of the waits the server's rate limit asked of this request
        n429 = 0
        sends = 0
        asked: tuple[float | None, float] | None = None  # (server's wait, when asked) of the last 429
        while True:
            resp: httpx.Response | None = None
            async with self._sem:  # the gate is passed holding a slot, so at most `concurrency` wait there
                epoch = await self.gate.wait() if paced else 0
                if asked is not None:
                    self.waits.append((asked[0], time.monotonic() - asked[1]))
                    asked = None
                sends += 1
                try:
                    resp = await send()
                except httpx.TransportError as err:  # connect refused/reset, timeouts, protocol errors
                    self.stats[f"error_{type(err).__name__}"] += 1
                    problem = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                    timed_out = isinstance(err, httpx.TimeoutException) and not isinstance(err, httpx.ConnectTimeout)
                    cause = "timeout" if timed_out else "unreachable"
            server_wait: float | None = None
            if resp is not None:
                if resp.status_code == 200:
                    self._note_budget(resp)
                    return resp, sends
                status = resp.status_code
                self.stats[f"status_{status}"] += 1
                rid = resp.headers.get("x-request-id", "")
                problem = f"HTTP {status} {_error_text(resp)}"
                self._note_budget(resp)
                if status in (401, 403):
                    raise AuthError(
                        f"{what}: the server refused the API key ({problem})",
                        hint="check --api-key (or $COPYMARK_API_KEY)",
                        status=status,
                        request_id=rid,
                    )
                if status == 402:
                    raise BudgetExhausted(
                        f"{what}: the server says this key's query budget is spent ({problem})",
                        hint="the store keeps every answer received so far; ask the API's owner for a larger budget",
                        status=status,
                        request_id=rid,
                    )
                if status not in RETRYABLE_STATUS:
                    raise QueryError(f"{what}: {problem}", status=status, request_id=rid)
                server_wait = retry_after_seconds(resp)
                if status == 429:  # the key's rate limit: wait as asked; not a failed attempt
                    w = server_wait if server_wait is not None else backoff_delay(min(n429, 6), self.retry, self._rng)
                    if rate_waited + w > self.retry.max_rate_wait_s:
                        raise self._rate_limited(what, problem, rate_waited, w, rid)
                    rate_waited += w
                    n429 += 1
                    self.stats["rate_limited"] += 1
                    asked = (server_wait, time.monotonic())
                    if paced:
                        self.gate.on_429(epoch, w)  # the gate holds this request (and all others) until its turn
                    else:
                        await asyncio.sleep(w)
                    continue
                cause = "server_error"
                if server_wait is not None:
                    self.gate.hold(server_wait)  # e.g. 503 queue full: the whole client pauses
            if failures >= self.retry.max_retries:
                raise self._gave_up(what, sends, problem, cause, resp)
            if server_wait is not None:
                delay = server_wait + self._rng.uniform(0, 0.1 * max(server_wait, 0.05))  # as asked, desynchronised
            else:
                delay = backoff_delay(failures, self.retry, self._rng)
            self.stats["retries"] += 1
            self.waits.append((server_wait, delay))
            failures += 1
            await asyncio.sleep(delay)

    def _rate_limited(self, what: str, problem: str, waited: float, asked: float, rid: str) -> RateLimited:
        rate = self.gate.rate_per_s
        pace = f" (this client was paced at {rate:.3g} requests/s from the server's hints)" if rate else ""
        return RateLimited(
            f"{what}: held back by the key's rate limit: waiting {asked:.3g} s more, after {waited:.3g} s, "
            f"would pass --max-rate-wait {self.retry.max_rate_wait_s:g} s (last: {problem})",
            hint=f"this is the key's rate limit{pace}, not a failure: raise --max-rate-wait to wait longer, "
            "or ask the API's owner for a higher rate",
            status=429,
            request_id=rid,
        )

    def _gave_up(self, what: str, sends: int, problem: str, cause: str, resp: httpx.Response | None) -> QueryError:
        msg = f"{what}: gave up after {sends} attempts (last: {problem})"
        status = resp.status_code if resp is not None else None
        if cause == "server_error":
            assert status is not None
            if status == 503:
                hint = "the server is reachable but overloaded: lower --concurrency, or rerun later to resume"
            elif status in (408, 504):
                hint = "the server is reachable but the model answers too slowly for its own time limit: rerun later"
            else:
                hint = "the server is reachable but fails on this request: see the server's log; rerun to resume"
            return ServerFailing(msg, hint=hint, status=status)
        if cause == "timeout":
            err = Unreachable(
                msg,
                hint=f"the server took the connection but sent no answer within --timeout {self.retry.timeout_s:g} s: "
                "raise --timeout if the model is slow, or lower --concurrency",
            )
            err.cause = "timeout"
            return err
        return Unreachable(msg, hint=f"is the server running and reachable at {self.base_url}?")
