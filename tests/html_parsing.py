"""Reading the rich views back (``_repr_html_``): their tables, lists and charts, parsed with
the standard library's HTML parser (so escaping is undone as a browser would), and the
checks every view must pass: nothing that runs, no inline style, no address."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

import numpy as np
import numpy.typing as npt

SVG_NS = "http://www.w3.org/2000/svg"


@dataclass
class Table:
    classes: list[str]
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)

    def column(self, label: str) -> dict[str, str]:
        """Row heading -> the cell under ``label``."""
        k = self.header.index(label)
        return {row[0]: row[k] for row in self.rows}

    def pairs(self) -> dict[str, str]:
        """Row heading -> the row's second cell."""
        return {row[0]: row[1] for row in self.rows}


@dataclass
class Line:
    name: str
    path: str
    dates: list[str]
    values: npt.NDArray[np.float64]


@dataclass
class Chart:
    title: str
    lines: dict[str, Line] = field(default_factory=dict)


class View(HTMLParser):
    """A view's tables (in order), lists (class -> items), charts (title -> lines), its
    title and its paragraphs (class -> texts)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[Table] = []
        self.lists: dict[str, list[str]] = {}
        self.charts: list[Chart] = []
        self.paragraphs: dict[str, list[str]] = {}
        self.title = ""
        self.tags: set[str] = set()
        self.attributes: dict[str, set[str]] = {}  # name -> values
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_head = False
        self._list: str | None = None
        self._item: list[str] | None = None
        self._text: list[str] | None = None  # an svg <title>, the view's <h3>, a <p>
        self._where = ""
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        for k, v in a.items():
            self.attributes.setdefault(k, set()).add(v)
        classes = a.get("class", "").split()
        if tag == "table":
            self.tables.append(Table(classes))
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "ul":
            self._list = classes[0] if classes else ""
            self.lists.setdefault(self._list, [])
        elif tag == "li":
            self._item = []
        elif tag == "svg":
            self.charts.append(Chart(a.get("aria-label", "")))
        elif tag == "path" and self.charts:
            dates, values = parse_series(a.get("data-series", ""))
            name = a.get("data-name", "")
            self.charts[-1].lines[name] = Line(name, a.get("d", ""), dates, values)
        elif tag in ("title", "h3") or tag == "p":
            self._text, self._where = [], tag if tag != "p" else (classes[0] if classes else "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._in_head:
                self.tables[-1].header = self._row
            else:
                self.tables[-1].rows.append(self._row)
            self._row = None
        elif tag == "li" and self._item is not None and self._list is not None:
            self.lists[self._list].append("".join(self._item))
            self._item = None
        elif tag == "ul":
            self._list = None
        elif tag in ("title", "h3", "p") and self._text is not None:
            words = "".join(self._text)
            if tag == "h3":
                self.title = words
            elif tag == "p":
                self.paragraphs.setdefault(self._where, []).append(words)
            self._text = None

    def handle_data(self, data: str) -> None:
        for sink in (self._cell, self._item, self._text):
            if sink is not None:
                sink.append(data)

    def table(self, name: str) -> Table:
        """The table of class ``quarry-{name}``."""
        found = [t for t in self.tables if f"quarry-{name}" in t.classes]
        assert len(found) == 1, f"{len(found)} tables of class quarry-{name}"
        return found[0]

    def chart(self, title_start: str) -> Chart:
        found = [c for c in self.charts if c.title.startswith(title_start)]
        assert len(found) == 1, f"{len(found)} charts titled {title_start!r}..."
        return found[0]


def parse_series(attribute: str) -> tuple[list[str], npt.NDArray[np.float64]]:
    """A ``data-series`` attribute (``date,value;date,value``) as dates and values."""
    if not attribute:
        return [], np.array([], dtype=np.float64)
    pairs = [p.split(",") for p in attribute.split(";")]
    return [d for d, _ in pairs], np.array([float(v) for _, v in pairs], dtype=np.float64)


def assert_safe(text: str) -> View:
    """Nothing that runs, no inline style, no address but the SVG namespace: what a page
    under a Content-Security-Policy of 'self' shows as it is. Returns the parsed view."""
    lower = text.lower()
    assert "<script" not in lower
    assert "<style" not in lower
    assert "style=" not in lower
    addresses = re.findall(r"https?://[^\s\"'<>]*", text)
    assert set(addresses) <= {SVG_NS}, set(addresses)
    assert lower.count("<svg") == lower.count(f'xmlns="{SVG_NS}"')
    view = View(text)
    assert not view.tags & {"script", "style", "iframe", "object", "embed", "link", "img", "a"}
    handlers = {name for name in view.attributes if name.startswith("on")}
    assert not handlers, handlers
    assert not {"style", "href", "src", "xlink:href"} & set(view.attributes)
    # every class is Quarry's own (the SVG's "chart" is the dashboard's name for it)
    classes = {c for value in view.attributes.get("class", ()) for c in value.split()}
    assert all(c.startswith("quarry-") or c == "chart" for c in classes), classes
    return view
