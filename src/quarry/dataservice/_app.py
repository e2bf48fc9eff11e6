"""The data service's REST API: the registered datasets, read point in time as the library
reads them, answered as an Arrow IPC stream (zstd) or Parquet by the ``Accept`` header.

- ``GET /v1/datasets``: the datasets the caller may read, with their commit and coverage.
- ``GET /v1/datasets/{name}``: one of them.
- ``GET /v1/datasets/{name}/bars?fields=&start=&end=&universe=&as_of=&adjust=&instruments=``,
  ``.../features?set=|expr=...``, ``.../fundamentals?fields=...``: the rows (``DataQuery``).
  The answer's ``ETag`` is a digest of the commit it read (``X-Quarry-Commit`` the commit
  itself); a request with ``If-None-Match`` naming the
  current commit gets 304 (the reader's cache holds that answer), audited like any read.
- ``GET /v1/datasets/{name}/audit``: who read the dataset, for its owner only.

No token, or a revoked one: 401. A dataset the caller may not read: 403 naming it and why
(a job's own token: only what its manifest declared). An unknown dataset: 404. A bad
parameter: 422 naming it. Every read goes to the audit log: who, which job, what, which
commit, as of when, rows, bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry, Counter

from quarry._apidocs import add_docs
from quarry.data import DataQuery
from quarry.dataservice._catalog import DataCatalog, NoSuchDataset, StillChanging
from quarry.dataservice._encode import PARQUET, media_type, to_ipc, to_parquet
from quarry.dataservice._results import ResultCache
from quarry.exceptions import AccessDenied, QuarryError, UsageError
from quarry.jobs import DatasetInfo, Identity, JobStore
from quarry.jobs._api import answer_errors
from quarry.jobs._tokens import TokenCache

__all__ = ["DataService", "create_data_app"]

_CHUNK = 1 << 20
# Reads at once per process (each a thread); more wait their turn.
READ_THREADS = 16


class DataService:
    """What the HTTP and Flight fronts share: the catalog, the answers in memory, the audit
    log and the counters."""

    def __init__(self, jobs: JobStore, *, memory: int = 1 << 30, auth_ttl: float = 5.0) -> None:
        self.jobs = jobs
        self.catalog = DataCatalog(jobs)
        self.answers = ResultCache(memory, _size)
        self.tokens: TokenCache[Identity] = TokenCache(jobs.identify, auth_ttl)
        self.registry = CollectorRegistry()
        self.reads = Counter(
            "quarry_data_reads",
            "Reads through the data service.",
            ["dataset", "route"],
            registry=self.registry,
        )
        self.rows = Counter("quarry_data_rows", "Rows sent.", ["dataset"], registry=self.registry)
        self.sent = Counter(
            "quarry_data_sent_bytes", "Bytes sent.", ["dataset"], registry=self.registry
        )

    def identify(self, token: str) -> Identity | None:
        """A token's identity, off the event loop (Flight's handlers are threads)."""
        return self.jobs.identify(token)

    def table(
        self, info: DatasetInfo, query: DataQuery, commit: str | None = None
    ) -> tuple[Any, str]:
        """The Arrow table of ``query`` and the commit it read (kept in memory by commit;
        ``commit``: the dataset's current one, when the caller has just taken it)."""
        commit = commit if commit is not None else self.catalog.commit(info)
        key = ("table", info.name, info.location, commit, query.kind, query.text)
        store = self.catalog.store(info)
        from quarry.dataservice._reads import run_query  # the library's reads, on first use

        found: tuple[Any, str] = self.answers.get(
            key, lambda: self.catalog.at_one_commit(info, lambda: run_query(store, query))
        )
        return found

    def encoded(self, info: DatasetInfo, query: DataQuery, kind: str) -> tuple[bytes, int, str]:
        """``query``'s answer encoded as ``kind`` (ARROW or PARQUET): bytes, rows, commit."""
        commit = self.catalog.commit(info)
        key = (kind, info.name, info.location, commit, query.kind, query.text)

        def encode() -> tuple[bytes, int, str]:
            table, seen = self.table(info, query, commit)
            data = to_parquet(table) if kind == PARQUET else to_ipc(table)
            return data, table.num_rows, seen

        out: tuple[bytes, int, str] = self.answers.get(key, encode)
        return out

    def audit(
        self,
        who: Identity,
        query: DataQuery,
        *,
        route: str,
        commit: str,
        rows: int,
        size: int,
        text: str | None = None,
    ) -> None:
        """Write a read to the audit log (``text``: what was read, default the query's)."""
        self.jobs.record_read(
            who,
            query.dataset,
            route=route,
            commit=commit,
            as_of=query.as_of,
            rows=rows,
            size=size,
            query=query.text if text is None else text,
        )
        self.reads.labels(query.dataset, route).inc()
        self.rows.labels(query.dataset).inc(max(rows, 0))
        self.sent.labels(query.dataset).inc(size)

    def coverage(self, info: DatasetInfo, commit: str) -> dict[str, Any]:
        """First and last bar, instruments and rows known at ``commit`` (kept by it)."""
        key = ("coverage", info.name, info.location, commit)

        def measure() -> dict[str, Any]:
            import polars as pl

            lf = self.catalog.store(info).scan("bars")
            if lf is None:
                return {"first": None, "last": None, "instruments": 0, "bars": 0}
            row = (
                lf.select(
                    pl.col("date").min().alias("first"),
                    pl.col("date").max().alias("last"),
                    pl.col("instrument").n_unique().alias("instruments"),
                    pl.len().alias("bars"),
                )
                .collect()
                .row(0, named=True)
            )
            return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}

        out: dict[str, Any] = self.answers.get(key, measure)
        return out

    def describe(self, info: DatasetInfo) -> dict[str, Any]:
        commit = self.catalog.commit(info)
        return {**info.view(), "commit": commit, "coverage": self.coverage(info, commit)}


