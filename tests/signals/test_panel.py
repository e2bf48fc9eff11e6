"""The dense-panel analysis against the long-frame functions (themselves checked against
scipy and pandas in test_analysis), on frames with every awkward case."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.exceptions import UsageError
from quarry.signals import (
    SignalReport,
    _analysis,
    analyze,
    analyze_panel,
    autocorrelation,
    daily_ic,
    ic_summary,
    long_short,
    quantile_returns,
    turnover,
)
from tests.signals.test_analysis import make_frame


def panel_of(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, pl.Series, list[str]]:
    """The frame as dates x instruments arrays, built by Polars' pivot (not the code under
    test); instruments in reverse name order, so that ties must be broken by name, not by
    column."""
    names = sorted(frame["instrument"].unique().to_list(), reverse=True)
    out = []
    for column in ("score", "LABEL0"):
        wide = frame.pivot(on="instrument", index="date", values=column).sort("date")
        out.append(wide.select(names).to_numpy().astype(float))  # a null becomes NaN
    return out[0], out[1], frame["date"].unique().sort(), names


def assert_same_report(report: SignalReport, frame: pl.DataFrame, groups: int, lag: int) -> None:
    qr = quantile_returns(frame, groups=groups)
    expected = {
        "daily_ic": daily_ic(frame),
        "quantile_returns": qr,
        "long_short": long_short(qr),
        "autocorr": autocorrelation(frame, lag=lag),
        "turnover": turnover(frame, groups=groups),
    }
    for part, want in expected.items():
        got = getattr(report, part)
        try:  # nulls exactly where the long frame has them; values to rounding
            assert_frame_equal(got, want, check_exact=False, rel_tol=0, abs_tol=1e-12)
        except AssertionError as exc:
            raise AssertionError(f"{part}: {exc}") from exc
    assert report.summary == pytest.approx(ic_summary(expected["daily_ic"]), rel=1e-12, nan_ok=True)


@pytest.mark.parametrize(("seed", "groups", "lag"), [(0, 5, 1), (1, 3, 2), (2, 10, 1), (3, 2, 3)])
def test_the_panel_gives_the_long_frames_figures(seed: int, groups: int, lag: int) -> None:
    frame = make_frame(seed)
    report = analyze_panel(*panel_of(frame), groups=groups, lag=lag)
    assert_same_report(report, frame, groups, lag)
    assert report.daily_ic["ic"].null_count() >= 3  # the one-name, constant and no-label days


@pytest.mark.parametrize("block", [1, 7])
def test_blocks_of_rows_on_threads_give_the_same_figures(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 40 dates of 60 instruments in blocks of 7 rows on threads: the autocorrelation's
    # earlier date is often in the block before
    monkeypatch.setattr("quarry._memory.BLOCK_CELLS", block * 60)
    frame = make_frame(5)
    assert_same_report(analyze_panel(*panel_of(frame), groups=5, lag=3), frame, 5, 3)


def test_ties_are_broken_by_name_in_any_column_order() -> None:
    # two names tied on every date: the lower name goes to the lower group
    dates = pl.Series("date", [date(2024, 1, 1), date(2024, 1, 2)])
    scores = np.array([[1.0, 1.0], [1.0, 1.0]])
    labels = np.array([[5.0, 7.0], [5.0, 7.0]])
    for names in (["B", "A"], ["A", "B"]):
        got = analyze_panel(scores, labels, dates, names, groups=2).quantile_returns
        low = labels[0][names.index("A")]
        assert got.filter(pl.col("group") == 1)["mean_return"].to_list() == [low, low]


def test_rows_with_and_without_ties_in_one_block_give_the_long_frames_figures() -> None:
    """The fast sort's order stands where no two scores tie; rows with ties are sorted again
    stably. Mixed in one block (and in reverse name order), the groups must still break
    every tie by name, as the long frame does."""
    rng = np.random.default_rng(7)
    days, width = 12, 300
    scores = rng.standard_normal((days, width))
    scores[::3] = np.round(scores[::3], 1)  # every third day: many ties
    scores[1::4, :40] = 0.0  # and some days a block of equal scores
    scores[rng.random(scores.shape) < 0.1] = np.nan
    labels = 0.05 * np.nan_to_num(scores) + rng.standard_normal((days, width))
    labels[rng.random(labels.shape) < 0.05] = np.nan
    names = [f"I{k:03d}" for k in range(width)][::-1]
    calendar = pl.date_range(date(2024, 1, 1), date(2024, 1, days), eager=True).alias("date")
    frame = pl.DataFrame(
        {
            "instrument": np.tile(names, days),
            "date": np.repeat(calendar.to_numpy(), width),
            "score": scores.reshape(-1),
            "LABEL0": labels.reshape(-1),
        }
    ).with_columns(pl.col("score", "LABEL0").fill_nan(None), pl.col("date").cast(pl.Date))
    for groups in (5, 10):
        report = analyze_panel(scores, labels, calendar, names, groups=groups, lag=2)
        assert_same_report(report, frame, groups, 2)


def test_analyze_takes_the_panel_for_a_dense_frame_and_the_long_path_for_a_sparse_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame = make_frame(4)
    calls: list[int] = []
    real = analyze_panel

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("quarry.signals._analysis.analyze_panel", counted)
    assert_same_report(analyze(frame, groups=4, lag=2), frame, 4, 2)
    assert calls == [1]
    # each instrument on one date alone: a panel would be nearly all empty cells
    sparse = frame.with_columns(
        (pl.col("instrument") + "-" + pl.col("date").cast(pl.String)).alias("instrument")
    )
    cells = sparse["instrument"].n_unique() * sparse["date"].n_unique()
    assert cells > _analysis.PANEL_FILL * sparse.height
    assert_same_report(analyze(sparse), sparse, 5, 1)
    assert calls == [1]


def test_mismatched_panels_are_refused_in_one_line() -> None:
    dates = pl.Series("date", [date(2024, 1, 1)])
    with pytest.raises(UsageError, match=r"instruments shape, not \(1, 2\) and \(1, 3\)"):
        analyze_panel(np.zeros((1, 2)), np.zeros((1, 3)), dates, ["A", "B"])
    with pytest.raises(UsageError, match="need 1 dates and 2 instruments, not 1 and 3"):
        analyze_panel(np.zeros((1, 2)), np.zeros((1, 2)), dates, ["A", "B", "C"])
    with pytest.raises(UsageError, match="groups must be an integer of at least 2, not 1"):
        analyze_panel(np.zeros((1, 2)), np.zeros((1, 2)), dates, ["A", "B"], groups=1)
    with pytest.raises(UsageError, match="lag must be an integer of at least 1, not 0"):
        analyze_panel(np.zeros((1, 2)), np.zeros((1, 2)), dates, ["A", "B"], lag=0)
    twice = pl.Series("date", [date(2024, 1, 2), date(2024, 1, 1)])
    with pytest.raises(UsageError, match="dates must be ascending and distinct"):
        analyze_panel(np.zeros((2, 2)), np.zeros((2, 2)), twice, ["A", "B"])


def test_more_groups_than_a_small_integer_holds() -> None:
    # 300 groups: the turnover's group numbers need more than a byte
    frame = make_frame(6)
    wide = pl.concat([frame.with_columns(pl.col("instrument") + f"-{k}") for k in range(6)])
    report = analyze_panel(*panel_of(wide), groups=300)
    assert report.turnover["top_turnover"].drop_nulls().len() > 10  # dates with 300 groups
    assert_same_report(report, wide, 300, 1)


def test_instruments_that_are_not_text_keep_their_own_order() -> None:
    # tied scores: the long path breaks ties by the column's order (9 before 10 as numbers,
    # "10" before "9" as text), so such a frame is analyzed long, with the same groups
    frame = pl.DataFrame(
        {
            "instrument": [9, 10, 9, 10],
            "date": [date(2024, 1, 1)] * 2 + [date(2024, 1, 2)] * 2,
            "score": [1.0] * 4,
            "LABEL0": [0.0, 1.0, 0.0, 1.0],
        }
    )
    got = analyze(frame, groups=2).quantile_returns
    assert_frame_equal(got, quantile_returns(frame, groups=2))
    assert got.filter(pl.col("group") == 1)["mean_return"].to_list() == [0.0, 0.0]


def test_extreme_values_give_null_correlations_as_the_long_path_does() -> None:
    frame = make_frame(7).with_columns(pl.col("score") * 1e-200)
    report = analyze(frame)
    assert report.daily_ic["ic"].is_infinite().sum() == 0
    assert_same_report(report, frame, 5, 1)


def test_a_panel_without_instruments_is_refused_in_one_line() -> None:
    with pytest.raises(UsageError, match="the panel has no instruments"):
        analyze_panel(np.zeros((1, 0)), np.zeros((1, 0)), pl.Series([date(2024, 1, 1)]), [])
