"""The serving REST API (FastAPI; OpenAPI at /openapi.json, docs at /docs).

Every /v2 route needs ``Authorization: Bearer TOKEN``, a token of the job service's database
(``quarry tokens create``): no, an unknown or a revoked token gets 401. A model belongs to a
project (its metadata's, else ``default``); a model of a project the token's user is not a
member of answers 404 exactly as a model that is not served (its existence does not leak).
A token once accepted is trusted for ``auth_ttl`` seconds (2 by default) without asking the
database again: a revocation takes effect within that time.

Predictions (``_inputs``: the bodies and the answers) run at most ``max_in_flight`` at once;
one more is answered 503 with ``Retry-After`` at once, without waiting for a slot or
reading its body, so an overloaded server stays responsive instead of queueing without end.
Each answer names the model and version that produced it, in its body and in the headers
``X-Quarry-Model`` and ``X-Quarry-Model-Version``; the version is the one the model served
when the request started, used to its end (``_catalog``).

/v2/models/{name}/train submits the model's workflow (the file its metadata names) to the job
service as a job of the model's project; the job's status and its cancellation are under
/v2/models/{name}/train/{id}.

A path with a trailing slash (``/v2/models/``, as DEEPaaS clients send) is the same route,
answered directly rather than redirected. /healthz and /metrics (Prometheus) need no token.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Iterator
from typing import Annotated, Any

import anyio
import polars as pl
from fastapi import Body, Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from quarry._apidocs import add_docs
from quarry._json import strict_json
from quarry.exceptions import AccessDenied, ManifestError, QuarryError, UsageError
from quarry.jobs import JobStore, manifest_from_dict
from quarry.jobs._api import answer_errors, job_view
from quarry.jobs._tokens import TokenCache
from quarry.serve._catalog import Catalog, Served, Version
from quarry.serve._inputs import (
    ARROW,
    ByDate,
    ByRecords,
    Scored,
    by_date,
    parse_body,
    score_records,
    score_table,
    to_arrow,
    to_json,
    unprocessable,
)
from quarry.serve._watch import AliasWatcher

__all__ = ["create_app", "workflow_file"]

# Seconds to answer a prediction: from a cached one-row score to a cross-section computed
# from the store.
PREDICT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0)  # fmt: skip
MODEL_LABEL = "quarry.model"  # the label on a training job: which model it trains
# A body up to this size may be answered on the event loop (``quick``): a few rows score in a
# fraction of a millisecond, less than a thread's hand-over; larger ones, and predictions by
# date, go to a thread and never hold the loop.
INLINE_BYTES, INLINE_ROWS = 64 * 1024, 32


class Prediction(BaseModel):
    instrument: str
    date: str
    score: float | None


class Predictions(BaseModel):
    """A predict answer (JSON)."""

    model: str
    alias: str
    version: int
    predictions: list[Prediction]


_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [ByDate.model_json_schema(), ByRecords.model_json_schema()]}
            },
            ARROW: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def workflow_file(metadata: dict[str, Any] | None) -> str | None:
    """The workflow file a model's metadata names (``workflow.path``), or None (a version
    registered before Quarry recorded metadata)."""
    found = ((metadata or {}).get("workflow") or {}).get("path")
    return str(found) if found else None


def _job_name(name: str) -> str:
    """A job name (a slug) for training model ``name``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._") or "model"
    return f"train-{slug}"[:100]


Found = tuple[str, set[str]]  # a token's user and their projects


