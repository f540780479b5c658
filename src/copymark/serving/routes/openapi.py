"""OpenAPI pieces the model routes share: the image upload body and the response headers.

They only describe what :mod:`copymark.serving.audit`, :mod:`copymark.serving.deps` and
:mod:`copymark.serving.answering` send; docs/API.md says the same in prose.
"""

from __future__ import annotations

from typing import Any

from copymark.serving.http_errors import BUDGET_HEADER, REQUEST_ID_HEADER

BINARY = {"type": "string", "format": "binary"}
UPLOAD_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/tiff", "application/octet-stream")
IMAGE_BODY = {
    "required": True,
    "description": "the image: its bytes as the body, or the multipart form field 'image'",
    "content": {
        **{t: {"schema": BINARY} for t in UPLOAD_TYPES},
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {"image": BINARY}}},
    },
}

ANSWER_HEADERS: dict[str, Any] = {
    "X-Request-Id": REQUEST_ID_HEADER,
    "X-Budget-Remaining": BUDGET_HEADER,
    "Idempotent-Replay": {
        "description": "'true' when this answer is a free replay of an earlier one with the same Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "X-Original-Request-Id": {
        "description": "on a replay: the id of the request that was answered (and charged) first",
        "schema": {"type": "string"},
    },
}
USAGE_HEADERS: dict[str, Any] = {"X-Request-Id": REQUEST_ID_HEADER, "X-Budget-Remaining": BUDGET_HEADER}
