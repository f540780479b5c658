"""``GET /v1/health`` and ``GET /v1/info``: liveness, and what a caller may know about the model."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from copymark.serving.deps import StateDep

router = APIRouter(tags=["service"])


class Health(BaseModel):
    status: Literal["ok"]
    queue_depth: int = Field(description="requests waiting for the model")


class Limits(BaseModel):
    max_upload_bytes: int
    max_pixels: int = Field(description="width * height, checked from the image header")
    min_side: int = Field(description="shortest side in pixels, checked from the image header")
    max_aspect: float = Field(description="longest side / shortest side, checked from the image header")
    inference_timeout_s: float


class Info(BaseModel):
    task: str = Field(description="what the model does: style (image -> image) or sr (super-resolution)")
    victim_id: str = Field(description="an opaque, stable id of the served model (a hash; no architecture)")
    output: str = Field(description="media type of an answer")
    scale: int | None = Field(default=None, description="answer side / input side, for image answers")
    limits: Limits
    budget_policy: str


@router.get("/v1/health", summary="Liveness")
async def health(state: StateDep) -> Health:
    return Health(status="ok", queue_depth=state.batcher.depth())


@router.get("/v1/info", summary="The model's public metadata and the server's limits", response_model_exclude_none=True)
async def info(state: StateDep) -> Info:
    s = state.settings
    limits = Limits(
        max_upload_bytes=s.max_upload_bytes,
        max_pixels=s.max_pixels,
        min_side=s.min_side,
        max_aspect=s.max_aspect,
        inference_timeout_s=s.inference_timeout_s,
    )
    policy = "only successful answers (HTTP 200) are charged; Idempotency-Key replays are free"
    return Info(**state.model.public_info(), limits=limits, budget_policy=policy)
