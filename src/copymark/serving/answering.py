"""Answering one request: Idempotency-Key replays, budget reservation, decoding, the model, the charge.

Budget: a request first *reserves* one answer (so concurrent requests of a key with one query
left cannot all be answered); the reservation becomes a charge only when the answer is encoded,
and is released on any failure. An ``Idempotency-Key`` retried with the same image gets the
stored answer again, free and without running the model; a retry that arrives while the first
is still being answered waits for that answer. Replies are kept per key in the usage SQLite
file (``idempotency_cache`` most recent), so this survives restarts.

Inputs the model refuses (:meth:`~copymark.serving.models.ServedModel.input_refusal`; a
classifier refuses any size but its own and image modes that do not convert to RGB exactly)
are a 422 (``wrong_input_size``, ``unsupported_image_mode``) from the image header, before any
pixel is decoded, and again after decoding (EXIF orientation may turn an image).

Model failures, each a JSON error and never charged: 500 ``victim_error`` (the model raised,
or returned something other than it declares), 500 ``model_crashed`` (its worker process
died), 504 ``inference_timeout``, 503 ``model_unavailable`` / ``queue_full``. An input that
crashed or hung the model is remembered (by hash) and refused with the same error without
being run again, so a client cannot make the server restart its model over and over for free.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import torch
from fastapi import Response

from copymark.serving.batcher import QueueFull
from copymark.serving.deps import Caller, Upload
from copymark.serving.execution import InferenceTimeout, ModelCrashed, ModelFailed, ModelUnavailable
from copymark.serving.http_errors import ApiError
from copymark.serving.models import ModelOutputError
from copymark.serving.state import AppState
from copymark.serving.uploads import decode_upload, probe_image_header

INLINE_CODEC_PIXELS = 128 * 128  # smaller images are decoded/encoded on the event loop (< ~1 ms)


async def _maybe_thread(pixels: int, fn: Any, *args: Any) -> Any:
    """Run a codec call in a worker thread for large images, inline for small ones: a thread
    hop costs more than coding a small image, and on a busy CPU it can cost a scheduler slice."""
    if pixels <= INLINE_CODEC_PIXELS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


Encoder = Callable[[torch.Tensor], bytes]


async def answer(
    state: AppState,
    caller: Caller,
    idem: str | None,
    upload: Upload,
    audit: dict[str, Any],
    encode: Encoder | None = None,
    fingerprint: str | None = None,
) -> Response:
    """The model's answer to ``upload`` for ``caller`` (or a replay of it).

    ``encode`` turns the model's answer (wire form) into the body (default: the model's own
    :meth:`~copymark.serving.models.ServedModel.encode`); ``fingerprint`` identifies the
    request for Idempotency-Key replays (default: the upload's SHA-256; a route whose answer
    depends on parameters, such as ``top_k``, folds them in, so a retry with other parameters
    is refused rather than given the first answer).
    """
    fingerprint = fingerprint or upload.sha256
    owned: asyncio.Future[None] | None = None
    if idem is not None:
        audit["idempotency_key"] = idem
        replay = await _replay_or_own(state, caller.key_hash, idem, fingerprint, audit)
        if isinstance(replay, Response):
            return replay
        owned = replay
    try:
        return await _answer(state, caller, idem, upload, audit, encode or state.model.encode, fingerprint)
    finally:
        if owned is not None:
            state.inflight.pop((caller.key_hash, idem), None)  # type: ignore[arg-type]
            owned.set_result(None)


async def _replay_or_own(
    state: AppState, kh: str, idem: str, body_sha: str, audit: dict[str, Any]
) -> Response | asyncio.Future[None]:
    """Replay a cached answer for this Idempotency-Key, or wait for the same request in flight
    (a client retrying after its own timeout) and replay its answer; else own the key."""
    while True:
        cached = state.ledger.cached_reply(kh, idem)
        if cached is not None:
            if cached[0] != body_sha:
                raise ApiError(
                    422,
                    "idempotency_mismatch",
                    "Idempotency-Key was used before with another image (or other query parameters)",
                )
            state.metrics.answer(replay=True)
            audit["replay_of"] = cached[2]
            return Response(
                cached[1],
                media_type=state.model.media_type,
                headers={"Idempotent-Replay": "true", "X-Original-Request-Id": cached[2]},
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
    state: AppState,
    caller: Caller,
    idem: str | None,
    upload: Upload,
    audit: dict[str, Any],
    encode: Encoder,
    fingerprint: str,
) -> Response:
    s, model = state.settings, state.model
    earlier = state.poisoned(upload.sha256)
    if earlier is not None:
        detail = f"this input made the model fail before ({earlier.detail}); it is not run again"
        raise ApiError(earlier.status, earlier.error, detail)
    if not state.ledger.reserve(caller.key_hash, caller.policy.budget):
        raise ApiError(402, "budget_exhausted", f"the key's budget of {caller.policy.budget} answers is spent")
    reserved = True
    try:
        state.batcher.arriving += 1
        try:
            header = probe_image_header(upload.data, s)
            _refuse(model.input_refusal(header.width, header.height, header.mode, header.transparent))
            x = await _maybe_thread(header.width * header.height, decode_upload, upload.data, s)
            _refuse(model.input_refusal(x.shape[-1], x.shape[-2]))  # EXIF orientation may have turned it
            try:
                fut = state.batcher.submit(x)
            except QueueFull as err:
                raise ApiError(503, "queue_full", f"server busy: {err}; retry later", {"Retry-After": "1"}) from None
        finally:
            state.batcher.arriving -= 1
        row = await _model_answer(state, fut, upload.sha256)
        expected = model.output_shape(x.shape[-2], x.shape[-1])
        if tuple(row.shape) != expected or row.dtype != model.wire_dtype:
            raise ApiError(
                500, "victim_error", f"the model answered {tuple(row.shape)} {row.dtype}, expected {expected}"
            )
        body = await _maybe_thread(row.numel() // max(1, row.shape[0]), encode, row)
        spent = state.ledger.charge(caller.key_hash, idem, fingerprint, body, audit["request_id"])
        reserved = False
    finally:
        if reserved:
            state.ledger.release(caller.key_hash)
    state.metrics.answer()
    audit["remaining"] = max(0, caller.policy.budget - spent)
    audit["answer_sha256"] = hashlib.sha256(body).hexdigest()
    return Response(body, media_type=model.media_type)


def _refuse(refusal: tuple[str, str] | None) -> None:
    """The model's refusal of an input (its size or image mode) as a 422."""
    if refusal is not None:
        raise ApiError(422, *refusal)


