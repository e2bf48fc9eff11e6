"""``quarry datasets``: the datasets the data service serves, who may read them, and who did.

``add``, ``list`` and ``remove`` are an operator's commands on the job database (like
``quarry tokens``); ``audit`` asks the service, as the dataset's owner."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from quarry.cli._jobs import AsJson, Db
from quarry.cli._output import console, fail_cleanly, print_json
from quarry.exceptions import UsageError

app = typer.Typer(
    help="Datasets: named stores with an owner, a project and a visibility (public, project, "
    "private), served by quarry server start.",
    no_args_is_help=True,
)

Server = Annotated[
    str | None,
    typer.Option(help="The data service's URL (default $QUARRY_SERVER, else "
                 "http://127.0.0.1:8765)."),
]  # fmt: skip


@app.command("add")
@fail_cleanly
def add_cmd(
    name: Annotated[str, typer.Argument(help="The dataset's name, e.g. us_equities.")],
    store: Annotated[str, typer.Option(help="Its store: a directory or s3://bucket/prefix.")],
    owner: Annotated[str, typer.Option(help="The user it belongs to (reads its audit log).")],
    project: Annotated[str, typer.Option(help="The project it belongs to.")],
    visibility: Annotated[
        str,
        typer.Option(
            help="Who reads it: public (every user), project (its project's "
            "members) or private (its owner)."
        ),
    ] = "project",
    description: Annotated[str | None, typer.Option(help="What it holds.")] = None,
    replace: Annotated[bool, typer.Option(help="Change a dataset already registered.")] = False,
    db: Db = None,
    as_json: AsJson = False,
) -> None:
    """Register the store at --store as dataset NAME.

    Example: quarry datasets add us_equities --store /data/us --owner ann --project alpha
    --visibility public
    """
    from quarry.data import Store
    from quarry.jobs import JobStore

    opened = Store(store)
    opened.require()  # a name for nothing would answer every read with an error
    with JobStore(db) as jobs:  # the store's absolute place: the server may run elsewhere
        info = jobs.add_dataset(name, str(opened.location), owner=owner, project=project,
                                visibility=visibility, description=description,
                                replace=replace)  # fmt: skip
    if as_json:
        print_json({**info.view(), "location": info.location})
    else:
        console.print(f"dataset {info.name} ({info.visibility}, project {info.project}, owner "
                      f"{info.owner}) at {info.location}", highlight=False)  # fmt: skip


@app.command("list")
@fail_cleanly
def list_cmd(db: Db = None, as_json: AsJson = False) -> None:
    """Every registered dataset: its owner, project, visibility and store."""
    from quarry.jobs import JobStore

    with JobStore(db) as jobs:
        found = jobs.datasets()
    if as_json:
        print_json([{**d.view(), "location": d.location} for d in found])
        return
    if not found:
        console.print("no datasets; register one with quarry datasets add", highlight=False)
        return
    table = Table("NAME", "VISIBILITY", "PROJECT", "OWNER", "STORE", box=None)
    for d in found:
        table.add_row(d.name, d.visibility, d.project, d.owner, d.location)
    console.print(table, highlight=False)


@app.command("remove")
@fail_cleanly
def remove_cmd(
    name: Annotated[str, typer.Argument(help="The dataset's name.")],
    db: Db = None,
) -> None:
    """Stop serving dataset NAME (its store and its audit log are kept)."""
    from quarry.jobs import JobStore

    with JobStore(db) as jobs:
        if not jobs.remove_dataset(name):
            raise UsageError(f"no dataset {name!r}; quarry datasets list shows them")
    console.print(f"dataset {name} removed; its store is untouched", highlight=False)


@app.command("audit")
@fail_cleanly
def audit_cmd(
    name: Annotated[str, typer.Argument(help="The dataset's name.")],
    server: Server = None,
    limit: Annotated[int, typer.Option(help="Reads to show, newest first.")] = 50,
    as_json: AsJson = False,
) -> None:
    """Who read dataset NAME: user, job, what, which commit, as of when, rows (for its
    owner; token in $QUARRY_TOKEN)."""
    import os

    from quarry.data import connect

    url = server or os.environ.get("QUARRY_SERVER") or "http://127.0.0.1:8765"
    reads = connect(url, cache=False).audit(name, limit=limit)
    if as_json:
        print_json(reads)
        return
    if not reads:
        console.print(f"no reads of {name} yet", highlight=False)
        return
    table = Table("WHEN (UTC)", "USER", "JOB", "ROUTE", "COMMIT", "AS OF", "ROWS", "WHAT",
                  box=None)  # fmt: skip
    for r in reads:
        table.add_row(r["at"][5:19].replace("T", " "), r["user"], str(r["job_id"] or "-"),
                      r["route"], _short(r["commit"]), r["as_of"] or "-", f"{r['rows']:,}",
                      r["query"])  # fmt: skip
    console.print(table, highlight=False)
    console.print("(COMMIT: the bars table's version and the store's generation; --json "
                  "gives every table's)", highlight=False)  # fmt: skip


def _short(commit: str) -> str:
    """``bars@12 fundamentals@3 ... #1a2b3c4d`` -> ``bars@12 #1a2b``: what a person compares."""
    parts = commit.split()
    bars = next((p for p in parts if p.startswith("bars@")), parts[0] if parts else "-")
    generation = next((p for p in parts if p.startswith("#")), "")
    return f"{bars} {generation[:5]}".strip()
