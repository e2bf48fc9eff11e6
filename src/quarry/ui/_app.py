"""The dashboard's routes, added to the job service's app (``quarry server start`` serves it
at ``/``): sign in and out, the start page, and each part's pages (``_jobs``, ``_runs``,
``_models``, ``_datasets``).

Pages answer errors as pages too (a missing job is a 404 page, not the API's JSON), and a
request without a valid session is sent to the login page and back after it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from quarry.jobs import JobStore
from quarry.jobs._schema import STATUSES
from quarry.ui import _datasets, _jobs, _models, _runs
from quarry.ui._render import page
from quarry.ui._routes import pages
from quarry.ui._session import COOKIE, ViewerDep, check_origin, safe_next, tokens

__all__ = ["add_dashboard"]

COOKIE_DAYS = 7


router = pages()


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    """The login form."""
    return page(request, "login.html", viewer=None, title="Sign in", next=safe_next(next),
                error=None)  # fmt: skip


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the token; keep it in the session cookie and go on, or say why not."""
    check_origin(request)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    target = safe_next((form.get("next") or ["/"])[0])
    viewer = await tokens(request).caller(token) if token else None
    if viewer is None:
        return page(request, "login.html", viewer=None, title="Sign in", next=target,
                    error="That token is unknown, revoked or a job's own: give a user's "
                    "token (quarry tokens create).", status_code=401)  # fmt: skip
    response = RedirectResponse(target, status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, token, max_age=COOKIE_DAYS * 86400, httponly=True,
                        samesite="strict", secure=secure, path="/")  # fmt: skip
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    """Forget the session."""
    check_origin(request)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/")
def home(request: Request, viewer: ViewerDep) -> Response:
    """The start page: the queue by status, the latest jobs and runs, live streams."""
    store: JobStore = request.app.state.store
    projects = set(viewer.projects)
    counts = {s: store.jobs(projects=projects, status=s, limit=1)[1]
              for s in ("queued", "running", "failed")}  # fmt: skip
    latest, total = store.jobs(projects=projects, limit=8)
    return page(request, "home.html", viewer=viewer, title="Quarry", counts=counts, jobs=latest,
                total=total, statuses=STATUSES, streams=_datasets.live_streams())  # fmt: skip


def add_dashboard(app: FastAPI, *, served: Any | None = None, warm: bool = False) -> None:
    """Add the dashboard's pages to the job service's ``app`` (whose ``state`` holds the job
    store, the workers' capacity, logs and outputs); ``served``: the model service's catalog
    when this server serves models too; ``warm``: open the tracking store in a thread at
    the first page asked for (the login's, usually), so the runs page is quick at once."""
    app.state.served = served
    app.state.ui_warm_pending = warm
    for part in (router, _jobs.router, _runs.router, _models.router, _datasets.router):
        app.include_router(part)
    app.mount("/static", StaticFiles(packages=[("quarry.ui", "static")]), name="static")
