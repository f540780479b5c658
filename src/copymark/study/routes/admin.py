"""The experimenter's pages: live counts and the CSV downloads (HTTP Basic, user ``admin``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from copymark.study.deps import AdminLogin, Ctx
from copymark.study.store import demographics_to_csv, rows_to_csv

router = APIRouter(prefix="/admin")


def _csv(text: str, filename: str) -> Response:
    return Response(
        text,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


@router.get("")
def admin(request: Request, ctx: Ctx, login: AdminLogin):
    counts = ctx.store.counts()
    page = ctx.page(request, "admin.html", counts=counts, n_inputs=len(ctx.cfg.inputs), access=ctx.access.describe())
    return login.finish(page, ctx)


@router.get("/export.csv")
def export(ctx: Ctx, login: AdminLogin):
    return login.finish(_csv(rows_to_csv(ctx.store.rows()), "ratings.csv"), ctx)


@router.get("/demographics.csv")
def export_demographics(ctx: Ctx, login: AdminLogin):
    return login.finish(_csv(demographics_to_csv(ctx.store.demographic_rows()), "demographics.csv"), ctx)
