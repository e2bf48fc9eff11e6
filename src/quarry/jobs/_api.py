"""The job service's REST API (FastAPI; OpenAPI at /openapi.json, docs at /docs).

Every /v1 route needs ``Authorization: Bearer TOKEN``: no or an unknown token gets 401, a job
of a project the token's user is not a member of gets 403. A manifest that does not
validate gets 422 with one ``{path, message}`` per problem; one that asks for more than the
largest worker has gets 422 naming the capacity.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from quarry.jobs._manifest import ManifestError, Resources, check_capacity, manifest_from_dict
from quarry.jobs._schema import STATUSES, Attempt, Job
from quarry.jobs._store import JobStore

__all__ = ["create_app", "job_view"]

FINISHED = ("succeeded", "failed", "cancelled")


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


def create_app(store: JobStore, *, capacity: Resources, logs: Path) -> FastAPI:
    """The API over ``store``; ``capacity`` is the largest worker's, ``logs`` the workers'
    log folder."""
    app = FastAPI(title="Quarry jobs", version="1")
    app.state.store = store
    started = time.monotonic()

    def visible(job_id: int, caller: tuple[str, set[str]]) -> Job:
        job = store.job(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        if job.project not in caller[1]:
            raise HTTPException(403, f"job {job_id} belongs to project {job.project!r}, "
                                "which this token's user is not a member of")  # fmt: skip
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
        job_id = store.submit(json.loads(manifest.to_json()), owner=caller[0])
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
        job = visible(job_id, caller)
        return job_view(job, store.attempts(job_id))

    @app.post("/v1/jobs/{job_id}/cancel")
    def cancel(job_id: JobId, caller: Caller) -> dict[str, Any]:
        visible(job_id, caller)
        store.cancel(job_id)
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
        return {"status": "ok", "uptime_s": round(time.monotonic() - started, 1)}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        """Prometheus text: queue depth, running jobs, attempts by outcome, and the mean
        time from submission to a first attempt's start."""
        counts = store.counts()
        outcomes, latency = store.attempt_stats()
        lines = ["# TYPE quarry_jobs gauge"]
        lines += [f'quarry_jobs{{status="{s}"}} {counts.get(s, 0)}' for s in STATUSES]
        lines += [
            "# TYPE quarry_queue_depth gauge",
            f"quarry_queue_depth {counts.get('queued', 0)}",
            "# TYPE quarry_running_jobs gauge",
            f"quarry_running_jobs {counts.get('running', 0)}",
            "# TYPE quarry_attempts_total counter",
        ]
        by_outcome = sorted(outcomes.items())
        lines += [f'quarry_attempts_total{{outcome="{k}"}} {n}' for k, n in by_outcome]
        lines += [
            "# TYPE quarry_scheduling_latency_seconds summary",
            f"quarry_scheduling_latency_seconds_sum {latency[0]:.6f}",
            f"quarry_scheduling_latency_seconds_count {latency[1]}",
        ]
        return "\n".join(lines) + "\n"

    @app.exception_handler(HTTPException)
    async def _errors(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)  # fmt: skip

    return app
