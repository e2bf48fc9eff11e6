"""HTML fragments for the rich views of Quarry's objects (``_repr_html_`` in a notebook).

Every text is escaped here, and nothing carries a ``style`` attribute, a ``<style>`` or a
``<script>`` element, or an address: a page under a Content-Security-Policy of ``'self'``
(the dashboard) shows the same fragments as they are, and a notebook saved to HTML holds
nothing that runs or loads. Parts carry ``quarry-...`` classes for a page's stylesheet to
dress; a notebook draws them with its own table style. Charts are ``quarry._svg``'s.

Example::

    view("Backtest", table([("Sharpe", figure(1.23, "num"))], header=("", "net")),
         items(["no order was filled"], "warnings"))
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

__all__ = ["KINDS", "chart", "figure", "items", "paragraph", "table", "text", "view"]

#: how ``figure`` writes a number: a percentage, a ratio, a correlation, a count
KINDS = ("pct", "num", "ic", "int")
MISSING = "n/a"


def text(value: object) -> str:
    """``value`` as escaped text (quotes too: safe in an attribute as in an element)."""
    return html.escape(str(value), quote=True)


def figure(value: object, kind: str = "num") -> str:
    """A figure as a table shows it (not escaped: the caller's ``table`` does that).

    ``kind``: ``pct`` (``12.34%``), ``num`` (``1.235``), ``ic`` (``0.0512``: a correlation,
    four decimals) or ``int`` (``1,234``). None and NaN are ``n/a``; an infinity is ``inf``
    or ``-inf``; a boolean is ``yes`` or ``no``; a text is itself.
    """
    if kind not in KINDS:
        raise ValueError(f"figure kind {kind!r}: choose one of {', '.join(KINDS)}")
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    try:
        number = float(value)  # type: ignore[arg-type]  # numpy scalars, Decimal, ...
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return MISSING
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    if kind == "pct":
        return f"{number:.2%}"
    if kind == "int":
        return f"{number:,.0f}"
    return f"{number:.4f}" if kind == "ic" else f"{number:.3f}"


def table(
    rows: Iterable[Sequence[object]],
    *,
    header: Sequence[object] | None = None,
    caption: str | None = None,
    name: str = "figures",
) -> str:
    """A ``<table class="quarry-table quarry-{name}">``: each row's first cell a row
    heading, the others data; ``header`` the column headings. Every cell is escaped."""
    head = ""
    if header is not None:
        head = "<thead><tr>" + "".join(f'<th scope="col">{text(h)}</th>' for h in header)
        head += "</tr></thead>"
    body = "".join(
        "<tr>"
        + "".join(
            f'<th scope="row">{text(cell)}</th>' if k == 0 else f"<td>{text(cell)}</td>"
            for k, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    title = f"<caption>{text(caption)}</caption>" if caption else ""
    return (
        f'<table class="quarry-table quarry-{text(name)}">{title}{head}'
        f"<tbody>{body}</tbody></table>"
    )


def items(texts: Iterable[str], name: str) -> str:
    """A ``<ul class="quarry-{name}">`` of the texts (``warnings``, ``notes``), each
    escaped; nothing when there are none."""
    entries = "".join(f"<li>{text(t)}</li>" for t in texts)
    return f'<ul class="quarry-{text(name)}">{entries}</ul>' if entries else ""


def paragraph(words: str, name: str = "caption") -> str:
    """A ``<p class="quarry-{name}">`` of escaped text (``caption``, ``error``)."""
    return f'<p class="quarry-{text(name)}">{text(words)}</p>'


def chart(svg: str) -> str:
    """An SVG of ``quarry._svg`` (markup it escaped itself) in a ``quarry-chart`` box."""
    return f'<div class="quarry-chart">{svg}</div>'


def view(title: str, *parts: str, name: str) -> str:
    """An object's whole view: a heading and the parts, in a ``<div class="quarry-view
    quarry-{name}">``. ``parts`` are fragments made by this module's functions."""
    body = "".join(parts)
    return (
        f'<div class="quarry-view quarry-{text(name)}"><h3 class="quarry-title">{text(title)}'
        f"</h3>{body}</div>"
    )