def store_files(info: DatasetInfo) -> list[dict[str, Any]]:
    """Every file of a local store's tables, relative to the store, with its size."""
    from quarry.data import TABLES

    root = Path(info.location)
    if "://" in info.location:
        raise UsageError(
            f"dataset {info.name!r} lives at {info.location}: read it from there "
            "(mirroring is for stores on the service's disk)"
        )
    out = []
    for table in TABLES:
        base = root / table
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if path.is_file() and _store_file(path):
                try:
                    size = path.stat().st_size
                except FileNotFoundError:  # a temporary file renamed meanwhile
                    continue
                out.append({"path": path.relative_to(root).as_posix(), "size": size})
    return out


_LOG_FILE = re.compile(r"\d{20}\.(json|checkpoint(\.\d+\.\d+)?\.parquet)|_last_checkpoint")


def _store_file(path: Path) -> bool:
    """A file a reader of the store needs: a log entry or checkpoint, or a data file (not
    delta-rs's temporary files, which are renamed or removed)."""
    if path.parent.name == "_delta_log":
        return bool(_LOG_FILE.fullmatch(path.name))
    return path.suffix == ".parquet" and not path.name.startswith(".")


def store_file(info: DatasetInfo, relative: str) -> Path | None:
    """A file of the store by its relative path; None outside its tables (no ``..``)."""
    from quarry.data import TABLES

    root = Path(info.location).resolve()
    found = (root / relative).resolve()
    if "://" in info.location or not found.is_relative_to(root) or not found.is_file():
        return None
    if found.relative_to(root).parts[0] not in TABLES or not _store_file(found):
        return None
    return found


def etag(commit: str) -> str:
    """A commit as an entity tag: a digest (an ETag may hold no space)."""
    return hashlib.sha256(commit.encode()).hexdigest()[:32]


def _size(value: Any) -> int:
    if isinstance(value, tuple) and value and isinstance(value[0], bytes):
        return len(value[0])
    if isinstance(value, tuple) and value and hasattr(value[0], "nbytes"):
        return int(value[0].nbytes)
    return 1024


