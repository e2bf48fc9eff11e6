"""``quarry models``: the registered models, their versions with their metadata, and who
moved which alias.

Thin over ``quarry.tracking``: the registry is the tracking store's (``$QUARRY_TRACKING_URI``,
else the SQLite database under ``$QUARRY_HOME``), and every move of an alias, by a person
here or by the promotion gate, is recorded there with who made it, when and why.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

from quarry.cli._output import console, fail_cleanly, print_json
from quarry.exceptions import UsageError
from quarry.tracking import KEY_FIGURES, AliasEvent, ModelDetail, VersionInfo

app = typer.Typer(
    help="Registered models: versions, aliases (champion) and who moved them.",
    no_args_is_help=True,
)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Alias = Annotated[str, typer.Option(help="The alias to move.")]
By = Annotated[
    str | None, typer.Option(help="Who is moving it, for the record (default: the OS user).")
]


# short column headings for KEY_FIGURES
_LABELS = {
    "test_ic": "IC",
    "test_rank_ic": "rank IC",
    "test_rank_icir": "rank ICIR",
    "backtest_sharpe": "Sharpe",
    "backtest_excess_annualized_return": "excess ret",
    "backtest_max_drawdown": "max DD",
}


def _shown(figures: list[dict[str, float]]) -> list[str]:
    """The key figures a table has room for (80 columns): the first three any row has."""
    return [k for k in KEY_FIGURES if any(k in f for f in figures)][:3]


def _when(iso: str) -> str:
    """An ISO time in UTC, to the minute, for a table."""
    return iso[:16].replace("T", " ")


def _figure(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.4g}"


def _version(v: int | None) -> str:
    return "(none)" if v is None else f"version {v}"


def _moved(name: str, event: AliasEvent) -> str:
    return (
        f"{event.alias} of {name}: {_version(event.from_version)} -> "
        f"{_version(event.to_version)} (move #{event.number} by {event.by})"
    )


@app.command("list")
@fail_cleanly
def list_cmd(as_json: AsJson = False) -> None:
    """Every registered model: its latest version, aliases, and its champion's key figures."""
    from quarry.tracking import list_models

    models = list_models()
    if as_json:
        print_json([m.to_dict() for m in models])
        return
    if not models:
        console.print(
            "no registered models (a workflow with tracking: registered: NAME registers its model)",
            highlight=False,
        )
        return
    figures = _shown([m.figures for m in models])
    table = Table(
        box=None,
        header_style="bold",
        caption="figures: the champion's run; times in UTC",
        caption_justify="left",
    )
    table.add_column("model", overflow="fold")
    for column in ("latest", "versions", *(_LABELS[k] for k in figures)):
        table.add_column(column, justify="right")
    table.add_column("aliases")
    table.add_column("last move", overflow="fold")
    for m in models:
        aliases = ", ".join(f"{a}={v}" for a, v in m.aliases.items()) or "-"
        last = m.last_move
        moved = f"{_when(last.at)} {last.alias} by {last.by}" if last else "-"
        table.add_row(
            escape(m.name),
            str(m.latest_version or "-"),
            str(m.versions),
            *(_figure(m.figures[k]) if k in m.figures else "-" for k in figures),
            escape(aliases),
            escape(moved),
        )
    console.print(table)


def _commits(commits: dict[str, Any]) -> str:
    held = [f"{table}@{c['version']}" if c else f"{table}: none" for table, c in commits.items()]
    return ", ".join(held) or "none"


