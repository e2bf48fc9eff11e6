"""A read of a dataset as the data service takes it: the same words over HTTP (query
parameters), over Arrow Flight (the ticket) and in the client's cache key.

``DataQuery.parse`` checks every parameter before anything is read (``UsageError`` naming
the parameter and what to give); ``DataQuery.text`` is its canonical query string (the keys
sorted, empty ones left out), so two spellings of one read share a cache entry and an audit
line reads as the request did.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from quarry.exceptions import UsageError

__all__ = ["KINDS", "DataQuery"]

Kind = Literal["bars", "features", "fundamentals"]
KINDS: tuple[Kind, ...] = ("bars", "features", "fundamentals")
_KEYS = {
    "bars": {"fields", "start", "end", "universe", "as_of", "adjust", "instruments"},
    "features": {"set", "expr", "start", "end", "universe", "as_of", "instruments"},
    "fundamentals": {"fields", "start", "end", "as_of", "instruments"},
}
DEFAULT_FIELDS = ("open", "high", "low", "close", "volume")


def _items(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


@dataclass(frozen=True)
class DataQuery:
    """One read: ``kind`` (bars, features, fundamentals) of ``dataset`` with its parameters.

    ``fields``: bar or fundamental fields (bars, fundamentals); ``feature_set`` (alpha158,
    alpha360) or ``exprs`` (expressions in Qlib's notation, each its own column): features.
    ``start``/``end``/``as_of`` are ISO dates or times as the library takes them;
    ``adjust`` raw or adjusted (bars); ``instruments`` narrows the read.
    """

    kind: Kind
    dataset: str
    fields: tuple[str, ...] = ()
    feature_set: str | None = None
    exprs: tuple[str, ...] = ()
    start: str | None = None
    end: str | None = None
    universe: str | None = None
    as_of: str | None = None
    adjust: str = "raw"
    instruments: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, kind: str, dataset: str, params: Mapping[str, str | Sequence[str]]) -> DataQuery:
        """A query from request parameters (a value may be repeated: ``expr``); one-line
        ``UsageError`` for an unknown parameter or a bad value."""
        if kind not in KINDS:
            raise UsageError(f"{kind!r}: read one of {', '.join(KINDS)}")
        known = _KEYS[kind]
        for key in params:
            if key not in known:
                raise UsageError(
                    f"{key}: not a parameter of a {kind} read; give {', '.join(sorted(known))}"
                )

        def one(key: str) -> str | None:
            value = params.get(key)
            if isinstance(value, (list, tuple)):
                if len(value) > 1:
                    raise UsageError(f"{key}: give it once")
                value = value[0] if value else None
            text = value.strip() if isinstance(value, str) else None
            return text or None

        def many(key: str) -> tuple[str, ...]:
            value = params.get(key)
            values = [value] if isinstance(value, str) else list(value or [])
            return tuple(dict.fromkeys(v.strip() for v in values if v.strip()))

        adjust = one("adjust") or "raw"
        if adjust not in ("raw", "adjusted"):
            raise UsageError(f"adjust {adjust!r}: choose raw or adjusted")
        query = cls(
            kind=kind,
            dataset=dataset,
            fields=_items(one("fields")),
            feature_set=one("set"),
            exprs=many("expr"),
            start=one("start"),
            end=one("end"),
            universe=one("universe"),
            as_of=one("as_of"),
            adjust=adjust,
            instruments=_items(one("instruments")),
        )
        query.check()
        return query

    def check(self) -> None:
        """The parameters make sense together, and the dates parse."""
        from quarry.data._times import parse_bound

        if self.kind == "features":
            if (self.feature_set is None) == (not self.exprs):
                raise UsageError("give set=alpha158 (or alpha360) or one or more expr=...")
            if self.feature_set is not None and self.feature_set.lower() not in (
                "alpha158",
                "alpha360",
            ):
                raise UsageError(f"set {self.feature_set!r}: choose alpha158 or alpha360")
        elif self.kind == "fundamentals" and not self.fields:
            raise UsageError("fields: name the fundamental fields to read, e.g. fields=eps")
        for value, what in ((self.start, "start"), (self.end, "end"), (self.as_of, "as_of")):
            parse_bound(value, what)

    def bar_fields(self) -> tuple[str, ...]:
        return self.fields or DEFAULT_FIELDS

    def params(self) -> list[tuple[str, str]]:
        """The query's parameters, in canonical order (sorted keys, ``expr`` repeated)."""
        out: list[tuple[str, str]] = []
        single = {
            "adjust": self.adjust if self.kind == "bars" else None,
            "as_of": self.as_of,
            "end": self.end,
            "fields": ",".join(self.fields) or None,
            "instruments": ",".join(self.instruments) or None,
            "set": self.feature_set,
            "start": self.start,
            "universe": self.universe,
        }
        for key in sorted([*single, "expr"]):
            if key == "expr":
                out += [("expr", e) for e in self.exprs]
            elif single[key] is not None:
                out.append((key, str(single[key])))
        return out

    @property
    def text(self) -> str:
        """The canonical query string (no dataset, no kind)."""
        return urllib.parse.urlencode(self.params())

    @property
    def path(self) -> str:
        """``/v1/datasets/NAME/KIND?QUERY``: the HTTP path, and the Flight ticket."""
        query = self.text
        return f"/v1/datasets/{self.dataset}/{self.kind}" + (f"?{query}" if query else "")

    @classmethod
    def from_path(cls, path: str) -> DataQuery:
        """The inverse of ``path`` (a Flight ticket)."""
        parts = urllib.parse.urlsplit(path)
        pieces = parts.path.strip("/").split("/")
        if len(pieces) != 4 or pieces[:2] != ["v1", "datasets"]:
            raise UsageError(f"{path!r}: expected /v1/datasets/NAME/KIND?QUERY")
        params: dict[str, list[str]] = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        return cls.parse(pieces[3], pieces[2], params)

    def narrowed(self, instruments: Sequence[str]) -> DataQuery:
        return replace(self, instruments=tuple(instruments))
