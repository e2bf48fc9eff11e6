"""Pages from Jinja2 templates (autoescaped), with the filters every page uses.

Every page carries a Content-Security-Policy of ``'self'``: it loads nothing but this
server's own stylesheet and script, and no inline script or style runs (charts are SVG with
presentation attributes, see ``quarry._svg``).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

__all__ = ["CSP", "SECURITY_HEADERS", "figure_is_pct", "figure_label", "fragment", "page"]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-src 'self'; frame-ancestors 'self'; form-action 'self'; "
       "base-uri 'none'; object-src 'none'")  # fmt: skip
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _pct(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}%}"


# what a tracked figure is called on the pages (else its key)
FIGURE_LABELS = {
    "test_ic": "IC", "test_rank_ic": "Rank IC", "test_icir": "ICIR", "test_rank_icir": "Rank ICIR",
    "backtest_sharpe": "Sharpe", "backtest_excess_annualized_return": "Excess return",
    "backtest_max_drawdown": "Max drawdown", "backtest_information_ratio": "Information ratio",
    "backtest_annualized_return": "Annualized return", "backtest_turnover": "Turnover",
    # the gate's, as its decision names them
    "ic": "IC", "rank_ic": "Rank IC", "icir": "ICIR", "rank_icir": "Rank ICIR", "sharpe": "Sharpe",
    "information_ratio": "Information ratio", "excess_annualized_return": "Excess return",
    "max_drawdown": "Max drawdown",
}  # fmt: skip


def figure_label(key: str) -> str:
    return FIGURE_LABELS.get(key, key)


def figure_is_pct(key: str) -> bool:
    """A return or a drawdown reads as a percentage; IC, Sharpe and the rest as numbers."""
    return "return" in key or "drawdown" in key


def _figure(value: Any, key: str) -> str:
    return _pct(value) if figure_is_pct(key) else _num(value)


def _when(value: datetime | str | None) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return "-"
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    stop = end or datetime.now(UTC)
    if stop.tzinfo is None:
        stop = stop.replace(tzinfo=UTC)
    seconds = max((stop - start).total_seconds(), 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"


def _query(request: Request, **changes: Any) -> str:
    """This page's query with ``changes`` (None drops a parameter)."""
    params = dict(request.query_params)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    return "?" + urlencode(params) if params else "?"


@cache
def _env() -> Environment:
    env = Environment(loader=PackageLoader("quarry.ui", "templates"),
                      autoescape=select_autoescape(default=True), trim_blocks=True,
                      lstrip_blocks=True)  # fmt: skip
    env.filters.update(num=_num, pct=_pct, when=_when, bytes=_bytes, figure=_figure,
                       label=figure_label)  # fmt: skip
    env.globals.update(duration=_duration, query=_query, Markup=Markup)
    return env


def render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)


def page(
    request: Request, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """The page ``template`` for the signed-in ``viewer`` (in ``context``)."""
    body = render(template, request=request, path=request.url.path, **context)
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)


def fragment(request: Request, template: str, **context: Any) -> HTMLResponse:
    """A piece of a page the script swaps in (a table's rows, a log's status)."""
    return page(request, template, **context)
