"""A store's rich view in a notebook (``Store._repr_html_``): where it is, and per table the
rows stored, the files, the range of its dates, its commits and corrections, and its latest
commit with the knowledge time of its rows; the store's instruments and newest commit.

Quick on a big store: the figures come from Delta's log and its file statistics (rows and
min/max per file), not from the data; the only data read is the instruments table's (one
row per instrument and classification) for the count of instruments. A location without a
store, or one that cannot be opened, is said in the view, not raised.

Takes the store as ``Any`` (its methods ``table``, ``spec``, ``commits``, ``scan``) so that
this module and ``_store`` do not import each other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import polars as pl

from quarry._html import figure, paragraph, table, view
from quarry.data._schemas import TABLES
from quarry.exceptions import QuarryError

__all__ = ["DATE_COLUMNS", "store_html"]

#: the column whose range each table's row shows
DATE_COLUMNS = {
    "bars": "date",
    "instruments": "list_date",
    "universe": "start",
    "fundamentals": "period_end",
    "corporate_actions": "ex_date",
    "events": "delivered_at",
    "event_scores": "delivered_at",
}


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def _files(dt: Any, column: str) -> tuple[int, int, Any, Any]:
    """Rows, files, and the smallest and largest value of ``column``, from the statistics
    of the table's current files (the log, not the data)."""
    acts = pl.DataFrame(dt.get_add_actions(flatten=True))
    if acts.height == 0:
        return 0, 0, None, None
    rows = int(acts["num_records"].sum())
    low, high = f"min.{column}", f"max.{column}"
    first = acts[low].min() if low in acts.columns else None
    last = acts[high].max() if high in acts.columns else None
    return rows, acts.height, first, last


def store_html(store: Any) -> str:
    """The view of ``store`` (a ``quarry.data.Store``)."""
    uri = store.location.uri
    title = f"Store {uri}"
    try:
        tables = {name: store.table(name) for name in TABLES}
        if all(dt is None for dt in tables.values()):
            return view(
                title,
                paragraph(
                    f"no Quarry store at {uri}: create one with quarry.data.generate (quarry "
                    "data generate) or ingest files with quarry.data.ingest_file (quarry data "
                    "ingest)",
                    "error",
                ),
                name="store",
            )
        rows, newest = [], None
        for name, dt in tables.items():
            if dt is None:
                rows.append([name, "no commit", "", "", "", "", "", "", ""])
                continue
            stored, files, first, last = _files(dt, DATE_COLUMNS[name])
            commits = store.commits(name)
            latest = max(commits, key=lambda c: c.version, default=None)
            known = ""
            if latest is not None:
                known = _when(latest.knowledge_time)
                if latest.last_known != latest.knowledge_time:
                    known += f" to {_when(latest.last_known)}"
                if newest is None or latest.committed_at > newest.committed_at:
                    newest = latest
            rows.append([
                name, figure(stored, "int"), figure(files, "int"),
                f"{DATE_COLUMNS[name]}: {first} to {last}" if first is not None else "",
                figure(len(commits), "int"),
                figure(sum(c.corrections for c in commits), "int"),
                latest.id if latest is not None else "", known,
                latest.source if latest is not None else "",
            ])  # fmt: skip
        facts = [["Location", uri]]
        bars = tables["bars"]
        if bars is not None:
            facts.append(["Bars", "intraday" if store.spec("bars", bars).intraday else "daily"])
        if tables["instruments"] is not None:
            master = store.scan("instruments", dt=tables["instruments"])
            count = master.select(pl.col("instrument").n_unique()).collect().item()
            facts.append(["Instruments", figure(count, "int")])
        if newest is not None:
            facts.append(["Newest commit", f"{newest.id}, committed {_when(newest.committed_at)}"])
    except QuarryError as exc:
        return view(title, paragraph(str(exc), "error"), name="store")
    header = ["Table", "rows stored", "files", "dates", "commits", "corrections",
              "latest commit", "its rows known (UTC)", "source"]  # fmt: skip
    return view(
        title,
        table(facts, name="facts"),
        table(rows, header=header, name="tables"),
        paragraph(
            "From the tables' Delta logs and file statistics, not their data: rows stored "
            "count every version (corrections and retractions too); dates are the range of "
            "the named column over the stored rows; times are UTC."
        ),
        name="store",
    )
