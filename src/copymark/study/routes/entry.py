"""Entering the study: the consent page (checked against the access mode) and the optional
demographic questions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from copymark.errors import DataError
from copymark.study.demographics import QUESTIONS
from copymark.study.deps import Ctx, CurrentParticipant, SessionParticipant, StudyContext
from copymark.study.limits import MAX_FIELD
from copymark.study.pages import PageError
from copymark.study.store import Participant

router = APIRouter()

_REFUSED = {
    "invalid": (
        400,
        "Invalid participant id",
        "The participant id in the link may contain only letters, digits, '.', '_' and '-'.",
    ),
    "missing": (
        403,
        "Personal link needed",
        "This study can be taken only through the personal link you were sent (it ends with ?pid=...). "
        "Please open that link.",
    ),
    "unknown": (
        403,
        "Link not recognised",
        "This link is not valid for this study. Please check that you opened the whole personal link you were sent.",
    ),
}


def next_page(p: Participant, demographics: list[str]) -> str:
    """Where a returning participant continues."""
    if p.completed_at:
        return "/done"
    if demographics and not p.demographics_done and not p.answered:
        return "/about-you"
    return "/rate" if p.answered else "/instructions"


def check_access(ctx: StudyContext, pid: str | None) -> None:
    refusal = ctx.access.refusal(pid)
    if refusal is not None:
        raise PageError(*_REFUSED[refusal])


class ConsentForm(BaseModel):
    agree: str | None = Field(None, max_length=8)
    pid: str | None = Field(None, max_length=MAX_FIELD + 1)  # one over: an over-long id is refused as invalid


class DemographicsForm(BaseModel):
    gender: str | None = Field(None, max_length=MAX_FIELD)
    age: str | None = Field(None, max_length=MAX_FIELD)
    education: str | None = Field(None, max_length=MAX_FIELD)


@router.get("/")
def consent(request: Request, ctx: Ctx, p: SessionParticipant, pid: str | None = None):
    if p is not None:
        return RedirectResponse(next_page(p, ctx.cfg.demographics), status_code=303)
    check_access(ctx, pid)
    return ctx.page(request, "consent.html", pid=pid, n_items=ctx.cfg.per_participant + ctx.cfg.attention_checks)


@router.post("/consent")
def give_consent(ctx: Ctx, p: SessionParticipant, form: Annotated[ConsentForm, Form()]):
    if p is not None:
        return RedirectResponse(next_page(p, ctx.cfg.demographics), status_code=303)
    pid = form.pid or None
    check_access(ctx, pid)
    if form.agree != "yes":
        raise PageError(
            400,
            "Consent needed",
            "You can take part only after ticking the consent box. You may also simply close this page.",
            "/" if pid is None else f"/?pid={pid}",
            "Back to the consent page",
        )
    try:
        token, _ = ctx.store.create_participant(pid)
    except DataError:
        raise PageError(
            409,
            "Already taking part",
            "This participant id has already started the study; each person takes part once. "
            "Please continue in the browser where you started.",
        ) from None
    return ctx.set_session(RedirectResponse("/about-you" if ctx.cfg.demographics else "/instructions", 303), token)


@router.get("/about-you")
def about_you(request: Request, ctx: Ctx, p: CurrentParticipant):
    if not ctx.cfg.demographics or p.demographics_done:
        return RedirectResponse("/instructions", status_code=303)
    questions = [QUESTIONS[q] for q in ctx.cfg.demographics]
    return ctx.page(request, "about_you.html", questions=questions)


@router.post("/about-you")
def about_you_submit(ctx: Ctx, p: CurrentParticipant, form: Annotated[DemographicsForm, Form()]):
    answers: dict[str, str | None] = {}
    for q in ctx.cfg.demographics:
        value = getattr(form, q) or None
        if value is not None and value not in QUESTIONS[q].values:
            raise PageError(422, "Invalid answer", "Please choose one of the listed answers (or none).", "/about-you")
        answers[q] = value
    if answers:
        ctx.store.record_demographics(p.id, answers)  # a second submission changes nothing
    return RedirectResponse("/instructions", status_code=303)
