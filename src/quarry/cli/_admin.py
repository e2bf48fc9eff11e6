"""``quarry admin``: backups of the job database, the tracking store and a data store to S3,
their list, and restores into an empty place.

Thin over ``quarry.admin``. The bucket's endpoint and keys come from the ``AWS_*`` variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``), as
for a store on S3.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from quarry.cli._output import console, err, fail_cleanly, print_json, progress_bar
from quarry.exceptions import QuarryError, UsageError

if TYPE_CHECKING:  # the library is imported by the commands, not by `quarry admin --help`
    from quarry.admin import Manifest, Restored

app = typer.Typer(
    help="Operations: back up the job database, tracking and a data store to S3; restore.",
    no_args_is_help=True,
)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Home = Annotated[
    Path | None,
    typer.Option(
        help="QUARRY_HOME for this command: where the default job database (jobs.db), tracking "
        "database (mlflow.db) and artifacts (mlartifacts) are (default $QUARRY_HOME, else "
        "~/.quarry)."
    ),
]
Db = Annotated[
    str | None,
    typer.Option(
        help="The job database: sqlite:///PATH or postgresql://USER@HOST[:PORT]/DB (default "
        "$QUARRY_DB, else jobs.db under the home)."
    ),
]
From = Annotated[
    str,
    typer.Option(
        "--from",
        help="s3://BUCKET/PREFIX (its newest complete backup) or s3://BUCKET/PREFIX/<id>.",
    ),
]


@contextmanager
def _home(home: Path | None) -> Iterator[None]:
    """``--home``: QUARRY_HOME while the command runs (an absolute path: MLflow's artifact
    locations are file URIs)."""
    if home is None:
        yield
        return
    before = os.environ.get("QUARRY_HOME")
    os.environ["QUARRY_HOME"] = str(home.expanduser().resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("QUARRY_HOME", None)
        else:
            os.environ["QUARRY_HOME"] = before


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _summary(manifest: Manifest) -> dict[str, Any]:
    """The manifest for --json, without its per-file entries (they are in manifest.json)."""
    out = manifest.as_dict()
    for part in out["parts"].values():
        part.pop("entries", None)
    return out


def _seconds(manifest: Manifest) -> float:
    return (manifest.finished_at - manifest.started_at).total_seconds()


def _backup_line(manifest: Manifest) -> str:
    return (
        f"{manifest.finished_at:%Y-%m-%d %H:%M:%S} backup {manifest.id}: {manifest.files} "
        f"files, {_size(manifest.bytes)} in {_seconds(manifest):.1f} s -> {manifest.uri}"
    )


def _print_backup(manifest: Manifest) -> None:
    console.print(escape(_backup_line(manifest).split(" ", 2)[2]), highlight=False, soft_wrap=True)
    table = Table("PART", "KIND", "FILES", "SIZE", "FROM", box=None)
    for part in manifest.parts:
        source = part.source
        if part.versions:
            source += " (" + ", ".join(f"{t} v{v}" for t, v in sorted(part.versions.items())) + ")"
        table.add_row(part.name, part.kind, str(len(part.files)), _size(part.bytes), escape(source))
    console.print(table, highlight=False)
    for name, why in manifest.skipped.items():
        console.print(f"skipped {name}: {escape(why)}", highlight=False, soft_wrap=True)


def _every_flag(value: str) -> float:
    from quarry.jobs._manifest import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"--every {value}: {exc}") from None
    if seconds <= 0:
        raise UsageError(f"--every {value}: give a period above 0, e.g. 1h or 3600")
    return seconds


def _json_line(obj: Any) -> None:
    """One JSON document on one line, flushed: a scheduled backup's record as it happens."""
    from quarry._json import dumps

    print(dumps(obj, indent=None), flush=True)


