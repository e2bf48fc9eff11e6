"""Stories as fields of bars: each counts for the first bar that decides at or after its
delivery, with the version known then; checked against a plain pandas computation that
walks every bar and asks what was known at its decision time."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import polars as pl
import pytest

from quarry.data import Store, ingest_frame, read_bars, table_spec
from quarry.data._event_scores import write_scores
from quarry.data._events import read_events
from quarry.exceptions import DataError, UsageError

INSTRUMENTS = [f"I{i}" for i in range(6)]
DAYS = pd.bdate_range("2024-01-02", periods=45)


def _bars(store: Store, kt: str = "2024-06-01") -> None:
    rows = []
    for inst in INSTRUMENTS:
        # I5 lists late, so that stories before its first bar are covered too
        for d in DAYS[10:] if inst == "I5" else DAYS:
            rows.append((inst, d.date(), 10.0))
    frame = pl.DataFrame(rows, schema=["instrument", "date", "close"], orient="row")
    frame = frame.with_columns(
        open=pl.col("close"), high=pl.col("close"), low=pl.col("close"), volume=pl.lit(1.0)
    )
    ingest_frame(store, table_spec("bars"), frame, knowledge_time=kt)


def _random_events(seed: int) -> pl.DataFrame:
    """Stories at any hour (close included), some on weekends; some corrected (new score,
    sometimes other instruments), some retracted, some both."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2023-12-28", tz="UTC")
    rows = []
    for e in range(260):
        when = start + pd.Timedelta(minutes=int(rng.integers(0, 60 * 24 * 68)))
        if e % 17 == 0:  # exactly at a close (16:00 New York): counts that day
            day = DAYS[int(rng.integers(0, len(DAYS)))]
            when = pd.Timestamp(day.date().isoformat() + " 16:00", tz="America/New_York")
            when = when.tz_convert("UTC")
        k = int(rng.integers(1, 3))
        names = sorted(rng.choice(INSTRUMENTS, size=k, replace=False).tolist())
        kind = str(rng.choice(["news", "news", "filing", "social"]))
        versions = [(when, ",".join(names), False)]
        if rng.random() < 0.25:  # a correction, now and then about other instruments
            later = when + pd.Timedelta(minutes=int(rng.integers(30, 6000)))
            if rng.random() < 0.4:
                names = sorted(rng.choice(INSTRUMENTS, size=2, replace=False).tolist())
            versions.append((later, ",".join(names), False))
        if rng.random() < 0.15:
            later = versions[-1][0] + pd.Timedelta(minutes=int(rng.integers(30, 9000)))
            versions.append((later, None, True))
        for delivered, insts, retracted in versions:
            rows.append(
                {
                    "event_id": f"e{e:03d}",
                    "delivered_at": delivered.to_pydatetime(),
                    "instruments": insts,
                    "published_at": None if retracted else when.to_pydatetime(),
                    "kind": None if retracted else kind,
                    "title": None if retracted else f"story {e}",
                    "retracted": retracted,
                    # a trained scorer leaves some stories unscored (no head yet)
                    "score": None if retracted or rng.random() < 0.1 else float(rng.normal()),
                }
            )
    return pl.DataFrame(rows)


def _store_with_events(store: Store, seed: int = 0) -> pl.DataFrame:
    _bars(store)
    events = _random_events(seed)
    ingest_frame(store, table_spec("events"), events.drop("score"), knowledge_time="2024-06-01")
    scored = events.filter(~pl.col("retracted")).select("event_id", "delivered_at", "score")
    assert scored["score"].null_count() > 10
    write_scores(store, scored, "fixture", "v1")
    return events


def _reference(events: pl.DataFrame, kind: str | None, half_life: int) -> pd.DataFrame:
    """count, sum, mean and decayed sum per (instrument, date), bar by bar."""
    ev = events.to_pandas()
    ev["delivered_at"] = pd.to_datetime(ev["delivered_at"], utc=True)
    first_kind = ev[~ev.retracted].sort_values("delivered_at").groupby("event_id")["kind"].first()
    lam = 0.5 ** (1 / half_life)
    bars = pl.DataFrame(
        [(i, d.date()) for i in INSTRUMENTS for d in (DAYS[10:] if i == "I5" else DAYS)],
        schema=["instrument", "date"],
        orient="row",
    ).to_pandas()
    calendar = {d.date(): k for k, d in enumerate(DAYS)}
    out = []
    for inst, group in bars.groupby("instrument"):
        dates = [pd.Timestamp(x).date() for x in group["date"]]
        decide = [
            pd.Timestamp(f"{d.isoformat()} 16:00", tz="America/New_York").tz_convert("UTC")
            for d in dates
        ]
        counted: dict[str, int] = {}  # story -> index of the bar it counted for
        for k, (d, t) in enumerate(zip(dates, decide, strict=True)):
            count = total = decayed = scored = 0.0
            for eid, versions in ev[ev.delivered_at <= t].groupby("event_id"):
                if kind is not None and first_kind.get(eid) != kind:
                    continue
                now = versions.sort_values("delivered_at").iloc[-1]
                active = (not now.retracted) and inst in str(now.instruments).split(",")
                score = 0.0 if pd.isna(now.score) else now.score  # no score adds nothing
                if active and eid not in counted:
                    counted[eid] = k
                    count += 1
                    total += score
                    scored += not pd.isna(now.score)
                if active and eid in counted:
                    age = calendar[d] - calendar[dates[counted[eid]]]
                    decayed += score * lam**age
            # the mean of the stories with a score
            out.append((inst, d, count, total, total / scored if scored else np.nan, decayed))
    return pd.DataFrame(out, columns=["instrument", "date", "count", "sum", "sent", "decay"])


