"""``POST /v1/classify``: an image in, the classifier's label (and top-k probabilities) out, as JSON."""

from __future__ import annotations

import hashlib
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from copymark.serving.answering import answer
from copymark.serving.audit import AuditedRoute
from copymark.serving.deps import AuditDep, CallerDep, IdempotencyKey, StateDep, UploadDep
from copymark.serving.http_errors import error_responses
from copymark.serving.models import TOP_K_DEFAULT, TOP_K_MAX, LabelModel
from copymark.serving.routes.openapi import ANSWER_HEADERS, IMAGE_BODY


class ScoredLabel(BaseModel):
    label: int = Field(description="class index (0 .. num_classes - 1)")
    class_name: str | None = Field(description="the class's name, or null when the server knows no names")
    probability: float = Field(description="softmax probability of the class, computed in float64 from the logits")


class LabelAnswer(BaseModel):
    """The answer of ``POST /v1/classify``."""

    label: int = Field(description="the predicted class: the arg max of the logits (the lowest index on a tie)")
    class_name: str | None = Field(description="the predicted class's name, or null when the server knows no names")
    top_k: list[ScoredLabel] | None = Field(
        default=None,
        description="the min(top_k, num_classes) most probable classes, most probable first (ties: lower index "
        "first; the first is always `label`); absent when the server answers labels only",
    )


ANSWER = {
    "model": LabelAnswer,
    "description": "the classifier's answer (charged to the key's budget unless a replay)",
    "headers": ANSWER_HEADERS,
}

router = APIRouter(route_class=AuditedRoute, tags=["model"])


@router.post(
    "/v1/classify",
    summary="Classify one image",
    response_class=Response,
    responses={200: ANSWER, **error_responses(400, 401, 402, 403, 408, 413, 415, 422, 429, 500, 503, 504)},
    openapi_extra={"requestBody": IMAGE_BODY},
)
async def classify(
    state: StateDep,
    caller: CallerDep,
    idem: IdempotencyKey,
    upload: UploadDep,
    audit: AuditDep,
    top_k: Annotated[
        int,
        Query(
            ge=1,
            le=TOP_K_MAX,
            description="how many of the most probable classes to return with their probabilities (at most "
            "num_classes are); ignored when the server answers labels only (see /v1/info `answer`)",
        ),
    ] = TOP_K_DEFAULT,
) -> Response:
    """Send an image of exactly the classifier's input size (see ``/v1/info``; other sizes are
    refused with 422 ``wrong_input_size``, never resized) as PNG, JPEG, WebP, BMP or TIFF bytes;
    get its label, and the top-k classes with probabilities unless the server hides scores.
    Only successful answers are charged; a retry with the same ``Idempotency-Key``, image and
    ``top_k`` is replayed for free (the same JSON). See docs/API.md."""
    model = state.model
    assert isinstance(model, LabelModel)  # create_app routes only label models here
    k = None if state.settings.classify_answer == "label" else min(top_k, model.num_classes)
    fingerprint = upload.sha256 if k is None else hashlib.sha256(f"{upload.sha256}:top_k={k}".encode()).hexdigest()
    return await answer(
        state, caller, idem, upload, audit, encode=partial(model.encode, top_k=k), fingerprint=fingerprint
    )
