"""A signal analysis's rich view: its summary, IC chart and quantile table, each checked
against the report's own frames with pandas and numpy."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from quarry.signals import analyze
from tests.html_parsing import assert_safe

DAYS, NAMES = 45, 25


def _frame() -> pl.DataFrame:
    """45 days x 25 instruments, the label 0.3 x the score plus noise; a tenth of the labels
    missing and one day without any (no IC that day)."""
    rng = np.random.default_rng(7)
    score = rng.normal(size=(DAYS, NAMES))
    label = 0.3 * score + rng.normal(size=(DAYS, NAMES))
    label[rng.random(label.shape) < 0.1] = np.nan
    label[12] = np.nan
    days = [date(2023, 1, 2) + timedelta(days=k) for k in range(DAYS)]
    return pl.DataFrame(
        {
            "instrument": [f"S{j:02d}" for _ in days for j in range(NAMES)],
            "date": [d for d in days for _ in range(NAMES)],
            "score": score.ravel(),
            "LABEL0": label.ravel(),
        }
    ).with_columns(pl.col("LABEL0").fill_nan(None))


def test_the_summary_is_the_reports() -> None:
    report = analyze(_frame())
    view = assert_safe(report._repr_html_())
    assert view.title == "Signal analysis"
    shown = view.table("summary").pairs()
    s, means = report.summary, report.as_dict()
    assert shown["Mean IC"] == f"{s['ic']:.4f}" and shown["Mean Rank IC"] == f"{s['rank_ic']:.4f}"
    assert shown["ICIR"] == f"{s['icir']:.3f}" and shown["Rank ICIR"] == f"{s['rank_icir']:.3f}"
    assert shown["IC t-statistic"] == f"{s['ic_t']:.3f}"
    assert shown["Days with an IC"] == str(DAYS - 1)  # the day without labels has none
    assert shown["Mean long-short spread"] == f"{means['long_short_mean']:.2%}"
    assert shown["Mean score autocorrelation"] == f"{means['autocorr_mean']:.3f}"
    assert shown["Mean top-group turnover"] == f"{means['turnover_mean']:.2%}"
    assert s["rank_ic"] > 0.15  # a real signal, not a table of n/a


def test_the_ic_chart_is_the_daily_ic_smoothed() -> None:
    report = analyze(_frame())
    chart = assert_safe(report._repr_html_()).chart("Information coefficient")
    daily = report.daily_ic.sort("date").to_pandas()
    days = [d.isoformat() for d in report.daily_ic.sort("date")["date"]]
    for name, column in (("Rank IC, 20-day mean", "rank_ic"), ("IC, 20-day mean", "ic")):
        expected = daily[column].astype(float).rolling(20, min_periods=1).mean()
        line = chart.lines[name]
        assert line.dates == days  # every day: a day without an IC keeps the days before
        np.testing.assert_allclose(line.values, expected.to_numpy(), rtol=1e-12)
    # the day without an IC is skipped by the mean, not counted as 0
    assert np.isnan(daily["ic"].iloc[12])
    assert chart.lines["IC, 20-day mean"].values[12] == pytest.approx(daily["ic"][:12].mean())


def test_the_quantile_table_is_each_groups_mean_return() -> None:
    report = analyze(_frame())
    table = assert_safe(report._repr_html_()).table("quantiles")
    assert table.header == ["Quantile", "mean return", "dates"]
    q = report.quantile_returns.to_pandas()
    expected = [
        [f"group {g}", f"{rows['mean_return'].mean():.2%}", str(rows["date"].nunique())]
        for g, rows in q.groupby("group")
    ]
    spread = report.long_short["spread"].drop_nulls().to_numpy()
    expected.append(["long-short (top less bottom)", f"{spread.mean():.2%}", str(spread.size)])
    assert table.rows == expected
    assert len(expected) == 6 and expected[0][2] == str(DAYS - 1)
    top, bottom = q[q.group == 5]["mean_return"].mean(), q[q.group == 1]["mean_return"].mean()
    assert top > bottom  # the planted signal orders the groups


def test_a_report_without_any_pair_still_shows() -> None:
    frame = _frame().with_columns(pl.lit(None, pl.Float64).alias("LABEL0"))
    view = assert_safe(analyze(frame)._repr_html_())
    assert view.table("summary").pairs()["Mean IC"] == "n/a"
    assert view.table("quantiles").rows == []
    chart = view.chart("Information coefficient")
    assert all(line.values.size == 0 for line in chart.lines.values())
