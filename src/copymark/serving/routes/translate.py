"""``POST /v1/translate``: an image in, the image model's answer out (PNG)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from copymark.serving.answering import answer
from copymark.serving.audit import AuditedRoute
from copymark.serving.deps import AuditDep, CallerDep, IdempotencyKey, StateDep, UploadDep
from copymark.serving.http_errors import error_responses
from copymark.serving.routes.openapi import ANSWER_HEADERS, BINARY, IMAGE_BODY

ANSWER = {
    "description": "the model's answer as an 8-bit RGB PNG (charged to the key's budget unless a replay)",
    "content": {"image/png": {"schema": BINARY}},
    "headers": ANSWER_HEADERS,
}

router = APIRouter(route_class=AuditedRoute, tags=["model"])


@router.post(
    "/v1/translate",
    summary="Translate one image",
    response_class=Response,
    responses={200: ANSWER, **error_responses(400, 401, 402, 403, 408, 413, 415, 422, 429, 500, 503, 504)},
    openapi_extra={"requestBody": IMAGE_BODY},
)
async def translate(
    state: StateDep, caller: CallerDep, idem: IdempotencyKey, upload: UploadDep, audit: AuditDep
) -> Response:
    """Send an image (PNG, JPEG, WebP, BMP, TIFF); get the model's answer, ``scale`` times its size
    (see ``/v1/info``). Only successful answers are charged; retries with the same
    ``Idempotency-Key`` and image are replayed for free. See docs/API.md."""
    return await answer(state, caller, idem, upload, audit)
