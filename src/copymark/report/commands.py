"""CLI commands of this package (registered by copymark.cli): ``copymark report``."""

from __future__ import annotations

from pathlib import Path

import typer


def report(
    run_dir: Path = typer.Argument(
        ..., help="Extraction run folder (written by `copymark evaluate` or `copymark demo`)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="HTML file to write (default: RUN_DIR/report.html)."),
    max_images: int = typer.Option(
        6, "--max-images", min=0, help="Rows per set in the image grids (first images by name)."
    ),
    store: Path | None = typer.Option(
        None,
        "--store",
        help="The extraction's query store: victim id, queries spent, budget, strategy and dates "
        "(default: what `copymark evaluate` recorded, or the store found from the surrogate's training record).",
    ),
) -> None:
    """Write one self-contained HTML report of an extraction run: provenance (victim, queries
    spent of the budget, strategy, dates, pairs trained on), A/B/C tables with their baselines,
    image grids, style examples, zoomed crops (super-resolution) and the learning curve."""
    from copymark.report.html import write_report

    path = write_report(run_dir, out=out, max_images=max_images, store=store)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add ``copymark report`` to ``app``."""
    app.command("report")(report)
