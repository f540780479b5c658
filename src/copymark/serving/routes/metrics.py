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
    response_description="every metric in the Prometheus text exposition format 0.0.4",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(state: StateDep) -> PlainTextResponse:
    """Counters, gauges and histograms of this server (each named, with its labels, in
    docs/API.md). No key needed; it says how many requests were made and refused, never by whom."""
    state.metrics.queue_depth = state.batcher.depth()
    state.metrics.model_restarts = state.runner.restarts
    return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")
