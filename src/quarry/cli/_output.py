"""Shared command-line output: consoles, JSON, and turning errors into one-line messages."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from quarry._json import dumps
from quarry.exceptions import DataError, ExpressionError, QuarryError, UsageError

if TYPE_CHECKING:  # imported by the commands that read data, not by `quarry --help`
    import polars as pl

__all__ = [
    "console",
    "err",
    "fail_cleanly",
    "print_json",
    "progress_bar",
    "tracking_line",
    "warn",
    "write_parquet",
]

console = Console()
err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def print_json(obj: Any) -> None:
    """Machine output: plain JSON on stdout, no colour or wrapping. An undefined or infinite
    figure (NaN, inf) is null, since JSON has no such numbers; every command's --json output
    goes through here."""
    print(dumps(obj))


def fail_cleanly(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a QuarryError into its one-line message(s) on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except QuarryError as exc:
            lines = exc.lines()
            if isinstance(exc, ExpressionError):  # the caret line lines up under the text
                lines = str(exc).split("\n")
                err.print(
                    f"[bold red]error:[/] {lines[0]}", highlight=False, soft_wrap=True, markup=True
                )
                for line in lines[1:]:
                    err.print(
                        " " * len("error: ") + line, highlight=False, soft_wrap=True, markup=False
                    )
                raise typer.Exit(1) from None
            for line in lines:
                err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def warn(message: str) -> None:
    """A warning for the user: one line on stderr, after which the command goes on."""
    err.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """Something the user may want to know about the result: one line on stderr."""
    err.print(f"note: {escape(message)}", highlight=False, soft_wrap=True)


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar driven by ``(description, done, total)`` callbacks."""
    tasks: dict[str, TaskID] = {}
    quiet = os.environ.get("QUARRY_NO_PROGRESS") == "1"
    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    ) as bar:

        def update(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total)
            bar.update(tasks[description], completed=done, total=total)

        yield update


def tracking_line() -> str:
    """Where runs and models are tracked, and the QUARRY_HOME in effect (a `make demo`
    keeps its own, runs/home, apart from ~/.quarry)."""
    from quarry.settings import quarry_home
    from quarry.tracking import shown_uri

    return f"tracking: {shown_uri()} (QUARRY_HOME={quarry_home()})"


def write_parquet(df: pl.DataFrame, out: Path) -> None:
    """Write a command's result, turning a filesystem failure into a one-line error."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        df.write_parquet(out)
    except OSError as exc:
        raise DataError(
            f"{out}: cannot write ({exc.strerror or exc}); choose another --out"
        ) from exc


def memory_flag(value: str | None, example: str) -> int | None:
    """``--memory VALUE`` in bytes (None when not given), or a one-line error that shows a
    size such as ``example``."""
    from quarry.jobs._manifest import parse_memory

    if value is None:
        return None
    try:
        size = parse_memory(value)
    except ValueError as exc:
        raise UsageError(f"--memory {value}: {exc}") from None
    if size <= 0:
        raise UsageError(f"--memory {value}: give a size above 0, e.g. {example}")
    return size