@pytest.mark.parametrize(("kind", "prefix"), [(None, "text"), ("news", "news")])
def test_text_fields_equal_a_bar_by_bar_pandas_computation(store: Store, kind, prefix):
    events = _store_with_events(store)
    names = [f"{prefix}_count", f"{prefix}_sum_fixture", f"{prefix}_sent_fixture",
             f"{prefix}_decay_fixture_hl3"]  # fmt: skip
    got = read_bars(store, ["close", *names]).to_pandas()
    want = _reference(events, kind, half_life=3)
    assert len(got) == len(want)
    assert (got["instrument"].to_numpy() == want["instrument"].to_numpy()).all()
    for name, col in zip(names, ["count", "sum", "sent", "decay"], strict=True):
        np.testing.assert_allclose(got[name].to_numpy(), want[col].to_numpy(), atol=1e-9,
                                   err_msg=name)  # fmt: skip
    # the check bites: stories did count, were corrected and retracted
    assert want["count"].sum() > 100
    assert events["retracted"].sum() > 10


def test_a_start_date_does_not_pile_earlier_stories_on_the_first_bar(store: Store):
    _store_with_events(store)
    whole = read_bars(store, ["text_count", "text_decay_fixture"])
    later = read_bars(store, ["text_count", "text_decay_fixture"], start="2024-01-20")
    assert later.equals(whole.filter(pl.col("date") >= date(2024, 1, 20)))


def _one_story(store: Store, delivered: str, published: str, kt: str | None = None) -> None:
    at = datetime.fromisoformat(delivered).replace(tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "event_id": ["s"],
            "delivered_at": [at],
            "instruments": ["I0"],
            "published_at": [datetime.fromisoformat(published).replace(tzinfo=UTC)],
            "kind": ["news"],
            "title": ["Profits gain"],
            "retracted": [False],
        }
    )
    ingest_frame(store, table_spec("events"), frame, knowledge_time=kt or delivered)


def _counted_on(store: Store, **kw: object) -> list[date]:
    bars = read_bars(store, ["news_count"], instruments=["I0"], **kw)  # type: ignore[arg-type]
    return bars.filter(pl.col("news_count") > 0)["date"].to_list()


def test_a_story_after_the_close_counts_for_the_next_day(store: Store):
    _bars(store)
    # 2024-01-03: New York closes at 16:00 EST = 21:00 UTC
    _one_story(store, "2024-01-03T21:00:01", "2024-01-03T20:59:00")
    assert _counted_on(store) == [date(2024, 1, 4)]


def test_a_story_at_the_close_counts_that_day(store: Store):
    _bars(store)
    _one_story(store, "2024-01-03T21:00:00", "2024-01-03T20:59:00")
    assert _counted_on(store) == [date(2024, 1, 3)]


def test_a_late_delivered_story_counts_from_its_delivery(store: Store):
    _bars(store)
    # published Friday morning, delivered Sunday: it counts on Monday
    _one_story(store, "2024-01-07T12:00:00", "2024-01-05T14:00:00")
    assert _counted_on(store) == [date(2024, 1, 8)]


def test_a_retraction_leaves_the_bars_from_when_it_is_known(store: Store):
    _bars(store, kt="2024-01-02")
    _one_story(store, "2024-01-03T15:00:00", "2024-01-03T14:00:00")
    retraction = pl.DataFrame(
        {
            "event_id": ["s"],
            "delivered_at": [datetime(2024, 1, 10, 15, tzinfo=UTC)],
            "retracted": [True],
        }
    )
    ingest_frame(store, table_spec("events"), retraction, knowledge_time="2024-01-10T15:00:00")
    fields = ["news_count", "news_decay"]
    before = read_bars(store, fields, instruments=["I0"], as_of="2024-01-05T12:00:00")
    after = read_bars(store, fields, instruments=["I0"])
    # the events table: there before the retraction, gone after it
    assert read_events(store, as_of="2024-01-05T12:00:00")["event_id"].to_list() == ["s"]
    assert read_events(store, as_of="2024-01-11T00:00:00").height == 0
    # the bars: 01-03 decided with the story, as known then, whenever the bars are read (a
    # bar that forgot it would know the future); its decayed score is gone from the bar
    # that decided after the retraction (01-10) on, and was there until then
    assert before.filter(pl.col("news_count") > 0)["date"].to_list() == [date(2024, 1, 3)]
    assert after.filter(pl.col("news_count") > 0)["date"].to_list() == [date(2024, 1, 3)]
    decay = dict(zip(after["date"], after["news_decay"], strict=True))
    assert decay[date(2024, 1, 9)] > 0
    assert decay[date(2024, 1, 10)] == 0
    assert decay[date(2024, 1, 3)] == pytest.approx(1.0, abs=1e-5)  # "Profits gain": +1
    assert decay[date(2024, 1, 8)] == pytest.approx(0.5**0.6, abs=1e-5)  # 3 bars, half-life 5
    # as of before the retraction was known, the decay goes on
    late = read_bars(store, fields, instruments=["I0"], as_of="2024-01-10T12:00:00")
    assert late["news_decay"][-1] > 0


