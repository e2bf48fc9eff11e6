"""``quarry features``: compute feature sets and expressions into Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import polars as pl
import typer

from quarry.cli._output import console, err, fail_cleanly, write_parquet
from quarry.exceptions import DataError, UsageError

app = typer.Typer(
    help="Features in Qlib's expression language, computed for all instruments at once.",
    no_args_is_help=True,
)

_BAR_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "factor")


def _named(exprs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in exprs:
        name, sep, text = item.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise UsageError(
                f"--expr {item!r}: write it as NAME=EXPR, e.g. --expr 'MA5=Mean($close, 5)'"
            )
        out[name.strip()] = text.strip()
    return out


def _read_bars_file(path: Path) -> pl.DataFrame:
    from quarry.data._validate import read_input

    raw, _ = read_input(path)
    missing = [c for c in ("instrument", "date", "close") if c not in raw.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} (need instrument, date and bars)"
        )
    numeric = [c for c in raw.columns if c in _BAR_COLUMNS]
    try:
        frame = raw.select(
            pl.col("instrument").cast(pl.String),
            pl.col("date").cast(pl.String).str.to_date(strict=True)
            if raw.schema["date"] == pl.String
            else pl.col("date").cast(pl.Date),
            *[pl.col(c).cast(pl.Float64) for c in numeric],
        )
    except pl.exceptions.PolarsError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"{path}: {first}; dates must be YYYY-MM-DD and bars numbers") from exc
    return frame.sort("instrument", "date")


@app.command("compute")
@fail_cleanly
def compute_cmd(
    out: Annotated[Path, typer.Option(help="Output Parquet file.")],
    store: Annotated[
        str | None, typer.Option(help="Store to read bars from (adjusted prices).")
    ] = None,
    bars: Annotated[
        Path | None, typer.Option(help="A Parquet or CSV file of bars instead of a store.")
    ] = None,
    universe: Annotated[
        str | None, typer.Option(help="Keep rows where the instrument is a member.")
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
        str | None, typer.Option(help="First date written (history before it is used).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Last date written.")] = None,
) -> None:
    """Compute features for every instrument and date, one column each.

    Windows use each instrument's full history before --start, so the first dates are not
    cut short. A feature that reads the future is refused before any data is read.
    Example: quarry features compute --store ./store --set alpha158 --label
    'Ref($close, -2)/Ref($close, -1) - 1' --start 2020-01-01 --out features.parquet
    """
    from quarry.data import Store, read_bars
    from quarry.features import FEATURE_SETS, check_lookahead, compute, parse

    features: dict[str, str] = {}
    if feature_set:
        if feature_set.lower() not in FEATURE_SETS:
            raise UsageError(f"--set {feature_set!r}: choose one of {', '.join(FEATURE_SETS)}")
        features.update(FEATURE_SETS[feature_set.lower()]())
    features.update(_named(expr or []))
    if not features:
        raise UsageError("nothing to compute: give --set alpha158|alpha360 or --expr NAME=EXPR")
    parsed = {name: parse(text) for name, text in features.items()}
    for e in parsed.values():
        check_lookahead(e)  # before reading anything
    label_expr = parse(label) if label else None
    if (store is None) == (bars is None):
        raise UsageError("give exactly one of --store and --bars")
    fields = sorted(
        {
            n.name
            for e in [*parsed.values(), *([label_expr] if label_expr is not None else [])]
            for n in e.walk()
            if n.op == "$"
        }
    )
    with err.status("reading bars"):
        if store is not None:
            frame = read_bars(Store(store), fields, as_of=as_of, adjust="adjusted")
        else:
            assert bars is not None
            frame = _read_bars_file(bars)
    with err.status(f"computing {len(parsed)} features on {frame.height:,} rows"):
        result = compute(frame, parsed, label=label_expr)
    if universe is not None:
        if store is None:
            raise UsageError("--universe needs --store")
        members = read_bars(Store(store), ["close"], as_of=as_of, universe=universe).select(
            "instrument", "date"
        )
        result = result.join(members, on=["instrument", "date"], how="semi", maintain_order="left")
    if start is not None:
        result = result.filter(pl.col("date") >= pl.lit(start).str.to_date())
    if end is not None:
        result = result.filter(pl.col("date") <= pl.lit(end).str.to_date())
    write_parquet(result, out)
    console.print(
        f"wrote {out}: {result.height:,} rows x {len(parsed)} features"
        + (" + LABEL0" if label_expr is not None else "")
    )
