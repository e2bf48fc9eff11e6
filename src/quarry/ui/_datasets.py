"""The datasets pages: the datasets the viewer may read (the data service's rules), a
dataset's commits with their knowledge times, its health check and coverage over time as a
chart, and the live streams (lag, bars a second, model version) that are running.

A dataset's page answers at once from the commit log; the health check and the coverage
read every bar, so they come after the page, as fragments the script asks for, each kept
for the commit it measured (a new commit measures again).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from quarry._svg import line_chart
from quarry.jobs import JobStore
from quarry.jobs._datasets import DatasetInfo, Identity, refusal
from quarry.settings import streams_dir
from quarry.ui._render import fragment, page
from quarry.ui._routes import pages
from quarry.ui._session import Viewer, ViewerDep

__all__ = ["live_streams", "router"]

router = pages()
Name = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
COMMITS_SHOWN = 100
LIVE_FOR = 10.0  # seconds since a stream's last status: past it, the stream is not live
_MEASURED = 32  # (dataset, commit) measurements kept


class _Measured:
    """Measurements by key, the least recently used dropped; one at a time per key."""

    def __init__(self) -> None:
        self.values: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self.lock = threading.Lock()
        self.busy: dict[tuple[str, ...], threading.Lock] = {}

    def get(self, key: tuple[str, ...], measure: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self.values:
                self.values.move_to_end(key)
                return self.values[key]
            busy = self.busy.setdefault(key, threading.Lock())
        with busy:
            with self.lock:
                if key in self.values:
                    return self.values[key]
            value = measure()
            with self.lock:
                self.values[key] = value
                while len(self.values) > _MEASURED:
                    self.values.popitem(last=False)
                self.busy.pop(key, None)
            return value


_measured = _Measured()


def _identity(viewer: Viewer) -> Identity:
    return Identity(viewer.user, viewer.projects)


def _readable(request: Request, viewer: Viewer) -> list[DatasetInfo]:
    store: JobStore = request.app.state.store
    who = _identity(viewer)
    return [d for d in store.datasets() if refusal(who, d) is None]


def _dataset(request: Request, name: str, viewer: Viewer) -> DatasetInfo:
    store: JobStore = request.app.state.store
    found = store.dataset(name)
    if found is None or refusal(_identity(viewer), found) is not None:
        raise HTTPException(404, f"no dataset {name!r} you may read (quarry datasets list)")
    return found


def live_streams() -> list[dict[str, Any]]:
    """The streams whose status was written in the last ``LIVE_FOR`` seconds, by name."""
    folder = streams_dir()
    out = []
    now = datetime.now(UTC)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            status = json.loads(path.read_text())
            updated = datetime.fromisoformat(status["updated_at"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        age = (now - updated).total_seconds()
        if not status.get("stopped") and age <= LIVE_FOR:
            out.append({**status, "age": age})
    return out


def _latest(store: Any) -> str:
    """The store's state: each table's latest version (what a measurement is kept by)."""
    parts = []
    for name in ("bars", "corporate_actions", "fundamentals", "universe"):
        dt = store.table(name)
        parts.append(f"{name}@{dt.version() if dt is not None else '-'}")
    return " ".join(parts)


@router.get("/datasets")
def datasets_page(request: Request, viewer: ViewerDep) -> Response:
    """The datasets the viewer may read, and the live streams."""
    return page(request, "datasets.html", viewer=viewer, title="Datasets",
                datasets=_readable(request, viewer), streams=live_streams())  # fmt: skip


@router.get("/datasets/{name}")
def dataset_page(request: Request, name: Name, viewer: ViewerDep) -> Response:
    """A dataset: its commits, newest first, with their knowledge times; its health and
    coverage follow as fragments."""
    from quarry.data import Store

    info = _dataset(request, name, viewer)
    store = Store(info.location)
    commits = sorted(store.commits() if store.exists() else [],
                     key=lambda c: (c.committed_at, c.table, c.version), reverse=True)  # fmt: skip
    return page(request, "dataset.html", viewer=viewer, title=f"Dataset {name}", info=info,
                commits=commits[:COMMITS_SHOWN], total=len(commits), exists=store.exists(),
                streams=live_streams())  # fmt: skip


def _measure(request: Request, name: str, viewer: Viewer, kind: str,
             measure: Callable[[Any], Any]) -> tuple[Any, float] | None:  # fmt: skip
    """``measure(store)`` of the dataset, kept for the store's state it read, and the
    seconds it took to answer (None when there is no store)."""
    from quarry.data import Store

    info = _dataset(request, name, viewer)
    store = Store(info.location)
    if not store.exists():
        return None
    began = time.perf_counter()
    value = _measured.get((kind, info.location, _latest(store)), lambda: measure(store))
    return value, time.perf_counter() - began


@router.get("/datasets/{name}/health")
def dataset_health(request: Request, name: Name, viewer: ViewerDep) -> Response:
    """The health check of the bars known now."""
    from quarry.data import check_health

    found = _measure(request, name, viewer, "health", check_health)
    report, took = found if found is not None else (None, None)
    return fragment(request, "_health.html", report=report, took=took)


def coverage(store: Any) -> dict[str, Any]:
    """Instruments with a bar on each day, known now."""
    import polars as pl

    lf = store.scan("bars")
    if lf is None:
        return {"dates": [], "instruments": [], "first": None, "last": None, "total": 0}
    daily = (lf.select(pl.col("date").cast(pl.Date), "instrument")
             .group_by("date").agg(pl.col("instrument").n_unique().alias("n"))
             .sort("date").collect())  # fmt: skip
    total = lf.select(pl.col("instrument").n_unique()).collect().item()
    dates, counts = daily["date"].to_list(), daily["n"].to_list()
    return {"dates": dates, "instruments": counts, "first": dates[0] if dates else None,
            "last": dates[-1] if dates else None, "total": int(total)}  # fmt: skip


@router.get("/datasets/{name}/coverage")
def dataset_coverage(request: Request, name: Name, viewer: ViewerDep) -> Response:
    """Coverage over time as a chart: instruments with a bar each day."""
    found = _measure(request, name, viewer, "coverage", coverage)
    if found is None:
        return fragment(request, "_coverage.html", cover=None, chart=None)
    cover = found[0]
    chart = line_chart({"instruments": (cover["dates"], cover["instruments"])},
                       title="Instruments with a bar, by day", y_format="int")  # fmt: skip
    return fragment(request, "_coverage.html", cover=cover, chart=chart)


@router.get("/streams")
def streams_fragment(request: Request, viewer: ViewerDep) -> Response:
    """The live streams' table, for the page's refresh."""
    return fragment(request, "_streams.html", streams=live_streams())
