"""The synthetic market: seeded, realistic in the ways later stages rely on, and with a
planted alpha whose strength an independent numpy computation recovers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.data import Store, check_health, generate, members, read_bars, to_panel


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


def test_corrections_are_later_commits(market: tuple[Store, object]) -> None:
    store, summary = market
    fix = next(c for c in store.commits("bars") if c.version == 1)
    assert fix.corrections == summary.bar_corrections > 0  # type: ignore[attr-defined]
    before = read_bars(store, ["close"], as_of=summary.knowledge_time)  # type: ignore[attr-defined]
    after = read_bars(store, ["close"])
    changed = before.join(after, on=["instrument", "date"]).filter(
        pl.col("close") != pl.col("close_right")
    )
    assert changed.height == fix.corrections


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
