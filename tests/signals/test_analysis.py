"""Signal analysis against independent references: scipy per day, numpy, pandas loops."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from datetime import date, timedelta
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy import stats

from quarry.exceptions import UsageError
from quarry.signals import (
    SignalReport,
    analyze,
    autocorrelation,
    daily_ic,
    ic_summary,
    long_short,
    quantile_returns,
    turnover,
)

DAYS, NAMES = 40, 60
START = date(2024, 1, 1)
ONE_NAME_DAY, CONSTANT_DAY, NO_LABEL_DAY, THIN_DAY, TIED_DAY = 5, 7, 9, 11, 13


def make_frame(seed: int = 0) -> pl.DataFrame:
    """40 dates x 60 instruments with a planted IC and every awkward case.

    A persistent component makes the score autocorrelated; the label is 0.3 x score + noise.
    Scores and labels have nulls, NaN and infinities; about 8% of rows are absent; one date has
    a single instrument, one a constant score, one no labels at all, one only three
    instruments, one scores rounded to one decimal (many ties); rows come shuffled.
    """
    rng = np.random.default_rng(seed)
    dates = [START + timedelta(days=i) for i in range(DAYS)]
    names = [f"I{j:03d}" for j in range(NAMES)]
    persistent = rng.normal(size=NAMES)
    score = 0.8 * persistent + 0.6 * rng.normal(size=(DAYS, NAMES))
    label = 0.3 * score + rng.normal(size=(DAYS, NAMES))
    score[TIED_DAY] = np.round(score[TIED_DAY], 1)
    # Ties across the whole panel as well: a few scores rounded coarsely on every day.
    coarse = rng.random(size=(DAYS, NAMES)) < 0.15
    score[coarse] = np.round(score[coarse])
    score[CONSTANT_DAY] = 0.1  # equal floats whose mean is not exactly 0.1
    score[rng.random(size=(DAYS, NAMES)) < 0.05] = np.nan
    label[rng.random(size=(DAYS, NAMES)) < 0.05] = np.nan
    score[rng.random(size=(DAYS, NAMES)) < 0.01] = np.inf
    label[rng.random(size=(DAYS, NAMES)) < 0.01] = -np.inf
    label[NO_LABEL_DAY] = np.nan
    null_score = rng.random(size=(DAYS, NAMES)) < 0.03
    null_label = rng.random(size=(DAYS, NAMES)) < 0.03
    present = rng.random(size=(DAYS, NAMES)) > 0.08
    present[ONE_NAME_DAY] = False
    present[ONE_NAME_DAY, 17] = True
    present[THIN_DAY] = False
    present[THIN_DAY, [3, 30, 50]] = True

    rows: dict[str, list[object]] = {"instrument": [], "date": [], "score": [], "LABEL0": []}
    for i, d in enumerate(dates):
        for j, name in enumerate(names):
            if not present[i, j]:
                continue
            rows["instrument"].append(name)
            rows["date"].append(d)
            rows["score"].append(None if null_score[i, j] else float(score[i, j]))
            rows["LABEL0"].append(None if null_label[i, j] else float(label[i, j]))
    frame = pl.DataFrame(
        rows,
        schema={
            "instrument": pl.String,
            "date": pl.Date,
            "score": pl.Float64,
            "LABEL0": pl.Float64,
        },
    )
    return frame.sample(fraction=1.0, shuffle=True, seed=seed)


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return make_frame()


def to_pandas(frame: pl.DataFrame) -> pd.DataFrame:
    """The frame with Python dates and NaN for every null."""
    return pd.DataFrame(
        {
            "instrument": frame["instrument"].to_list(),
            "date": frame["date"].to_list(),
            "score": frame["score"].cast(pl.Float64).to_numpy(),
            "LABEL0": frame["LABEL0"].cast(pl.Float64).to_numpy(),
        }
    )


def scipy_corr(fn: Callable[..., Any], x: np.ndarray, y: np.ndarray) -> float:
    """scipy's correlation, NaN for fewer than two pairs or constant input."""
    if len(x) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(fn(x, y).statistic)


