"""The audited route class: every request to a model route (and to ``/v1/usage``) gets a request
id, JSON errors that carry the caller's remaining budget, a line in the audit log and a count in
the metrics (by route).

The audit log (``--request-log``) has one JSON object per line: ``time`` (Unix seconds),
``route``, ``status``, ``latency_s``, ``request_id``, and what the request got to: ``key`` (the
first 12 hex digits of the key's SHA-256, never the key), ``remaining``, ``input_sha256``,
``idempotency_key``, ``replay_of`` (the original request id of a replay), ``answer_sha256``,
``error`` (the error code).

Routers of these endpoints use ``APIRouter(route_class=AuditedRoute)``; their handlers and
dependencies raise :class:`~copymark.serving.http_errors.ApiError` and fill the audit record
(``request.state.audit``), and this wrapper does the rest, in one place.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from copymark.serving.http_errors import ApiError, json_error


class AuditedRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        route = self.path

        async def audited(request: Request) -> Response:
            state = request.app.state.copymark
            rid = uuid.uuid4().hex
            audit: dict[str, Any] = {"request_id": rid}
            request.state.audit = audit
            t0 = time.perf_counter()
            try:
                response = await handler(request)
            except ApiError as err:
                response = json_error(err.status, err.error, err.detail, err.headers)
                audit["error"] = err.error
            except RequestValidationError as err:
                response = json_error(422, "invalid_request", str(err.errors())[:2000])
                audit["error"] = "invalid_request"
            except Exception as err:  # noqa: BLE001 - a server bug or a storage failure: still a JSON error
                response = json_error(500, "internal_error", f"{type(err).__name__}: {err}")
                audit["error"] = "internal_error"
            if "error" in audit:
                state.metrics.reject(audit["error"])
            response.headers["X-Request-Id"] = rid
            if "remaining" in audit and "x-budget-remaining" not in response.headers:
                response.headers["X-Budget-Remaining"] = str(audit["remaining"])
            dt = time.perf_counter() - t0
            state.metrics.request(route, response.status_code, dt)
            state.log(time=time.time(), route=route, status=response.status_code, latency_s=round(dt, 6), **audit)
            return response

        return audited