def _metadata_rows(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """A version's metadata as the lines of a short table (every field with --json)."""
    data, window, workflow = meta["data"], meta["training_window"], meta["workflow"]
    names = [f["name"] for f in meta["features"]]
    shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
    read = f"as of {data['as_of']}" if data.get("as_of") else "as of the run"
    if data.get("universe"):
        read += f", universe {data['universe']}"
    return [
        ("project", meta["project"]),
        ("authors", ", ".join(meta["authors"])),
        ("licence", meta["licence"]),
        ("trained on", f"{window['start']} to {window['end']}"),
        ("features", shown),
        ("store", f"{data['store']} ({read})"),
        ("commits", _commits(data["commits"])),
        ("workflow", f"{workflow['path']} (sha256 {workflow['sha256'][:16]}...)"),
        ("run", meta["run_id"]),
    ]


def _chosen(detail: ModelDetail, version: int | None) -> VersionInfo | None:
    """The version whose metadata is shown: ``version``, else the newest."""
    if version is None:
        return detail.versions[0] if detail.versions else None
    found = [v for v in detail.versions if v.version == version]
    if not found:
        there = ", ".join(str(v.version) for v in reversed(detail.versions)) or "none"
        raise UsageError(f"--version {version}: model {detail.name} has no such version "
                         f"(versions: {there})")  # fmt: skip
    return found[0]


def _print_metadata(chosen: VersionInfo | None) -> None:
    if chosen is None:
        return
    meta = chosen.metadata
    if meta is None:
        console.print(
            f"version {chosen.version} has no metadata (registered before Quarry recorded it, "
            "or outside Quarry)",
            highlight=False,
        )
        return
    console.print(
        f"[bold]version {chosen.version}[/]: {escape(meta['description'])}", highlight=False
    )
    table = Table(box=None, show_header=False, padding=(0, 1, 0, 2))
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for field, value in _metadata_rows(meta):
        table.add_row(field, escape(value))
    console.print(table)


@app.command("show")
@fail_cleanly
def show_cmd(
    name: str,
    version: Annotated[
        int | None,
        typer.Option(
            help="The version whose metadata is shown (default the newest); with --json, "
            "print only that version's metadata.",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """A registered model: its versions (run, type, features, metrics), a version's metadata
    (description, authors, licence, training window, data, workflow file) and the alias
    history. --json gives every version's metadata in full."""
    from quarry.tracking import describe_model, model_metadata

    if as_json and version is not None:
        print_json(model_metadata(name, version))
        return
    detail = describe_model(name)
    if as_json:
        print_json(detail.to_dict())
        return
    chosen = _chosen(detail, version)
    aliases = ", ".join(f"{a} -> version {v}" for a, v in detail.aliases.items())
    project = f" (project {escape(detail.project)})" if detail.project else ""
    console.print(
        f"[bold]{escape(name)}[/]{project}: {len(detail.versions)} versions; "
        f"{escape(aliases) or 'no aliases'}",
        highlight=False,
    )
    _print_metadata(chosen)
    shown = _shown([v.metrics for v in detail.versions])
    table = Table(
        box=None,
        header_style="bold",
        caption="figures: each version's run (all of them with --json); times in UTC",
        caption_justify="left",
    )
    for column in ("ver", "created", "run", "type", "feats", *(_LABELS[k] for k in shown)):
        table.add_column(
            column,
            no_wrap=True,
            justify="left" if column in ("created", "run", "type") else "right",
        )
    table.add_column("aliases", overflow="fold")
    for v in detail.versions:
        table.add_row(
            str(v.version),
            _when(v.created),
            (v.run_id or "-")[:8],
            escape(v.model_type or "-"),
            str(v.features) if v.features is not None else "-",
            *(_figure(v.metrics[k]) if k in v.metrics else "-" for k in shown),
            escape(", ".join(v.aliases)) or "-",
        )
    console.print(table)
    if not detail.history:
        console.print("no recorded moves of its aliases", highlight=False)
        return
    history = Table(title="alias history", title_justify="left", box=None, header_style="bold")
    for column in ("#", "at", "alias", "from", "to", "by", "reason"):
        history.add_column(column, overflow="fold", no_wrap=column == "at")
    for e in detail.history:
        history.add_row(
            str(e.number),
            _when(e.at),
            escape(e.alias),
            str(e.from_version or "-"),
            str(e.to_version),
            escape(e.by),
            escape(e.reason or "-"),
        )
    console.print(history)


def _expected(text: str | None) -> int | Literal["any"] | None:
    if text is None:
        return "any"
    if text.lower() == "none":
        return None
    if not text.isdigit():
        raise UsageError(
            f"--expect {text}: give the version you saw the alias point at "
            "(as quarry models show lists it), or none if it was not set"
        )
    return int(text)


@app.command("promote")
@fail_cleanly
def promote_cmd(
    name: str,
    version: int,
    alias: Alias = "champion",
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    expect: Annotated[
        str | None,
        typer.Option(
            help="The version you saw the alias point at ('none': not set); if it moved "
            "since, nothing changes.",
        ),
    ] = None,
    by: By = None,
    as_json: AsJson = False,
) -> None:
    """Point ALIAS of registered model NAME at VERSION, recorded with who and why.

    Example: quarry models promote alpha 7 --expect 5 --reason "beats 5 on 2024 out of sample"
    """
    from quarry.tracking import alias_version, promote

    event = promote(name, version, alias=alias, by=by, reason=reason, expected=_expected(expect))
    if event is None:
        held = alias_version(name, alias)
        if as_json:
            print_json({"model": name, "alias": alias, "from": held, "to": held, "moved": False})
        else:
            console.print(
                f"{alias} of {name} already points at version {held}: nothing moved",
                highlight=False,
            )
        return
    if as_json:
        print_json({"model": name, **event.to_dict(), "moved": True})
    else:
        console.print(escape(_moved(name, event)), highlight=False)


@app.command("rollback")
@fail_cleanly
def rollback_cmd(
    name: str,
    alias: Alias = "champion",
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    by: By = None,
    as_json: AsJson = False,
) -> None:
    """Move ALIAS of NAME back to where it pointed before its last move.

    The rollback is recorded as a move too, so a second rollback undoes the first.
    """
    from quarry.tracking import rollback

    event = rollback(name, alias=alias, by=by, reason=reason)
    if as_json:
        print_json({"model": name, **event.to_dict(), "moved": True})
    else:
        console.print(escape(_moved(name, event)), highlight=False)
