"""The inline SVG line charts: the data each line carries, gaps, scales, and escaping."""

from __future__ import annotations

import re
from datetime import date, timedelta

import numpy as np
import pytest

from quarry._svg import _nice_ticks, line_chart
from tests.html_parsing import assert_safe

DAYS = [date(2020, 1, 1) + timedelta(days=k) for k in range(30)]


def _points(path: str) -> list[list[tuple[float, float]]]:
    """A path's runs of points: each ``M`` starts a run, each ``L`` continues it."""
    runs: list[list[tuple[float, float]]] = []
    for command, x, y in re.findall(r"([ML])(-?[\d.]+),(-?[\d.]+)", path):
        if command == "M":
            runs.append([])
        runs[-1].append((float(x), float(y)))
    return runs


def test_data_series_gives_back_every_value_exactly() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=len(DAYS)) * 10.0 ** rng.integers(-12, 12, size=len(DAYS))
    values[3] = 0.1 + 0.2  # 0.30000000000000004: six digits would read back 0.3
    svg = line_chart({"a": (DAYS, values)}, title="t")
    line = assert_safe(svg).chart("t").lines["a"]
    assert line.dates == [d.isoformat() for d in DAYS]
    np.testing.assert_array_equal(line.values, values)  # bit for bit, not approximately


def test_nan_breaks_the_line_and_is_left_out_of_the_data() -> None:
    values = np.linspace(0.0, 1.0, len(DAYS))
    values[[5, 6, 20]] = np.nan
    svg = line_chart({"a": (DAYS, values)}, title="t", y_format="pct")
    line = assert_safe(svg).chart("t").lines["a"]
    runs = _points(line.path)
    assert [len(r) for r in runs] == [5, 13, 9]  # 0-4, 7-19, 21-29
    finite = ~np.isnan(values)
    assert line.dates == [d.isoformat() for d, keep in zip(DAYS, finite, strict=True) if keep]
    np.testing.assert_array_equal(line.values, values[finite])


def test_a_missing_date_breaks_the_line_and_does_not_stretch_the_axis() -> None:
    dates = np.array(DAYS, dtype="datetime64[D]")
    dates[10] = np.datetime64("NaT")
    values = np.arange(len(DAYS), dtype=float)
    svg = line_chart({"a": (dates, values)}, title="t")
    line = assert_safe(svg).chart("t").lines["a"]
    assert [len(r) for r in _points(line.path)] == [10, 19]
    assert len(line.values) == len(DAYS) - 1 and 10.0 not in line.values
    assert "1970" not in svg  # the axis still runs from the first date to the last
    xs = [x for run in _points(line.path) for x, _ in run]
    assert min(xs) == pytest.approx(64.0) and max(xs) == pytest.approx(720 - 16)


def test_points_are_placed_by_date_and_value() -> None:
    values = np.array([1.0, 3.0, 2.0])
    days = [date(2021, 1, 1), date(2021, 1, 2), date(2021, 1, 5)]  # a gap of three days
    svg = line_chart({"a": (days, values)}, title="t", width=400, height=200)
    (run,) = _points(assert_safe(svg).chart("t").lines["a"].path)
    left, right, top, bottom = 64, 16, 28, 40
    plot_w, plot_h = 400 - left - right, 200 - top - bottom
    expected_x = [left, left + plot_w * 1 / 4, left + plot_w]
    expected_y = [top + plot_h, top, top + plot_h / 2]  # 1 at the bottom, 3 at the top
    np.testing.assert_allclose([x for x, _ in run], expected_x, atol=0.051)
    np.testing.assert_allclose([y for _, y in run], expected_y, atol=0.051)


def test_lines_share_the_axes_and_each_has_its_legend() -> None:
    svg = line_chart({"net": (DAYS, np.zeros(30)), "benchmark": (DAYS, np.ones(30))}, title="t")
    chart = assert_safe(svg).chart("t")
    assert list(chart.lines) == ["net", "benchmark"]
    (net,) = _points(chart.lines["net"].path)
    (bench,) = _points(chart.lines["benchmark"].path)
    assert all(b[1] < n[1] for n, b in zip(net, bench, strict=True))  # 1 above 0
    assert svg.count(">net</text>") == 1 and svg.count(">benchmark</text>") == 1


def test_names_and_titles_are_escaped() -> None:
    name, title = '<b onload="x()">A & B\'s</b>', "<script>alert('t')</script> & co"
    svg = line_chart({name: (DAYS, np.ones(30))}, title=title)
    view = assert_safe(svg)
    assert "<b" not in svg and "<script" not in svg
    assert view.charts[0].title == title  # aria-label, read back unescaped
    assert list(view.charts[0].lines) == [name]


def test_no_value_to_draw_is_said() -> None:
    svg = line_chart({"a": (DAYS, np.full(30, np.nan))}, title="empty")
    assert "no values to draw" in svg and "<path" not in svg
    assert_safe(svg)


def test_one_value_or_a_flat_line_still_gets_a_scale() -> None:
    for values in (np.full(30, -2.0), np.zeros(30)):
        svg = line_chart({"a": (DAYS, values)}, title="flat")
        (run,) = _points(assert_safe(svg).chart("flat").lines["a"].path)
        assert len(run) == 30 and len({y for _, y in run}) == 1
        assert 28 < run[0][1] < 260 - 40  # inside the plot, not on an edge


@pytest.mark.parametrize(
    ("low", "high"),
    [(-0.3, 0.45), (-0.15, 0.25), (-1e-4, 3e-4), (0.0, 1.0), (-7.0, -1.0), (3.0, 1234.0)],
)
def test_ticks_are_round_multiples_inside_the_range(low: float, high: float) -> None:
    ticks = _nice_ticks(low, high)
    assert 2 <= len(ticks) <= 11
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** np.floor(np.log10(step))
    assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-9
    assert all(low - 1e-9 * step <= t <= high + 1e-9 * step for t in ticks)
    assert ticks[0] - step < low and ticks[-1] + step > high  # none left out at either end
    if low <= 0 <= high:
        assert 0.0 in ticks  # exactly zero, labelled "0"


def test_a_zero_tick_is_labelled_zero() -> None:
    values = np.linspace(-0.3, 0.45, len(DAYS))
    svg = line_chart({"a": (DAYS, values)}, title="t", y_format="num")
    labels = re.findall(r'text-anchor="end" fill="#555">([^<]*)<', svg)
    assert "0" in labels and not any("e-" in label for label in labels), labels


def test_under_two_years_the_axis_names_the_first_and_last_dates_inside_the_chart() -> None:
    svg = line_chart({"a": (DAYS, np.ones(30))}, title="t")
    labels = re.findall(r'text-anchor="(\w+)" fill="#555">(\d{4}-\d\d-\d\d)<', svg)
    assert labels == [("start", "2020-01-01"), ("end", "2020-01-30")]
    long = [date(2015, 6, 1) + timedelta(days=k) for k in range(0, 2000, 7)]
    svg = line_chart({"a": (long, np.ones(len(long)))}, title="t")
    years = re.findall(r'text-anchor="middle" fill="#555">(\d{4})<', svg)
    assert years == [str(y) for y in range(2016, 2021)]  # each January 1st inside the span
