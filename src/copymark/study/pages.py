"""Refusals as HTML pages: :class:`PageError` and the app's error handlers.

Every refused request (a dependency's or a route's :class:`PageError`, an unknown URL, a form
that fails validation) is answered with ``message.html`` and a 4xx status. The page text is
fixed by the app; nothing the client sent is echoed, so a long or hostile input cannot make a
long or hostile page.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class PageError(Exception):
    """A refused request, shown as ``message.html`` with ``status`` (and ``headers``)."""

    def __init__(
        self,
        status: int,
        heading: str,
        text: str,
        link: str | None = None,
        link_text: str = "Continue",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(heading)
        self.status, self.heading, self.text = status, heading, text
        self.link, self.link_text, self.headers = link, link_text, headers or {}


_HTTP_PAGES = {
    404: ("Page not found", "There is no such page in this study."),
    405: ("Not allowed", "This page cannot be used that way."),
}


def _render(request: Request, err: PageError) -> HTMLResponse:
    resp = request.app.state.ctx.page(
        request,
        "message.html",
        status=err.status,
        heading=err.heading,
        text=err.text,
        link=err.link,
        link_text=err.link_text,
    )
    resp.headers.update(err.headers)
    return resp


def install_error_pages(app: FastAPI) -> None:
    """Register the handlers that turn refusals into pages."""

    @app.exception_handler(PageError)
    async def page_error(request: Request, err: PageError) -> HTMLResponse:
        return _render(request, err)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> HTMLResponse:
        heading, text = _HTTP_PAGES.get(err.status_code, ("Request refused", "This request could not be handled."))
        return _render(request, PageError(err.status_code, heading, text, "/", "Go to the start page"))

    @app.exception_handler(RequestValidationError)
    async def invalid_form(request: Request, err: RequestValidationError) -> HTMLResponse:
        return _render(request, PageError(422, "Invalid form", "The form sent was not valid; nothing was saved.", "/"))