async def _model_answer(state: AppState, fut: asyncio.Future, input_sha: str) -> Any:
    """Wait for the batcher's result; model failures become API errors (crashes and hangs remembered)."""
    timeout = state.settings.inference_timeout_s
    try:
        return await asyncio.wait_for(fut, timeout)
    except TimeoutError:
        raise ApiError(504, "inference_timeout", f"no answer within {timeout:g} s") from None
    except InferenceTimeout as err:
        e = ApiError(504, "inference_timeout", str(err))
        if not err.alone:  # the batch hung: any of its images may be the culprit, none is remembered
            raise e from None
    except ModelCrashed as err:
        e = ApiError(500, "model_crashed", f"the model crashed on this input: {err}")
    except ModelUnavailable as err:
        raise ApiError(503, "model_unavailable", f"{err.message}; retry later", {"Retry-After": "5"}) from None
    except QueueFull as err:
        raise ApiError(503, "shutting_down", str(err), {"Retry-After": "1"}) from None
    except ModelOutputError as err:
        raise ApiError(500, "victim_error", str(err)) from None
    except ModelFailed as err:
        detail = err.message if err.kind == "ModelOutputError" else f"the model failed on this input: {err.kind}"
        raise ApiError(500, "victim_error", detail) from None
    except Exception as err:  # noqa: BLE001 - an inline model raised
        raise ApiError(500, "victim_error", f"the model failed on this input: {type(err).__name__}") from None
    state.remember_poison(input_sha, e)
    raise e
