"""The synthetic market: seeded, realistic in the ways later stages rely on, and with a
planted alpha whose strength an independent numpy computation recovers."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.data import (
    Store,
    check_health,
    fundamental_fields,
    generate,
    members,
    read_bars,
    to_panel,
)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, object]:
    store = Store(tmp_path_factory.mktemp("syn") / "store")
    summary = generate(store, 400, 900, seed=11, alpha_ic=0.08)
    return store, summary


def test_same_seed_same_data(tmp_path: Path) -> None:
    a, b, c = (Store(tmp_path / n) for n in "abc")
    generate(a, 30, 120, seed=5)
    generate(b, 30, 120, seed=5)
    generate(c, 30, 120, seed=6)
    fields = ["open", "high", "low", "close", "volume", "vwap", "factor"]
    assert_frame_equal(read_bars(a, fields), read_bars(b, fields))
    assert not read_bars(a, ["close"]).equals(read_bars(c, ["close"]))


def test_generate_refuses_a_store_with_data(market: tuple[Store, object]) -> None:
    from quarry.exceptions import UsageError

    with pytest.raises(UsageError, match="already holds data"):
        generate(market[0], 10, 50)


def test_bars_are_consistent(market: tuple[Store, object]) -> None:
    store, _ = market
    df = read_bars(store, ["open", "high", "low", "close", "volume", "vwap", "factor"])
    assert df.select((pl.col("high") >= pl.max_horizontal("open", "close")).all()).item()
    assert df.select((pl.col("low") <= pl.min_horizontal("open", "close")).all()).item()
    assert df.select(pl.col("vwap").is_between(pl.col("low"), pl.col("high")).all()).item()
    assert df.select((pl.col("volume") > 0).all()).item()
    assert check_health(store).ok


def test_listings_and_delistings_follow_the_universe(market: tuple[Store, object]) -> None:
    store, summary = market
    spans = members(store, "all")
    bars = read_bars(store, ["close"])
    life = bars.group_by("instrument").agg(
        pl.col("date").min().alias("first"), pl.col("date").max().alias("last")
    )
    joined = life.join(spans, on="instrument")
    dead = joined.filter(pl.col("end").is_not_null())
    assert dead.height == summary.delisted > 0  # type: ignore[attr-defined]
    assert (dead["last"] == dead["end"]).all()  # no bar after a delisting
    late = joined.filter(pl.col("start") > bars["date"].min())
    assert late.height == summary.listed_during > 0  # type: ignore[attr-defined]
    assert (late["first"] == late["start"]).all()


def test_adjusted_prices_are_continuous_through_splits(market: tuple[Store, object]) -> None:
    store, summary = market
    assert summary.splits > 0  # type: ignore[attr-defined]
    raw = to_panel(read_bars(store, ["close"]))["close"]
    adj = to_panel(read_bars(store, ["close"], adjust="adjusted"))["close"]
    raw_moves = np.abs(np.log(raw[1:] / raw[:-1]))
    adj_moves = np.abs(np.log(adj[1:] / adj[:-1]))
    # Raw prices jump by log(1.5) or more on split days; adjusted ones never do.
    assert np.nanmax(raw_moves) > np.log(1.45)
    assert np.nanmax(adj_moves) < 0.31


def test_planted_alpha_has_its_predictive_power(market: tuple[Store, object]) -> None:
    """Rank the 5-day reversal signal against Qlib's default label with plain numpy."""
    store, _ = market
    close = to_panel(read_bars(store, ["close"], adjust="adjusted"))["close"]
    logp = np.log(close)
    signal = -(logp[5:] - logp[:-5])[:-2]  # known at close t
    label = (close[2:] / close[1:-1] - 1)[5:]  # Ref($close, -2) / Ref($close, -1) - 1
    ics = []
    for s, y in zip(signal, label, strict=True):
        ok = np.isfinite(s) & np.isfinite(y)
        if ok.sum() > 50:
            ics.append(np.corrcoef(s[ok], y[ok])[0, 1])
    ic = float(np.mean(ics))
    assert 0.04 < ic < 0.12  # planted 0.08 on the idiosyncratic part


def test_no_alpha_means_no_predictive_power(tmp_path: Path) -> None:
    store = Store(tmp_path / "noise")
    generate(store, 300, 500, seed=2)
    close = to_panel(read_bars(store, ["close"], adjust="adjusted"))["close"]
    logp = np.log(close)
    signal = -(logp[5:] - logp[:-5])[:-2]
    label = (close[2:] / close[1:-1] - 1)[5:]
    ics = [
        np.corrcoef(s[m], y[m])[0, 1]
        for s, y in zip(signal, label, strict=True)
        if (m := np.isfinite(s) & np.isfinite(y)).sum() > 50
    ]
    assert abs(float(np.mean(ics))) < 0.02


