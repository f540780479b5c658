"""The participant-facing web app of a user study (FastAPI, server-rendered Jinja2, SQLite).

Pages: ``/`` consent -> ``/about-you`` (only if the study asks optional demographic questions)
-> ``/instructions`` (style examples, the scale) -> ``/rate`` one image per page with a 1-5 scale
and progress -> ``/done`` completion code. No JavaScript: plain HTML forms with fieldset/legend
and one <label> per radio button; the CSS fits a phone.

Who may start is the access mode (:mod:`copymark.study.access`: a list of invited ids, a panel's
ids, or explicitly open); each participant id starts once. Participants are identified by an
HttpOnly session cookie whose SHA-256 is stored in the DB. Every answer is committed when posted
(:mod:`copymark.study.store`). Refusals are HTML pages with a 4xx status that never echo input
(:mod:`copymark.study.pages`): a score outside 1-5 (422), an unknown image (404), a replayed or
out-of-order answer (409), a forged page token (403), no session (401), a body over 16 KiB (413).

Admin pages (``/admin``, ``/admin/export.csv``, ``/admin/demographics.csv``): HTTP Basic, user
``admin``, UTF-8, constant-time, failed attempts throttled (:mod:`copymark.study.auth`).

This module only assembles: the context, the middleware, the error pages and the routers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.templating import Jinja2Templates

from copymark.errors import DataError
from copymark.study.access import ParticipantAccess
from copymark.study.auth import AdminGuard, ThrottlePolicy
from copymark.study.deps import COOKIE, StudyContext
from copymark.study.design import image_index, load_study, originals_by_item
from copymark.study.limits import MAX_BODY_BYTES, BodyLimit
from copymark.study.pages import install_error_pages
from copymark.study.routes import admin, entry, health, rating
from copymark.study.store import StudyStore

TEMPLATES_DIR = Path(__file__).parent / "templates"
__all__ = ["COOKIE", "create_app"]


def create_app(
    study_dir: str | Path,
    admin_password: str,
    *,
    access: ParticipantAccess | None = None,
    secure_cookie: bool = False,
    throttle: ThrottlePolicy | None = None,
    clock: Callable[[], float] = time.monotonic,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The study app for the study folder ``study_dir``; ``access`` defaults to panel ids (an id required)."""
    study_dir = Path(study_dir)
    cfg = load_study(study_dir)
    if not admin_password:
        raise DataError("an admin password is required", hint="--admin-password or COPYMARK_STUDY_ADMIN_PASSWORD")
    store = StudyStore(study_dir, cfg)
    ctx = StudyContext(
        study_dir=study_dir,
        cfg=cfg,
        store=store,
        templates=Jinja2Templates(directory=str(TEMPLATES_DIR)),
        access=access or ParticipantAccess.panel(),
        guard=AdminGuard(admin_password, store.derive_key("admin"), throttle, clock),
        secure_cookie=secure_cookie,
        files=image_index(cfg),
        originals=originals_by_item(cfg),
        attention={a.image.item_id: a.expected for a in cfg.attention},
    )
    app = FastAPI(title=f"copymark study: {cfg.title}", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    install_error_pages(app)
    for module in (entry, rating, admin, health):
        app.include_router(module.router)
    return app
