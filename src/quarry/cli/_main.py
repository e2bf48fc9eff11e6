"""The root ``quarry`` command."""

from __future__ import annotations

import inspect
import os
import sys
from typing import Annotated

import typer

from quarry.cli import _backtest, _data, _features, _jobs, _models, _run, _search, _serve, _train
from quarry.cli._output import err

app = typer.Typer(
    name="quarry",
    help="Quarry: point-in-time data, features, models and backtests for quant research.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(_data.app, name="data")
app.add_typer(_features.app, name="features")
app.command("train")(_train.train_cmd)
app.command("search")(_search.search_cmd)
app.command("backtest")(_backtest.backtest_cmd)
app.command("run")(_run.run_cmd)
app.add_typer(_jobs.server_app, name="server")
app.add_typer(_jobs.tokens_app, name="tokens")
app.add_typer(_jobs.projects_app, name="projects")
app.add_typer(_jobs.jobs_app, name="jobs")
app.add_typer(_models.app, name="models")
app.command("serve")(_serve.serve_cmd)


def reflow(text: str) -> str:
    """Help text with each paragraph on one line, so that the terminal wraps it at its
    width (docstrings are wrapped at 100 columns by hand, which broke them mid-sentence in
    an 80-column terminal). A paragraph's indentation stays (examples are indented); one
    marked with click's \\b keeps its line breaks."""
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        if paragraph.startswith("\b"):
            paragraphs.append(paragraph)
            continue
        indent = paragraph[: len(paragraph) - len(paragraph.lstrip(" "))]
        paragraphs.append(indent + " ".join(line.strip() for line in paragraph.splitlines()))
    return "\n\n".join(paragraphs)


def _reflow_help(typer_app: typer.Typer) -> None:
    """Reflow the help of every command and group of ``typer_app``, before Typer reads it."""
    for command in typer_app.registered_commands:
        text = command.help or inspect.getdoc(command.callback)
        if text:
            command.help = reflow(text)
    for group in typer_app.registered_groups:
        if group.typer_instance is None:
            continue
        info = group.typer_instance.info
        if isinstance(info.help, str):
            info.help = reflow(info.help)
        _reflow_help(group.typer_instance)


def installed_version() -> str:
    """The installed distribution's version (what pip and bug reports know it by)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    from quarry import __version__

    try:
        return dist_version("quarry")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return __version__


def _print_version(value: bool) -> None:
    if value:
        print(installed_version())
        raise typer.Exit()


@app.callback()
def root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print Quarry's version and exit.",
        ),
    ] = False,
) -> None:
    """Quarry: point-in-time data, features, models and backtests for quant research."""


@app.command()
def version() -> None:
    """Print Quarry's version."""
    print(installed_version())


_reflow_help(app)


def main() -> None:
    """Entry point: a QuarryError is already one line; anything else is a bug, shown briefly."""
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a traceback reaching a user is a bug: say so in one line
        if os.environ.get("QUARRY_DEBUG") == "1":
            raise
        err.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
            "(a bug in Quarry: rerun with QUARRY_DEBUG=1 for the traceback and report it)",
            highlight=False,
        )
        sys.exit(70)
