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
) -> None:
    """Write one self-contained HTML report of an extraction run: A/B/C tables, image grids,
    zoomed crops (super-resolution), the learning curve and queries spent."""
    from copymark.report.html import write_report

    path = write_report(run_dir, out=out, max_images=max_images)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add ``copymark report`` to ``app``."""
    app.command("report")(report)
