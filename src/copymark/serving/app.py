"""The victim's inference API: a FastAPI app factory.

``create_app(victim, settings)`` returns an app with

* ``POST /v1/translate``: image bytes in (multipart field ``image`` or the raw body), PNG out,
  with ``X-Request-Id`` and ``X-Budget-Remaining`` headers. Optional ``Idempotency-Key``: a
  retried request with the same key and body gets the earlier answer again, not charged and
  without running the victim (so a client that lost an answer can fetch it once more); a
  retry that arrives while the first request is still being answered (the client timed out)
  waits for that answer instead of running the victim a second time. Replies are kept per key
  (``idempotency_cache`` most recent) in the usage SQLite file, so this survives restarts.
* ``GET /v1/health``, ``GET /v1/info`` (task, scale, opaque victim id, limits; never the
  architecture), ``GET /metrics`` (Prometheus text).

Checks, in order, each with a JSON error ``{"error": code, "detail": text}``:
401 missing/malformed ``Authorization: Bearer``; 403 unknown key; 429 token bucket empty
(``Retry-After``); 402 budget exhausted; 413 upload larger than ``max_upload_bytes`` (from
``Content-Length`` and again while streaming); 408 upload too slow; 422 empty body / missing
field; 413 more than ``max_pixels`` (read from the image header, before any pixel is decoded);
415 not an image; 422 corrupt image; 503 queue full (``Retry-After``); 504 victim too slow;
500 victim failure. Only a 200 answer is charged to the key's budget.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
import threading
import time
import uuid
import warnings
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException as StarletteHTTPException

from copymark.errors import ImageError
from copymark.images import decode_image_bytes, encode_png
from copymark.serving.batcher import MicroBatcher, QueueFull
from copymark.serving.limits import TokenBucket, UsageLedger, key_hash
from copymark.serving.metrics import Metrics
from copymark.serving.models import ImageModel
from copymark.serving.settings import KeyPolicy, ServeSettings, load_keys


@dataclass
class ApiError(Exception):
    status: int
    error: str
    detail: str
    headers: dict[str, str] | None = None


def _json_error(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def probe_image_header(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Read width and height from the header only; refuse too many pixels before decoding.

    Raises ApiError 413 (too many pixels / decompression bomb) or 415 (not an image).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # lazy: parses the header, decodes no pixels
            w, h = img.size
    except Image.DecompressionBombError as err:
        raise ApiError(413, "too_many_pixels", f"refused as a decompression bomb: {err}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ApiError(
            415, "unsupported_media", "not a decodable image (send PNG, JPEG, WebP, BMP or TIFF bytes)"
        ) from None
    if w * h > max_pixels:
        raise ApiError(
            413, "too_many_pixels", f"image header declares {w}x{h} = {w * h} pixels; the limit is {max_pixels}"
        )
    if w < 1 or h < 1:
        raise ApiError(422, "corrupt_image", f"image header declares an empty image {w}x{h}")
    return w, h


INLINE_CODEC_PIXELS = 128 * 128  # smaller images are decoded/encoded on the event loop (< ~1 ms)


async def _maybe_thread(pixels: int, fn: Any, *args: Any) -> Any:
    """Run a PNG codec call in a worker thread for large images, inline for small ones: a thread
    hop costs more than coding a small image, and on a busy CPU it can cost a scheduler slice."""
    if pixels <= INLINE_CODEC_PIXELS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


class _State:
    """Everything a running app owns (built by create_app, started by its lifespan)."""

    def __init__(self, victim: ImageModel, settings: ServeSettings):
        self.victim = victim
        self.settings = settings
        keys = load_keys(settings.keys_file)
        self.policies: dict[str, KeyPolicy] = {key_hash(k): v for k, v in keys.items()}
        self.buckets = {kh: TokenBucket(p.rate_per_s, p.burst) for kh, p in self.policies.items()}
        self.ledger = UsageLedger(settings.usage_path(), settings.idempotency_cache)
        self.metrics = Metrics()
        self.batcher = MicroBatcher(
            victim, settings.max_batch, settings.max_wait_ms, settings.queue_size, on_batch=self.metrics.batch_size
        )
        self.inflight: dict[tuple[str, str], asyncio.Future[None]] = {}  # Idempotency-Keys being answered
        self._log_lock = threading.Lock()
        self._log = open(settings.request_log, "a", buffering=1) if settings.request_log else None  # noqa: SIM115

    def log(self, **entry: Any) -> None:
        if self._log is not None:
            with self._log_lock:
                self._log.write(json.dumps(entry, sort_keys=True) + "\n")
                self._log.flush()

    def close(self) -> None:
        self.ledger.close()
        if self._log is not None:
            self._log.close()


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, refusing more than ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise ApiError(400, "bad_request", "Content-Length is not an integer") from None
        if n > limit:
            raise ApiError(413, "upload_too_large", f"upload of {n} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "upload_too_large", f"upload exceeds the limit of {limit} bytes")
            chunks.append(chunk)

    from starlette.requests import ClientDisconnect

    try:
        await asyncio.wait_for(read(), timeout)
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away during the upload") from None
    except TimeoutError:
        raise ApiError(408, "upload_timeout", f"upload not received within {timeout:g} s") from None
    return b"".join(chunks)


async def _image_bytes(request: Request, body: bytes) -> bytes:
    """The image bytes: the multipart field ``image``, or the raw body."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        from starlette.formparsers import MultiPartException, MultiPartParser

        async def stream():  # replay the body we already read under the size limit
            yield body
            yield b""

        try:
            form = await MultiPartParser(request.headers, stream(), max_files=4, max_fields=16).parse()
        except MultiPartException as err:
            raise ApiError(422, "bad_multipart", f"cannot parse multipart body: {err.message}") from None
        part = form.get("image")
        if part is None:
            raise ApiError(422, "missing_field", "multipart body has no field named 'image'")
        data = await part.read() if hasattr(part, "read") else str(part).encode()
        await form.close()
    else:
        data = body
    if not data:
        raise ApiError(
            422, "empty_body", "no image bytes received (send the image as the body or multipart field 'image')"
        )
    return data


