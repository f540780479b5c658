"""Bounds on what a request may send to the study app.

Every form the app serves is a few hundred bytes, so a request body is limited to
``MAX_BODY_BYTES`` (413 before the form is parsed: from ``Content-Length``, and by counting
while a chunked body streams in); each form field has a length bound (``MAX_FIELD``). Nothing a
client sent is ever echoed into a page.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 16 * 1024
MAX_FIELD = 64  # item ids are 16 hex digits, nonces 32, participant ids at most 64

_TOO_LARGE = (
    b'<!doctype html><html lang="en"><meta charset="utf-8"><title>Request too large</title>'
    b'<h1>Request too large</h1><p role="alert">The form sent was larger than this study accepts; '
    b"nothing was saved.</p></html>"
)


class BodyLimit:
    """Pure ASGI middleware: answer 413 to a request body larger than ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"text/html; charset=utf-8"),
                    (b"content-length", str(len(_TOO_LARGE)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _TOO_LARGE})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(send)
            return
        seen = 0
        too_large = False
        answered = False

        async def limited_receive() -> Message:
            nonlocal seen, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_large = True
                    return {"type": "http.disconnect"}  # the app stops reading; its answer is replaced
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if too_large:
                if not answered:
                    answered = True
                    await self._reject(send)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not answered:
            await self._reject(send)
