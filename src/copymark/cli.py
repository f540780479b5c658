"""The ``copymark`` command line: a thin Typer app.

Each role package keeps its commands in a small ``commands.py`` module with a
``register(app)`` function; this file only assembles them, handles ``--version`` and
``--debug``, and turns :class:`~copymark.errors.CopymarkError` into a one-line message and
exit status 2. Command modules import heavy libraries (torch, FastAPI) inside the command
bodies so that ``copymark --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

import copymark
from copymark.errors import CopymarkError

# One entry per role package that adds commands; each module defines register(app).
COMMAND_MODULES: tuple[str, ...] = (
    "copymark.metrics.commands",  # metrics
    "copymark.train.commands",  # train, translate, nets show
    "copymark.train.classifier_commands",  # classifier train, classifier eval
    "copymark.serving.commands",  # serve
    "copymark.client.commands",  # store check
    "copymark.extraction.commands",  # extract
    "copymark.extraction.attack_commands",  # evaluate, learning-curve, demo
    "copymark.report.commands",  # report
    "copymark.study.commands",  # study ...
    "copymark.stego.commands",  # stego ...
    "copymark.watermark.commands",  # protect, kit ...
)

app = typer.Typer(
    name="copymark",
    help=(
        "copymark: intellectual-property security of image models.\n\n"
        "Extraction: serve a victim image-translation model behind an HTTP API, steal it with "
        "budgeted queries, train a surrogate and measure the copy (tables A/B/C).\n\n"
        "Protection: hide secret images in triggers, watermark a classifier, verify ownership "
        "through its API, and attack that proof."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # docstrings reflow as paragraphs; lists and `code` render
)

_state = {"debug": False}
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"copymark {copymark.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _state["debug"] = debug


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        app(args=args, prog_name="copymark", standalone_mode=False)
    except CopymarkError as err:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(err.message)}", highlight=False, soft_wrap=True)
        if err.hint:
            err_console.print(f"[yellow]hint:[/] {escape(err.hint)}", highlight=False, soft_wrap=True)
        return err.exit_code
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as e:  # click usage errors and the like
        import click

        if isinstance(e, click.ClickException):
            e.show()
            return e.exit_code
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {type(e).__name__}: {escape(str(e))}", highlight=False, soft_wrap=True)
        err_console.print("[yellow]hint:[/] rerun with --debug for the traceback", highlight=False)
        return 1
    return 0


def run() -> None:
    """Console-script entry: exit with :func:`main`'s status."""
    sys.exit(main())


if __name__ == "__main__":
    run()
