"""``GET /v1/health`` and ``GET /v1/info``: liveness, and what a caller may know about the model."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from copymark.serving.deps import StateDep
from copymark.serving.models import TOP_K_DEFAULT, TOP_K_MAX, LabelModel

router = APIRouter(tags=["service"])


class Health(BaseModel):
    status: Literal["ok"] = Field(description="always 'ok' when the server answers")
    queue_depth: int = Field(description="requests waiting for the model")


class Limits(BaseModel):
    max_upload_bytes: int = Field(description="largest request body accepted (413 above)")
    max_pixels: int = Field(description="width * height, checked from the image header")
    min_side: int = Field(description="shortest side in pixels, checked from the image header")
    max_aspect: float = Field(description="longest side / shortest side, checked from the image header")
    inference_timeout_s: float = Field(description="seconds the model may take before the request gets 504")


class InputSize(BaseModel):
    height: int = Field(description="pixels")
    width: int = Field(description="pixels")


class Info(BaseModel):
    task: str = Field(
        description="what the model does: style (image -> image), sr (super-resolution) or classify (image -> label)"
    )
    victim_id: str = Field(description="an opaque, stable id of the served model (a hash; no architecture)")
    output: str = Field(description="media type of an answer")
    scale: int | None = Field(default=None, description="answer side / input side, for image answers")
    num_classes: int | None = Field(default=None, description="classifiers: number of classes (labels 0 .. K-1)")
    input_size: InputSize | None = Field(
        default=None, description="classifiers: the only input size taken (others get 422 wrong_input_size)"
    )
    answer: Literal["topk", "label"] | None = Field(
        default=None,
        description="classifiers: 'topk' answers include the top-k classes with probabilities, 'label' answers "
        "only the label (scores hidden)",
    )
    top_k_default: int | None = Field(default=None, description="classifiers: top_k when the request names none")
    top_k_max: int | None = Field(default=None, description="classifiers: the largest top_k accepted")
    limits: Limits = Field(description="the server's upload limits")
    budget_policy: str = Field(description="what is charged to a key's budget")


@router.get("/v1/health", summary="Liveness", response_description="the server is up")
async def health(state: StateDep) -> Health:
    """Answers 200 while the server runs; no key needed, nothing charged, no rate limit."""
    return Health(status="ok", queue_depth=state.batcher.depth())


@router.get(
    "/v1/info",
    summary="The model's public metadata and the server's limits",
    response_description="what a caller may know about the model: its task and interface, never its architecture",
    response_model_exclude_none=True,
)
async def info(state: StateDep) -> Info:
    """The task, the opaque model id and the interface (an image model's scale; a classifier's
    classes, input size and answer mode), and the upload limits. No key needed, nothing charged."""
    s = state.settings
    limits = Limits(
        max_upload_bytes=s.max_upload_bytes,
        max_pixels=s.max_pixels,
        min_side=s.min_side,
        max_aspect=s.max_aspect,
        inference_timeout_s=s.inference_timeout_s,
    )
    policy = "only successful answers (HTTP 200) are charged; Idempotency-Key replays are free"
    extra = {}
    if isinstance(state.model, LabelModel):
        extra = {"answer": s.classify_answer}
        if s.classify_answer == "topk":
            extra |= {"top_k_default": min(TOP_K_DEFAULT, state.model.num_classes), "top_k_max": TOP_K_MAX}
    return Info(**state.model.public_info(), **extra, limits=limits, budget_policy=policy)
