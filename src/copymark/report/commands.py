"""CLI commands of this package (registered by copymark.cli): ``copymark report``."""

from __future__ import annotations

from pathlib import Path

import typer

from copymark.errors import CopymarkError


def report(
    run_dir: Path = typer.Argument(
        ...,
        help="Run folder: an extraction run (`copymark evaluate` or `copymark demo`), a protect run "
        "(`copymark protect`) or a verify run (`copymark verify`).",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="HTML file to write (default: RUN_DIR/report.html)."),
    max_images: int = typer.Option(
        6,
        "--max-images",
        min=0,
        help="Rows per set in the image grids (first images by name); for a protect run, rows of the "
        "visibility grid (the first triggers).",
    ),
    store: Path | None = typer.Option(
        None,
        "--store",
        help="Extraction runs: the extraction's query store: victim id, queries spent, budget, strategy and dates "
        "(default: what `copymark evaluate` recorded, or the store found from the surrogate's training record).",
    ),
    verify: list[Path] | None = typer.Option(
        None,
        "--verify",
        metavar="VERIFY_RUN",
        help="Protect runs: a `copymark verify` run folder of this run's kit to include (repeatable; default: "
        "the verify runs of its kit found beside the run folder or inside it).",
    ),
) -> None:
    """Write one self-contained HTML report of a run folder.

    An **extraction run**: provenance (victim, queries spent of the budget, strategy, dates,
    pairs trained on), A/B/C tables with their baselines, image grids, style examples, zoomed
    crops (super-resolution) and the learning curve.

    A **protect run**: main-task accuracy before and after, trigger accuracy, the unprotected
    model's agreement, trigger-vs-cover and recovered-secret PSNR/SSIM, the kit's commitment,
    the visibility grid (cover | trigger | difference x 5 | secret | recovered) and, per
    verification, the verdict, its false-claim probability, p0, queries and the test's trace.

    A **verify run**: the suspect, the verdict, the test's trace and the recovered secrets.
    """
    from copymark.report.ownership_runs import run_kind

    kind = run_kind(run_dir)
    if kind != "extraction" and store is not None:
        raise CopymarkError(f"--store is for extraction runs; {run_dir} is a {kind} run", hint="omit --store")
    if kind != "protect" and verify:
        raise CopymarkError(
            f"--verify adds verifications to a protect run's report; {run_dir} is a{'n' if kind == 'extraction' else ''} "
            f"{kind} run",
            hint="pass the protect run folder with --verify, or report the verify run alone",
        )
    match kind:
        case "protect":
            from copymark.report.ownership import write_protect_report

            path = write_protect_report(run_dir, out=out, verify=verify, max_images=max_images)
        case "verify":
            from copymark.report.ownership import write_verify_report

            path = write_verify_report(run_dir, out=out)
        case _:
            from copymark.report.html import write_report

            path = write_report(run_dir, out=out, max_images=max_images, store=store)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add ``copymark report`` to ``app``."""
    app.command("report")(report)
