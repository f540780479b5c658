"""``GET /v1/usage``: the caller's own key: its budget, what it spent, its rate limit.

Authenticated (401 / 403), never charged. It takes one token from the key's rate-limit bucket
like any request (429 when empty): it is work the server does for the key, and the bucket is
what bounds that work; a client rarely needs it, since every answer carries
``X-Budget-Remaining``. A spent key still reads its usage (no 402).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from copymark.serving.audit import AuditedRoute
from copymark.serving.deps import Caller, StateDep, authorize
from copymark.serving.http_errors import error_responses
from copymark.serving.routes.openapi import USAGE_HEADERS


class Usage(BaseModel):
    key_id: str = Field(description="the first 12 hex digits of the key's SHA-256, as in the audit log (never the key)")
    budget: int = Field(description="answers this key may receive in total")
    spent: int = Field(description="answers charged so far (persisted across server restarts)")
    remaining: int = Field(description="budget - spent, at least 0 (what X-Budget-Remaining says)")
    rate_per_s: float = Field(description="the key's sustained request rate (token-bucket refill per second)")
    burst: int = Field(description="the key's token-bucket capacity: requests it may send at once")


router = APIRouter(route_class=AuditedRoute, tags=["service"])


@router.get(
    "/v1/usage",
    summary="The caller's budget, spending and rate limit",
    response_description="the key's usage (not charged)",
    responses={200: {"headers": USAGE_HEADERS}, **error_responses(401, 403, 429, 500)},
)
async def usage(state: StateDep, caller: Annotated[Caller, Depends(authorize)]) -> Usage:
    """Budget, spent answers and rate limit of the key in ``Authorization: Bearer``. Never
    charged; takes one rate-limit token like every request (see docs/API.md)."""
    spent = state.ledger.spent(caller.key_hash)
    p = caller.policy
    return Usage(
        key_id=caller.key_hash[:12],
        budget=p.budget,
        spent=spent,
        remaining=max(0, p.budget - spent),
        rate_per_s=p.rate_per_s,
        burst=p.burst,
    )
