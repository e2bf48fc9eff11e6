"""Seeded synthetic intraday bars: sessions of minute bars with the gaps live feeds have.

For stream tests, replays, demos and benchmarks: instruments that list after the first
session or stop before the last, suspensions (an instrument with no bar for a stretch of
minutes), single missing bars, a gap between sessions (the overnight), and bar times that
no instrument fills are not emitted at all (as in a real feed, a time with no trade has no
snapshot).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

__all__ = ["minute_bars"]

TIME = pl.Datetime("us", "UTC")


def minute_bars(
    instruments: int,
    *,
    sessions: int = 3,
    minutes: int = 60,
    step: timedelta = timedelta(minutes=1),
    start: datetime = datetime(2024, 1, 2, 14, 30, tzinfo=UTC),
    seed: int = 0,
    missing: float = 0.02,
) -> pl.DataFrame:
    """Bars of ``instruments`` instruments (``S00000``...) over ``sessions`` sessions of
    ``minutes`` bars each, one session a day; columns instrument, date (the bar time, UTC),
    open, high, low, close, volume, vwap, sorted by date and instrument.

    About ``missing`` of the bars are absent one by one, every tenth instrument is suspended
    for a third of a session, one in eight lists during the period and one in eight stops
    before its end.
    """
    rng = np.random.default_rng(seed)
    origin = np.datetime64(start.replace(tzinfo=None), "us")  # UTC, without numpy's tz warning
    offsets = [timedelta(days=d) + m * step for d in range(sessions) for m in range(minutes)]
    times = origin + np.array(offsets, dtype="timedelta64[us]")
    t = times.size
    returns = rng.standard_t(4, (instruments, t)) * 0.0008
    close = 20 * np.exp(rng.normal(0, 0.5, (instruments, 1)) + np.cumsum(returns, axis=1))
    spread = np.abs(rng.normal(0, 0.0006, (instruments, t)))
    open_ = close * np.exp(-returns * rng.uniform(0, 1, (instruments, t)))
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) * (1 - spread)
    volume = np.round(rng.lognormal(8, 1, (instruments, t)))
    vwap = (high + low + close) / 3
    have = rng.random((instruments, t)) >= missing
    for i in range(instruments):
        if i % 10 == 3:  # a suspension: a third of a session without bars
            s = int(rng.integers(0, max(t - minutes // 3, 1)))
            have[i, s : s + minutes // 3] = False
        if i % 8 == 5:  # lists during the period
            have[i, : int(rng.integers(1, t // 2))] = False
        if i % 8 == 6:  # stops before the end
            have[i, int(rng.integers(t // 2, t)) :] = False
    inst, when = np.nonzero(have)
    names = np.array([f"S{i:05d}" for i in range(instruments)])
    frame = pl.DataFrame(
        {
            "instrument": names[inst],
            "date": pl.Series(times[when]).cast(TIME),
            "open": open_[inst, when],
            "high": high[inst, when],
            "low": low[inst, when],
            "close": close[inst, when],
            "volume": volume[inst, when],
            "vwap": vwap[inst, when],
        }
    )
    return frame.sort("date", "instrument")