def test_corrections_are_known_days_after_the_values_they_correct(
    market: tuple[Store, object],
) -> None:
    store, summary = market
    fix = next(c for c in store.commits("bars") if c.version == 1)
    assert fix.corrections == summary.bar_corrections > 0  # type: ignore[attr-defined]
    raw = store.scan_raw("bars")
    assert raw is not None
    rows = raw.collect()
    fixes = rows.filter(pl.col("_version") == 1)
    originals = rows.filter(pl.col("_version") == 0).join(
        fixes.select("instrument", "date"), on=["instrument", "date"]
    )
    assert fixes.height == fix.corrections
    for (inst, day, close, known), old in zip(
        fixes.sort("instrument", "date").select("instrument", "date", "close", "_kt").rows(),
        originals.sort("instrument", "date")["close"],
        strict=True,
    ):
        assert 1 <= (known.date() - day).days <= 10  # days after the bar, inside the history
        assert close != old

        def seen(at: datetime, inst: str = inst, day: date = day) -> float:
            df = read_bars(store, ["close"], as_of=at, instruments=[inst])
            return float(df.filter(pl.col("date") == day)["close"].item())

        assert seen(known - timedelta(seconds=1)) == old
        assert seen(known) == close


def test_a_past_read_sees_the_bars_known_then(market: tuple[Store, object]) -> None:
    """A bar is known after its day's close (21:00 UTC): as of a date's midnight the bars
    up to the day before, as of its evening that day's too."""
    store, _ = market
    full = read_bars(store, ["close"])
    day = date(2016, 9, 30)
    midnight = read_bars(store, ["close"], as_of="2016-09-30")
    assert midnight.height > 0
    assert_frame_equal(
        midnight.select("instrument", "date"),
        full.filter(pl.col("date") < day).select("instrument", "date"),
    )
    evening = read_bars(store, ["close"], as_of="2016-09-30T21:00:00+00:00")
    assert evening["date"].max() == day
    assert evening.height == full.filter(pl.col("date") <= day).height
    # An instrument listed later is not in the past read, even through the built-in universe.
    later = set(full.filter(pl.col("date") > day)["instrument"]) - set(midnight["instrument"])
    assert later and not later & set(
        read_bars(store, ["close"], universe="all", as_of="2016-09-30")["instrument"]
    )


def test_fundamentals_are_known_from_their_publication(market: tuple[Store, object]) -> None:
    store, _ = market
    key = ["instrument", "field", "period_end", "knowledge_date"]
    every = store.scan("fundamentals")
    then = store.scan("fundamentals", as_of="2016-09-30")
    assert every is not None and then is not None
    published = every.filter(pl.col("knowledge_date") <= date(2016, 9, 30)).select(key)
    known = then.select(key).collect().sort(key)
    assert known.height > 0
    assert_frame_equal(known, published.collect().sort(key))
    assert fundamental_fields(store, as_of="2015-04-01") == []  # nothing published yet
    eps = read_bars(store, ["eps"], as_of="2016-09-30").drop_nulls("eps")
    assert eps.height > 0 and eps["date"].max() < date(2016, 9, 30)


def test_actions_and_delistings_are_known_when_they_happen(
    market: tuple[Store, object],
) -> None:
    store, _ = market
    inst = store.scan("instruments")
    acts = store.scan("corporate_actions")
    assert inst is not None and acts is not None
    dead = inst.filter(pl.col("delist_date").is_not_null()).collect().row(0, named=True)
    name, gone = dead["instrument"], dead["delist_date"]

    def delisting(at: str) -> list[object]:
        lf = store.scan("instruments", as_of=at)
        assert lf is not None
        return lf.filter(pl.col("instrument") == name).collect()["delist_date"].to_list()

    assert set(delisting(f"{gone}")) == {None}  # still listed that morning
    assert set(delisting(f"{gone}T21:00:00+00:00")) == {gone}
    split = acts.filter(pl.col("kind") == "split").collect().row(0, named=True)

    def known(at: date) -> bool:
        lf = store.scan("corporate_actions", as_of=str(at))
        assert lf is not None
        return (
            lf.filter(
                (pl.col("instrument") == split["instrument"])
                & (pl.col("ex_date") == split["ex_date"])
            )
            .collect()
            .height
            == 1
        )

    # Declared ten trading days (two weeks) before the ex-date.
    assert not known(split["ex_date"] - timedelta(days=15))
    assert known(split["ex_date"] - timedelta(days=13))


def test_the_index_is_reviewed_each_quarter(market: tuple[Store, object]) -> None:
    """``large`` is the larger half of the listed instruments: at each quarter's last trading
    day its open spans are half of the instruments with a bar that day, and none is known
    before that day's close."""
    store, _ = market
    bars = read_bars(store, ["close"])
    days = bars["date"].unique().sort()
    ends = days.filter(days.dt.month() != days.shift(-1).dt.month())
    ends = ends.filter(ends.dt.month().is_in([3, 6, 9, 12]))
    assert ends.len() >= 8
    previous = None
    for day in ends[:-1]:
        close = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=21)
        spans = members(store, "large", as_of=close)
        listed = bars.filter(pl.col("date") == day).height
        assert spans.filter(pl.col("end").is_null()).height == listed // 2
        # Nothing starts later than the next trading day: the review is not known in advance.
        nxt = days.filter(days > day).min()
        assert spans["start"].max() == nxt
        assert not members(store, "large", as_of=close - timedelta(seconds=1)).equals(spans)
        if previous is not None:  # the members change between reviews
            assert not spans.filter(pl.col("end").is_null()).equals(previous)
        previous = spans.filter(pl.col("end").is_null())


def test_fundamentals_are_published_after_the_period(market: tuple[Store, object]) -> None:
    store, _ = market
    lf = store.scan("fundamentals")
    assert lf is not None
    lag = (
        lf.select((pl.col("knowledge_date") - pl.col("period_end")).dt.total_days())
        .collect()
        .to_series()
    )
    assert lag.min() >= 25
