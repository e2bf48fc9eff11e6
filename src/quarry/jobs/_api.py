"""The job service's REST API (FastAPI; OpenAPI at /openapi.json, docs at /docs).

Every /v1 route needs ``Authorization: Bearer TOKEN``: no, an unknown or a revoked token gets
401. A job of a project the token's user is not a member of answers 404 exactly as a missing
one does (its existence does not leak); submitting to such a project is 403. A manifest that
does not validate gets 422 with one ``{path, message}`` per problem (so does any other bad
request); one that asks for more than the largest worker has gets 422 naming the capacity.
Cancelling a job that has ended is 409: nothing was cancelled. A manifest whose ``env`` names
one of its project's variables is 422 (a job cannot shadow its project's credentials); no
route shows a project variable's value.

/healthz shows each background loop (workers, watchdog): when it last completed a pass, its
passes and errors; /metrics is Prometheus' exposition from ``prometheus_client``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from quarry._apidocs import add_docs
from quarry.exceptions import AccessDenied
from quarry.jobs._loops import LoopHealth
from quarry.jobs._manifest import (
    ManifestError,
    Resources,
    check_capacity,
    manifest_from_dict,
    readable_memory,
)
from quarry.jobs._schema import STATUSES, Attempt, Job
from quarry.jobs._store import JobStore

__all__ = ["attempt_view", "create_app", "job_view", "waiting"]

FINISHED = ("succeeded", "failed", "cancelled")
# Seconds from submission to start, the histogram's upper bounds.
LATENCY_BUCKETS = (0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 6 * 3600.0)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def attempt_view(a: Attempt) -> dict[str, Any]:
    return {"number": a.number, "outcome": a.outcome or "running", "reason": a.reason,
            "exit_code": a.exit_code, "peak_memory": a.peak_memory, "memory": a.memory,
            "worker": a.worker, "started_at": _iso(a.started_at),
            "finished_at": _iso(a.finished_at)}  # fmt: skip


def job_view(job: Job, attempts: list[Attempt] | None = None) -> dict[str, Any]:
    out = {"id": job.id, "name": job.name, "project": job.project, "owner": job.owner,
           "status": job.status, "priority": job.priority, "reason": job.reason,
           "resources": {"cpus": job.cpus, "memory": job.memory, "gpus": job.gpus},
           "attempt_count": job.attempts, "created_at": _iso(job.created_at),
           "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at)}  # fmt: skip
    if attempts is not None:
        out["attempts"] = [attempt_view(a) for a in attempts]
        out["manifest"] = json.loads(job.manifest)
    return out


def _caller(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> tuple[str, set[str]]:
    """The token's user and their projects; 401 without a valid token."""
    store: JobStore = request.app.state.store
    scheme, _, token = (authorization or "").partition(" ")
    found = store.authenticate(token.strip()) if scheme.lower() == "bearer" else None
    if found is None:
        raise HTTPException(401, "give a valid API token: Authorization: Bearer TOKEN",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    return found


Caller = Annotated[tuple[str, set[str]], Depends(_caller)]
# Ids are 64-bit: a larger number is a 422, not an overflow in the database driver.
JobId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]


class _StoreCollector(Collector):
    """The queue's figures, read from the database at each scrape (so every server sharing
    it reports the same), and the background loops' health."""

    def __init__(self, store: JobStore, loops: Sequence[LoopHealth]) -> None:
        self.store, self.loops = store, loops

    def collect(self) -> Iterator[Any]:
        counts = self.store.counts()
        jobs = GaugeMetricFamily("quarry_jobs", "Jobs by status.", labels=["status"])
        for status in STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        yield GaugeMetricFamily("quarry_queue_depth", "Queued jobs.", counts.get("queued", 0))
        yield GaugeMetricFamily("quarry_running_jobs", "Running jobs.", counts.get("running", 0))
        outcomes, _ = self.store.attempt_stats()
        attempts = CounterMetricFamily("quarry_attempts", "Attempts by outcome (running for "
                                       "unfinished ones).", labels=["outcome"])  # fmt: skip
        for outcome, n in sorted(outcomes.items()):
            attempts.add_metric([outcome], n)
        yield attempts
        below, total, count = self.store.scheduling_latency(LATENCY_BUCKETS)
        buckets = [(repr(float(b)), n) for b, n in zip(LATENCY_BUCKETS, below, strict=True)]
        yield HistogramMetricFamily(
            "quarry_scheduling_latency_seconds",
            "Seconds from a job's submission to its first attempt's start.",
            buckets=[*buckets, ("+Inf", count)], sum_value=total,
        )  # fmt: skip
        last = GaugeMetricFamily("quarry_loop_last_pass_timestamp_seconds",
                                 "When each background loop last completed a pass (Unix time).",
                                 labels=["loop"])  # fmt: skip
        errors = CounterMetricFamily("quarry_loop_errors", "Failed passes of each background "
                                     "loop.", labels=["loop"])  # fmt: skip
        for loop in self.loops:
            if loop.last_pass is not None:
                last.add_metric([loop.name], loop.last_pass.timestamp())
            errors.add_metric([loop.name], loop.errors)
        yield last
        yield errors


