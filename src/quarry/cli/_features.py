"""``quarry features``: compute feature sets and expressions into Parquet."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from quarry.cli._output import console, err, fail_cleanly, print_json, progress_bar
from quarry.exceptions import DataError, UsageError

if TYPE_CHECKING:  # imported by the commands that compute, not by `quarry --help`
    import polars as pl

app = typer.Typer(
    help="Features in Qlib's expression language, computed for all instruments at once.",
    no_args_is_help=True,
)

_BAR_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "factor")


def _named(exprs: list[str], taken: Mapping[str, str] | None = None) -> dict[str, str]:
    """--expr NAME=EXPR items as a mapping, refusing a name given twice or one already
    ``taken`` (name -> where it comes from, e.g. the --set)."""
    out: dict[str, str] = {}
    given: dict[str, str] = {}
    for item in exprs:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise UsageError(
                f"--expr {item!r}: write it as NAME=EXPR, e.g. --expr 'MA5=Mean($close, 5)'"
            )
        if name in given:
            raise UsageError(
                f"--expr {item!r}: {name} is already defined by --expr {given[name]!r}; "
                "give each feature its own name"
            )
        if taken and name in taken:
            raise UsageError(
                f"--expr {item!r}: {name} is already a feature of {taken[name]}; "
                "choose another name"
            )
        given[name] = item
        out[name] = text.strip()
    return out


def _read_bars_file(path: Path) -> pl.DataFrame:
    import polars as pl

    from quarry.data._times import first_timed, parse_times
    from quarry.data._validate import read_input

    raw, first_line = read_input(path)
    missing = [c for c in ("instrument", "date", "close") if c not in raw.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} (need instrument, date and bars)"
        )
    numeric = [c for c in raw.columns if c in _BAR_COLUMNS]
    kind = raw.schema["date"]
    # Bars at any frequency: days stay dates; times (intraday bars) stay times, in UTC.
    if kind == pl.String:
        timed = first_timed(raw["date"])
        text = pl.col("date").str.strip_chars()
        when = parse_times(text) if timed is not None else text.str.to_date(strict=True)
    elif isinstance(kind, pl.Datetime):  # in UTC, as a store keeps them (naive: UTC)
        stamp = pl.col("date").cast(pl.Datetime("us", kind.time_zone))
        when = (
            stamp.dt.replace_time_zone("UTC")
            if kind.time_zone is None
            else stamp.dt.convert_time_zone("UTC")
        )
    else:
        when = pl.col("date").cast(pl.Date)
    try:
        frame = raw.select(
            pl.col("instrument").cast(pl.String),
            when,
            *[pl.col(c).cast(pl.Float64) for c in numeric],
        )
    except pl.exceptions.PolarsError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(
            f"{path}: {first}; dates must be YYYY-MM-DD (or times YYYY-MM-DDTHH:MM[:SS][+HH:MM] "
            "for intraday bars) and bars numbers"
        ) from exc
    unparsed = frame["date"].is_null() & raw["date"].is_not_null()
    if unparsed.any():
        row = int(unparsed.arg_true()[0])
        raise DataError(
            f"{path}: {'line' if first_line == 2 else 'row'} {row + first_line}, column 'date': "
            f"{raw['date'][row]!r} is not a time; the "
            "file's bars are intraday (it has times of day), so every date needs one: "
            "YYYY-MM-DDTHH:MM[:SS][+HH:MM]"
        )
    return frame.sort("instrument", "date")


@app.command("compute")
@fail_cleanly
def compute_cmd(
    out: Annotated[
        Path,
        typer.Option(
            help="FILE.parquet (one file, a row group per chunk of instruments), FILE.arrow "
            "(Arrow IPC: written and read fastest, for a step that reads it at once; also .ipc, "
            ".feather) or a directory (one Parquet file per chunk)."
        ),
    ],
    store: Annotated[
        str | None, typer.Option(help="Store to read bars from (adjusted prices).")
    ] = None,
    bars: Annotated[
        Path | None, typer.Option(help="A Parquet or CSV file of bars instead of a store.")
    ] = None,
    universe: Annotated[
        str | None, typer.Option(help="Write rows where the instrument is a member.")
    ] = None,
    as_of: Annotated[str | None, typer.Option(help="Use what the store knew at this time.")] = None,
    feature_set: Annotated[str | None, typer.Option("--set", help="alpha158 or alpha360.")] = None,
    expr: Annotated[
        list[str] | None, typer.Option(help="NAME=EXPR, e.g. 'MA5=Mean($close, 5)'; repeatable.")
    ] = None,
    label: Annotated[
        str | None,
        typer.Option(
            help="A label expression, written as LABEL0; may look ahead, e.g. "
            "'Ref($close, -2)/Ref($close, -1) - 1'."
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="First date (or time, for intraday bars) written; history before it is used."
        ),
    ] = None,
    end: Annotated[str | None, typer.Option(help="Last date (or time) written.")] = None,
    memory: Annotated[
        str | None,
        typer.Option(
            help="Memory to compute within, e.g. 8GB (default $QUARRY_FEATURES_MEMORY or "
            "4GB); larger universes are computed in more chunks of instruments."
        ),
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Neither reuse nor keep results in the feature cache "
            "($QUARRY_HOME/cache/features), which is keyed by the store's commits.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print what was written as JSON for machines.")
    ] = False,
) -> None:
    """Compute features for every instrument and date, one float32 column each.

    Windows run on the market calendar over each instrument's full history, also before
    --start, so the first dates are not cut short; a day an instrument did not trade is a
    missing row, as in Qlib. A feature that reads the future is refused before any data is
    read. Universes larger than memory are computed in chunks of instruments and written
    as they finish. From a store, results are cached per expression and commit: a later
    run reuses them, and a correction to the store recomputes only what it affects.

    Example: quarry features compute --store ./store --set alpha158 --label
    'Ref($close, -2)/Ref($close, -1) - 1' --start 2020-01-01 --out features.parquet
    """
    from quarry.data import Store
    from quarry.features import FEATURE_SETS, FeatureCache, Plan, materialize
    from quarry.features._outofcore import memory_budget

    features: dict[str, str] = {}
    if feature_set:
        if feature_set.lower() not in FEATURE_SETS:
            raise UsageError(f"--set {feature_set!r}: choose one of {', '.join(FEATURE_SETS)}")
        features.update(FEATURE_SETS[feature_set.lower()]())
    origin = f"--set {feature_set.lower()}" if feature_set else ""
    features.update(_named(expr or [], dict.fromkeys(features, origin)))
    if not features:
        raise UsageError("nothing to compute: give --set alpha158|alpha360 or --expr NAME=EXPR")
    Plan.build(features, label=label)  # parse and look-ahead checks, before reading
    memory_budget(memory)  # a malformed --memory fails before the work, too
    if (store is None) == (bars is None):
        raise UsageError("give exactly one of --store and --bars")
    if universe is not None and store is None:
        raise UsageError("--universe needs --store")
    from quarry.data import parse_bound

    first, last = parse_bound(start, "--start"), parse_bound(end, "--end")
    if store is not None:
        source: Store | pl.DataFrame = Store(store)
    else:
        assert bars is not None
        with err.status("reading bars"):
            source = _read_bars_file(bars)
    with progress_bar() as update:
        done = materialize(
            source,
            features,
            out,
            label=label,
            universe=universe,
            as_of=as_of,
            start=first,
            end=last,
            memory=memory,
            cache=None if no_cache or store is None else FeatureCache(),
            progress=update,
        )
    n = done.features - (1 if label else 0)
    if as_json:
        print_json(
            {
                "out": str(out),
                "rows": done.rows,
                "features": n,
                "label": label,
                "chunks": done.chunks,
                "instruments_per_chunk": done.instruments_per_chunk,
                "cached": list(done.cached),
                "computed": list(done.computed),
            }
        )
        return
    how = (
        f"{len(done.cached)} from the cache, {len(done.computed)} computed"
        if done.cached
        else f"{done.chunks} chunk{'s' if done.chunks != 1 else ''} of up to "
        f"{done.instruments_per_chunk:,} instruments"
    )
    console.print(
        f"wrote {out}: {done.rows:,} rows x {n} features"
        + (" + LABEL0" if label else "")
        + f" ({how})"
    )
