"""``GET /metrics``: Prometheus text (see :mod:`copymark.serving.metrics` for each metric)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from copymark.serving.deps import StateDep

router = APIRouter(tags=["service"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(state: StateDep) -> PlainTextResponse:
    state.metrics.queue_depth = state.batcher.depth()
    state.metrics.model_restarts = state.runner.restarts
    return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")
