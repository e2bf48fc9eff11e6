"""The root ``quarry`` command."""

from __future__ import annotations

import os
import sys

import typer

from quarry import __version__
from quarry.cli import _backtest, _data, _features, _jobs, _run, _train
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
app.command("backtest")(_backtest.backtest_cmd)
app.command("run")(_run.run_cmd)
app.add_typer(_jobs.server_app, name="server")
app.add_typer(_jobs.tokens_app, name="tokens")
app.add_typer(_jobs.jobs_app, name="jobs")


@app.command()
def version() -> None:
    """Print Quarry's version."""
    print(__version__)


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