def test_a_count_reads_no_score_and_fields_are_checked(store: Store):
    _bars(store)
    _one_story(store, "2024-01-03T15:00:00", "2024-01-03T14:00:00")
    with pytest.raises(UsageError, match="a count reads no score"):
        read_bars(store, ["news_count_lm"])
    with pytest.raises(UsageError, match="half-life"):
        read_bars(store, ["news_sent_hl5"])
    with pytest.raises(DataError, match="quarry data score --scorer embed"):
        read_bars(store, ["news_sent_embed"])
    with pytest.raises(UsageError, match="did you mean 'news_count'"):
        read_bars(store, ["news_cont"])


def test_text_fields_need_stories(store: Store):
    _bars(store)
    with pytest.raises(UsageError, match="ingest some with `quarry data ingest events FILE`"):
        read_bars(store, ["news_count"])


def test_no_story_known_yet_reads_as_none(store: Store):
    _bars(store, kt="2024-01-02")
    _one_story(store, "2024-01-03T15:00:00", "2024-01-03T14:00:00")
    got = read_bars(store, ["news_count", "news_sum", "news_sent", "news_decay"],
                    as_of="2024-01-02T23:00:00")  # fmt: skip
    assert got.height == len(INSTRUMENTS) - 1  # I5 lists later
    assert got["news_count"].to_list() == [0.0] * got.height
    assert got["news_sum"].to_list() == [0.0] * got.height
    assert got["news_decay"].to_list() == [0.0] * got.height
    assert got["news_sent"].null_count() == got.height


def test_a_story_counts_with_the_version_its_first_bar_read(store: Store):
    """Two versions known by one bar: the story's first bar read the newer (what a model of
    stories trains on)."""
    from quarry.data._events import event_versions
    from quarry.data._text_fields import story_bars

    _bars(store)
    _one_story(store, "2024-01-03T15:00:00", "2024-01-03T14:00:00")
    fix = pl.DataFrame(
        {
            "event_id": ["s"],
            "delivered_at": [datetime(2024, 1, 3, 18, tzinfo=UTC)],
            "instruments": ["I0"],
            "published_at": [datetime(2024, 1, 3, 14, tzinfo=UTC)],
            "kind": ["news"],
            "title": ["Profits gain (corrected)"],
            "retracted": [False],
        }
    )
    ingest_frame(store, table_spec("events"), fix, knowledge_time="2024-01-03T18:00:00")
    bars = read_bars(store, ["close"]).select("instrument", "date")
    placed = story_bars(event_versions(store), bars)
    firsts = placed.filter(pl.col("first"))
    assert firsts["delivered_at"].to_list() == [datetime(2024, 1, 3, 18, tzinfo=UTC)]
    assert bars["date"][firsts["row"][0]] == date(2024, 1, 3)


def test_kept_scores_are_read_as_known_at_as_of(store: Store):
    """A head refitted under the same version later: a read as of before the refit reads
    the scores it had then."""
    _bars(store, kt="2024-01-02")
    _one_story(store, "2024-01-03T15:00:00", "2024-01-03T14:00:00")
    key = {"event_id": ["s"], "delivered_at": [datetime(2024, 1, 3, 15, tzinfo=UTC)]}
    write_scores(store, pl.DataFrame({**key, "score": [0.25]}), "head", "v1",
                 knowledge_time=datetime(2024, 1, 4, tzinfo=UTC))  # fmt: skip
    write_scores(store, pl.DataFrame({**key, "score": [-0.75]}), "head", "v1",
                 knowledge_time=datetime(2024, 1, 6, tzinfo=UTC))  # fmt: skip

    def sent(as_of: str | None) -> float:
        got = read_bars(store, ["news_sent_head"], instruments=["I0"], as_of=as_of)
        return got.filter(pl.col("date") == date(2024, 1, 3))["news_sent_head"].item()

    assert sent("2024-01-05T00:00:00") == 0.25
    assert sent(None) == -0.75
