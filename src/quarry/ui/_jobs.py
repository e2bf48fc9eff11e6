"""The jobs pages: the queue a page at a time (filters by project and status), a job with its
attempts and the log that follows, cancel, and a form that submits a manifest.

Only the viewer's projects' jobs are shown; another project's job answers 404 as a missing
one does. The table and a running job's page refresh themselves through the page's script
(``static/quarry.js``), which swaps in the fragments served here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from quarry.exceptions import AccessDenied, ManifestError
from quarry.jobs import JobStore
from quarry.jobs._api import FINISHED, waiting
from quarry.jobs._manifest import check_capacity, manifest_from_yaml
from quarry.jobs._schema import STATUSES, Job
from quarry.ui._render import SECURITY_HEADERS, fragment, page
from quarry.ui._routes import pages
from quarry.ui._session import ViewerDep, check_origin

__all__ = ["PER_PAGE", "router"]

router = pages()
PER_PAGE = 50
LOG_CHUNK = 256 * 1024  # bytes of a log sent at once
JobId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
PageNo = Annotated[int, Query(ge=1, le=10**9)]

EXAMPLE = """\
name: nightly-alpha
project: {project}
run:
  workflow: examples/workflows/alpha158_lightgbm.yaml
resources: {{cpus: 1, memory: 2Gi}}
"""


def _store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def _filters(viewer_projects: frozenset[str], project: str | None, status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise HTTPException(422, f"status {status!r}: choose one of {', '.join(STATUSES)}")
    if project is not None and project not in viewer_projects:
        raise HTTPException(404, f"no project {project!r} among yours")


def _table(request: Request, projects: frozenset[str], project: str | None,
           status: str | None, page_no: int) -> dict[str, Any]:  # fmt: skip
    _filters(projects, project, status)
    jobs, total = _store(request).jobs(projects=set(projects), status=status, project=project,
                                       limit=PER_PAGE, offset=(page_no - 1) * PER_PAGE)  # fmt: skip
    pages = max(1, -(-total // PER_PAGE))
    return {"jobs": jobs, "total": total, "page_no": page_no, "pages": pages,
            "project": project, "status": status, "statuses": STATUSES}  # fmt: skip


@router.get("/jobs")
def jobs_page(
    request: Request, viewer: ViewerDep, project: str | None = None,
    status: str | None = None, page_no: Annotated[PageNo, Query(alias="page")] = 1,
) -> Response:  # fmt: skip
    """The queue and the jobs of the viewer's projects, newest first."""
    table = _table(request, viewer.projects, project or None, status or None, page_no)
    return page(request, "jobs.html", viewer=viewer, title="Jobs", **table)


@router.get("/jobs/rows")
def jobs_rows(
    request: Request, viewer: ViewerDep, project: str | None = None,
    status: str | None = None, page_no: Annotated[PageNo, Query(alias="page")] = 1,
) -> Response:  # fmt: skip
    """The table's rows, for the page's refresh."""
    table = _table(request, viewer.projects, project or None, status or None, page_no)
    return fragment(request, "_job_rows.html", **table)


def _visible(request: Request, job_id: int, projects: frozenset[str]) -> Job:
    job = _store(request).job(job_id)
    if job is None or job.project not in projects:  # the same answer: nothing leaks
        raise HTTPException(404, f"no job {job_id} in your projects")
    return job


def _output(request: Request, job_id: int) -> Path | None:
    outputs: Path | None = request.app.state.outputs
    return outputs / str(job_id) / "out" if outputs is not None else None


def _results(request: Request, job_id: int) -> dict[str, Any] | None:
    """A workflow job's results.json (its figures and MLflow run), when it wrote one."""
    out = _output(request, job_id)
    path = out / "results.json" if out is not None else None
    if path is None or not path.is_file():
        return None
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _log_path(request: Request, job_id: int) -> tuple[Path | None, int | None]:
    attempts = _store(request).attempts(job_id)
    if not attempts:
        return None, None
    logs: Path = request.app.state.logs
    number = attempts[-1].number
    return logs / f"job-{job_id}" / f"attempt-{number}.log", number


