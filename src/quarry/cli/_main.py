"""The root ``quarry`` command."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from quarry.cli._lazy_commands import lazy_group, reflow_help
from quarry.cli._output import err

# Each subcommand and where it lives (a Typer app, or a command's function), in the order of
# `quarry --help`: imported and built when first used (see ``_lazy_commands``).
SUBCOMMANDS = {
    "data": "quarry.cli._data:app",
    "features": "quarry.cli._features:app",
    "train": "quarry.cli._train:train_cmd",
    "search": "quarry.cli._search:search_cmd",
    "backtest": "quarry.cli._backtest:backtest_cmd",
    "run": "quarry.cli._run:run_cmd",
    "server": "quarry.cli._jobs:server_app",
    "tokens": "quarry.cli._jobs:tokens_app",
    "projects": "quarry.cli._jobs:projects_app",
    "datasets": "quarry.cli._datasets:app",
    "jobs": "quarry.cli._jobs:jobs_app",
    "models": "quarry.cli._models:app",
    "serve": "quarry.cli._serve:serve_cmd",
    "stream": "quarry.cli._stream:app",
    "admin": "quarry.cli._admin:app",
}

app = typer.Typer(
    name="quarry",
    help="Quarry: point-in-time data, features, models and backtests for quant research.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=lazy_group(SUBCOMMANDS),
)

__all__ = ["SUBCOMMANDS", "app", "main"]


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


reflow_help(app)


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
