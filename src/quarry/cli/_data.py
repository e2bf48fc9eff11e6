"""``quarry data``: generate, ingest, read, inspect and check a point-in-time store."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from quarry.cli._output import (
    console,
    err,
    fail_cleanly,
    print_json,
    progress_bar,
    write_parquet,
)
from quarry.data._samples import SAMPLES  # the names only: nothing heavy
from quarry.exceptions import UsageError
from quarry.settings import default_store

if TYPE_CHECKING:
    from quarry.data import Store

app = typer.Typer(
    help=(
        "Point-in-time market data: every read is as of a knowledge time, keeps delisted "
        "instruments, and never sees a value before it was published."
    ),
    no_args_is_help=True,
)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        "-s",
        help="Store location: a directory, or s3://bucket/prefix (endpoint and keys from "
        "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), or a data service's "
        "dataset, quarry+http://HOST:PORT/NAME (read through it, token in $QUARRY_TOKEN). "
        "Default: $QUARRY_STORE, else $QUARRY_HOME/store (QUARRY_HOME defaults to ~/.quarry).",
        envvar="QUARRY_STORE",
        show_default=False,
    ),
]


def _store(location: str | None) -> Store:
    from quarry.data import Store

    return Store(location or default_store())


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


class Kind(StrEnum):
    bars = "bars"
    fundamentals = "fundamentals"
    actions = "actions"
    instruments = "instruments"
    universe = "universe"
    events = "events"


class AdjustMode(StrEnum):
    raw = "raw"
    adjusted = "adjusted"


@app.command("generate")
@fail_cleanly
def generate_cmd(
    store: StoreOpt = None,
    instruments: Annotated[int, typer.Option(help="Number of instruments.")] = 500,
    days: Annotated[int, typer.Option(help="Number of trading days.")] = 1260,
    seed: Annotated[
        int, typer.Option(min=0, help="Random seed: the same seed gives the same data.")
    ] = 0,
    start: Annotated[str, typer.Option(help="First trading day, YYYY-MM-DD.")] = "2015-01-02",
    alpha_ic: Annotated[
        float,
        typer.Option(
            help="Plant a 5-day reversal alpha with this correlation to the next-but-one "
            "day's idiosyncratic return (0 plants none)."
        ),
    ] = 0.0,
    text_rate: Annotated[
        float,
        typer.Option(
            help="Also write an events table: this many stories (headlines of news, filings, "
            "reports, social posts about one instrument, a few about two) per instrument and "
            "trading day on average, 0 to 20. Each is known from its delivery: some come "
            "after the close or overnight (they count for the next day's bar), about 3% "
            "late, 2% are corrected and 1% retracted days later (0 writes none)."
        ),
    ] = 0.0,
    text_ic: Annotated[
        float,
        typer.Option(
            help="Plant this correlation between a story's tone (its title's positive or "
            "negative words) and the idiosyncratic return from close b+1 to close b+2, b "
            "the first bar whose close (16:00 New York) is at or after the story's delivery "
            "(Qlib's default label at b; 0 plants none; needs --text-rate)."
        ),
    ] = 0.0,
    json_out: JsonOpt = False,
) -> None:
    """Generate a realistic, seeded synthetic market into a new store.

    Market and industry factors with fat-tailed returns, listings and delistings, splits and
    dividends, lagged fundamentals, vendor corrections and an index universe ('large', the
    larger half by market value, reviewed each quarter). Each fact is known from when it
    would have been (a bar after its close, a fundamental when published, a correction days
    later), so --as-of reads inside the history are point in time. With --text-rate, also
    synthetic headlines whose tone leads returns by --text-ic. Example:
    quarry data generate --store ./store --instruments 300 --days 1500 --text-rate 0.5
    --text-ic 0.05
    """
    from quarry.data import generate

    s = _store(store)
    with progress_bar() as update:
        summary = generate(
            s,
            instruments,
            days,
            seed=seed,
            start=start,
            alpha_ic=alpha_ic,
            text_rate=text_rate,
            text_ic=text_ic,
            progress=update,
        )
    if json_out:
        print_json({"store": str(s.location), **vars(summary)})
        return
    t = Table(title=f"Generated {s.location}", show_header=False)
    for k, v in vars(summary).items():
        t.add_row(k.replace("_", " "), str(v))
    console.print(t)


@app.command("ingest")
@fail_cleanly
def ingest_cmd(
    kind: Annotated[Kind, typer.Argument(help="Which table the file feeds.")],
    file: Annotated[Path, typer.Argument(help="A CSV, JSON lines (.jsonl) or Parquet file.")],
    store: StoreOpt = None,
    knowledge_time: Annotated[
        str | None,
        typer.Option(help="When this data became known (ISO 8601, UTC if no zone); default now."),
    ] = None,
    skip_bad: Annotated[
        bool,
        typer.Option(
            help="Commit the good rows and write the bad ones with reasons to "
            "FILE.rejected.csv (default: any bad row fails the whole ingest)."
        ),
    ] = False,
    name: Annotated[
        str | None,
        typer.Option(help="Universe name (universe files only; 'all' is built in, not stored)."),
    ] = None,
    replace: Annotated[
        bool,
        typer.Option(
            help="The file is the whole truth for its instruments (bars: within its dates): "
            "known rows it lacks are retracted from the knowledge time on (a wrong ex-date or "
            "publication date, say). Earlier as-of reads still see them."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Validate a vendor file and commit what it adds or corrects, atomically.

    Unchanged rows are skipped; a changed row is stored as a correction (a new version), so
    reads as of an earlier time still see the old value. Columns: bars = instrument, date,
    open, high, low, close, volume[, vwap, factor]. Bars are daily, or intraday when their
    date is a time (YYYY-MM-DDTHH:MM[:SS][+HH:MM], UTC unless an offset is given; the time
    the bar closed, known from then on); a store keeps the frequency of its first bars;
    actions and universes apply from the first bar of their day, fundamentals (whose
    knowledge_date has no time) from the day after. fundamentals =
    instrument, field, period_end, knowledge_date, value; actions = instrument, ex_date,
    kind (split|dividend), ratio or amount; instruments = instrument, list_date[, name,
    exchange, delist_date, industry, valid_from, valid_to]; universe = instrument, start[,
    end] with --name; events (stories: news, filings, reports, social posts; also JSON
    lines, .jsonl) = event_id, instruments (a list, or codes separated by , ; or |),
    published_at, kind (news|filing|report|social), title[, body, source, delivered_at,
    retracted]: a version is known from its delivered_at (default: the knowledge time); a
    correction is a later version of the same event_id, a retraction a version with
    retracted true and only event_id and delivered_at.
    """
    from quarry.data import ingest_file

    if kind is not Kind.universe and name is not None:
        raise UsageError("--name applies to universe files only")
    result = ingest_file(
        _store(store),
        kind.value,
        file,
        knowledge_time=knowledge_time,
        skip_bad=skip_bad,
        universe=name,
        replace=replace,
    )
    if json_out:
        out = {k: v for k, v in vars(result).items() if k != "commit"}
        out["commit"] = result.commit.as_dict() if result.commit else None
        print_json(out)
        return
    if result.commit is None:
        console.print(f"{file}: nothing new ({result.unchanged} rows already known); no commit")
    else:
        c = result.commit
        console.print(
            f"committed {c.id} at knowledge time {c.knowledge_time.isoformat()}: "
            f"{result.new} new, {result.corrected} corrected, {result.unchanged} unchanged"
            + (f", {result.retracted} retracted" if result.retracted else "")
        )
    if result.rejected:
        err.print(f"{result.rejected} bad rows skipped; see {result.rejects_path}")


