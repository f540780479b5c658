"""``POST /v1/translate``: an image in, the image model's answer out (PNG)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from copymark.serving.answering import answer
from copymark.serving.audit import AuditedRoute
from copymark.serving.deps import AuditDep, CallerDep, IdempotencyKey, StateDep, UploadDep
from copymark.serving.http_errors import error_responses

BINARY = {"type": "string", "format": "binary"}
UPLOAD_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/tiff", "application/octet-stream")
REQUEST_BODY = {
    "required": True,
    "description": "the image: its bytes as the body, or the multipart form field 'image'",
    "content": {
        **{t: {"schema": BINARY} for t in UPLOAD_TYPES},
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {"image": BINARY}}},
    },
}
ANSWER = {
    "description": "the model's answer as an 8-bit RGB PNG (charged to the key's budget unless a replay)",
    "content": {"image/png": {"schema": BINARY}},
    "headers": {
        "X-Request-Id": {
            "description": "this request's id (also in the server's audit log)",
            "schema": {"type": "string"},
        },
        "X-Budget-Remaining": {"description": "answers left on the key", "schema": {"type": "integer"}},
    },
}

router = APIRouter(route_class=AuditedRoute, tags=["model"])


@router.post(
    "/v1/translate",
    summary="Translate one image",
    response_class=Response,
    responses={200: ANSWER, **error_responses(400, 401, 402, 403, 408, 413, 415, 422, 429, 500, 503, 504)},
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def translate(
    state: StateDep, caller: CallerDep, idem: IdempotencyKey, upload: UploadDep, audit: AuditDep
) -> Response:
    """Send an image (PNG, JPEG, WebP, BMP, TIFF); get the model's answer, ``scale`` times its size
    (see ``/v1/info``). Only successful answers are charged; retries with the same
    ``Idempotency-Key`` and image are replayed for free."""
    return await answer(state, caller, idem, upload, audit)
