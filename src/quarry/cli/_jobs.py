"""``quarry server``, ``quarry tokens`` and ``quarry jobs``: the job service and its client.

The client talks to ``--server`` (default ``$QUARRY_SERVER``, else http://127.0.0.1:8765)
with the token in ``$QUARRY_TOKEN``."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

from quarry.cli._output import console, fail_cleanly, print_json
from quarry.exceptions import UsageError

server_app = typer.Typer(help="The job service: API, workers and watchdog.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens for the job service.", no_args_is_help=True)
jobs_app = typer.Typer(help="Submit and follow jobs on a Quarry server.", no_args_is_help=True)

Server = Annotated[str | None, typer.Option(help="Server URL (default $QUARRY_SERVER).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@server_app.command("start")
@fail_cleanly
def start_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    db: Annotated[str | None, typer.Option(help="sqlite:///PATH or postgresql://...")] = None,
    workers: Annotated[int, typer.Option(help="Workers sharing this machine.")] = 1,
    stale_after: Annotated[
        float, typer.Option(help="Seconds without a heartbeat before an attempt is lost.")
    ] = 5.0,
) -> None:
    """Run the job service: the REST API (docs at /docs), the workers and the watchdog.

    Example: quarry server start --port 8765 --db postgresql://postgres@127.0.0.1/test
    """
    from quarry.jobs._server import serve

    if workers < 1:
        raise UsageError(f"--workers {workers}: give 1 or more")
    serve(host=host, port=port, db=db, workers=workers, stale_after=stale_after)


@tokens_app.command("create")
@fail_cleanly
def tokens_create_cmd(
    user: Annotated[str, typer.Option(help="The token's user.")],
    project: Annotated[str, typer.Option(help="A project the user may submit to and see.")],
    db: Annotated[str | None, typer.Option(help="sqlite:///PATH or postgresql://...")] = None,
    as_json: AsJson = False,
) -> None:
    """Create an API token for USER, a member of PROJECT; it is shown only this once.

    Example: export QUARRY_TOKEN=$(quarry tokens create --user ann --project alpha)
    """
    from quarry.jobs import JobStore

    with JobStore(db) as store:
        token = store.create_token(user, project)
    if as_json:
        print_json({"user": user, "project": project, "token": token})
    else:
        print(token)


def _call(
    server: str | None,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bool = False,
    stream: Any = None,
) -> Any:
    base = (server or os.environ.get("QUARRY_SERVER") or "http://127.0.0.1:8765").rstrip("/")
    token = os.environ.get("QUARRY_TOKEN", "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        base + path, data=data, method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=None if stream else 30) as response:
            if stream is not None:  # write the body as it arrives (logs -f)
                while chunk := response.read1(65536):
                    stream.write(chunk.decode(errors="replace"))
                    stream.flush()
                return None
            payload = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            detail = json.loads(detail)["detail"]
        except (ValueError, KeyError, TypeError):
            pass
        if isinstance(detail, list):
            detail = "; ".join(f"{p.get('path')}: {p.get('message')}" for p in detail)
        hint = " (set QUARRY_TOKEN)" if exc.code == 401 else ""
        raise UsageError(f"{base}{path}: {exc.code} {detail}{hint}") from exc
    except urllib.error.URLError as exc:
        raise UsageError(
            f"{base}: cannot reach the server ({exc.reason}); start one with quarry server start "
            "or set QUARRY_SERVER"
        ) from exc
    return payload.decode(errors="replace") if raw else json.loads(payload)


@jobs_app.command("submit")
@fail_cleanly
def submit_cmd(
    manifest: Annotated[Path, typer.Argument(help="The job's manifest (YAML).")],
    server: Server = None,
    as_json: AsJson = False,
) -> None:
    """Submit a job; prints its id and status.

    Example: quarry jobs submit job.yaml
    """
    from quarry.jobs import load_manifest

    parsed = load_manifest(manifest)  # the file's own errors, with its name and line
    job = _call(server, "POST", "/v1/jobs", parsed.model_dump(mode="json"))
    if as_json:
        print_json(job)
    else:
        console.print(f"job {job['id']} {job['status']}", highlight=False)


@jobs_app.command("list")
@fail_cleanly
def list_cmd(
    status: Annotated[str | None, typer.Option(help="Only jobs with this status.")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project's jobs.")] = None,
    limit: Annotated[int, typer.Option(help="Jobs per page.")] = 50,
    offset: Annotated[int, typer.Option(help="Jobs to skip.")] = 0,
    server: Server = None,
    as_json: AsJson = False,
) -> None:
    """List your projects' jobs, newest first."""
    query = f"?limit={limit}&offset={offset}"
    query += f"&status={status}" if status else ""
    query += f"&project={project}" if project else ""
    page = _call(server, "GET", "/v1/jobs" + query)
    if as_json:
        print_json(page)
        return
    for job in page["jobs"]:
        console.print(f"{job['id']:>6}  {job['status']:<10} {job['project']:<12} {job['name']}",
                      highlight=False)  # fmt: skip
    console.print(f"{len(page['jobs'])} of {page['total']}", highlight=False)


@jobs_app.command("show")
@fail_cleanly
def show_cmd(job_id: int, server: Server = None, as_json: AsJson = False) -> None:
    """A job: its status, resources and every attempt with its outcome and reason."""
    job = _call(server, "GET", f"/v1/jobs/{job_id}")
    if as_json:
        print_json(job)
        return
    r = job["resources"]
    console.print(f"job {job['id']} {job['name']} ({job['project']}): {job['status']}"
                  f"{' - ' + job['reason'] if job.get('reason') else ''}\n"
                  f"resources: {r['cpus']} cpus, {r['memory']} bytes, {r['gpus']} gpus",
                  highlight=False)  # fmt: skip
    for a in job["attempts"]:
        why = f" - {a['reason']}" if a.get("reason") else ""
        console.print(f"  attempt {a['number']}: {a['outcome']}{why}", highlight=False)


@jobs_app.command("logs")
@fail_cleanly
def logs_cmd(
    job_id: int,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Follow until it ends.")] = False,
    server: Server = None,
    as_json: AsJson = False,
) -> None:
    """The output of a job's latest attempt."""
    path = f"/v1/jobs/{job_id}/logs?follow={str(follow).lower()}"
    if follow and not as_json:
        _call(server, "GET", path, stream=sys.stdout)
        return
    text = _call(server, "GET", path, raw=True)
    if as_json:
        print_json({"id": job_id, "log": text})
    else:
        sys.stdout.write(text)


@jobs_app.command("cancel")
@fail_cleanly
def cancel_cmd(job_id: int, server: Server = None, as_json: AsJson = False) -> None:
    """Cancel a queued or running job."""
    job = _call(server, "POST", f"/v1/jobs/{job_id}/cancel")
    if as_json:
        print_json(job)
    else:
        console.print(f"job {job['id']} {job['status']}", highlight=False)


def wait_for(server: str, seconds: float = 30.0) -> None:
    """Until ``server`` answers /healthz (tests and scripts)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(server.rstrip("/") + "/healthz", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
