"""Text events at scale: ingest and dictionary-score 1,000,000 headlines, embed-score
100,000, and aggregate them to 16,000 instruments x 2,520 days, each as a whole command.

Every figure but the in-process ones is a whole ``quarry ...`` command in a fresh process
(``bench_cli.whole``: wall time from the launch to the exit, peak RSS of that process, both
cores), the median of --runs (--long-runs for the slow ones). A command that writes gets a
store of its own each run, a hard-linked copy (``cp -al``) of the one it starts from, so no
run finds what an earlier one wrote (Delta Lake never rewrites a file; the copies share
the bars' files and add their own).

Set-up, made once and reused (each with a NAME.ready marker beside it):

- bars: ``generate(store, --instruments, --days, seed=1)``, the store bench_reads.py,
  bench_features_scale.py and bench_cli.py share (bench/_data/generated-IxD; 16,000 x 2,520
  takes about a minute and 0.5 GB);
- the headlines (bench/_data/text-IxD-N/headlines.jsonl and .parquet), a vendor's feed of
  --stories rows about the store's instruments: news 75%, filings 10%, research notes 10%,
  social posts 5%; a story names one instrument (95%), two (4%) or three (1%): the first
  drawn with Zipf weights (large names are in the news more), on a day it traded, the
  others among those trading that day; published at any second of that day in New York,
  delivered 2 s to 15 min later (3%: 1 h to 3 days); titles of 75 templates by kind and
  tone (positive, neutral, negative) filled with the instruments' codes,
  numbers, quarters, cities, brokers, people and products, so that nearly every title is
  distinct (VADER scores each distinct text once); no body (headlines). 1% of the rows are
  corrections (a later version of a story, its title changed) and 0.5% retractions
  (event_id, delivered_at and retracted only). JSON lines carry times as ISO text and
  the instruments as a list; the Parquet file the same, typed;
- store-events: the bars store with the JSONL ingested (the untimed first ingest, which
  also warms the page cache), and store-scored: that with its ``lm`` scores kept;
- the embedding store (store-embed-IxD-N): ``quarry data generate --instruments 500 --days
  1260 --text-rate R --text-ic 0.05 --seed 1``, R chosen for about --embed-stories stories.

Commands timed (QUARRY_HOME a fresh folder, QUARRY_NO_PROGRESS=1):

    ingest jsonl     quarry data ingest events headlines.jsonl --store COPY --knowledge-time T
    ingest parquet   the same from headlines.parquet
    score lm         quarry data score --store COPY --scorer lm      (copy of store-events)
    score vader      quarry data score --store COPY --scorer vader   (--long-runs)
    score embed      quarry data score --store COPY --scorer embed   (a copy of the
                     embedding store; --long-runs)
    read text        quarry data read --store store-scored --fields news_count,news_sent,
                     news_decay --out F.parquet                      (--long-runs)
    read close       the same with --fields close: the bars' read alone, for comparison

In-process, labelled so (one fresh process, the figures without the interpreter's start,
the imports or the store's write): the lm scorer on store-events' texts and the embedder
(its load, then the embedding) on the embedding store's.

    .venv/bin/python bench/bench_text.py --quick     # a smoke run at a small size, ~15 s
    .venv/bin/python bench/bench_text.py             # the issue's sizes, ~6 minutes
    .venv/bin/python bench/bench_text.py --only read-text read-close --long-runs 5

The first full run makes the set-up (about 2 minutes).

Results: a table on stdout, and JSON in bench/_data/text-IxD-N/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import generated_store, peak_rss_mb, run_child  # bench/ is on sys.path
from bench_cli import whole

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
QUARRY = str(HERE.parent / ".venv" / "bin" / "quarry")
CASES = ("ingest-jsonl", "ingest-parquet", "score-lm", "score-vader", "score-embed",
         "read-text", "read-close", "inprocess")  # fmt: skip
TEXT_FIELDS = "news_count,news_sent,news_decay"
CORES = "0,1"
# The embedding store's stories per instrument, trading day and unit of --text-rate,
# measured at 500 x 1,260: the days an instrument is not listed leave 0.85.
ALIVE = 0.85

# Titles by kind and tone; {n} the instrument's code, {o} another's, the rest filled from
# the word lists below.
NEWS = {
    1: [
        "{n} posts record {q} profit, shares up {pct}%",
        "{n} beats forecasts as margins improve to {pct}%",
        "{n} raises {y} outlook after strong {product} sales",
        "{n} wins ${m}m contract from {city} authority",
        "{n} lifts dividend {pct}% after an excellent {q}",
        "{n} completes successful expansion into {city}",
        "{n} shares climb {pct}% on favorable ruling",
        "{n} reports stronger than expected {q} earnings of ${eps} a share",
        "{n} gains market share with new {product} line",
        "{n} achieves milestone as {product} shipments top {k}k units",
        "Investors cheer {n} as efficiency improves at {city} plant",
        "{n} and {o} sign profitable {product} partnership",
        "{n} sees robust demand, lifts {y} revenue goal to ${m}m",
        "{n} delivers impressive {q} results; CEO {person} upbeat",
    ],
    0: [
        "{n} to present at {city} {product} conference on {date}",
        "{n} schedules {q} {y} earnings call for {date}",
        "{n} names {person} chief financial officer",
        "{n} sets date of annual meeting: {date}",
        "{n} opens new office in {city}",
        "{n} declares regular quarterly dividend of ${eps}",
        "{n} appoints {person} to the board",
        "{n} and {o} announce {product} joint venture",
        "{n} to release {q} results on {date}",
        "Trading update from {n} ahead of {q}",
        "{n} moves {product} unit headquarters to {city}",
        "{n} publishes {y} sustainability report",
        "{n} completes ${m}m bond offering due {y2}",
    ],
    -1: [
        "{n} posts unexpected {q} loss of ${m}m",
        "{n} misses forecasts as {product} sales decline {pct}%",
        "{n} cuts {y} outlook on weak demand in {city}",
        "{n} faces fraud investigation over {product} accounting",
        "{n} recalls {k}k {product} units over dangerous defects",
        "{n} reports losses and warns of {k}k layoffs",
        "Regulators penalize {n} ${m}m over violations",
        "{n} shares slump {pct}% after disappointing earnings",
        "{n} suspends dividend amid mounting losses",
        "{n} hit by lawsuit over failed {product} merger",
        "{n} warns of ${m}m impairment charges in {q}",
        "{n} and {o} merger talks collapse",
        "{n} struggles with declining margins at {city} unit",
        "{n} admits serious errors in {y} accounts; CFO {person} resigns",
    ],
}
FILING = {
    0: [
        "{n} files 10-Q for {q} {y}",
        "{n} files annual report on Form 10-K for {y}",
        "Form 4: {person} buys {k},{pct}00 shares of {n}",
        "{n} 8-K: item 5.02, {person} appointed",
        "{n} files S-3 shelf registration of ${m}m",
        "Form 13G: {broker} reports {pct}% stake in {n}",
        "{n} files proxy statement for {date} meeting",
        "{n} 8-K: results of {q} {y}",
    ],
    1: ["{n} 8-K: {product} agreement worth ${m}m", "Form 4: director adds {k}k shares of {n}"],
    -1: [
        "{n} NT 10-Q: late filing of {q} report",
        "{n} 8-K: impairment of ${m}m on {product} unit",
        "Form 4: {person} sells {k}k shares of {n}",
    ],
}
REPORT = {
    1: [
        "{broker} upgrades {n} to buy, target ${px}",
        "{broker} raises {n} target to ${px}",
        "{broker} initiates {n} at outperform on {product} strength",
        "{broker} sees {pct}% upside in {n} after strong {q}",
    ],
    0: [
        "{broker} initiates {n} at neutral, target ${px}",
        "{broker} reiterates hold on {n}",
        "{broker} moves {n} target to ${px} ahead of {q}",
        "{broker} on {n}: {q} preview",
    ],
    -1: [
        "{broker} downgrades {n} to sell, target ${px}",
        "{broker} cuts {n} target to ${px}",
        "{broker} warns of weak {product} demand at {n}",
        "{broker} sees {pct}% downside in {n} on declining margins",
    ],
}
SOCIAL = {
    1: [
        "${n} breaking out, {product} numbers look great",
        "${n} loading up before {q}, strong",
        "${n} up {pct}% today, what a win",
    ],
    0: [
        "${n} anyone watching the {date} call?",
        "${n} {product} launch in {city} next week",
        "${n} holding through {q}",
    ],
    -1: [
        "${n} this {product} recall is bad",
        "${n} down {pct}% and falling, terrible guidance",
        "${n} lawsuit news out of {city}, weak",
    ],
}
KINDS = (
    ("news", NEWS, 0.75),
    ("filing", FILING, 0.10),
    ("report", REPORT, 0.10),
    ("social", SOCIAL, 0.05),
)
SOURCES = {
    "news": ["wire-a", "wire-b", "wire-c"],
    "filing": ["edgar-feed"],
    "report": ["broker-notes"],
    "social": ["social-stream"],
}
# Words the templates are filled with, "|"-separated.
CITIES = (
    "Chicago|Texas|Ohio|Berlin|Tokyo|Seoul|Mumbai|Toronto|London|Paris|Sao Paulo|Mexico|"
    "Arizona|Shanghai|Sydney|Dublin|Denver|Atlanta|Boston|Singapore|Madrid|Warsaw|Oslo|Lagos"
).split("|")
PRODUCTS = (
    "chip|cloud|battery|drug|vaccine|software|truck|retail|payments|satellite|solar|turbine|"
    "insurance|loan|fiber|robot|device|pipeline|fertilizer|steel|aircraft|shipping|media|"
    "gaming|semiconductor|biotech|grocery|apparel|lithium|copper"
).split("|")
PEOPLE = (
    "J. Smith|A. Garcia|M. Chen|R. Patel|S. Kim|L. Rossi|K. Müller|D. Okafor|E. Novak|"
    "T. Nguyen|P. Silva|H. Tanaka|C. Dubois|F. Haddad|G. Johansson|B. Cohen|N. Ivanova|O. Mensah"
).split("|")
BROKERS = (
    "Alder Securities|Birch Capital|Cedar & Co|Dune Research|Elm Partners|Fjord Markets|"
    "Granite Equity|Harbor Analytics"
).split("|")
QUARTERS = (
    "Q1|Q2|Q3|Q4|first-quarter|second-quarter|third-quarter|fourth-quarter|half-year|full-year"
).split("|")


def _marker(path: Path) -> Path:
    """PATH.ready beside PATH: what was made there is complete."""
    return path.with_name(path.name + ".ready")


def _ready(path: Path) -> bool:
    return _marker(path).exists()


def _mark(path: Path) -> None:
    _marker(path).write_text(datetime.now(UTC).isoformat() + "\n")


def _link_copy(src: Path, dst: Path) -> Path:
    """A store's copy whose files are hard links of ``src``'s: fresh for a command that
    writes (Delta Lake adds files and never rewrites one), in a second."""
    shutil.rmtree(dst, ignore_errors=True)
    subprocess.run(["cp", "-al", str(src), str(dst)], check=True)
    return dst


def _cli(*argv: str) -> dict[str, Any]:
    """An untimed set-up command, its --json answer."""
    done = subprocess.run([QUARRY, *argv, "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"quarry {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _headlines(bars: Path, folder: Path, stories: int, seed: int = 7) -> dict[str, Any]:
    """The vendor's file of ``stories`` rows about the store's instruments (see the module's
    docstring), as JSON lines and Parquet; made once."""
    import numpy as np
    import polars as pl

    from quarry.data._text_fields import decision_times

    meta = folder / "headlines.json"
    if _ready(meta):
        info: dict[str, Any] = json.loads(meta.read_text())
        return info
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    spans = (
        pl.scan_delta(str(bars / "bars"))
        .group_by("instrument")
        .agg(pl.col("date").min().alias("first"), pl.col("date").max().alias("last"))
        .sort("instrument")
        .collect()
    )
    calendar = (
        pl.scan_delta(str(bars / "bars")).select(pl.col("date").unique()).collect()["date"].sort()
    )
    codes = spans["instrument"].to_numpy()
    lo = calendar.search_sorted(spans["first"]).to_numpy()
    hi = calendar.search_sorted(spans["last"]).to_numpy()  # inclusive
    n_inst = codes.size

    # originals, corrections, retractions
    n_corr, n_retr = int(stories * 0.01), int(stories * 0.005)
    n = stories - n_corr - n_retr
    weight = 1.0 / np.arange(1, n_inst + 1) ** 0.7
    weight = rng.permutation(weight / weight.sum())
    first = rng.choice(n_inst, size=n, p=weight)
    day = lo[first] + (rng.random(n) * (hi[first] - lo[first] + 1)).astype(np.int64)
    day = np.minimum(day, hi[first])
    width = rng.choice([1, 2, 3], size=n, p=[0.95, 0.04, 0.01])
    alive = [np.flatnonzero((lo <= d) & (hi >= d)) for d in range(calendar.len())]
    names: list[list[str]] = [[code] for code in codes[first].tolist()]
    for i in np.flatnonzero(width > 1).tolist():
        pool, picks = alive[day[i]], names[i]
        while len(picks) < width[i]:
            other = str(codes[pool[rng.integers(pool.size)]])
            if other not in picks:
                picks.append(other)
    # published at any second of its New York day, delivered seconds to minutes later
    close = decision_times(calendar).dt.epoch("us").to_numpy()
    midnight = close[day] - 16 * 3_600_000_000
    published = midnight + rng.integers(0, 86_400, n) * 1_000_000
    late = rng.random(n) < 0.03
    lag = np.where(late, rng.integers(3_600, 3 * 86_400, n), rng.integers(2, 900, n))
    delivered = published + lag * 1_000_000

    kind_i = rng.choice(len(KINDS), size=n, p=[k[2] for k in KINDS]).tolist()
    tone = rng.choice([-1, 0, 1], size=n, p=[0.3, 0.4, 0.3]).tolist()
    years = calendar.dt.year().to_list()
    dates = [f"{d:%b %d}" for d in calendar.to_list()]
    # every random word drawn at once: a Python call per draw would take minutes
    u = rng.random((n, 2)).tolist()
    draw = {
        key: rng.integers(len(words), size=n).tolist()
        for key, words in (
            ("q", QUARTERS),
            ("city", CITIES),
            ("product", PRODUCTS),
            ("person", PEOPLE),
            ("broker", BROKERS),
        )
    }
    pct, m, k = (
        rng.integers(1, 60, n).tolist(),
        rng.integers(5, 2_000, n).tolist(),
        rng.integers(1, 40, n).tolist(),
    )
    eps, px = (rng.integers(1, 500, n) / 100).tolist(), rng.integers(5, 400, n).tolist()
    ahead = rng.integers(5, 40, n).tolist()
    others = codes[rng.integers(n_inst, size=n)].tolist()
    titles, kinds, sources = [], [], []
    last_day = calendar.len() - 1
    for i in range(n):
        kind, pools, _ = KINDS[kind_i[i]]
        pool = pools[tone[i]]
        d = int(day[i])
        words = {
            "n": names[i][0],
            "o": names[i][-1] if len(names[i]) > 1 else others[i],
            "q": QUARTERS[draw["q"][i]],
            "pct": pct[i],
            "m": m[i],
            "k": k[i],
            "eps": f"{eps[i]:.2f}",
            "px": px[i],
            "y": years[d],
            "y2": years[d] + 2 + k[i] % 10,
            "city": CITIES[draw["city"][i]],
            "product": PRODUCTS[draw["product"][i]],
            "person": PEOPLE[draw["person"][i]],
            "broker": BROKERS[draw["broker"][i]],
            "date": dates[min(d + ahead[i], last_day)],
        }
        titles.append(pool[int(u[i][0] * len(pool))].format(**words))
        kinds.append(kind)
        src = SOURCES[kind]
        sources.append(src[int(u[i][1] * len(src))])
    ids = [f"{s}-{i:08d}" for i, s in enumerate(sources)]
    originals = pl.DataFrame(
        {
            "event_id": ids,
            "delivered_at": delivered,
            "instruments": names,
            "published_at": published,
            "kind": kinds,
            "title": titles,
            "source": sources,
            "retracted": False,
        }
    ).with_columns(pl.col("delivered_at", "published_at").cast(pl.Datetime("us", "UTC")))

    # later versions: 1-10 days after the story they change
    changed = rng.choice(n, size=n_corr + n_retr, replace=False)
    later = pl.Series(rng.integers(86_400, 10 * 86_400, changed.size) * 1_000_000)
    base = originals[changed].with_columns(
        (pl.col("delivered_at").dt.epoch("us") + later).cast(pl.Datetime("us", "UTC"))
    )
    corrections = base.head(n_corr).with_columns(pl.col("title") + " (updated)")
    retractions = base.tail(n_retr).select("event_id", "delivered_at", retracted=pl.lit(True))
    feed = pl.concat([originals, corrections, retractions], how="diagonal").sort(
        "delivered_at", "event_id"
    )
    # the file's knowledge time: the last delivery, to the next whole hour
    last = feed["delivered_at"].max()
    assert isinstance(last, datetime)
    kt = (last + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)

    feed.write_parquet(folder / "headlines.parquet")
    iso = "%Y-%m-%dT%H:%M:%SZ"
    feed.with_columns(pl.col("delivered_at", "published_at").dt.strftime(iso)).write_ndjson(
        folder / "headlines.jsonl"
    )
    info = {
        "rows": feed.height,
        "stories": n,
        "corrections": n_corr,
        "retractions": n_retr,
        "instruments_named": int(feed["instruments"].explode().drop_nulls().n_unique()),
        "multi_instrument": int((width > 1).sum()),
        "distinct_titles": int(feed["title"].drop_nulls().n_unique()),
        "knowledge_time": kt.isoformat(),
        "first_delivery": str(feed["delivered_at"].min()),
        "last_delivery": str(last),
        "jsonl_mb": round((folder / "headlines.jsonl").stat().st_size / 2**20, 1),
        "parquet_mb": round((folder / "headlines.parquet").stat().st_size / 2**20, 1),
        "seconds_to_make": round(time.perf_counter() - t0, 1),
    }
    meta.write_text(json.dumps(info, indent=2))
    _mark(meta)
    return info


def _text_stores(bars: Path, folder: Path, feed: dict[str, Any]) -> tuple[Path, Path]:
    """store-events (the bars and the JSONL's stories) and store-scored (with their lm
    scores kept), made once: the untimed first ingest and score."""
    events, scored = folder / "store-events", folder / "store-scored"
    if not _ready(events):
        _link_copy(bars, events)
        _cli(
            "data",
            "ingest",
            "events",
            str(folder / "headlines.jsonl"),
            "--store",
            str(events),
            "--knowledge-time",
            feed["knowledge_time"],
        )
        _mark(events)
    if not _ready(scored):
        _link_copy(events, scored)
        _cli("data", "score", "--store", str(scored), "--scorer", "lm")
        _mark(scored)
    return events, scored


def _embed_store(folder: Path, instruments: int, days: int, stories: int) -> dict[str, Any]:
    """A generated market with about ``stories`` headlines whose tone leads returns."""
    store = folder / f"store-embed-{instruments}x{days}-{stories}"
    meta = store.with_name(store.name + ".json")
    if _ready(store):
        info: dict[str, Any] = json.loads(meta.read_text())
        return info
    shutil.rmtree(store, ignore_errors=True)
    rate = round(stories / (instruments * days * ALIVE), 4)
    # fmt: off
    made = _cli("data", "generate", "--store", str(store), "--instruments", str(instruments),
                "--days", str(days), "--text-rate", str(rate), "--text-ic", "0.05", "--seed", "1")
    # a retraction has no text: a scorer scores the stories and their corrections
    info = {"path": str(store), "instruments": instruments, "days": days, "text_rate": rate,
            "stories": made["stories"], "corrections": made["story_corrections"],
            "retractions": made["story_retractions"],
            "scored": made["stories"] + made["story_corrections"]}
    # fmt: on
    meta.write_text(json.dumps(info, indent=2))
    _mark(store)
    return info


def _child_inprocess(events_store: str, embed_store: str) -> dict[str, Any]:
    """In-process: the lm scorer on every story version of store-events, and the embedder
    on every version of the embedding store (what ``score --scorer embed`` embeds)."""
    import polars as pl

    from quarry.data import Store
    from quarry.data._events import event_versions
    from quarry.text import embedder, get_scorer, text_of

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    versions = event_versions(Store(events_store)).filter(~pl.col("retracted"))
    out["lm_read_versions_s"] = time.perf_counter() - t0
    texts = text_of(versions["title"].to_list(), versions["body"].to_list())
    lm = get_scorer("lm")
    lm.score(["warm the lexicon"])
    t0 = time.perf_counter()
    lm.score(texts)
    out["lm_score_s"], out["lm_texts"] = time.perf_counter() - t0, len(texts)

    versions = event_versions(Store(embed_store)).filter(~pl.col("retracted"))
    texts = text_of(versions["title"].to_list(), versions["body"].to_list())
    t0 = time.perf_counter()
    model = embedder()
    out["embed_load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.embed(texts)
    out["embed_s"], out["embed_texts"] = time.perf_counter() - t0, len(texts)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _rows_of(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 300 x 500 bars, 20,000 headlines, ~5,000 to embed, 1 run",
    )
    p.add_argument("--instruments", type=int, default=16_000)
    p.add_argument("--days", type=int, default=2_520)
    p.add_argument("--stories", type=int, default=1_000_000, help="rows of the headline file")
    p.add_argument("--embed-stories", type=int, default=100_000)
    p.add_argument("--embed-instruments", type=int, default=500)
    p.add_argument("--embed-days", type=int, default=1_260)
    p.add_argument("--runs", type=int, default=5, help="runs of each quick command")
    p.add_argument(
        "--long-runs",
        type=int,
        default=3,
        help="runs of the slow ones: score vader and embed, read text (~10-25 s each)",
    )
    p.add_argument("--only", nargs="+", choices=CASES, help="these cases alone")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child_inprocess(*args.child)))
        return
    if args.quick:
        args.instruments, args.days, args.stories = 300, 500, 20_000
        args.embed_stories, args.embed_instruments, args.embed_days = 5_000, 60, 400
        args.runs = args.long_runs = 1
    cases = set(args.only or CASES)

    tag = f"{args.instruments}x{args.days}-{args.stories}"
    folder = DATA / f"text-{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    work = folder / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    os.environ["QUARRY_HOME"] = str(work / "home")
    os.environ["QUARRY_NO_PROGRESS"] = "1"

    t0 = time.perf_counter()
    bars = generated_store("generated", args.instruments, args.days)
    feed = _headlines(bars, folder, args.stories)
    say(f"set-up: headlines {feed['rows']:,} rows ({time.perf_counter() - t0:.0f} s so far)")
    events, scored = _text_stores(bars, folder, feed)
    embed = _embed_store(folder, args.embed_instruments, args.embed_days, args.embed_stories)
    say(
        f"set-up done in {time.perf_counter() - t0:.0f} s; embedding store {embed['stories']:,} "
        "stories"
    )

    out: dict[str, Any] = {
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "instruments": args.instruments,
        "days": args.days,
        "headlines": feed,
        "embed_store": embed,
        "runs": args.runs,
        "long_runs": args.long_runs,
        "cores": f"taskset -c {CORES}",
        "load_before": os.getloadavg(),
        "results": {},
    }
    results: dict[str, Any] = out["results"]

    def timed(
        name: str, argv: list[str], runs: int, fresh: Path | None = None, count: int | None = None
    ) -> None:
        """``argv`` as a whole process, ``runs`` times; on a fresh copy of ``fresh`` (the
        STORE in argv) each run when given."""
        times, peaks = [], []
        for i in range(runs):
            cmd = argv
            if fresh is not None:
                copy = _link_copy(fresh, work / f"store-{name}-{i}")
                cmd = [str(copy) if a == "STORE" else a for a in argv]
            r = whole(cmd, 1, cores=CORES)
            times.append(r["median_s"])
            peaks.append(r["peak_rss_mb"])
            if fresh is not None:
                shutil.rmtree(copy, ignore_errors=True)
        res = {
            "median_s": round(statistics.median(times), 2),
            "runs_s": times,
            "peak_rss_mb": max(peaks),
            "command": " ".join(a.replace(str(HERE.parent) + "/", "") for a in argv),
        }
        if count:
            res["items"] = count
            res["items_per_s"] = round(count / res["median_s"])
        results[name] = res
        say(f"{name}: {res['median_s']} s (runs {times}), peak {res['peak_rss_mb']:,} MB")

    kt = feed["knowledge_time"]
    ingest = [QUARRY, "data", "ingest", "events"]
    score = [QUARRY, "data", "score", "--store", "STORE", "--scorer"]
    read = [QUARRY, "data", "read", "--store", str(scored), "--fields"]
    texts = feed["rows"] - feed["retractions"]  # a retraction has no text to score
    # case: the command, its runs, the store each run gets a fresh copy of, what it handles
    # fmt: off
    plan: dict[str, tuple[list[str], int, Path | None, int | None]] = {
        "ingest-jsonl": ([*ingest, str(folder / "headlines.jsonl"), "--store", "STORE",
                          "--knowledge-time", kt], args.runs, bars, feed["rows"]),
        "ingest-parquet": ([*ingest, str(folder / "headlines.parquet"), "--store", "STORE",
                            "--knowledge-time", kt], args.runs, bars, feed["rows"]),
        "score-lm": ([*score, "lm"], args.runs, events, texts),
        "score-vader": ([*score, "vader"], args.long_runs, events, texts),
        "score-embed": ([*score, "embed"], args.long_runs, Path(embed["path"]), embed["scored"]),
        "read-text": ([*read, TEXT_FIELDS, "--out", str(work / "text.parquet")], args.long_runs,
                      None, None),
        "read-close": ([*read, "close", "--out", str(work / "close.parquet")], args.runs,
                       None, None),
    }
    # fmt: on
    for name, (argv, runs, fresh, count) in plan.items():
        if name in cases:
            timed(name, argv, runs, fresh, count)
        if name.startswith("read") and name in cases:
            results[name]["rows"] = _rows_of(Path(argv[-1]))
    if "inprocess" in cases:
        r = run_child(__file__, "--child", str(events), embed["path"])
        results["inprocess"] = {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}
        say(f"in-process: {results['inprocess']}")
    out["load_after"] = os.getloadavg()
    _save(folder / "results.json", out)
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))
    _table(out)
    say(f"results: {folder / 'results.json'}")


def _save(path: Path, out: dict[str, Any]) -> None:
    """Write ``out`` to ``path``, keeping the cases of an earlier run that this one (--only)
    did not measure; each case says when it was measured."""
    for r in out["results"].values():
        r["measured"] = out["measured"]
    if path.exists():
        earlier = json.loads(path.read_text()).get("results", {})
        out["results"] = {**earlier, **out["results"]}
    path.write_text(json.dumps(out, indent=2))


def _table(out: dict[str, Any]) -> None:
    """The figures as BENCHMARKS.md's table."""
    res = out["results"]
    rows = [
        ("ingest-jsonl", "ingest the headlines, JSON lines", "rows/s"),
        ("ingest-parquet", "ingest the headlines, Parquet", "rows/s"),
        ("score-lm", "score --scorer lm", "stories/s"),
        ("score-vader", "score --scorer vader", "stories/s"),
        ("score-embed", "score --scorer embed", "stories/s"),
        ("read-text", f"read {TEXT_FIELDS}", ""),
        ("read-close", "read close (bars alone)", ""),
    ]
    print("\n| command (whole process) | median | runs | peak RSS | rate |\n|---|---|---|---|---|")
    for key, label, unit in rows:
        if key not in res:
            continue
        r = res[key]
        runs = ", ".join(f"{t:.1f}" for t in r["runs_s"])
        rate = (
            f"{r['items_per_s']:,} {unit}" if "items_per_s" in r else f"{r.get('rows', 0):,} rows"
        )
        print(f"| {label} | {r['median_s']:.2f} s | {runs} | {r['peak_rss_mb']:,} MB | {rate} |")
    if "inprocess" in res:
        r = res["inprocess"]
        print(
            f"\nin-process: lm scorer {r['lm_score_s']} s for {r['lm_texts']:,} texts; "
            f"embedder load {r['embed_load_s']} s, embed {r['embed_s']} s for "
            f"{r['embed_texts']:,} texts; peak {r['peak_rss_mb']:,.0f} MB"
        )


if __name__ == "__main__":
    main()
