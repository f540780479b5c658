"""Rating: the instructions, one page per image with a 1-5 scale, the completion code, the images."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from copymark.study.deps import Ctx, CurrentParticipant
from copymark.study.limits import MAX_FIELD
from copymark.study.pages import PageError

router = APIRouter()

# what the store said about an answer that was not saved -> (status, heading, text, link)
_NOT_SAVED = {
    "duplicate": (409, "Already recorded", "Your answer for this image was already saved; it was not counted again."),
    "finished": (409, "Study complete", "You have already finished the study."),
    "out_of_order": (409, "Not this image yet", "This answer does not belong to the current image and was not saved."),
    "wrong_item": (404, "Unknown image", "This image is not part of your sequence."),
    "bad_nonce": (403, "Invalid page token", "This form was not issued to your session; the answer was not saved."),
}


class AnswerForm(BaseModel):
    position: str | None = Field(None, max_length=8)
    item_id: str | None = Field(None, max_length=MAX_FIELD)
    nonce: str | None = Field(None, max_length=MAX_FIELD)
    score: str | None = Field(None, max_length=8)


def parse_answer(form: AnswerForm, known_items: dict[str, str]) -> tuple[int, str, int]:
    """``(position, item_id, score)`` of a posted answer, or a :class:`PageError` saying what is wrong."""
    if form.item_id is None or form.item_id not in known_items:
        raise PageError(404, "Unknown image", "There is no image with this id in this study.", "/rate")
    position = form.position or ""
    if not (position.isascii() and position.isdigit()):
        raise PageError(422, "Invalid form", "The form was incomplete (no position).", "/rate")
    if not form.score:
        raise PageError(
            422,
            "Please choose a score",
            "Please choose one of the five options before continuing.",
            "/rate",
            "Back to the image",
        )
    if form.score not in ("1", "2", "3", "4", "5"):
        raise PageError(
            422, "Invalid score", "The score must be a whole number from 1 to 5.", "/rate", "Back to the image"
        )
    return int(position), form.item_id, int(form.score)


@router.get("/instructions")
def instructions(request: Request, ctx: Ctx, p: CurrentParticipant):
    return ctx.page(
        request, "instructions.html", examples=ctx.cfg.examples, total=len(p.plan), started=bool(p.answered)
    )


@router.get("/rate")
def rate_page(request: Request, ctx: Ctx, p: CurrentParticipant):
    pos = p.next_position
    if pos is None:
        return RedirectResponse("/done", status_code=303)
    it = p.plan[pos]
    return ctx.page(
        request,
        "rate.html",
        item=it,
        number=pos + 1,
        total=len(p.plan),
        answered=len(p.answered),
        nonce=ctx.store.nonce(p.id, pos, it.item_id),
        original=ctx.originals.get(it.item_id),
        expected=ctx.attention.get(it.item_id),
    )


@router.post("/rate")
def rate_submit(ctx: Ctx, p: CurrentParticipant, form: Annotated[AnswerForm, Form()]):
    pos, item_id, score = parse_answer(form, ctx.files)
    outcome = ctx.store.record_answer(p.id, pos, item_id, form.nonce or "", score)
    if outcome in ("recorded", "completed"):
        return RedirectResponse("/rate" if outcome == "recorded" else "/done", status_code=303)
    status, heading, text = _NOT_SAVED[outcome]
    raise PageError(status, heading, text, "/done" if outcome == "finished" else "/rate")


@router.get("/done")
def done(request: Request, ctx: Ctx, p: CurrentParticipant):
    if p.completed_at is None:
        return RedirectResponse("/rate", status_code=303)
    return ctx.page(request, "done.html", code=p.completion_code)


@router.get("/image/{item_id}")
def image(ctx: Ctx, item_id: str):
    f = ctx.files.get(item_id)
    if f is None:
        return Response("unknown image id", status_code=404, media_type="text/plain")
    return FileResponse(ctx.study_dir / f, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