def waiting(
    store: JobStore, job: Job, free: Callable[[], list[tuple[float, int]]] | None
) -> dict[str, Any] | None:
    """A queued job's place in the queue and why it has not started (``free``: each local
    worker's free cpus and memory now)."""
    position = store.queue_position(job.id)
    if position is None:
        return None
    not_before = job.not_before
    if not_before is not None and not_before.tzinfo is None:
        not_before = not_before.replace(tzinfo=UTC)
    now = datetime.now(UTC)
    workers = free() if free is not None else []
    why = f"behind {position} queued job{'s' if position != 1 else ''}" if position else ""
    if not_before is not None and not_before > now:
        why = f"waiting out its retry backoff until {not_before:%H:%M:%S} UTC"
    elif workers and not any(c >= job.cpus for c, _ in workers):
        most = max(c for c, _ in workers)
        why = f"no worker has {job.cpus:g} free cpus (most free now: {most:g})"
    elif workers and not any(c >= job.cpus and m >= job.memory for c, m in workers):
        why = (f"no worker has {job.cpus:g} cpus and {readable_memory(job.memory)} of "
               "memory free at once")  # fmt: skip
    return {"position": position, "why": why or "next to start"}


def create_app(
    store: JobStore,
    *,
    capacity: Resources,
    logs: Path,
    loops: Sequence[LoopHealth] = (),
    free: Callable[[], list[tuple[float, int]]] | None = None,
    outputs: Path | None = None,
    collectors: Sequence[Collector] = (),
) -> FastAPI:
    """The API over ``store``; ``capacity`` is the largest worker's, ``logs`` the workers'
    log folder, ``loops`` the background loops whose health /healthz shows, ``free`` each
    local worker's free cpus and memory now (why a queued job waits), ``outputs`` the folder
    of the jobs' own folders, ``collectors`` more for /metrics (another service's in
    the same process)."""
    app = FastAPI(title="Quarry jobs", version="1", docs_url=None, redoc_url=None)
    add_docs(app)  # FastAPI's own /docs would load Swagger UI from a CDN
    # what another layer's routes added to this app (the dashboard's) read too
    app.state.store, app.state.capacity, app.state.logs = store, capacity, logs
    app.state.outputs, app.state.free = outputs, free
    started = time.monotonic()
    registry = CollectorRegistry()
    registry.register(_StoreCollector(store, loops))
    for collector in collectors:
        registry.register(collector)
    request_seconds = Histogram("quarry_api_request_seconds", "Time to answer a request.",
                                ["method", "route"], registry=registry)  # fmt: skip

    @app.middleware("http")
    async def _timed(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Any:
        began = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "other")
        request_seconds.labels(request.method, route).observe(time.perf_counter() - began)
        return response

    def visible(job_id: int, caller: tuple[str, set[str]]) -> Job:
        job = store.job(job_id)
        if job is None or job.project not in caller[1]:  # the same answer: nothing leaks
            raise HTTPException(404, f"no job {job_id} in your projects")
        return job

    @app.post("/v1/jobs", status_code=201)
    def submit(
        body: Annotated[dict[str, Any], Body(description="The manifest, as the YAML file's JSON")],
        caller: Caller,
    ) -> dict[str, Any]:
        """Queue a job from its manifest (JSON, the YAML file's structure)."""
        try:
            manifest = manifest_from_dict(body, source="request")
            check_capacity(manifest, capacity)
        except ManifestError as exc:
            raise HTTPException(422, list(exc.problems)) from exc
        if manifest.project not in caller[1]:
            raise HTTPException(403, f"this token's user is not a member of project "
                                f"{manifest.project!r}")  # fmt: skip
        try:  # after the membership check: only a member learns a project's variable names
            job_id = store.submit(manifest, owner=caller[0])
        except ManifestError as exc:  # its env names a project's variable, an unknown dataset
            raise HTTPException(422, list(exc.problems)) from exc
        except AccessDenied as exc:  # a dataset its submitter may not use so
            raise HTTPException(403, str(exc)) from exc
        job = store.job(job_id)
        assert job is not None
        return job_view(job)

    @app.get("/v1/jobs")
    def list_jobs(
        caller: Caller,
        status: Annotated[str | None, Query(description=f"one of {', '.join(STATUSES)}")] = None,
        project: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    ) -> dict[str, Any]:
        """The caller's projects' jobs, newest first, a page at a time."""
        if status is not None and status not in STATUSES:
            raise HTTPException(422, [{"path": "status", "message":
                                       f"choose one of {', '.join(STATUSES)}"}])  # fmt: skip
        page, total = store.jobs(projects=caller[1], status=status, project=project,
                                 limit=limit, offset=offset)  # fmt: skip
        return {"jobs": [job_view(j) for j in page], "total": total, "limit": limit,
                "offset": offset}  # fmt: skip

    @app.get("/v1/jobs/{job_id}")
    def show(job_id: JobId, caller: Caller) -> dict[str, Any]:
        """A job with its attempts, its manifest, its output folder and, while it is queued,
        its place in the queue and why it waits."""
        job = visible(job_id, caller)
        view = job_view(job, store.attempts(job_id))
        view["output"] = str(outputs / str(job_id) / "out") if outputs is not None else None
        view["waiting"] = waiting(store, job, free) if job.status == "queued" else None
        return view

    @app.post("/v1/jobs/{job_id}/cancel")
    def cancel(job_id: JobId, caller: Caller) -> dict[str, Any]:
        """Cancel a queued or running job; 409 when it has already ended."""
        before = visible(job_id, caller)
        if not store.cancel(job_id):
            raise HTTPException(409, f"job {job_id} already {before.status}: nothing was "
                                "cancelled")  # fmt: skip
        job = store.job(job_id)
        assert job is not None
        return job_view(job)

    @app.get("/v1/jobs/{job_id}/logs", response_model=None)
    def logs_of(
        job_id: JobId, caller: Caller, follow: bool = False
    ) -> PlainTextResponse | StreamingResponse:
        """The latest attempt's output; ``follow=true`` streams it until the job ends."""
        visible(job_id, caller)

        def latest() -> Path | None:
            attempts = store.attempts(job_id)
            if not attempts:
                return None
            return logs / f"job-{job_id}" / f"attempt-{attempts[-1].number}.log"

        if not follow:
            path = latest()
            text = path.read_text(errors="replace") if path and path.exists() else ""
            return PlainTextResponse(text)

        async def stream() -> AsyncIterator[bytes]:
            """New output as it is written, from each attempt in turn (a retry's too),
            until the job ends; the database is asked off the event loop."""
            path, sent = None, 0
            while True:
                now = await asyncio.to_thread(latest)
                if now != path:
                    path, sent = now, 0
                if path is not None and path.exists():
                    with path.open("rb") as f:
                        f.seek(sent)
                        data = f.read()
                    sent += len(data)
                    if data:
                        yield data
                job = await asyncio.to_thread(store.job, job_id)
                if job is None or job.status in FINISHED:
                    if path is not None and path.exists():
                        with path.open("rb") as f:
                            f.seek(sent)
                            rest = f.read()
                        if rest:
                            yield rest
                    return
                await asyncio.sleep(0.2)

        return StreamingResponse(stream(), media_type="text/plain")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Up, and each background loop's last completed pass and errors ("degraded" when one
        has not completed a pass for 30 s more than its period)."""
        stale = [loop.name for loop in loops if loop.stale()]
        return {"status": "degraded" if stale else "ok", "stale_loops": stale,
                "uptime_s": round(time.monotonic() - started, 1),
                "loops": {loop.name: loop.view() for loop in loops}}  # fmt: skip

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        """Prometheus exposition: jobs by status, queue depth, attempts by outcome, the
        submission-to-start histogram, request times, and each loop's last pass and errors."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    answer_errors(app)
    return app


def answer_errors(app: FastAPI) -> None:
    """Errors in one shape for every Quarry API (the job service's, the model service's):
    ``{"detail": ...}``, and a bad parameter as the same ``{path, message}`` problems a
    manifest gets, so one client reads them all."""

    @app.exception_handler(HTTPException)
    async def _errors(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            loc = [str(part) for part in e.get("loc", ()) if part not in ("path", "query")]
            path = ".".join(loc)
            message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            problems.append({"path": path, "message": f"{path}: {message}" if path else message})
        return JSONResponse({"detail": problems}, status_code=422)
