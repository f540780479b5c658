"""The participant-facing web app of a user study (FastAPI, server-rendered Jinja2, SQLite).

Pages: ``/`` consent -> ``/instructions`` (style examples, the scale) -> ``/rate`` one image per
page with a 1-5 scale and progress -> ``/done`` completion code. No JavaScript: plain HTML
forms with fieldset/legend and one <label> per radio button; the CSS fits a phone.

Participants are identified by an HttpOnly session cookie whose SHA-256 is stored in the DB; an
optional ``?pid=`` (e.g. a panel id) is stored uniquely so nobody starts twice. Every answer is
committed when posted (see :mod:`copymark.study.store`). Bad input gets a clear HTML page with a
4xx status: a score outside 1-5 (422), an unknown image (404), a replayed or out-of-order
answer (409), a forged page token (403), no session (401).

Admin pages (``/admin``, ``/admin/export.csv``) use HTTP Basic auth, user ``admin``; the
password is compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
import re
from pathlib import Path

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from fastapi.templating import Jinja2Templates

from copymark.errors import DataError
from copymark.study.design import StudyConfig, image_index, load_study, originals_by_item
from copymark.study.store import Participant, StudyStore, rows_to_csv

COOKIE = "copymark_study"
ADMIN_USER = "admin"
_PID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
TEMPLATES_DIR = Path(__file__).parent / "templates"


def create_app(study_dir: str | Path, admin_password: str, *, secure_cookie: bool = False) -> FastAPI:
    """Build the study app for the study folder ``study_dir``."""
    study_dir = Path(study_dir)
    cfg: StudyConfig = load_study(study_dir)
    if not admin_password:
        raise DataError("an admin password is required", hint="--admin-password or COPYMARK_STUDY_ADMIN_PASSWORD")
    store = StudyStore(study_dir, cfg)
    files = image_index(cfg)
    originals = originals_by_item(cfg)
    attention = {a.image.item_id: a.expected for a in cfg.attention}
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    basic = HTTPBasic(auto_error=False)

    app = FastAPI(title=f"copymark study: {cfg.title}", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.state.cfg = cfg

    def page(request: Request, name: str, status: int = 200, **ctx) -> HTMLResponse:
        ctx.setdefault("title", cfg.title)
        resp = templates.TemplateResponse(request, name, {"study": cfg, **ctx}, status_code=status)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def message(
        request: Request, status: int, heading: str, text: str, link: str | None = None, link_text: str = "Continue"
    ) -> HTMLResponse:
        return page(request, "message.html", status=status, heading=heading, text=text, link=link, link_text=link_text)

    def current(request: Request) -> Participant | None:
        return store.participant_by_token(request.cookies.get(COOKIE))

    def no_session(request: Request) -> HTMLResponse:
        return message(
            request,
            401,
            "No session",
            "We could not find your session (cookies may be blocked or expired). Please start from the beginning.",
            "/",
            "Go to the start page",
        )

    @app.get("/", response_class=HTMLResponse)
    def consent(request: Request, pid: str | None = None):
        p = current(request)
        if p is not None:
            return RedirectResponse("/done" if p.completed_at else "/rate", status_code=303)
        if pid is not None and not _PID_RE.match(pid):
            return message(
                request,
                400,
                "Invalid participant id",
                "The participant id in the link may contain only letters, digits, '.', '_' and '-'.",
            )
        return page(request, "consent.html", pid=pid, n_items=cfg.per_participant + cfg.attention_checks)

    @app.post("/consent")
    def give_consent(request: Request, agree: str | None = Form(None), pid: str | None = Form(None)):
        p = current(request)
        if p is not None:
            return RedirectResponse("/done" if p.completed_at else "/instructions", status_code=303)
        if agree != "yes":
            return message(
                request,
                400,
                "Consent needed",
                "You can take part only after ticking the consent box. You may also simply close this page.",
                "/",
                "Back to the consent page",
            )
        if pid is not None and pid != "" and not _PID_RE.match(pid):
            return message(request, 400, "Invalid participant id", "The participant id has invalid characters.")
        try:
            token, _ = store.create_participant(pid or None)
        except DataError:
            return message(
                request,
                409,
                "Already taking part",
                "This participant id has already started the study; each person takes part once. "
                "Please continue in the browser where you started.",
            )
        resp = RedirectResponse("/instructions", status_code=303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="lax", secure=secure_cookie, max_age=7 * 24 * 3600)
        return resp

    @app.get("/instructions", response_class=HTMLResponse)
    def instructions(request: Request):
        p = current(request)
        if p is None:
            return no_session(request)
        return page(request, "instructions.html", examples=cfg.examples, total=len(p.plan), started=bool(p.answered))

    @app.get("/rate", response_class=HTMLResponse)
    def rate_page(request: Request):
        p = current(request)
        if p is None:
            return no_session(request)
        pos = p.next_position
        if pos is None:
            return RedirectResponse("/done", status_code=303)
        it = p.plan[pos]
        return page(
            request,
            "rate.html",
            item=it,
            number=pos + 1,
            total=len(p.plan),
            answered=len(p.answered),
            nonce=store.nonce(p.id, pos, it.item_id),
            original=originals.get(it.item_id),
            expected=attention.get(it.item_id),
        )

    @app.post("/rate")
    def rate_submit(
        request: Request,
        position: str | None = Form(None),
        item_id: str | None = Form(None),
        nonce: str | None = Form(None),
        score: str | None = Form(None),
    ):
        p = current(request)
        if p is None:
            return no_session(request)
        if item_id is None or item_id not in files:
            return message(
                request, 404, "Unknown image", f"There is no image with id {item_id!r} in this study.", "/rate"
            )
        try:
            pos = int(position or "")
        except ValueError:
            return message(request, 422, "Invalid form", "The form was incomplete (no position).", "/rate")
        if score is None or score == "":
            return message(
                request,
                422,
                "Please choose a score",
                "Please choose one of the five options before continuing.",
                "/rate",
                "Back to the image",
            )
        try:
            s = int(score)
        except ValueError:
            s = 0
        if not 1 <= s <= 5:
            return message(
                request,
                422,
                "Invalid score",
                f"The score must be a whole number from 1 to 5, got {score!r}.",
                "/rate",
                "Back to the image",
            )
        outcome = store.record_answer(p.id, pos, item_id, nonce or "", s)
        match outcome:
            case "recorded":
                return RedirectResponse("/rate", status_code=303)
            case "completed":
                return RedirectResponse("/done", status_code=303)
            case "duplicate":
                return message(
                    request,
                    409,
                    "Already recorded",
                    "Your answer for this image was already saved; it was not counted again.",
                    "/rate",
                )
            case "finished":
                return message(request, 409, "Study complete", "You have already finished the study.", "/done")
            case "out_of_order":
                return message(
                    request,
                    409,
                    "Not this image yet",
                    "This answer does not belong to the current image and was not saved.",
                    "/rate",
                )
            case "wrong_item":
                return message(request, 404, "Unknown image", "This image is not part of your sequence.", "/rate")
            case _:
                return message(
                    request,
                    403,
                    "Invalid page token",
                    "This form was not issued to your session; the answer was not saved.",
                    "/rate",
                )

    @app.get("/done", response_class=HTMLResponse)
    def done(request: Request):
        p = current(request)
        if p is None:
            return no_session(request)
        if p.completed_at is None:
            return RedirectResponse("/rate", status_code=303)
        return page(request, "done.html", code=p.completion_code)

    @app.get("/image/{item_id}")
    def image(item_id: str):
        f = files.get(item_id)
        if f is None:
            return Response("unknown image id", status_code=404, media_type="text/plain")
        return FileResponse(study_dir / f, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    def admin_ok(creds: HTTPBasicCredentials | None) -> bool:
        if creds is None:
            return False
        user_ok = hmac.compare_digest(creds.username.encode(), ADMIN_USER.encode())
        pass_ok = hmac.compare_digest(creds.password.encode(), admin_password.encode())
        return user_ok and pass_ok

    def unauthorized() -> Response:
        return Response(
            "admin password required (user 'admin')",
            status_code=401,
            media_type="text/plain",
            headers={"WWW-Authenticate": 'Basic realm="copymark study admin"'},
        )

    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request, creds: HTTPBasicCredentials | None = Depends(basic)):
        if not admin_ok(creds):
            return unauthorized()
        return page(request, "admin.html", counts=store.counts(), n_inputs=len(cfg.inputs))

    @app.get("/admin/export.csv")
    def export(creds: HTTPBasicCredentials | None = Depends(basic)):
        if not admin_ok(creds):
            return unauthorized()
        return Response(
            rows_to_csv(store.rows()),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="ratings.csv"', "Cache-Control": "no-store"},
        )

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    return app
