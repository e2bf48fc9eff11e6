"""The rich views' HTML fragments: figures as tables show them, escaping, and nothing that
runs, loads or styles itself."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest

from quarry._html import chart, figure, items, paragraph, table, text, view
from quarry._svg import line_chart
from tests.html_parsing import View, assert_safe

NASTY = '<script>alert("x")</script> & \'quoted\' <b onclick="f()">'


@pytest.mark.parametrize(
    ("value", "kind", "shown"),
    [
        (0.123456, "pct", "12.35%"),
        (-0.0004, "pct", "-0.04%"),
        (1.23456, "num", "1.235"),
        (0.051249, "ic", "0.0512"),
        (1234567.4, "int", "1,234,567"),
        (np.float64(0.5), "pct", "50.00%"),  # numpy scalars
        (np.int64(42), "int", "42"),
        (None, "num", "n/a"),
        (math.nan, "pct", "n/a"),
        (math.inf, "num", "inf"),
        (-math.inf, "pct", "-inf"),
        (True, "int", "yes"),
        (False, "num", "no"),
        ("abc", "num", "abc"),
    ],
)
def test_figures_are_written_by_their_kind(value: object, kind: str, shown: str) -> None:
    assert figure(value, kind) == shown


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="figure kind 'percent': choose one of pct, num"):
        figure(1.0, "percent")


def test_text_escapes_markup_and_quotes() -> None:
    assert text(NASTY) == (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;quoted&#x27; "
        "&lt;b onclick=&quot;f()&quot;&gt;"
    )


def test_a_table_reads_back_as_its_cells_every_one_escaped() -> None:
    rows = [[NASTY, "1.000", 3], ["plain", "n/a", date(2020, 1, 2)]]
    fragment = table(rows, header=["", "net <of> costs", "gross"], caption=NASTY, name="metrics")
    assert "<script" not in fragment and "<b " not in fragment
    parsed = assert_safe(fragment).table("metrics")
    assert parsed.header == ["", "net <of> costs", "gross"]
    assert parsed.rows == [[NASTY, "1.000", "3"], ["plain", "n/a", "2020-01-02"]]
    assert parsed.column("gross") == {NASTY: "3", "plain": "2020-01-02"}
    assert fragment.startswith('<table class="quarry-table quarry-metrics"><caption>&lt;script')
    assert fragment.count('<th scope="row">') == 2  # each row's first cell heads it


def test_lists_paragraphs_and_views_escape_their_text() -> None:
    assert items([], "warnings") == ""
    fragment = view(
        NASTY,
        items([NASTY, "second"], "warnings"),
        items(["a note"], "notes"),
        paragraph(NASTY),
        paragraph("it failed", "error"),
        name="backtest",
    )
    parsed = assert_safe(fragment)
    assert parsed.title == NASTY
    assert parsed.lists == {"quarry-warnings": [NASTY, "second"], "quarry-notes": ["a note"]}
    assert parsed.paragraphs == {"quarry-caption": [NASTY], "quarry-error": ["it failed"]}
    assert fragment.startswith('<div class="quarry-view quarry-backtest"><h3 class="quarry-title">')


def test_a_chart_box_holds_the_svg_as_it_is() -> None:
    svg = line_chart({"a": ([date(2020, 1, 1), date(2020, 1, 2)], [1.0, 2.0])}, title="t")
    fragment = chart(svg)
    assert fragment == f'<div class="quarry-chart">{svg}</div>'
    line = View(fragment).chart("t").lines["a"]
    assert line.dates == ["2020-01-01", "2020-01-02"] and line.values.tolist() == [1.0, 2.0]
    assert_safe(fragment)


@pytest.mark.parametrize(
    "bad",
    [
        "<script>x()</script>",
        '<p style="color:red">x</p>',
        "<style>p{}</style>",
        '<img src="https://example.com/x.png">',
        '<p class="quarry-caption" onclick="x()">x</p>',
        '<svg xmlns="http://www.w3.org/2000/svg"><image href="http://example.com/a"/></svg>',
        '<p class="caption">x</p>',
    ],
)
def test_the_safety_check_catches_what_a_view_must_not_hold(bad: str) -> None:
    with pytest.raises(AssertionError):
        assert_safe(bad)