async def _caller(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Identity:
    """The token's identity; 401 without a valid token."""
    service: DataService = request.app.state.data
    scheme, _, token = (authorization or "").partition(" ")
    found = None
    if scheme.lower() == "bearer" and token.strip():
        found = await service.tokens.caller(token.strip())
    if found is None:
        raise HTTPException(
            401,
            "give a valid API token: Authorization: Bearer TOKEN",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return found


Caller = Annotated[Identity, Depends(_caller)]


def create_data_app(service: DataService, *, standalone: bool = False) -> FastAPI:
    """The data API over ``service``; ``standalone`` adds /healthz and /metrics of its own
    (``quarry server start --only data``; mounted in the job service, those are its)."""
    app = FastAPI(title="Quarry data", version="1", docs_url=None, redoc_url=None)
    add_docs(app)  # FastAPI's own /docs would load Swagger UI from a CDN
    app.state.data = service
    catalog = service.catalog
    limiters: dict[int, anyio.CapacityLimiter] = {}

    async def work(fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a thread of the data API's own (reads must not take every thread
        of the process: token lookups and the job API share anyio's), its errors as
        answers: 403, 404, 422 (a bad read, in one line), 503 (commits kept landing)."""
        loop = id(asyncio.get_running_loop())
        if loop not in limiters:
            limiters[loop] = anyio.CapacityLimiter(READ_THREADS)
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=limiters[loop])
        except StillChanging as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from None
        except AccessDenied as exc:
            raise HTTPException(403, str(exc)) from None
        except NoSuchDataset as exc:
            raise HTTPException(404, str(exc)) from None
        except QuarryError as exc:
            raise HTTPException(422, str(exc)) from None

    def readable(name: str, who: Identity) -> DatasetInfo:
        try:
            return catalog.check(who, name)
        except NoSuchDataset as exc:
            raise HTTPException(404, str(exc)) from None
        except AccessDenied as exc:
            raise HTTPException(403, str(exc)) from None

    @app.get("/v1/datasets")
    async def list_datasets(who: Caller) -> dict[str, Any]:
        """The datasets the caller may read, with their commit and coverage."""

        def view() -> list[dict[str, Any]]:
            return [service.describe(d) for d in catalog.readable(who)]

        return {"datasets": await work(view)}

    @app.get("/v1/datasets/{name}")
    async def show_dataset(name: str, who: Caller) -> dict[str, Any]:
        """One dataset: owner, project, visibility, commit and coverage."""
        info = await work(readable, name, who)
        described: dict[str, Any] = await work(service.describe, info)
        return described

    @app.get("/v1/datasets/{name}/audit")
    async def audit_log(
        name: str,
        who: Caller,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """The dataset's reads, newest first: for its owner only."""
        info = await work(readable, name, who)
        if info.owner != who.user:
            raise HTTPException(
                403, f"dataset {name!r}: only its owner {info.owner!r} reads its audit log"
            )
        rows = await work(lambda: service.jobs.reads(name, limit=limit, offset=offset))
        return {
            "dataset": name,
            "reads": [
                {
                    "at": r.at.isoformat(),
                    "user": r.user,
                    "job_id": r.job_id,
                    "route": r.route,
                    "commit": r.commit,
                    "as_of": r.as_of,
                    "rows": r.rows,
                    "bytes": r.bytes,
                    "query": r.query,
                }
                for r in rows
            ],
        }

    @app.get("/v1/datasets/{name}/files")
    async def list_files(name: str, who: Caller) -> dict[str, Any]:
        """The store's files (Delta logs and data) with their sizes: what a reader mirrors
        to open the dataset as a local store (``--store quarry+http://...``)."""
        info = await work(readable, name, who)

        def listing() -> tuple[list[dict[str, Any]], str]:
            files, commit = catalog.at_one_commit(info, lambda: store_files(info))
            return files, commit

        files, commit = await work(listing)  # a store on S3 is a one-line 422
        query = DataQuery("bars", name)
        await work(
            lambda: service.audit(
                who,
                query,
                route="files",
                commit=commit,
                rows=len(files),
                size=sum(f["size"] for f in files),
                text=f"the list of its {len(files)} files (a mirror)",
            )
        )
        return {"dataset": name, "commit": commit, "files": files}

    @app.get("/v1/datasets/{name}/files/{path:path}", response_model=None)
    async def get_file(name: str, path: str, who: Caller) -> Response:
        """One file of the store (immutable: Delta never rewrites a file)."""
        from fastapi.responses import FileResponse

        info = await work(readable, name, who)
        found = store_file(info, path)
        if found is None:
            raise HTTPException(404, f"dataset {name!r} has no file {path!r}")
        size = found.stat().st_size
        query = DataQuery("bars", name)
        commit = await work(catalog.commit, info)
        await work(lambda: service.audit(who, query, route="file", commit=commit, rows=0,
                                         size=size, text=path))  # fmt: skip
        return FileResponse(found, media_type="application/octet-stream")

    @app.get("/v1/datasets/{name}/{kind}", response_model=None)
    async def read(
        name: str,
        kind: str,
        request: Request,
        who: Caller,
        accept: Annotated[str | None, Header()] = None,
        if_none_match: Annotated[str | None, Header()] = None,
        x_quarry_cached_rows: Annotated[int | None, Header()] = None,
    ) -> Response:
        """Rows of the dataset: ``bars``, ``features`` or ``fundamentals``, point in time."""
        params: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            params.setdefault(key, []).append(value)
        try:
            query = DataQuery.parse(kind, name, params)
        except QuarryError as exc:
            raise HTTPException(422, str(exc)) from None
        info = await work(readable, name, who)
        encoding = media_type(accept)
        if if_none_match:
            commit = await work(catalog.commit, info)
            if if_none_match.strip().strip('"') == etag(commit):
                await work(
                    lambda: service.audit(
                        who,
                        query,
                        route=f"{kind} (reader's cache)",
                        commit=commit,
                        rows=x_quarry_cached_rows or 0,
                        size=0,
                    )
                )
                return Response(status_code=304, headers={"ETag": f'"{etag(commit)}"'})
        began = time.perf_counter()
        data, rows, commit = await work(service.encoded, info, query, encoding)
        await work(
            lambda: service.audit(who, query, route=kind, commit=commit, rows=rows, size=len(data))
        )

        def chunks() -> Iterator[bytes]:
            view = memoryview(data)
            for at in range(0, len(view), _CHUNK):
                yield bytes(view[at : at + _CHUNK])

        headers = {
            "ETag": f'"{etag(commit)}"',
            "X-Quarry-Rows": str(rows),
            "X-Quarry-Commit": commit,
            "Content-Length": str(len(data)),
            "Server-Timing": f"read;dur={(time.perf_counter() - began) * 1000:.1f}",
        }
        return StreamingResponse(chunks(), media_type=encoding, headers=headers)

    if standalone:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        @app.get("/healthz")
        def healthz() -> dict[str, Any]:
            """Up."""
            return {"status": "ok"}

        @app.get("/metrics")
        def metrics() -> Response:
            """Prometheus exposition: reads, rows and bytes by dataset."""
            return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    answer_errors(app)
    return app
