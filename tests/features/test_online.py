"""Online features: bar-by-bar values equal research's batch values, from the same plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from quarry.data._minute_bars import minute_bars
from quarry.exceptions import DataError, ExpressionError
from quarry.features import Plan, alpha158, compute
from quarry.features._online import OnlineFeatures, lookback


def stream_through(online: OnlineFeatures, bars: pl.DataFrame) -> pl.DataFrame:
    parts = [
        online.update(when, part) for (when,), part in bars.group_by(["date"], maintain_order=True)
    ]
    return pl.concat(parts)


def parity_failures(
    batch: pl.DataFrame, online: pl.DataFrame, names: list[str], tol: float = 1e-9
) -> list[str]:
    """Each feature whose online values differ from the batch ones, with how."""
    joined = batch.join(online, on=["instrument", "date"], suffix="__online", how="full")
    failures = []
    for name in names:
        a = joined[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        b = joined[f"{name}__online"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        gaps = int((np.isnan(a) != np.isnan(b)).sum())
        both = ~np.isnan(a) & ~np.isnan(b)
        worst = float(np.max(np.abs(a[both] - b[both]), initial=0.0))
        if gaps or worst > tol * max(1.0, float(np.max(np.abs(a[both]), initial=0.0))):
            failures.append(f"{name}: {gaps} missing on one side only, largest gap {worst:.3g}")
    return failures


def test_alpha158_bar_by_bar_equals_batch_on_minute_bars_with_gaps() -> None:
    bars = minute_bars(40, sessions=3, minutes=45, seed=3)
    features = alpha158()
    online = OnlineFeatures(features)
    streamed = stream_through(online, bars)
    assert streamed.height == bars.height
    assert parity_failures(compute(bars, features), streamed, list(features)) == []


NESTED = {
    "std_of_mean": "Std(Mean($close, 5), 10)",
    "ref_of_window": "Ref(Mean($close, 3), 2) / Ref(Max($high, 4), 3)",
    "delta_of_extreme": "Delta(Min($low, 4), 2)",
    "corr_of_rank": "Corr(Rank($close, 5), Ref($volume, 1), 6)",
    "cov_of_sums": "Cov(Sum($close, 3), Count($volume > 0, 4), 5)",
    "quantiles_of_std": "Quantile(Std($close, 3), 7, 0.8) - Med(Std($close, 3), 7)",
    "lone_quantile": "Quantile(Delta($close, 1), 9, 0.25)",
    "if_sum": "If($close > Ref($close, 1), Sum($volume, 3), Neg($volume))",
    "shape": "Skew($close, 6) + Kurt(Log($volume + 1), 7)",
    "mad_wma": "Mad($vwap, 5) / WMA($close, 4)",
    "idx_of_sum": "IdxMax(Sum($close, 3), 5) - IdxMin(Ref($low, 2), 4)",
    "regressions": "Slope(Mean($close, 3), 6) + Rsquare($close, 5) + Resi(Var($close, 3), 4)",
    "elementwise": "Greater(Abs(Sign($close - $open)), Power($high / $low, 2)) "
    "* Less($close, $open) + Not(And($close > $open, Or($volume < 0, $low == $high)))",
    "cross_section": "CSRank(Mean($close, 3)) + CSZScore(Delta($close, 2)) "
    "+ CSDemean(Corr($close, $volume, 5))",
    "mask": 'Mask(Mean($close, 3), "S00001") / $close',
    "deep": "Mean(Std(Ref(Max($high, 3), 1), 4) / Ref(Mean($close, 2), 2), 5)",
    "field": "$close",
    "number": "Add(1, 2)",
}


def test_nested_operators_bar_by_bar_equal_batch_as_instruments_list_and_pause() -> None:
    # Nodes are computed a column a bar and kept in rings for their users: chains of windows,
    # shifts of windows, cross sections of windows, extras (Corr's stds) and more
    # instruments than the rings first had room for (one in eight lists later). Instruments
    # that stop trading are left out: research ends their history at their last bar, which
    # a stream cannot know at the time, so a cross section still counts them there.
    bars = minute_bars(150, sessions=2, minutes=40, seed=11)
    last = bars["date"].max()
    bars = bars.filter(pl.col("date").max().over("instrument") == last)
    online = OnlineFeatures(NESTED)
    streamed = stream_through(online, bars)
    assert streamed.height == bars.height
    assert parity_failures(compute(bars, NESTED), streamed, list(NESTED)) == []


def test_a_bars_instruments_may_come_in_any_order_and_the_matrix_is_the_frame() -> None:
    # A feed lists every instrument in its usual order (each output's newest column is then
    # read as one slice) or some of them in any order (gathered by row): both give research's
    # values, and ``update_matrix`` gives the very numbers ``update`` does.
    bars = minute_bars(60, sessions=1, minutes=40, seed=5, missing=0.0)
    bars = bars.filter(pl.len().over("instrument") == bars["date"].n_unique())  # never absent
    rng = np.random.default_rng(1)
    shuffled, framed = OnlineFeatures(NESTED), OnlineFeatures(NESTED)
    parts, wholes = [], 0
    for t, ((when,), part) in enumerate(bars.group_by(["date"], maintain_order=True)):
        if t % 3 == 2:  # a third of the bars: a shuffled subset
            keep = np.sort(rng.choice(part.height, part.height - 5, replace=False))
            part = part[rng.permutation(keep)]
        wholes += part.height == len(shuffled.instruments) and t % 3 != 2
        names, matrix = shuffled.update_matrix(when, part.drop("date"))
        frame = framed.update(when, part.drop("date"))
        assert names.to_list() == part["instrument"].to_list() == frame["instrument"].to_list()
        as_frame = frame.select(shuffled.names).fill_null(np.nan).to_numpy()
        np.testing.assert_array_equal(matrix, as_frame)
        parts.append(frame)
    assert wholes > 20
    fed = bars.join(pl.concat(parts).select("instrument", "date"), on=["instrument", "date"])
    assert fed.height < bars.height  # the bars' absent instruments are gaps in research too
    assert parity_failures(compute(fed, NESTED), pl.concat(parts), list(NESTED)) == []


def test_rings_and_states_grow_for_listings_and_keep_what_they_held() -> None:
    # Half the instruments list at bar 10, more than the room kept for listings: every ring
    # and state is copied into a larger one mid-stream, and the values go on as research's.
    bars = minute_bars(100, sessions=1, minutes=40, seed=8)
    bars = bars.filter(pl.col("date").max().over("instrument") == bars["date"].max())
    times = bars["date"].unique(maintain_order=True)
    late = pl.col("instrument").str.slice(1).cast(pl.Int64) % 2 == 0  # S00001 (Mask) is early
    bars = bars.filter(~late | (pl.col("date") >= times[10]))
    online = OnlineFeatures(NESTED)
    first = stream_through(online, bars.filter(pl.col("date") == times[0]))
    room = online._capacity
    rest = stream_through(online, bars.filter(pl.col("date") > times[0]))
    assert room < len(online.instruments) <= online._capacity
    streamed = pl.concat([first, rest])
    assert parity_failures(compute(bars, NESTED), streamed, list(NESTED)) == []


def test_room_reserved_at_start_is_used_without_growing() -> None:
    # A stream told how many instruments to expect makes their room before the first bar:
    # the bars then never grow a ring, and the values are research's.
    bars = minute_bars(100, sessions=1, minutes=30, seed=9)
    bars = bars.filter(pl.col("date").max().over("instrument") == bars["date"].max())
    online = OnlineFeatures(NESTED)
    online.reserve(100)
    room = online._capacity
    assert room >= 100 and all(r.data.shape[1] == room for r in online._rings.values())
    assert all(s.shape[0] == room for s in online._states.values())
    streamed = stream_through(online, bars)
    assert online._capacity == room
    assert parity_failures(compute(bars, NESTED), streamed, list(NESTED)) == []


def test_a_resumed_stream_equals_the_uninterrupted_one_after_its_replay() -> None:
    # A restart: a fresh OnlineFeatures told how many bars came before and when each
    # instrument began, then fed the last ``depth`` bars again, goes on as if never stopped.
    bars = minute_bars(30, sessions=2, minutes=60, seed=4)
    times = bars["date"].unique(maintain_order=True)
    whole = OnlineFeatures(NESTED)
    expected = stream_through(whole, bars)
    cut = 70  # bars seen before the stop
    before = OnlineFeatures(NESTED)
    stream_through(before, bars.filter(pl.col("date") < times[cut]))
    again = OnlineFeatures(NESTED)
    replay_from = cut - again.depth
    again.resume(replay_from, before.first_bars)
    replay = pl.col("date").is_between(times[replay_from], times[cut - 1])
    stream_through(again, bars.filter(replay))
    after = stream_through(again, bars.filter(pl.col("date") >= times[cut]))
    tail = expected.filter(pl.col("date") >= times[cut])
    assert parity_failures(tail, after, list(NESTED), tol=0.0) == []


def test_running_sums_do_not_drift_over_long_histories() -> None:
    # Prices near 1,000 moving by parts in a million: raw running sums of positions and
    # squares lose the fit's digits as the history grows; each window is checked against a
    # two-pass numpy fit of its own values.
    rng = np.random.default_rng(1)
    n, w = 6000, 20
    close = 1000 * np.exp(np.cumsum(rng.normal(0, 1e-6, n)))
    days = [datetime(2020, 1, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(n)]
    frame = pl.DataFrame({"instrument": "A", "date": days, "close": close})
    got = compute(frame, {"r": f"Rsquare($close, {w})", "s": f"Std($close, {w})"})
    for t in (n - 1, n - 7, n // 2):
        y = close[t - w + 1 : t + 1]
        p = np.arange(w)
        r = np.corrcoef(p, y)[0, 1] ** 2
        assert got["r"][t] == pytest.approx(r, abs=1e-9)
        assert got["s"][t] == pytest.approx(np.std(y, ddof=1), rel=1e-9)


def test_a_value_depends_only_on_its_recent_rows() -> None:
    # The same instrument's last rows, computed over its whole history and over a short
    # tail that keeps the anchors (phase), agree to the bit.
    bars = minute_bars(3, sessions=2, minutes=200, seed=5).filter(pl.col("instrument") == "S00000")
    feats = {"m": "Mean($close, 7)", "c": "Corr($close, $volume, 9)", "q": "Slope($close, 11)"}
    whole = compute(bars, feats)
    online = OnlineFeatures(feats)
    tail = stream_through(online, bars)
    assert online.depth == 1 + 2 * 10
    for name in feats:
        np.testing.assert_array_equal(tail[name].to_numpy()[-50:], whole[name].to_numpy()[-50:])


@pytest.mark.parametrize(
    ("exprs", "rows"),
    [
        ({"a": "$close"}, 0),
        ({"a": "Ref($close, 3)"}, 3),
        ({"a": "Max($close, 5)"}, 4),
        ({"a": "Mean($close, 5)"}, 8),  # a running sum: 2N - 2
        ({"a": "Delta($close, 4)"}, 4),
        ({"a": "Delta($close, 0)"}, 0),
        ({"a": "Quantile(Ref($close, 2), 10, 0.8)"}, 11),
        ({"a": "Rank(Max($close, 3), 4)", "b": "Ref($close, 20)"}, 20),
        ({"a": "Corr($close, Ref($volume, 1), 6)"}, 11),
    ],
)
def test_lookback_counts_the_rows_each_operator_reads(exprs: dict[str, str], rows: int) -> None:
    assert lookback(Plan.build(exprs)) == rows


@pytest.mark.parametrize("expr", ["EMA($close, 10)", "Mean($close, 0)", "Max(EMA($close, 3), 2)"])
def test_operators_that_read_all_history_are_refused_by_name(expr: str) -> None:
    with pytest.raises(ExpressionError, match="bounded window"):
        OnlineFeatures({"a": expr})


def test_bars_out_of_time_order_or_repeated_are_refused() -> None:
    online = OnlineFeatures({"a": "Mean($close, 2)"})
    t0 = datetime(2024, 1, 2, tzinfo=UTC)
    online.update(t0, pl.DataFrame({"instrument": ["A"], "close": [1.0]}))
    with pytest.raises(DataError, match="does not come after"):
        online.update(t0, pl.DataFrame({"instrument": ["A"], "close": [2.0]}))
    later = t0 + timedelta(1)
    with pytest.raises(DataError) as caught:
        twice = pl.DataFrame({"instrument": ["A", "A"], "close": [1.0, 2]})
        online.update(later, twice)
    assert str(caught.value) == f"the bar at {later} repeats instrument 'A': give it once"
    with pytest.raises(DataError, match=r"the bar at .* lists an instrument without a name"):
        online.update(later, pl.DataFrame({"instrument": ["A", None], "close": [1.0, 2]}))
    assert online.instruments == ["A"]  # refused whole: nothing was added