def as_float(series: pl.Series) -> np.ndarray:
    assert series.is_nan().sum() == 0, "missing values must be null, not NaN"
    return series.cast(pl.Float64).to_numpy()


def qcut_groups(g: pd.DataFrame, groups: int) -> pd.Series:
    """pandas' qcut over the numbers 1..n of the rows sorted by score, then instrument."""
    g = g.sort_values(["score", "instrument"])
    numbers = g["score"].rank(method="first")
    return pd.Series(pd.qcut(numbers, groups, labels=False) + 1, index=g.index)


# -- daily IC ---------------------------------------------------------------------------------


def reference_daily_ic(frame: pl.DataFrame) -> pd.DataFrame:
    out = []
    for d, g in to_pandas(frame).groupby("date"):
        g = g[np.isfinite(g["score"]) & np.isfinite(g["LABEL0"])]
        x, y = g["score"].to_numpy(), g["LABEL0"].to_numpy()
        out.append(
            {
                "date": d,
                "ic": scipy_corr(stats.pearsonr, x, y),
                "rank_ic": scipy_corr(stats.spearmanr, x, y),
                "n": len(g),
            }
        )
    return pd.DataFrame(out).sort_values("date")


def test_daily_ic_matches_scipy_per_day(frame: pl.DataFrame) -> None:
    got = daily_ic(frame)
    want = reference_daily_ic(frame)

    assert got.columns == ["date", "ic", "rank_ic", "n"]
    assert got["date"].to_list() == list(want["date"])
    np.testing.assert_array_equal(got["n"].to_numpy(), want["n"].to_numpy())
    np.testing.assert_allclose(as_float(got["ic"]), want["ic"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(as_float(got["rank_ic"]), want["rank_ic"], rtol=1e-9, atol=1e-12)


def test_daily_ic_is_null_exactly_on_undefined_days(frame: pl.DataFrame) -> None:
    got = daily_ic(frame)
    undefined = {got["date"][i] for i in (ONE_NAME_DAY, CONSTANT_DAY, NO_LABEL_DAY)}
    null_days = set(got.filter(pl.col("ic").is_null())["date"])
    assert null_days == undefined
    assert set(got.filter(pl.col("rank_ic").is_null())["date"]) == undefined
    # The planted signal is found, and the tied day still gets a Rank IC.
    assert np.nanmean(as_float(got["ic"])) > 0.1
    assert got["rank_ic"][TIED_DAY] is not None


def test_constant_scores_give_null_like_scipy_gives_nan() -> None:
    # Equal floats such as 0.1 have a mean a hair off 0.1, so a naive correlation comes out
    # as a tiny number (or 0.0) instead of undefined on some of these sizes.
    rng = np.random.default_rng(1)
    sizes = range(2, 30)
    frame = pl.DataFrame(
        {
            "instrument": [f"I{j}" for n in sizes for j in range(n)],
            "date": [START + timedelta(days=n) for n in sizes for _ in range(n)],
            "score": [0.1] * sum(sizes),
            "LABEL0": rng.normal(size=sum(sizes)),
        }
    )
    want = [scipy_corr(stats.pearsonr, np.full(n, 0.1), rng.normal(size=n)) for n in sizes]
    assert np.isnan(want).all()
    got = daily_ic(frame)
    assert got["ic"].null_count() == got["rank_ic"].null_count() == len(sizes)
    assert autocorrelation(frame)["autocorr"].null_count() == len(sizes) - 1


def test_daily_ic_reads_other_columns_and_integer_scores() -> None:
    frame = pl.DataFrame(
        {
            "instrument": ["a", "b", "c", "d"] * 2,
            "date": [date(2024, 1, 1)] * 4 + [date(2024, 1, 2)] * 4,
            "pred": [1, 2, 3, 4, 4, 3, 3, 1],
            "ret": [0.1, 0.3, 0.2, 0.4, 1.0, 2.0, 3.0, 4.0],
        }
    )
    got = daily_ic(frame, score="pred", label="ret")
    want = [
        (stats.pearsonr(x, y).statistic, stats.spearmanr(x, y).statistic)
        for x, y in (([1, 2, 3, 4], [0.1, 0.3, 0.2, 0.4]), ([4, 3, 3, 1], [1, 2, 3, 4]))
    ]
    np.testing.assert_allclose(got["ic"].to_numpy(), [w[0] for w in want], rtol=1e-12)
    np.testing.assert_allclose(got["rank_ic"].to_numpy(), [w[1] for w in want], rtol=1e-12)


# -- summary ----------------------------------------------------------------------------------


def numpy_summary(ic: np.ndarray, rank_ic: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, values in (("ic", ic), ("rank_ic", rank_ic)):
        values = values[~np.isnan(values)]
        mean, std = values.mean(), values.std(ddof=1)
        out[name] = mean
        out[name + "ir"] = mean / std
        out[name + "_t"] = mean / (std / np.sqrt(len(values)))
    out["days"] = float(len(ic[~np.isnan(ic)]))
    return out


def test_ic_summary_matches_numpy_on_the_scipy_daily_values(frame: pl.DataFrame) -> None:
    got = ic_summary(daily_ic(frame))
    ref = reference_daily_ic(frame)
    want = numpy_summary(ref["ic"].to_numpy(), ref["rank_ic"].to_numpy())

    assert list(got) == ["ic", "icir", "rank_ic", "rank_icir", "ic_t", "rank_ic_t", "days"]
    assert got["days"] == DAYS - 3
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key


def test_ic_summary_skips_null_days_and_gives_nan_when_undefined() -> None:
    daily = pl.DataFrame(
        {"ic": [0.1, None, 0.3, -0.05], "rank_ic": [0.2, None, 0.1, 0.0]},
        schema={"ic": pl.Float64, "rank_ic": pl.Float64},
    )
    got = ic_summary(daily)
    want = numpy_summary(np.array([0.1, np.nan, 0.3, -0.05]), np.array([0.2, np.nan, 0.1, 0.0]))
    assert got == pytest.approx(want, rel=1e-12)

    one_day = ic_summary(daily.head(1))
    assert one_day["ic"] == pytest.approx(0.1)
    assert one_day["days"] == 1
    assert math.isnan(one_day["icir"]) and math.isnan(one_day["ic_t"])
    empty = ic_summary(daily.clear())
    assert empty["days"] == 0 and all(math.isnan(v) for k, v in empty.items() if k != "days")


# -- quantile groups --------------------------------------------------------------------------


def reference_quantiles(frame: pl.DataFrame, groups: int) -> pd.DataFrame:
    pdf = to_pandas(frame)
    pdf = pdf[np.isfinite(pdf["score"]) & np.isfinite(pdf["LABEL0"])]
    out = []
    for d, g in pdf.groupby("date"):
        if len(g) < groups:
            continue
        group = qcut_groups(g, groups)
        for k, mean in g["LABEL0"].groupby(group).mean().items():
            out.append({"date": d, "group": int(k), "mean_return": mean})
    return pd.DataFrame(out).sort_values(["date", "group"])


@pytest.mark.parametrize("groups", [5, 3, 10])
def test_quantile_returns_match_pandas_qcut(frame: pl.DataFrame, groups: int) -> None:
    got = quantile_returns(frame, groups=groups)
    want = reference_quantiles(frame, groups)

    assert got.columns == ["date", "group", "mean_return"]
    assert got["date"].to_list() == list(want["date"])
    assert got["group"].to_list() == list(want["group"])
    np.testing.assert_allclose(got["mean_return"].to_numpy(), want["mean_return"], rtol=1e-12)
    # No groups on the dates with fewer pairs than groups.
    thin = {START + timedelta(days=i) for i in (ONE_NAME_DAY, NO_LABEL_DAY)}
    assert not thin & set(got["date"])


def test_quantile_ties_go_by_instrument_name_whatever_the_row_order() -> None:
    names = ["e", "c", "a", "d", "b"]
    frame = pl.DataFrame(
        {
            "instrument": names,
            "date": [date(2024, 1, 1)] * 5,
            "score": [1.0] * 5,
            "LABEL0": [float("abcde".index(n)) for n in names],
        }
    )
    got = quantile_returns(frame, groups=5)
    # a (label 0) is lowest, e (label 4) highest.
    assert got["mean_return"].to_list() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert_frame_equal(quantile_returns(frame.reverse(), groups=5), got)


def test_long_short_is_top_minus_bottom(frame: pl.DataFrame) -> None:
    qr = quantile_returns(frame, groups=5)
    want = reference_quantiles(frame, 5).pivot(index="date", columns="group", values="mean_return")
    got = long_short(qr)
    assert got.columns == ["date", "spread"]
    assert got["date"].to_list() == list(want.index)
    np.testing.assert_allclose(got["spread"].to_numpy(), (want[5] - want[1]).to_numpy())
    assert np.mean(got["spread"].to_numpy()) > 0


# -- autocorrelation and turnover -------------------------------------------------------------


@pytest.mark.parametrize("lag", [1, 3])
def test_autocorrelation_matches_a_pandas_loop(frame: pl.DataFrame, lag: int) -> None:
    pdf = to_pandas(frame)
    wide = pdf.pivot(index="date", columns="instrument", values="score").sort_index()
    calendar = list(wide.index)
    want = []
    for i in range(lag, len(calendar)):
        now, before = wide.loc[calendar[i]], wide.loc[calendar[i - lag]]
        ok = np.isfinite(now) & np.isfinite(before)
        want.append(scipy_corr(stats.spearmanr, now[ok].to_numpy(), before[ok].to_numpy()))

    got = autocorrelation(frame, lag=lag)
    assert got.columns == ["date", "autocorr"]
    assert got["date"].to_list() == calendar[lag:]
    np.testing.assert_allclose(as_float(got["autocorr"]), want, rtol=1e-9, atol=1e-12)
    # The persistent component shows, and the constant day has none.
    assert np.nanmean(want) > 0.3
    assert got.filter(pl.col("date") == calendar[CONSTANT_DAY])["autocorr"].item() is None


@pytest.mark.parametrize("groups", [5, 4])
def test_turnover_matches_a_pandas_loop(frame: pl.DataFrame, groups: int) -> None:
    pdf = to_pandas(frame)
    calendar = sorted(set(pdf["date"]))
    scored = pdf[np.isfinite(pdf["score"])]
    top: dict[date, set[str]] = {}
    bottom: dict[date, set[str]] = {}
    for d, g in scored.groupby("date"):
        if len(g) < groups:
            continue
        group = qcut_groups(g, groups)
        top[d] = set(g.loc[group.index[group == groups], "instrument"])
        bottom[d] = set(g.loc[group.index[group == 1], "instrument"])
    want_top, want_bottom = [], []
    for prev, d in pairwise(calendar):
        if d in top and prev in top:
            want_top.append(len(top[d] - top[prev]) / len(top[d]))
            want_bottom.append(len(bottom[d] - bottom[prev]) / len(bottom[d]))
        else:
            want_top.append(math.nan)
            want_bottom.append(math.nan)

    got = turnover(frame, groups=groups)
    assert got.columns == ["date", "top_turnover", "bottom_turnover"]
    assert got["date"].to_list() == calendar[1:]
    np.testing.assert_allclose(as_float(got["top_turnover"]), want_top, rtol=1e-12)
    np.testing.assert_allclose(as_float(got["bottom_turnover"]), want_bottom, rtol=1e-12)
    # Thin dates give null on themselves and on the date after.
    assert got["top_turnover"].null_count() == 4
    assert 0 < np.nanmean(want_top) < 1


def test_turnover_counts_names_new_to_the_group() -> None:
    d1, d2 = date(2024, 1, 1), date(2024, 1, 2)
    frame = pl.DataFrame(
        {
            "instrument": list("abcd") * 2,
            "date": [d1] * 4 + [d2] * 4,
            # Day 1: top two c, d; bottom a, b. Day 2: top b, d; bottom a, c.
            "score": [1.0, 2.0, 3.0, 4.0, 1.0, 3.0, 2.0, 4.0],
            "LABEL0": [0.0] * 8,
        }
    )
    got = turnover(frame, groups=2)
    assert got.rows() == [(d2, 0.5, 0.5)]


# -- analyze and errors -----------------------------------------------------------------------


def test_analyze_collects_everything(frame: pl.DataFrame) -> None:
    report = analyze(frame, groups=5, lag=2)
    assert isinstance(report, SignalReport)
    assert_frame_equal(report.daily_ic, daily_ic(frame))
    assert_frame_equal(report.autocorr, autocorrelation(frame, lag=2))
    # the report's figures come from the dense panel (``_panel``), the functions' from the long
    # frame: the same figures, summed in another order
    assert report.summary == pytest.approx(ic_summary(daily_ic(frame)), rel=1e-12)

    metrics = report.as_dict()
    assert list(metrics) == [
        "ic",
        "icir",
        "rank_ic",
        "rank_icir",
        "ic_t",
        "rank_ic_t",
        "long_short_mean",
        "autocorr_mean",
        "turnover_mean",
    ]
    qr = reference_quantiles(frame, 5).pivot(index="date", columns="group", values="mean_return")
    assert metrics["long_short_mean"] == pytest.approx((qr[5] - qr[1]).mean(), rel=1e-12)
    assert metrics["autocorr_mean"] == pytest.approx(
        np.nanmean(as_float(report.autocorr["autocorr"])), rel=1e-12
    )
    assert metrics["turnover_mean"] == pytest.approx(
        np.nanmean(as_float(report.turnover["top_turnover"])), rel=1e-12
    )
    assert metrics["rank_ic_t"] == report.summary["rank_ic_t"]


def test_missing_columns_are_named_with_the_columns_present(frame: pl.DataFrame) -> None:
    with pytest.raises(UsageError, match=r"^column 'score' not found; .*instrument, date, LABEL0$"):
        daily_ic(frame.drop("score"))
    with pytest.raises(UsageError, match="column 'ret' not found"):
        quantile_returns(frame, label="ret")
    with pytest.raises(UsageError, match="column 'alpha' not found"):
        analyze(frame, score="alpha")
    with pytest.raises(UsageError, match="'score' must be numeric"):
        daily_ic(frame.with_columns(pl.col("score").cast(pl.String)))


def test_bad_arguments_and_duplicate_rows_are_refused(frame: pl.DataFrame) -> None:
    with pytest.raises(UsageError, match="groups must be an integer of at least 2, not 1"):
        quantile_returns(frame, groups=1)
    with pytest.raises(UsageError, match="lag must be an integer of at least 1, not 0"):
        autocorrelation(frame, lag=0)
    doubled = pl.concat([frame, frame.head(1)])
    with pytest.raises(UsageError, match="2 rows share an"):
        turnover(doubled)
    with pytest.raises(UsageError, match="2 rows share an"):
        analyze(doubled)  # checked once for all the analyses


def test_a_frame_vouched_for_gives_the_same_report_unchecked(frame: pl.DataFrame) -> None:
    checked, trusted = analyze(frame, lag=2), analyze(frame, lag=2, one_row_per_key=True)
    for part in ("daily_ic", "quantile_returns", "long_short", "autocorr", "turnover"):
        assert_frame_equal(getattr(trusted, part), getattr(checked, part))
    assert trusted.as_dict() == checked.as_dict()
