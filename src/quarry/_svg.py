"""Line charts as inline SVG markup: for the dashboard's pages and the notebooks' rich views.

No script and no style attribute: SVG's presentation attributes only (``stroke``, ``fill``),
so a page under a Content-Security-Policy of ``'self'`` draws them, and a notebook cell saved
to HTML shows them without a network. Each chart carries its data as ``<title>`` text (for
screen readers) and a ``data-series`` attribute per line, which tests read back: its drawn
points as ``date,value`` pairs joined by ``;``, each value in Python's shortest text that
reads back as the same float.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime

import numpy as np
import numpy.typing as npt

__all__ = ["PALETTE", "line_chart"]

_CHAR_WIDTH = 6.5  # px, about, of an 11 px label

# Colour-blind safe (Okabe and Ito)
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000")

Series = tuple[Sequence[date | datetime | np.datetime64] | npt.NDArray[np.datetime64],
               Sequence[float] | npt.NDArray[np.float64]]  # fmt: skip


Dates = Sequence[date | datetime | np.datetime64] | npt.NDArray[np.datetime64]


def _days(xs: Dates) -> npt.NDArray[np.float64]:
    """Days since 1970-01-01; NaN for a missing date (NaT), which is drawn as a gap."""
    array = np.asarray(xs, dtype="datetime64[D]")
    days = array.astype("int64").astype(float)
    days[np.isnat(array)] = np.nan  # NaT's integer is the smallest int64: not a date
    return days


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2 or 5 times a power of ten apart)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    # whole multiples of the step, from the first at or above low to the last at or below high
    first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
    return [k * step for k in range(first, last + 1)]


def _label(value: float, fmt: str) -> str:
    if fmt == "pct":
        return f"{value:.0%}" if abs(value) >= 0.1 or value == 0 else f"{value:.1%}"
    if fmt == "int":
        return f"{value:,.0f}"
    return f"{value:.3g}"


def line_chart(
    series: Mapping[str, Series],
    *,
    title: str,
    y_format: str = "num",
    width: int = 720,
    height: int = 260,
) -> str:
    """An SVG chart of one line per entry of ``series`` (name -> (dates, values)) on a shared
    date axis. NaN values break a line. ``y_format``: ``pct``, ``int`` or ``num``."""
    left, right, top, bottom = 64, 16, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    lines = {name: (_days(xs), np.asarray(ys, dtype=float)) for name, (xs, ys) in series.items()}
    finite = [(x[np.isfinite(x) & np.isfinite(y)], y[np.isfinite(x) & np.isfinite(y)])
              for x, y in lines.values()]  # fmt: skip
    finite = [(x, y) for x, y in finite if x.size]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
           f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>',
           f'<text x="{left}" y="16" font-size="13" font-weight="600" '
           f'fill="#222">{html.escape(title)}</text>']  # fmt: skip
    if not finite:
        out.append(f'<text x="{left}" y="{top + plot_h / 2:.0f}" font-size="12" fill="#666">'
                   "no values to draw</text></svg>")  # fmt: skip
        return "".join(out)
    x_low = min(float(x.min()) for x, _ in finite)
    x_high = max(float(x.max()) for x, _ in finite)
    y_low = min(float(y.min()) for _, y in finite)
    y_high = max(float(y.max()) for _, y in finite)
    if y_high == y_low:
        y_low = y_low - 1.0 if y_low == 0 else y_low * 0.9
        y_high = y_high + 1.0 if y_high == 0 else y_high * 1.1
        y_low, y_high = min(y_low, y_high), max(y_low, y_high)
    x_span = max(x_high - x_low, 1.0)

    def px(x: npt.NDArray[np.float64] | float) -> npt.NDArray[np.float64] | float:
        return left + (x - x_low) / x_span * plot_w

    def py(y: npt.NDArray[np.float64] | float) -> npt.NDArray[np.float64] | float:
        return top + (y_high - y) / (y_high - y_low) * plot_h

    for tick in _nice_ticks(y_low, y_high):
        y = py(tick)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#e5e5e5"/><text x="{left - 6}" y="{y + 4:.1f}" font-size="11" '
                   f'text-anchor="end" fill="#555">{_label(tick, y_format)}</text>')  # fmt: skip
    first, last = np.datetime64(int(x_low), "D"), np.datetime64(int(x_high), "D")
    first_year = first.astype("datetime64[Y]").astype(int) + 1970
    years = range(first_year + (0 if str(first).endswith("-01-01") else 1),
                  last.astype("datetime64[Y]").astype(int) + 1971)  # fmt: skip
    ticks = [np.datetime64(f"{year}-01-01", "D") for year in years]
    if len(ticks) < 2:  # less than two years: the first and last dates
        ticks = [first, last] if last > first else [first]
    step = max(1, math.ceil(len(ticks) / 8))
    for day in ticks[::step]:
        x = px(float(day.astype("int64")))
        text = str(day)[:4] if len(ticks) > 2 else str(day)
        # a full date at either end of the axis is anchored inside the chart, not cut off
        near = 4 * len(text)
        anchor = "start" if x - left < near else "end" if left + plot_w - x < near else "middle"
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" font-size="11" '
                   f'text-anchor="{anchor}" fill="#555">{text}</text>')  # fmt: skip
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
               'stroke="#bbb"/>')  # fmt: skip
    legend_x = left + 8.0
    for k, (name, (x, y)) in enumerate(lines.items()):
        colour = PALETTE[k % len(PALETTE)]
        xs, ys = px(x), py(y)
        parts, pen_up = [], True
        for xv, yv in zip(np.asarray(xs), np.asarray(ys), strict=True):
            if not (math.isfinite(xv) and math.isfinite(yv)):
                pen_up = True
                continue
            parts.append(f"{'M' if pen_up else 'L'}{xv:.1f},{yv:.1f}")
            pen_up = False
        # repr: the shortest text that reads back as the very float (not 6 digits)
        data = ";".join(f"{np.datetime64(int(d), 'D')},{float(v)!r}"
                        for d, v in zip(x, y, strict=True)
                        if math.isfinite(d) and math.isfinite(v))  # fmt: skip
        out.append(f'<path d="{"".join(parts)}" fill="none" stroke="{colour}" '
                   f'stroke-width="1.5" data-name="{html.escape(name)}" '
                   f'data-series="{data}"/>')  # fmt: skip
        lx = legend_x
        legend_x += 14 + len(name) * _CHAR_WIDTH + 18  # each label as wide as its text
        out.append(f'<rect x="{lx:.0f}" y="{height - 14}" width="10" height="10" '
                   f'fill="{colour}"/><text x="{lx + 14:.0f}" y="{height - 5}" font-size="11" '
                   f'fill="#222">{html.escape(name)}</text>')  # fmt: skip
    out.append("</svg>")
    return "".join(out)
