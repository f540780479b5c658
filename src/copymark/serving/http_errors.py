"""JSON errors of the API: ``{"error": code, "detail": text}`` with a status, for every failure.

:class:`ApiError` is what routes and dependencies raise; :func:`install_error_handlers` makes
FastAPI's own errors (404, 405, validation) and anything unexpected answer in the same shape,
so no request ever gets an HTML page or a bare traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException


@dataclass
class ApiError(Exception):
    status: int
    error: str
    detail: str
    headers: dict[str, str] | None = None


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: str = Field(description="a stable machine-readable code, e.g. rate_limited, budget_exhausted")
    detail: str = Field(description="what was wrong, in words")


def json_error(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


STATUS_TEXT = {
    400: "bad request: malformed header (Content-Length, Idempotency-Key) or the client went away",
    401: "missing or malformed 'Authorization: Bearer <api key>'",
    402: "the key's query budget is spent (only answers are charged)",
    403: "unknown API key",
    408: "the upload was not received within the read timeout",
    413: "upload larger than max_upload_bytes, or image larger than max_pixels (read from its header)",
    415: "not a decodable image (send PNG, JPEG, WebP, BMP or TIFF bytes)",
    422: "empty body, missing multipart field 'image', corrupt image, image smaller than min_side or "
    "more elongated than max_aspect, a classifier's input of the wrong size or image mode, a query "
    "parameter out of range, or an Idempotency-Key reused with another request",
    429: "rate limit exceeded; wait Retry-After seconds (X-Retry-After-Ms: milliseconds)",
    500: "the model failed or crashed on this input (not charged; the server keeps serving)",
    503: "the request queue is full, the model is restarting, or the server is shutting down; retry later",
    504: "the model did not answer within the inference timeout (not charged)",
}

REQUEST_ID_HEADER = {
    "description": "this request's id (also in the server's audit log); quote it when reporting a problem",
    "schema": {"type": "string"},
}
BUDGET_HEADER = {
    "description": "answers left on the key's budget (sent once the key is known)",
    "schema": {"type": "integer"},
}
RETRY_AFTER = {"description": "seconds to wait before retrying (a whole number)", "schema": {"type": "integer"}}
ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "always 'Bearer'", "schema": {"type": "string"}}},
    429: {
        "Retry-After": RETRY_AFTER,
        "X-Retry-After-Ms": {
            "description": "the same wait in milliseconds, rounded up (more precise than Retry-After)",
            "schema": {"type": "integer"},
        },
    },
    503: {"Retry-After": RETRY_AFTER},
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these status codes, all with the :class:`ErrorBody` schema
    and the headers an audited route sends with them."""
    return {
        code: {
            "model": ErrorBody,
            "description": STATUS_TEXT[code],
            "headers": {
                "X-Request-Id": REQUEST_ID_HEADER,
                "X-Budget-Remaining": BUDGET_HEADER,
                **ERROR_HEADERS.get(code, {}),
            },
        }
        for code in codes
    }


def install_error_handlers(app: FastAPI) -> None:
    """FastAPI's and Starlette's errors, and any unexpected exception, as JSON errors."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return json_error(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_exc(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return json_error(exc.status_code, "http_error", str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_exc(request: Request, exc: RequestValidationError) -> JSONResponse:
        return json_error(422, "invalid_request", str(exc.errors())[:2000])

    @app.exception_handler(Exception)
    async def _any_exc(request: Request, exc: Exception) -> JSONResponse:
        return json_error(500, "internal_error", f"{type(exc).__name__}: {exc}")