async def _caller(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> tuple[str, set[str]]:
    """The token's user and their projects; 401 without a valid token (see ``TokenCache``:
    no request waits behind another's database read)."""
    tokens: TokenCache[Found] = request.app.state.tokens
    scheme, _, token = (authorization or "").partition(" ")
    found = None
    if scheme.lower() == "bearer" and token.strip():
        found = await tokens.caller(token.strip())
    if found is None:
        raise HTTPException(401, "give a valid API token: Authorization: Bearer TOKEN",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    return found


Caller = Annotated[tuple[str, set[str]], Depends(_caller)]
JobId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]


class _Edge:
    """Every request's first and last step, as plain ASGI (no per-request task or stream
    wrapping, which costs a prediction of one row more than its scoring does).

    ``/v2/models/`` is ``/v2/models``: the path is trimmed before routing, so a client that
    adds the slash (DEEPaaS's do) is answered by the route itself, not redirected. Then the
    time to answer is observed, by method and route."""

    def __init__(self, app: ASGIApp, seconds: Histogram) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope["path"] = path.rstrip("/") or "/"
            raw = scope.get("raw_path")
            if isinstance(raw, bytes):
                scope["raw_path"] = raw.rstrip(b"/") or b"/"
        began = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = getattr(scope.get("route"), "path", "other")
            self.seconds.labels(scope["method"], route).observe(time.perf_counter() - began)


class _Load:
    """Predictions in flight now (changed only on the event loop: no lock needed)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.now = limit, 0


class _CatalogCollector(Collector):
    """The catalog's state at each scrape: versions served and loaded, load in flight."""

    def __init__(self, catalog: Catalog, load: _Load) -> None:
        self.catalog, self.load = catalog, load

    def collect(self) -> Iterator[Any]:
        served = GaugeMetricFamily(
            "quarry_serve_model_version", "The version each served model answers with now.",
            labels=["model", "alias"],
        )  # fmt: skip
        for name in self.catalog.names():
            s = self.catalog.served(name)
            if s is not None:
                served.add_metric([name, s.ref.alias], s.version)
        yield served
        yield GaugeMetricFamily("quarry_serve_loaded_versions", "Versions loaded in memory.",
                                len(self.catalog.loaded()))  # fmt: skip
        yield GaugeMetricFamily("quarry_serve_loaded_bytes", "Loaded versions' size (their "
                                "pickles).", self.catalog.loaded_bytes())  # fmt: skip
        yield CounterMetricFamily("quarry_serve_loads", "Versions loaded from the registry "
                                  "(again after an unload too).", self.catalog.loads)  # fmt: skip
        yield GaugeMetricFamily("quarry_serve_in_flight", "Predictions in flight.",
                                self.load.now)  # fmt: skip
        yield GaugeMetricFamily("quarry_serve_max_in_flight", "Predictions allowed in flight "
                                "at once.", self.load.limit)  # fmt: skip


def create_app(
    catalog: Catalog,
    *,
    jobs: JobStore,
    store: Any | None = None,
    max_in_flight: int = 32,
    auth_ttl: float = 2.0,
    watcher: AliasWatcher | None = None,
) -> FastAPI:
    """The API over a started ``catalog``; ``jobs`` is the job service's store (tokens, and
    where training jobs go), ``store`` the data store predictions by date read (None: only
    tables are scored), ``watcher`` the alias watcher whose health /healthz shows."""
    if max_in_flight < 1:
        raise UsageError(f"--max-in-flight {max_in_flight}: give 1 or more")
    app = FastAPI(
        title="Quarry models", version="2",
        description="Every served model's catalog, predictions, and training through the job "
        "service. Paths are also answered with a trailing slash.",
        docs_url=None, redoc_url=None,
    )  # fmt: skip
    add_docs(app)  # FastAPI's own /docs would load Swagger UI from a CDN
    app.router.redirect_slashes = False
    app.state.tokens = TokenCache(jobs.authenticate, auth_ttl)
    started = time.monotonic()
    load = _Load(max_in_flight)
    # predictions get their own threads, so that they never wait behind other routes' work
    # and other routes never wait behind them
    limiter = anyio.CapacityLimiter(max_in_flight)
    registry = CollectorRegistry()
    app.state.metrics = registry  # what /metrics shows: the job service's shows it when mounted
    registry.register(_CatalogCollector(catalog, load))
    request_seconds = Histogram("quarry_serve_request_seconds", "Time to answer a request.",
                                ["method", "route"], registry=registry)  # fmt: skip
    app.add_middleware(_Edge, seconds=request_seconds)
    predict_seconds = Histogram("quarry_serve_predict_seconds", "Time to answer a prediction, "
                                "by the model and version that answered it.",
                                ["model", "version"], buckets=PREDICT_BUCKETS,
                                registry=registry)  # fmt: skip
    predict_errors = Counter("quarry_serve_predict_errors", "Predictions answered with an "
                             "error, by model, version and HTTP status (503: overload).",
                             ["model", "version", "status"], registry=registry)  # fmt: skip

    def visible(name: str, caller: tuple[str, set[str]]) -> Served:
        served = catalog.served(name)
        if served is None or served.project not in caller[1]:  # the same answer: nothing leaks
            raise HTTPException(404, f"no model {name!r} is served in your projects")
        return served

    @app.get("/v2/models")
    def list_models(caller: Caller) -> dict[str, Any]:
        """The catalog: every served model of the caller's projects, with its alias, the
        version it answers with, its run's key figures and its metadata."""
        views = []
        for name in catalog.names():
            served = catalog.served(name)
            if served is not None and served.project in caller[1]:
                views.append(served.view())
        out: dict[str, Any] = strict_json({"models": views})
        return out

    @app.get("/v2/models/{name}")
    def show_model(name: str, caller: Caller) -> dict[str, Any]:
        """One served model: as in the catalog, with what it reads (its columns, feature
        expressions, label and processors)."""
        served = visible(name, caller)
        try:
            package = catalog.version(served).packaged.describe()
        except QuarryError as exc:
            raise HTTPException(503, str(exc)) from exc
        out: dict[str, Any] = strict_json(served.view() | {"package": package})
        return out

    def answer(served: Served, scored: Any, arrow: bool) -> tuple[bytes, str]:
        if arrow:
            return to_arrow(scored), ARROW
        return to_json(served.ref.name, served.ref.alias, served.version, scored), (
            "application/json"
        )

    def quick(
        served: Served, loaded: Version, body: bytes, content_type: str, arrow: bool
    ) -> tuple[bytes, str] | None:
        """The answer to a few JSON records for a version loaded already that scores rows on
        their own, on the event loop (a fraction of a millisecond: less than a thread's
        hand-over); None for any other body, which ``work`` answers in a thread."""
        if loaded.rows is None or content_type.split(";")[0].strip().lower() == ARROW:
            return None
        parsed = parse_body(body, content_type)
        if not isinstance(parsed, ByRecords) or len(parsed.records) > INLINE_ROWS:
            return None
        scored = score_records(loaded.rows, parsed.records)
        return None if scored is None else answer(served, scored, arrow)

    def work(served: Served, body: bytes, content_type: str, arrow: bool) -> tuple[bytes, str]:
        """Parse, score and write the answer (in a thread: none of it waits on the loop)."""
        try:
            loaded = catalog.version(served)
        except QuarryError as exc:  # unloaded, and now its artifacts cannot be read
            raise HTTPException(503, f"model {served.ref.name} version {served.version} "
                                f"cannot be loaded: {exc}") from exc  # fmt: skip
        parsed = parse_body(body, content_type)
        scored: pl.DataFrame | Scored
        try:
            if isinstance(parsed, ByDate):
                if store is None:
                    raise unprocessable("date", "this server has no data store to compute "
                                        'features from: send {"records": [...]} or '
                                        "an Arrow table")  # fmt: skip
                # the cross-section the model was trained on: its universe's members
                data = (served.info.get("metadata") or {}).get("data") or {}
                scored = by_date(loaded.packaged, store, parsed, universe=data.get("universe"))
            else:
                scored = score_table(loaded.packaged, parsed, loaded.rows)
        except UsageError as exc:  # what the model reads and the body do not fit
            raise unprocessable("body", str(exc)) from exc
        return answer(served, scored, arrow)

    @app.post(
        "/v2/models/{name}/predict",
        response_class=Response,
        openapi_extra=_PREDICT_BODY,
        responses={
            200: {"model": Predictions,
                  "content": {ARROW: {"schema": {"type": "string", "format": "binary"}}}},
            503: {"description": "Too many predictions in flight: try again after Retry-After "
                  "seconds."},
        },
    )  # fmt: skip
    async def predict(name: str, request: Request, caller: Caller) -> Response:
        """Scores by instruments and a date (features computed from the data store), or
        of a table of raw features (JSON records or an Arrow IPC stream)."""
        served = visible(name, caller)
        version = str(served.version)
        if load.now >= load.limit:
            predict_errors.labels(name, version, "503").inc()
            raise HTTPException(
                503, f"busy: {load.limit} predictions in flight; try again in a second",
                headers={"Retry-After": "1"},
            )  # fmt: skip
        load.now += 1
        began = time.perf_counter()
        try:
            body = await request.body()
            arrow = ARROW in request.headers.get("accept", "")
            kind = request.headers.get("content-type", "")
            loaded = catalog.peek(served) if len(body) <= INLINE_BYTES else None
            done = quick(served, loaded, body, kind, arrow) if loaded is not None else None
            if done is None:
                done = await anyio.to_thread.run_sync(
                    functools.partial(work, served, body, kind, arrow), limiter=limiter
                )
            content, media = done
        except HTTPException as exc:
            predict_errors.labels(name, version, str(exc.status_code)).inc()
            raise
        except Exception:
            predict_errors.labels(name, version, "500").inc()
            raise
        finally:
            load.now -= 1
        predict_seconds.labels(name, version).observe(time.perf_counter() - began)
        headers = {"X-Quarry-Model": name, "X-Quarry-Model-Version": version}
        return Response(content, media_type=media, headers=headers)

    @app.post("/v2/models/{name}/train", status_code=201)
    def train(
        name: str,
        caller: Caller,
        body: Annotated[
            dict[str, Any] | None,
            Body(
                description="Manifest fields for the job: resources, priority, timeout, "
                "retries, env, labels (name, project and run are the model's)."
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Train the model again: its workflow file (from its metadata) as a job of its
        project on the job service; 409 when its metadata names no workflow."""
        served = visible(name, caller)
        path = workflow_file(served.info.get("metadata"))
        if path is None:
            raise HTTPException(409, f"model {name} version {served.version} has no workflow "
                                "file in its metadata (registered before Quarry recorded "
                                "metadata), so there is nothing to train it again with: train "
                                "and register it with quarry run")  # fmt: skip
        extra = dict(body or {})
        fixed = [k for k in ("name", "project", "run") if k in extra]
        if fixed:
            raise unprocessable(fixed[0], "set by the server from the model; leave it out")
        labels = extra.pop("labels", {})
        if isinstance(labels, dict):
            labels = {**labels, MODEL_LABEL: name}
        manifest = {"name": _job_name(name), "project": served.project,
                    "description": f"train {name} again (serving version {served.version})",
                    "run": {"workflow": path}, "labels": labels, **extra}  # fmt: skip
        try:
            job_id = jobs.submit(manifest_from_dict(manifest, source="request"), owner=caller[0])
        except ManifestError as exc:
            raise HTTPException(422, list(exc.problems)) from exc
        except AccessDenied as exc:  # its data names a dataset its user may not use
            raise HTTPException(403, str(exc)) from exc
        job = jobs.job(job_id)
        assert job is not None
        return {"model": name, "version": served.version, **job_view(job)}

    def training_job(name: str, job_id: int, caller: tuple[str, set[str]]) -> Any:
        visible(name, caller)
        job = jobs.job(job_id)
        ours = job is not None and job.project in caller[1]
        if ours:
            assert job is not None
            labels = json.loads(job.manifest).get("labels") or {}
            ours = labels.get(MODEL_LABEL) == name
        if not ours:
            raise HTTPException(404, f"no training job {job_id} of model {name!r} in your "
                                "projects")  # fmt: skip
        return job

    @app.get("/v2/models/{name}/train/{job_id}")
    def training(name: str, job_id: JobId, caller: Caller) -> dict[str, Any]:
        """A training job of the model: its status and attempts, as the job service shows."""
        job = training_job(name, job_id, caller)
        return job_view(job, jobs.attempts(job_id))

    @app.delete("/v2/models/{name}/train/{job_id}")
    def cancel_training(name: str, job_id: JobId, caller: Caller) -> dict[str, Any]:
        """Cancel a training job of the model; 409 when it has already ended."""
        before = training_job(name, job_id, caller)
        if not jobs.cancel(job_id):
            raise HTTPException(409, f"job {job_id} already {before.status}: nothing was "
                                "cancelled")  # fmt: skip
        job = jobs.job(job_id)
        assert job is not None
        return job_view(job)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Up, each served model's alias and version (and why it does not serve the version
        its alias points at, if so), the loaded versions and the alias watcher's passes."""
        models = {}
        for name in catalog.names():
            s = catalog.served(name)
            if s is not None:
                models[name] = {"alias": s.ref.alias, "version": s.version,
                                "problem": catalog.problems.get(name)}  # fmt: skip
        stale = watcher is not None and watcher.health.stale()
        degraded = stale or bool(catalog.problems)
        return {"status": "degraded" if degraded else "ok", "models": models,
                "loaded": [f"{n}@{v}" for n, v in catalog.loaded()],
                "in_flight": load.now, "max_in_flight": load.limit,
                "watcher": watcher.health.view() if watcher is not None else None,
                "uptime_s": round(time.monotonic() - started, 1)}  # fmt: skip

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        """Prometheus exposition: prediction latency and errors per model and version,
        request times, versions served and loaded, predictions in flight."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    answer_errors(app)  # the job service's error shapes
    return app