@app.command("read")
@fail_cleanly
def read_cmd(
    out: Annotated[Path, typer.Option(help="Output Parquet file.")],
    store: StoreOpt = None,
    fields: Annotated[
        str,
        typer.Option(
            help="Comma-separated bar, fundamental or text fields (news_count, news_sent, "
            "text_decay_vader_hl10: KIND_STAT[_SCORER][_hlN])."
        ),
    ] = "open,high,low,close,volume",
    start: Annotated[
        str | None,
        typer.Option(help="First date, YYYY-MM-DD (intraday bars: or a time, UTC by default)."),
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Last date (a date takes its whole day), or time.")
    ] = None,
    universe: Annotated[
        str | None,
        typer.Option(
            help="Keep rows on dates the instrument was a member; 'all' is every instrument "
            "of the store (delisted ones on the days they traded)."
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            help="Read what was known at this time (ISO 8601, UTC unless a zone is given; a "
            "bare date means its 00:00). Default: everything known."
        ),
    ] = None,
    adjust: Annotated[AdjustMode, typer.Option(help="raw prices, or adjusted for actions.")] = (
        AdjustMode.raw
    ),
    json_out: JsonOpt = False,
) -> None:
    """Write a long table (instrument, date, fields...) sorted by instrument then date.

    Only what was known at --as-of is read: later corrections, bars dated after it and
    fundamentals published after it are invisible. Fundamentals (eps, ...) carry their latest
    published value forward. A text field counts each story at the first bar that decides
    (16:00 New York) at or after its delivery. Example:

    quarry data read --store ./store --fields close,volume,eps --universe all
    --as-of 2019-06-30 --adjust adjusted --out bars.parquet
    """
    from quarry.data import read_bars

    names = [f.strip() for f in fields.split(",") if f.strip()]
    if not names:
        raise UsageError("--fields is empty; give e.g. --fields close,volume")
    df = read_bars(
        _store(store),
        names,
        start=start,
        end=end,
        universe=universe,
        as_of=as_of,
        adjust="adjusted" if adjust is AdjustMode.adjusted else "raw",
    )
    write_parquet(df, out)
    if json_out:
        print_json(
            {
                "out": str(out),
                "rows": df.height,
                "instruments": df["instrument"].n_unique(),
                "fields": names,
                "first_date": df["date"].min(),
                "last_date": df["date"].max(),
            }
        )
        return
    console.print(
        f"wrote {out}: {df.height} rows, {df['instrument'].n_unique()} instruments, "
        f"fields {', '.join(names)}"
    )