def create_app(victim: ImageModel, settings: ServeSettings) -> FastAPI:
    """Build the inference API around ``victim`` with the limits of ``settings``."""
    state = _State(victim, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.batcher.start()
        try:
            yield
        finally:
            await state.batcher.stop()
            state.close()

    app = FastAPI(
        title="copymark victim API", version="1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.copymark = state

    @app.exception_handler(StarletteHTTPException)
    async def _http_exc(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _json_error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_exc(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _json_error(422, "invalid_request", str(exc.errors()))

    @app.exception_handler(Exception)
    async def _any_exc(request: Request, exc: Exception) -> JSONResponse:
        return _json_error(500, "internal_error", f"{type(exc).__name__}: {exc}")

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "queue_depth": state.batcher.depth()}

    @app.get("/v1/info")
    async def info() -> dict[str, Any]:
        s = state.settings
        return {
            "task": victim.task,
            "scale": victim.scale,
            "victim_id": victim.id,
            "output": "image/png",
            "limits": {
                "max_upload_bytes": s.max_upload_bytes,
                "max_pixels": s.max_pixels,
                "inference_timeout_s": s.inference_timeout_s,
            },
            "budget_policy": "only successful answers (HTTP 200) are charged; Idempotency-Key replays are free",
        }

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        state.metrics.queue_depth = state.batcher.depth()
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/translate")
    async def translate(request: Request) -> Response:
        t0 = time.perf_counter()
        rid = uuid.uuid4().hex
        ctx: dict[str, Any] = {"request_id": rid}
        try:
            resp = await _translate(request, rid, ctx)
        except ApiError as e:
            state.metrics.reject(e.error)
            headers = {"X-Request-Id": rid, **(e.headers or {})}
            if "remaining" in ctx:
                headers.setdefault("X-Budget-Remaining", str(ctx["remaining"]))
            resp = _json_error(e.status, e.error, e.detail, headers)
            ctx["error"] = e.error
        except Exception as e:  # a server bug or a storage failure: still a JSON error, counted and logged
            state.metrics.reject("internal_error")
            resp = _json_error(500, "internal_error", f"{type(e).__name__}: {e}", {"X-Request-Id": rid})
            ctx["error"] = "internal_error"
        dt = time.perf_counter() - t0
        state.metrics.request(resp.status_code, dt)
        state.log(time=time.time(), status=resp.status_code, latency_s=round(dt, 6), **ctx)
        return resp

    async def _translate(request: Request, rid: str, ctx: dict[str, Any]) -> Response:
        s = state.settings
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing_key", "send 'Authorization: Bearer <api key>'", {"WWW-Authenticate": "Bearer"})
        kh = key_hash(token.strip())
        policy = state.policies.get(kh)
        if policy is None:
            raise ApiError(403, "invalid_key", "unknown API key")
        ctx["key"] = kh[:12]
        wait = state.buckets[kh].take()
        spent = state.ledger.spent(kh)
        ctx["remaining"] = max(0, policy.budget - spent)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                f"rate limit of {policy.rate_per_s:g}/s exceeded; retry after {wait:.3f} s",
                {"Retry-After": str(max(1, math.ceil(wait))), "X-Retry-After-Ms": str(math.ceil(wait * 1000))},
            )
        idem = request.headers.get("idempotency-key")
        if idem is not None and (not idem or len(idem) > 200):
            raise ApiError(400, "bad_idempotency_key", "Idempotency-Key must have 1 to 200 characters")
        if spent >= policy.budget and idem is None:
            raise ApiError(402, "budget_exhausted", f"the key's budget of {policy.budget} answers is spent")

        state.batcher.arriving += 1
        try:
            body = await _read_body(request, s.max_upload_bytes, s.read_timeout_s)
            data = await _image_bytes(request, body)
        finally:
            state.batcher.arriving -= 1
        body_sha = hashlib.sha256(data).hexdigest()
        ctx["input_sha256"] = body_sha
        owned: asyncio.Future[None] | None = None
        if idem is not None:
            ctx["idempotency_key"] = idem
            replay = await _replay_or_own(kh, idem, body_sha, rid, ctx)
            if isinstance(replay, Response):
                return replay
            owned = replay
        try:
            return await _answer(kh, policy, idem, data, body_sha, rid, ctx)
        finally:
            if owned is not None:
                state.inflight.pop((kh, idem), None)
                owned.set_result(None)

    async def _replay_or_own(
        kh: str, idem: str, body_sha: str, rid: str, ctx: dict[str, Any]
    ) -> Response | asyncio.Future[None]:
        """Replay a cached answer for this Idempotency-Key, or wait for the same request in flight
        (a client retrying after its own timeout) and replay its answer; else own the key."""
        while True:
            cached = state.ledger.cached_reply(kh, idem)
            if cached is not None:
                if cached[0] != body_sha:
                    raise ApiError(422, "idempotency_mismatch", "Idempotency-Key was used before with another image")
                state.metrics.answer(replay=True)
                ctx["replay_of"] = cached[2]
                return Response(
                    cached[1],
                    media_type="image/png",
                    headers={
                        "X-Request-Id": rid,
                        "X-Budget-Remaining": str(ctx["remaining"]),
                        "Idempotent-Replay": "true",
                        "X-Original-Request-Id": cached[2],
                    },
                )
            pending = state.inflight.get((kh, idem))
            if pending is None:
                break
            try:
                await asyncio.wait_for(asyncio.shield(pending), state.settings.inference_timeout_s)
            except TimeoutError:
                raise ApiError(504, "inference_timeout", "the same request is still being answered") from None
            if state.settings.idempotency_cache == 0:
                break
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.inflight[(kh, idem)] = fut
        return fut

    async def _answer(
        kh: str, policy: KeyPolicy, idem: str | None, data: bytes, body_sha: str, rid: str, ctx: dict[str, Any]
    ) -> Response:
        s = state.settings
        if not state.ledger.reserve(kh, policy.budget):
            raise ApiError(402, "budget_exhausted", f"the key's budget of {policy.budget} answers is spent")
        reserved = True
        try:
            state.batcher.arriving += 1
            try:
                w, h = probe_image_header(data, s.max_pixels)
                try:
                    x = await _maybe_thread(w * h, decode_image_bytes, data, "upload", s.max_pixels)
                except ImageError as err:
                    raise ApiError(422, "corrupt_image", err.message) from None
                try:
                    fut = state.batcher.submit(x)
                except QueueFull as err:
                    raise ApiError(
                        503, "queue_full", f"server busy: {err}; retry later", {"Retry-After": "1"}
                    ) from None
            finally:
                state.batcher.arriving -= 1
            try:
                y = await asyncio.wait_for(fut, s.inference_timeout_s)
            except TimeoutError:
                raise ApiError(504, "inference_timeout", f"no answer within {s.inference_timeout_s:g} s") from None
            except QueueFull as err:
                raise ApiError(503, "shutting_down", str(err), {"Retry-After": "1"}) from None
            except Exception as err:
                raise ApiError(500, "victim_error", f"the model failed on this input: {type(err).__name__}") from None
            exp = (3, x.shape[1] * victim.scale, x.shape[2] * victim.scale)
            if tuple(y.shape) != exp:
                raise ApiError(500, "victim_error", f"the model returned shape {tuple(y.shape)}, expected {exp}")
            png = await _maybe_thread(y.shape[-1] * y.shape[-2], encode_png, y.to(torch.float32))
            spent = state.ledger.charge(kh, idem, body_sha, png, rid)
            reserved = False
        finally:
            if reserved:
                state.ledger.release(kh)
        state.metrics.answer()
        ctx["remaining"] = max(0, policy.budget - spent)
        ctx["answer_sha256"] = hashlib.sha256(png).hexdigest()
        return Response(
            png, media_type="image/png", headers={"X-Request-Id": rid, "X-Budget-Remaining": str(ctx["remaining"])}
        )

    return app
