"""FastAPI dependencies of the API: the app state, the caller's key (auth, rate limit, budget),
the Idempotency-Key header and the upload, each an ``Annotated[..., Depends(...)]`` alias.

Checks happen in the order a handler declares these, each with a JSON error: 401 missing or
malformed ``Authorization: Bearer``; 403 unknown key; 429 the key's token bucket is empty
(``Retry-After``, ``X-Retry-After-Ms``); 400 an Idempotency-Key outside 1-200 characters; 402
budget exhausted (a request with an Idempotency-Key may still fetch a replay); then the upload
(:mod:`copymark.serving.uploads`). What they learn goes into the request's audit record.
All are ``async``: FastAPI runs plain functions in a thread pool, a thread hop per request.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from copymark.serving.http_errors import ApiError
from copymark.serving.limits import key_hash
from copymark.serving.settings import KeyPolicy
from copymark.serving.state import AppState
from copymark.serving.uploads import image_bytes, read_body


async def get_state(request: Request) -> AppState:
    return request.app.state.copymark


async def get_audit(request: Request) -> dict[str, Any]:
    """The request's audit record (request id, key hash, input hash, ...; see :mod:`.audit`)."""
    return request.state.audit


StateDep = Annotated[AppState, Depends(get_state)]
AuditDep = Annotated[dict[str, Any], Depends(get_audit)]

bearer = HTTPBearer(auto_error=False, description="an API key from the server's keys file")


@dataclass
class Caller:
    """The authenticated key of a request."""

    key_hash: str
    policy: KeyPolicy


async def authorize(
    state: StateDep, audit: AuditDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Caller:
    """401 / 403 / 429: a known key whose token bucket has a token."""
    if credentials is None or not credentials.credentials.strip():
        raise ApiError(401, "missing_key", "send 'Authorization: Bearer <api key>'", {"WWW-Authenticate": "Bearer"})
    kh = key_hash(credentials.credentials.strip())
    policy = state.policies.get(kh)
    if policy is None:
        raise ApiError(403, "invalid_key", "unknown API key")
    audit["key"] = kh[:12]
    wait = state.buckets[kh].take()
    audit["remaining"] = max(0, policy.budget - state.ledger.spent(kh))
    if wait > 0:
        raise ApiError(
            429,
            "rate_limited",
            f"rate limit of {policy.rate_per_s:g}/s exceeded; retry after {wait:.3f} s",
            {"Retry-After": str(max(1, math.ceil(wait))), "X-Retry-After-Ms": str(math.ceil(wait * 1000))},
        )
    return Caller(kh, policy)


async def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="1-200 characters; a retry with the same key and image gets the first answer again, "
            "free and without running the model",
        ),
    ] = None,
) -> str | None:
    if key is not None and (not key or len(key) > 200):
        raise ApiError(400, "bad_idempotency_key", "Idempotency-Key must have 1 to 200 characters")
    return key


IdempotencyKey = Annotated[str | None, Depends(idempotency_key)]


async def within_budget(caller: Annotated[Caller, Depends(authorize)], idem: IdempotencyKey, audit: AuditDep) -> Caller:
    """402 when the key's budget is spent (unless an Idempotency-Key may fetch a free replay)."""
    if audit["remaining"] <= 0 and idem is None:
        raise ApiError(402, "budget_exhausted", f"the key's budget of {caller.policy.budget} answers is spent")
    return caller


CallerDep = Annotated[Caller, Depends(within_budget)]


@dataclass
class Upload:
    data: bytes
    sha256: str


async def read_upload(request: Request, state: StateDep, audit: AuditDep) -> Upload:
    """The image bytes under the upload limits (413 / 408 / 422), and their SHA-256."""
    s = state.settings
    state.batcher.arriving += 1  # tells the batcher that more is on its way
    try:
        body = await read_body(request, s.max_upload_bytes, s.read_timeout_s)
        data = await image_bytes(request, body)
    finally:
        state.batcher.arriving -= 1
    sha = hashlib.sha256(data).hexdigest()
    audit["input_sha256"] = sha
    return Upload(data, sha)


UploadDep = Annotated[Upload, Depends(read_upload)]