@app.command("versions")
@fail_cleanly
def versions_cmd(store: StoreOpt = None, json_out: JsonOpt = False) -> None:
    """List the store's commits: id (table@version), knowledge time, rows, corrections.

    A commit of history whose rows became known one by one (a generated market's) shows the
    knowledge times of its first and last rows.
    """
    s = _store(store)
    s.require()
    commits = s.commits()
    if json_out:
        print_json([c.as_dict() for c in commits])
        return
    t = Table(title=f"Commits of {s.location}")
    for col in ("id", "knowledge time (UTC)", "rows", "corrections", "source"):
        right = col in ("rows", "corrections")
        t.add_column(col, justify="right" if right else "left", overflow="fold")
    for c in commits:
        when = c.knowledge_time.strftime("%Y-%m-%d %H:%M")
        if c.last_known != c.knowledge_time:
            when += f" to {c.last_known.strftime('%Y-%m-%d %H:%M')}"
        t.add_row(
            c.id,
            when,
            f"{c.rows:,}",
            f"{c.corrections:,}",
            c.source,
        )
    console.print(t)


@app.command("check")
@fail_cleanly
def check_cmd(
    store: StoreOpt = None,
    as_of: Annotated[
        str | None, typer.Option(help="Check what was known at this time (ISO 8601, UTC).")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 when any check fails.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Health check: missing values, price jumps over 50%, volume jumps, missing factors."""
    from quarry.data import check_health

    report = check_health(_store(store), as_of=as_of)
    if json_out:
        print_json(report.as_dict())
    else:
        _print_health(report)
    if strict and not report.ok:
        raise typer.Exit(1)


def _print_health(report: object) -> None:
    from quarry.data import HealthReport

    assert isinstance(report, HealthReport)
    t = Table(title=f"Health of {report.rows:,} bars, {report.instruments:,} instruments")
    t.add_column("check")
    t.add_column("rows", justify="right")
    t.add_column("first examples")
    for c in report.checks:
        ex = ", ".join(f"{e['instrument']} {e['date']}" for e in c.examples[:3])
        t.add_row(c.description, f"[{'green' if c.count == 0 else 'yellow'}]{c.count:,}", ex)
    console.print(t)
    console.print("[green]healthy[/]" if report.ok else "[yellow]issues found[/] (see above)")


@app.command("summary")
@fail_cleanly
def summary_cmd(store: StoreOpt = None, json_out: JsonOpt = False) -> None:
    """Summarize a store: instruments, date range, commits and health."""
    import polars as pl

    from quarry.data import check_health

    s = _store(store)
    s.require()
    bars = s.scan("bars")
    inst = s.scan("instruments")
    out: dict[str, object] = {"store": str(s.location)}
    if bars is not None:
        stats = bars.select(
            pl.len().alias("bars"),
            pl.col("instrument").n_unique().alias("instruments"),
            pl.col("date").min().alias("first_date"),
            pl.col("date").max().alias("last_date"),
        ).collect()
        out.update(stats.to_dicts()[0])
    if inst is not None:
        delisted = (
            inst.filter(pl.col("delist_date").is_not_null())
            .select(pl.col("instrument").n_unique())
            .collect()
            .item()
        )
        out["delisted_instruments"] = delisted
    commits = s.commits()
    out["commits"] = len(commits)
    out["corrections"] = sum(c.corrections for c in commits)
    health = check_health(s) if bars is not None else None
    out["healthy"] = health.ok if health else None
    if json_out:
        print_json(out)
        return
    t = Table(title="Store summary", show_header=False)
    for k, v in out.items():
        t.add_row(
            k.replace("_", " "),
            f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v),
        )
    console.print(t)
    if health is not None:
        _print_health(health)


@app.command("sample")
@fail_cleanly
def sample_cmd(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(SAMPLES)}.")],
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Load real sample data that ships with an installed package (nothing is downloaded)."""
    from quarry.data import load_sample

    summary = load_sample(_store(store), name)
    if json_out:
        print_json(vars(summary))
        return
    console.print(
        f"loaded {summary.name}: {summary.instruments} instruments, {summary.rows:,} bars, "
        f"{summary.start} to {summary.end}"
    )
    console.print(f"[yellow]note:[/] {summary.note}")


@app.command("warm")
@fail_cleanly
def warm_cmd(
    dataset: Annotated[str, typer.Argument(help="The dataset's name (quarry datasets list).")],
    server: Annotated[
        str | None,
        typer.Option(help="The data service (default $QUARRY_SERVER, else http://127.0.0.1:8765)."),
    ] = None,
    fields: Annotated[
        str,
        typer.Option(
            help="Comma-separated bar, fundamental or text fields (news_count, news_sent, "
            "text_decay_vader_hl10: KIND_STAT[_SCORER][_hlN])."
        ),
    ] = "open,high,low,close,volume",
    start: Annotated[str | None, typer.Option(help="First date, YYYY-MM-DD.")] = None,
    end: Annotated[str | None, typer.Option(help="Last date, YYYY-MM-DD.")] = None,
    universe: Annotated[str | None, typer.Option(help="Only the universe's members.")] = None,
    as_of: Annotated[str | None, typer.Option(help="What was known at this time.")] = None,
    adjust: Annotated[AdjustMode, typer.Option(help="raw or adjusted prices.")] = AdjustMode.raw,
    json_out: JsonOpt = False,
) -> None:
    """Read a dataset's bars through the data service into this machine's read-through cache,
    before a burst of jobs reads them (token in $QUARRY_TOKEN). The jobs' reads of the same
    bars are then answered from local disk while the dataset's commit is the same.

    Example: quarry data warm us_equities --fields close,volume --start 2015-01-01
    """
    import os
    import time

    from quarry.data import DataQuery, connect

    url = server or os.environ.get("QUARRY_SERVER") or "http://127.0.0.1:8765"
    client = connect(url)
    assert client.cache is not None
    query = DataQuery("bars", dataset, tuple(f.strip() for f in fields.split(",") if f.strip()),
                      start=start, end=end, universe=universe, as_of=as_of,
                      adjust=adjust.value)  # fmt: skip
    before = client.cache.stats()
    began = time.perf_counter()
    df = client.read(query)
    took = time.perf_counter() - began
    after = client.cache.stats()
    fetched = after.miss_bytes - before.miss_bytes
    summary = {"dataset": dataset, "rows": df.height, "fetched_bytes": fetched,
               "already_cached": after.hits > before.hits, "seconds": round(took, 3),
               "cache": str(client.cache.root), "cache_bytes": after.size}  # fmt: skip
    if json_out:
        print_json(summary)
        return
    how = ("already cached at the current commit" if summary["already_cached"]
           else f"fetched {fetched / 1e6:,.1f} MB")  # fmt: skip
    held = after.size / 1e6
    console.print(f"warmed {dataset}: {df.height:,} rows, {how} in {took:.1f} s; the cache "
                  f"holds {held:,.1f} MB at {client.cache.root}", highlight=False)  # fmt: skip


@app.command("events")
@fail_cleanly
def events_cmd(
    store: StoreOpt = None,
    as_of: Annotated[
        str | None,
        typer.Option(help="The stories as known at this time (ISO 8601, UTC unless a zone)."),
    ] = None,
    instrument: Annotated[
        list[str] | None, typer.Option(help="Stories about this instrument (repeatable).")
    ] = None,
    kind: Annotated[
        list[str] | None, typer.Option(help="news, filing, report or social (repeatable).")
    ] = None,
    start: Annotated[str | None, typer.Option(help="First delivered at or after this.")] = None,
    end: Annotated[str | None, typer.Option(help="First delivered at or before this.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown, newest first.")] = 20,
    out: Annotated[Path | None, typer.Option(help="Write them all to Parquet.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the stories known at --as-of, newest first, each as its newest version then.

    A story retracted by then is absent; a corrected one shows its correction and how many
    versions it had. first_delivered_at is when it was first known: it counts for the first
    bar that decides at or after it (16:00 New York for daily bars). Example:

    quarry data events --store ./store --instrument SYN00001 --as-of 2019-06-30
    """
    from quarry.data._events import read_events

    found = read_events(
        _store(store), as_of=as_of, instruments=instrument, kinds=kind, start=start, end=end
    )
    if out is not None:
        write_parquet(found, out)
    newest = found.reverse().head(limit)
    if json_out:
        rows = newest.to_dicts() if out is None else []
        print_json({"stories": found.height, "out": str(out) if out else None, "rows": rows})
        return
    if out is not None:
        console.print(f"wrote {out}: {found.height} stories")
        return
    if found.height == 0:
        console.print("no stories match (as known then)")
        return
    shown = f", the newest {limit}" if found.height > limit else ""
    t = Table(title=f"{found.height} stories{shown}" + (f" as of {as_of}" if as_of else ""))
    for col in ("first_delivered_at", "instruments", "kind", "title", "versions"):
        t.add_column(col.replace("_", " "))
    for r in newest.iter_rows(named=True):
        t.add_row(str(r["first_delivered_at"])[:19], r["instruments"] or "", r["kind"] or "",
                  r["title"] or "", str(r["versions"]))  # fmt: skip
    console.print(t)


@app.command("score")
@fail_cleanly
def score_cmd(
    store: StoreOpt = None,
    scorer: Annotated[
        str,
        typer.Option(
            help="lm (Loughran-McDonald finance words), vader (a general lexicon) or embed "
            "(a sentence embedding with a ridge head fitted walk-forward on returns)."
        ),
    ] = "lm",
    as_of: Annotated[
        str | None, typer.Option(help="Score the stories known at this time (default: all).")
    ] = None,
    step: Annotated[
        int, typer.Option(min=1, help="embed: trading days between refits of the head.")
    ] = 63,
    min_train_days: Annotated[
        int, typer.Option(min=1, help="embed: trading days of stories before the first head.")
    ] = 252,
    json_out: JsonOpt = False,
) -> None:
    """Score every story version and keep the scores in the store (event_scores).

    Text fields read them: news_sent (lm), news_sent_vader, news_decay_embed_hl10, ... A
    dictionary scorer's scores are also computed on the fly when missing; this keeps them
    so that later reads don't. The embed scorer's head learns which stories lead returns:
    each window of --step days is scored by a head fitted only on stories whose returns were
    known before it, so every score is out of sample. Example:

    quarry data score --store ./store --scorer embed
    """
    import time

    from quarry.data._event_scores import current_version, score_versions, write_scores
    from quarry.data._events import event_versions

    s = _store(store)
    if scorer != "embed":
        from quarry.text import get_scorer

        get_scorer(scorer)  # an unknown name: one line with the known ones
    started = time.perf_counter()
    report: dict[str, object] = {"scorer": scorer}
    if scorer == "embed":
        import os

        from quarry.models._text_head import fit_text_head

        quiet = os.environ.get("QUARRY_NO_PROGRESS") == "1" or json_out
        head = fit_text_head(
            s, as_of=as_of, step=step, min_train_days=min_train_days,
            progress=None if quiet else lambda message: err.print(message),
        )  # fmt: skip
        result = write_scores(s, head.scores, scorer, head.version)
        version = head.version
        report |= {"windows": head.windows, "trained_on": head.trained_on,
                   "oos_rank_ic": head.oos_rank_ic, "oos_stories": head.oos_stories,
                   "unscored_before_first_head": head.scores["score"].null_count()}  # fmt: skip
    else:
        if s.table("events") is None:
            raise UsageError(
                f"{s.location}: the store has no stories; ingest some with "
                "`quarry data ingest events FILE`"
            )
        import polars as pl

        versions = event_versions(s, as_of).filter(~pl.col("retracted"))
        version = current_version(s, scorer) or ""
        scores = score_versions(s, versions, scorer)
        frame = versions.select("event_id", "delivered_at").with_columns(scores.alias("score"))
        result = write_scores(s, frame, scorer, version)
    report |= {
        "version": version,
        "stories": result.rows_in,
        "written": result.new + result.corrected,
        "unchanged": result.unchanged,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if json_out:
        print_json(report)
        return
    console.print(
        f"{scorer} ({version}): {report['written']} scores written, {report['unchanged']} "
        f"already kept, {report['stories']} story versions, {report['seconds']} s"
    )
    if scorer == "embed":
        console.print(
            f"head: {report['windows']} walk-forward windows; out of sample, rank IC "
            f"{report['oos_rank_ic']:.4f} over {report['oos_stories']} stories"
        )