@app.command("backup")
@fail_cleanly
def backup_cmd(
    to: Annotated[str, typer.Option("--to", help="s3://BUCKET/PREFIX to back up to.")],
    db: Db = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="A data store to back up too (a directory or s3://...; none by default)."
        ),
    ] = None,
    home: Home = None,
    every: Annotated[
        str | None,
        typer.Option(
            help="Back up again every SECONDS or period (1h, 30m) until SIGINT or SIGTERM, "
            "one line per backup."
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Back up the job database, the tracking store (MLflow's database and artifacts) and a
    data store to s3://BUCKET/PREFIX/<UTC time>/, consistently while they are in use.

    manifest.json, written last, lists every file with its SHA-256; a backup without it is
    incomplete, and restore refuses it. A part that is not there (no jobs.db under the home)
    is skipped and said so.

    Example: quarry admin backup --to s3://backups/quarry --store /srv/store --every 1h
    """
    from quarry.admin import backup, backup_every

    period = _every_flag(every) if every is not None else None
    with _home(home):
        if period is None:
            if as_json:
                print_json(_summary(backup(to, db=db, store=store)))
                return
            with progress_bar() as update:
                manifest = backup(to, db=db, store=store, progress=update)
            _print_backup(manifest)
            return
        stop = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            if stop.is_set():  # a second signal: do not wait for the backup under way
                raise KeyboardInterrupt
            stop.set()

        def on_backup(manifest: Manifest) -> None:
            if as_json:
                _json_line(_summary(manifest))
            else:
                console.print(escape(_backup_line(manifest)), highlight=False, soft_wrap=True)
                sys.stdout.flush()

        def on_error(exc: QuarryError) -> None:
            err.print(
                f"[bold red]error:[/] {escape(str(exc))} (the schedule goes on)",
                highlight=False,
                soft_wrap=True,
            )

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            made = backup_every(
                to, period, stop=stop, on_backup=on_backup, on_error=on_error, db=db, store=store
            )
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        err.print(f"stopped after {made} backup{'s' if made != 1 else ''}", highlight=False)


def _print_restored(done: Restored) -> None:
    m = done.manifest
    console.print(
        f"restored backup {m.id} from {escape(m.uri)}: {m.files} files, "
        f"{_size(m.bytes)}, each checked against its SHA-256",
        highlight=False,
        soft_wrap=True,
    )
    table = Table("PART", "TO", box=None)
    for name, target in done.targets.items():
        table.add_row(name, escape(target))
    console.print(table, highlight=False)
    if done.rebased:
        console.print(
            f"{done.rebased} artifact locations in the tracking database now point "
            "at the new artifact folder",
            highlight=False,
            soft_wrap=True,
        )


@app.command("restore")
@fail_cleanly
def restore_cmd(
    source: From,
    db: Db = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="The directory (new or empty) for the data store (default "
            "$QUARRY_STORE, else store under the home)."
        ),
    ] = None,
    home: Home = None,
    as_json: AsJson = False,
) -> None:
    """Restore a backup into an empty place: refused if the job database, the tracking
    database, the artifact folder or the store is already there. Every file is checked
    against the manifest's SHA-256 before anything is put in place.

    Example: quarry admin restore --from s3://backups/quarry --home /srv/quarry-new
    """
    from quarry.admin import restore

    with _home(home):
        if as_json:
            print_json(restore(source, db=db, store=store).as_dict())
            return
        with progress_bar() as update:
            done = restore(source, db=db, store=store, progress=update)
    _print_restored(done)


def backups_cmd(source: From, as_json: AsJson = False) -> None:
    """The backups under s3://BUCKET/PREFIX, oldest first: time, size, and whether each is
    complete (has its manifest.json)."""
    from quarry.admin import list_backups

    found = list_backups(source)
    if as_json:
        print_json([b.as_dict() for b in found])
        return
    if not found:
        console.print(
            f"no backups under {escape(source)}; make one with quarry admin backup "
            f"--to {escape(source)}",
            highlight=False,
        )
        return
    table = Table("ID", "STARTED", "DURATION", "FILES", "SIZE", "STATE", box=None)
    for b in found:
        took = f"{(b.finished_at - b.started_at).total_seconds():.0f} s" if b.finished_at else "-"
        state = "complete" if b.complete else "incomplete: no manifest.json"
        table.add_row(
            b.id, f"{b.started_at:%Y-%m-%d %H:%M:%S}", took, str(b.files), _size(b.bytes), state
        )
    console.print(table, highlight=False)


app.command("backups")(fail_cleanly(backups_cmd))
app.command("list", help="The same as quarry admin backups.")(fail_cleanly(backups_cmd))