def _detail(request: Request, job: Job) -> dict[str, Any]:
    store = _store(request)
    attempts = store.attempts(job.id)
    results = _results(request, job.id) if job.status in FINISHED else None
    # the job ends (cancelled) a moment before its worker records its attempt's end
    settled = job.status in FINISHED and all(a.outcome for a in attempts)
    return {"job": job, "attempts": attempts, "finished": job.status in FINISHED,
            "settled": settled,
            "waiting": waiting(store, job, request.app.state.free) if job.status == "queued"
            else None, "results": results, "output": _output(request, job.id),
            "manifest": json.dumps(json.loads(job.manifest), indent=2)}  # fmt: skip


@router.get("/jobs/new")
def new_job_page(request: Request, viewer: ViewerDep) -> Response:
    """The form that submits a manifest."""
    project = min(viewer.projects) if viewer.projects else "PROJECT"
    return page(request, "job_new.html", viewer=viewer, title="Submit a job",
                text=EXAMPLE.format(project=project), problems=[])  # fmt: skip


@router.post("/jobs/new")
async def submit_job(request: Request, viewer: ViewerDep) -> Response:
    """Queue the manifest of the form, then show its job; its problems, one a line, if it
    does not validate."""
    check_origin(request)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    text = (form.get("manifest") or [""])[0]
    store = _store(request)
    try:
        manifest = manifest_from_yaml(text, source="the manifest")
        check_capacity(manifest, request.app.state.capacity)
        if manifest.project not in viewer.projects:
            yours = ", ".join(sorted(viewer.projects)) or "none"
            raise AccessDenied(f"project {manifest.project!r}: you are not a member of it "
                               f"(yours: {yours})")  # fmt: skip
        job_id = store.submit(manifest, owner=viewer.user)
    except ManifestError as exc:
        problems = [p["message"] for p in exc.problems]
        return page(request, "job_new.html", viewer=viewer, title="Submit a job", text=text,
                    problems=problems, status_code=422)  # fmt: skip
    except AccessDenied as exc:
        return page(request, "job_new.html", viewer=viewer, title="Submit a job", text=text,
                    problems=[str(exc)], status_code=403)  # fmt: skip
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: JobId, viewer: ViewerDep) -> Response:
    """A job: its status, attempts with their outcomes and reasons, its log as it grows."""
    job = _visible(request, job_id, viewer.projects)
    return page(request, "job.html", viewer=viewer, title=f"Job {job.id}: {job.name}",
                **_detail(request, job))  # fmt: skip


@router.get("/jobs/{job_id}/summary")
def job_summary(request: Request, job_id: JobId, viewer: ViewerDep) -> Response:
    """The job's status and attempts, for the page's refresh."""
    job = _visible(request, job_id, viewer.projects)
    return fragment(request, "_job_summary.html", **_detail(request, job))


@router.get("/jobs/{job_id}/log")
def job_log(
    request: Request, job_id: JobId, viewer: ViewerDep,
    offset: Annotated[int, Query(ge=0)] = 0, attempt: Annotated[int, Query(ge=0)] = 0,
) -> Response:  # fmt: skip
    """The latest attempt's log from byte ``offset`` (of ``attempt``; a new attempt starts
    again at 0). Headers: ``X-Attempt``, ``X-Offset`` (where the next read starts),
    ``X-Status`` (the job's, so the script stops when it has ended)."""
    job = _visible(request, job_id, viewer.projects)
    path, number = _log_path(request, job_id)
    if number != attempt:
        offset = 0
    data = b""
    if path is not None and path.exists():
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read(LOG_CHUNK)
    headers = {**SECURITY_HEADERS, "X-Attempt": str(number or 0),
               "X-Offset": str(offset + len(data)), "X-Status": job.status}  # fmt: skip
    return PlainTextResponse(data.decode("utf-8", "replace"), headers=headers)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(request: Request, job_id: JobId, viewer: ViewerDep) -> Response:
    """Cancel a queued or running job, then show it."""
    check_origin(request)
    job = _visible(request, job_id, viewer.projects)
    if not _store(request).cancel(job_id):
        raise HTTPException(409, f"job {job_id} already {job.status}: nothing was cancelled")
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)
