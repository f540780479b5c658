"""What the study app's routes depend on: the study context, the participant's session, the admin.

Routes declare these as ``Annotated[..., Depends(...)]`` parameters (:data:`Ctx`,
:data:`SessionParticipant`, :data:`CurrentParticipant`, :data:`AdminLogin`) and stay short; a
dependency that refuses a request raises :class:`PageError`, which the app renders as an HTML page
with the right status (and headers such as ``WWW-Authenticate`` or ``Retry-After``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from copymark.study.access import ParticipantAccess
from copymark.study.auth import CHALLENGE, DEVICE_COOKIE, DEVICE_MAX_AGE_S, AdminGuard
from copymark.study.design import StudyConfig
from copymark.study.pages import PageError
from copymark.study.store import Participant, StudyStore

COOKIE = "copymark_study"
SESSION_MAX_AGE_S = 7 * 24 * 3600


@dataclass
class StudyContext:
    """Everything a request of one served study needs, built once by the app factory."""

    study_dir: Path
    cfg: StudyConfig
    store: StudyStore
    templates: Jinja2Templates
    access: ParticipantAccess
    guard: AdminGuard
    secure_cookie: bool = False
    files: dict[str, str] = field(default_factory=dict)  # item_id -> file under study_dir
    originals: dict[str, str] = field(default_factory=dict)  # output item_id -> original's item_id
    attention: dict[str, int] = field(default_factory=dict)  # attention item_id -> expected score

    def page(self, request: Request, name: str, status: int = 200, **ctx) -> HTMLResponse:
        """Render template ``name`` (never cached: every page depends on the session)."""
        ctx.setdefault("title", self.cfg.title)
        resp = self.templates.TemplateResponse(request, name, {"study": self.cfg, **ctx}, status_code=status)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def set_session(self, resp: Response, token: str) -> Response:
        resp.set_cookie(
            COOKIE, token, httponly=True, samesite="lax", secure=self.secure_cookie, max_age=SESSION_MAX_AGE_S
        )
        return resp


def get_ctx(request: Request) -> StudyContext:
    return request.app.state.ctx


Ctx = Annotated[StudyContext, Depends(get_ctx)]


def session_participant(request: Request, ctx: Ctx) -> Participant | None:
    """The participant of this browser's session cookie, or ``None``."""
    return ctx.store.participant_by_token(request.cookies.get(COOKIE))


SessionParticipant = Annotated[Participant | None, Depends(session_participant)]


def current_participant(p: SessionParticipant) -> Participant:
    """The session's participant; 401 page when there is no (valid) session cookie."""
    if p is None:
        raise PageError(
            401,
            "No session",
            "We could not find your session (cookies may be blocked or expired). Please start from the beginning.",
            "/",
            "Go to the start page",
        )
    return p


CurrentParticipant = Annotated[Participant, Depends(current_participant)]


@dataclass(frozen=True)
class Admin:
    """A checked admin request; ``device_cookie`` is to be set on the answer (first login here)."""

    device_cookie: str | None = None

    def finish(self, resp: Response, ctx: StudyContext) -> Response:
        if self.device_cookie:
            resp.set_cookie(
                DEVICE_COOKIE,
                self.device_cookie,
                httponly=True,
                samesite="strict",
                secure=ctx.secure_cookie,
                max_age=DEVICE_MAX_AGE_S,
                path="/admin",
            )
        return resp


def admin_login(request: Request, ctx: Ctx) -> Admin:
    """HTTP Basic admin check, throttled (see :mod:`copymark.study.auth`): 401 or 429 pages when refused."""
    client = request.client.host if request.client else "unknown"
    v = ctx.guard.check(request.headers.get("authorization"), client, request.cookies.get(DEVICE_COOKIE))
    match v.outcome:
        case "ok":
            return Admin(device_cookie=v.set_device)
        case "locked":
            raise PageError(
                429,
                "Too many failed logins",
                f"Too many wrong admin passwords; try again in {v.retry_after} s.",
                headers={"Retry-After": str(v.retry_after)},
            )
        case _:
            raise PageError(
                401,
                "Admin login required",
                "Log in as user 'admin' with the study's admin password.",
                headers={"WWW-Authenticate": CHALLENGE},
            )


AdminLogin = Annotated[Admin, Depends(admin_login)]
