"""``quarry server``, ``quarry tokens``, ``quarry projects`` and ``quarry jobs``: the job service
and its client.

The client (``quarry.jobs.Client``) talks to ``--server`` (default ``$QUARRY_SERVER``, else
http://127.0.0.1:8765) with the token in ``$QUARRY_TOKEN``."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from quarry.cli._output import console, fail_cleanly, memory_flag, print_json
from quarry.exceptions import UsageError

server_app = typer.Typer(help="The job service: API, workers and watchdog.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens for the job service.", no_args_is_help=True)
jobs_app = typer.Typer(help="Submit and follow jobs on a Quarry server.", no_args_is_help=True)
projects_app = typer.Typer(help="Projects of the job service.", no_args_is_help=True)
project_env_app = typer.Typer(
    help="A project's environment variables: what its jobs may read (credentials, buckets).",
    no_args_is_help=True,
)
projects_app.add_typer(project_env_app, name="env")

Server = Annotated[str | None, typer.Option(help="Server URL (default $QUARRY_SERVER).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Db = Annotated[
    str | None,
    typer.Option(
        help="The job database: sqlite:///PATH or postgresql://... (default $QUARRY_DB, else "
        "SQLite under $QUARRY_HOME)."
    ),
]


@server_app.command("start")
@fail_cleanly
def start_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    db: Db = None,
    workers: Annotated[int, typer.Option(help="Workers sharing the capacity.")] = 1,
    stale_after: Annotated[
        float, typer.Option(help="Seconds without a heartbeat before an attempt is lost.")
    ] = 5.0,
    pass_env: Annotated[
        list[str] | None,
        typer.Option(
            "--pass-env",
            help="An environment variable attempts may read, besides PATH, HOME, LANG, "
            "QUARRY_HOME, QUARRY_TRACKING_URI and the like (repeat the option for more).",
        ),
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            envvar="QUARRY_BACKEND",
            help="Where attempts run: local (subprocesses of this server) or ray (jobs on "
            "the Ray cluster at --ray-address).",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="The Ray dashboard's URL, where its job API answers, e.g. "
            "http://127.0.0.1:8265 (default $QUARRY_RAY_ADDRESS, else $RAY_ADDRESS).",
        ),
    ] = None,
    cpus: Annotated[
        float | None,
        typer.Option(
            help="CPUs the workers share (default: this machine's, or the Ray cluster's "
            "live nodes')."
        ),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option(
            help="Memory the workers share, e.g. 64Gi (default: this machine's, or the Ray "
            "cluster's live nodes')."
        ),
    ] = None,
    gpus: Annotated[
        int | None,
        typer.Option(help="GPUs the workers share, with --backend ray (default: the cluster's)."),
    ] = None,
    serve_models: Annotated[
        bool,
        typer.Option(
            "--serve-models",
            help="Serve registered models from this process and port too, as quarry serve "
            "does: their routes are under /v2; /healthz, /metrics and /docs stay the job "
            "service's (the alias watcher shows on /healthz).",
        ),
    ] = False,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--models",
            help="With --serve-models: a model to serve, NAME or NAME@ALIAS (repeat the "
            "option, or separate with commas; default: every registered model at its "
            "champion).",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="With --serve-models: the data store predictions by date compute features "
            "from (default $QUARRY_STORE, else $QUARRY_HOME/store)."
        ),
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            help="Serve only this part: data (the data service alone: no workers, no job API).",
        ),
    ] = None,
    flight_port: Annotated[
        int | None,
        typer.Option(
            help="Serve the datasets over Arrow Flight on this port too (grpc://HOST:PORT), "
            "for bulk readers; default: no Flight.",
        ),
    ] = None,
) -> None:
    """Run the job service: the REST API (docs at /docs), the workers and the watchdog,
    the dashboard (http://HOST:PORT/, sign in with a token of quarry tokens create),
    and the data service (/v1/datasets: the registered datasets, point in time, as Arrow or
    Parquet; Flight too with --flight-port); with --serve-models, the model-serving API
    (quarry serve's /v2 routes) on the same port. --only data serves the data alone.

    Stop it with SIGTERM or Ctrl-C: running jobs are queued again without spending a retry;
    on Ray they go on running, and the next server adopts them.

    Example: quarry server start --backend ray --ray-address http://127.0.0.1:8265
    """
    from quarry.jobs._backends import DEFAULT_PASS_ENV
    from quarry.jobs._server import serve

    if flight_port is not None and not 0 < flight_port < 65536:
        raise UsageError(f"--flight-port {flight_port}: give a port from 1 to 65535")
    if only is not None:
        if only != "data":
            raise UsageError(f"--only {only!r}: the part that runs alone is data")
        if serve_models:
            raise UsageError("--serve-models: not with --only data")
        from quarry.dataservice import serve_data

        serve_data(host=host, port=port, db=db, flight_port=flight_port)
        return

    if workers < 1:
        raise UsageError(f"--workers {workers}: give 1 or more")
    if cpus is not None and not cpus > 0:
        raise UsageError(f"--cpus {cpus:g}: give a number above 0, e.g. 8")
    if gpus is not None and gpus < 0:
        raise UsageError(f"--gpus {gpus}: give 0 or more")
    size = memory_flag(memory, "64Gi")
    if not serve_models and (models or store is not None):
        flag = "--models" if models else "--store"
        raise UsageError(f"{flag}: goes with --serve-models")
    extra = list(pass_env or [])
    settings: dict[str, Any] = {
        "host": host, "port": port, "db": db, "workers": workers, "stale_after": stale_after,
        "pass_env": [*DEFAULT_PASS_ENV, *extra], "backend": backend,
        "ray_address": ray_address, "cpus": cpus, "memory": size, "gpus": gpus,
    }  # fmt: skip
    from quarry.dataservice import build_data
    from quarry.ui import add_dashboard

    data = build_data(db=db, host=host, flight_port=flight_port)
    try:
        if not serve_models:
            serve(**settings, mount=data.app, background=[data.run_flight],
                  collectors=data.collectors(),
                  extend=lambda app: add_dashboard(app, warm=True))  # fmt: skip
            return
        from quarry.serve import ModelRef
        from quarry.serve._server import build_models

        refs = None
        if models:
            refs = [ModelRef.parse(part) for text in models for part in text.split(",") if part]
        service = build_models(models=refs, store=store, db=db)
        # the data API answers its paths and hands the rest to the model API
        data.app.mount("/", service.app)
        try:
            serve(**settings, mount=data.app, background=[service.follow, data.run_flight],
                  loops=[service.watcher.health],
                  collectors=[service.app.state.metrics, *data.collectors()],
                  extend=lambda app: add_dashboard(app, served=service.catalog,
                                                   warm=True))  # fmt: skip
        finally:
            service.close()
    finally:
        data.close()


@tokens_app.command("create")
@fail_cleanly
def tokens_create_cmd(
    user: Annotated[str, typer.Option(help="The token's user.")],
    project: Annotated[str, typer.Option(help="A project the user may submit to and see.")],
    db: Db = None,
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


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


@tokens_app.command("list")
@fail_cleanly
def tokens_list_cmd(db: Db = None, as_json: AsJson = False) -> None:
    """Every API token: its id, user, projects, when it was created, last used and revoked
    (never the token itself)."""
    from quarry.jobs import JobStore

    with JobStore(db) as store:
        tokens = store.tokens()
    if as_json:
        print_json([{"id": t.id, "user": t.user, "projects": t.projects,
                     "created_at": t.created_at.isoformat(),
                     "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
                     "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None}
                    for t in tokens])  # fmt: skip
        return
    if not tokens:
        console.print("no tokens; make one with quarry tokens create", highlight=False)
        return
    table = Table("ID", "USER", "PROJECTS", "CREATED", "LAST USED", "REVOKED", box=None)
    for t in tokens:
        table.add_row(str(t.id), t.user, ", ".join(t.projects), _when(t.created_at),
                      _when(t.last_used_at), _when(t.revoked_at))  # fmt: skip
    console.print(table, highlight=False)


@tokens_app.command("revoke")
@fail_cleanly
def tokens_revoke_cmd(
    token_id: Annotated[int, typer.Argument(help="The token's id (quarry tokens list).")],
    db: Db = None,
    as_json: AsJson = False,
) -> None:
    """Revoke a token: requests with it answer 401 from now on."""
    from quarry.jobs import JobStore

    with JobStore(db) as store:
        done = store.revoke_token(token_id)
    if done is None:
        raise UsageError(f"no token {token_id}; see quarry tokens list")
    if done is False:
        raise UsageError(f"token {token_id} was already revoked; nothing changed")
    if as_json:
        print_json({"id": token_id, "revoked": True})
    else:
        console.print(f"token {token_id} revoked", highlight=False)


def _operator() -> str:
    """Who runs this command, recorded as who set a variable."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (a bare container)
        return f"uid {os.getuid()}"


def _read_value(name: str) -> str:
    """``NAME=-``: the value from stdin (a prompt without echo on a terminal), so that a secret
    is not on the command line, in the shell's history or in ``ps``."""
    import getpass

    if sys.stdin.isatty():
        return getpass.getpass(f"{name}: ")
    value = sys.stdin.read()
    value = value[:-1] if value.endswith("\n") else value  # echo's and a file's last newline
    value = value[:-1] if value.endswith("\r") else value
    if not value:
        raise UsageError(
            f"{name}=-: nothing came on stdin; pipe the value in, e.g. "
            f'printf %s "$SECRET" | quarry projects env set PROJECT {name}=-'
        )
    return value


@project_env_app.command("set")
@fail_cleanly
def project_env_set_cmd(
    project: Annotated[str, typer.Argument(help="The project whose jobs get the variable.")],
    assignment: Annotated[
        str,
        typer.Argument(
            metavar="NAME=VALUE", help="The variable; NAME=- reads the value from stdin."
        ),
    ],
    db: Db = None,
    as_json: AsJson = False,
) -> None:
    """Set an environment variable that every attempt of PROJECT's jobs gets (and no other
    project's). A job's manifest cannot set a variable of the same name.

    Example: printf %s "$KEY" | quarry projects env set alpha AWS_SECRET_ACCESS_KEY=-
    """
    from quarry.jobs import JobStore
    from quarry.jobs._store import check_variable_name

    name, equals, value = assignment.partition("=")
    if not equals:
        raise UsageError(f"{assignment!r}: give NAME=VALUE, or NAME=- to read the value from "
                         "stdin")  # fmt: skip
    check_variable_name(name)  # before reading a secret for nothing
    if value == "-":
        value = _read_value(name)
    with JobStore(db) as store:
        new = store.set_variable(project, name, value, set_by=_operator())
    if as_json:
        print_json({"project": project, "name": name, "created": new})
    else:
        console.print(f"{name} {'set' if new else 'replaced'} for project {project}'s jobs",
                      highlight=False)  # fmt: skip


@project_env_app.command("unset")
@fail_cleanly
def project_env_unset_cmd(
    project: Annotated[str, typer.Argument(help="The project.")],
    name: Annotated[str, typer.Argument(help="The variable's name.")],
    db: Db = None,
    as_json: AsJson = False,
) -> None:
    """Remove a project's variable: its jobs' next attempts no longer get it."""
    from quarry.jobs import JobStore

    with JobStore(db) as store:
        if not store.unset_variable(project, name):
            raise UsageError(f"project {project} has no variable {name}; see quarry projects "
                             f"env list {project}")  # fmt: skip
    if as_json:
        print_json({"project": project, "name": name, "removed": True})
    else:
        console.print(f"{name} removed from project {project}", highlight=False)


@project_env_app.command("list")
@fail_cleanly
def project_env_list_cmd(
    project: Annotated[str, typer.Argument(help="The project.")],
    db: Db = None,
    as_json: AsJson = False,
) -> None:
    """A project's variables: their names, who set them and when (never their values)."""
    from quarry.jobs import JobStore

    with JobStore(db) as store:
        found = store.variables(project)
    if as_json:
        print_json([{"name": v.name, "set_by": v.set_by, "set_at": v.set_at.isoformat()}
                    for v in found])  # fmt: skip
        return
    if not found:
        console.print(f"project {project} has no variables; set one with quarry projects env "
                      f"set {project} NAME=VALUE", highlight=False)  # fmt: skip
        return
    table = Table("NAME", "SET BY", "SET AT", box=None)
    for v in found:
        table.add_row(v.name, v.set_by, _when(v.set_at))
    console.print(table, highlight=False)


def _client(server: str | None) -> Any:
    from quarry.jobs import Client

    return Client(server)


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
    job = _client(server).submit(parsed)
    if as_json:
        print_json(job)
    else:
        console.print(f"job {job['id']} {job['status']}: {job['name']} (project "
                      f"{job['project']}); see quarry jobs show {job['id']}",
                      highlight=False)  # fmt: skip


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
    page = _client(server).jobs(status=status, project=project, limit=limit, offset=offset)
    if as_json:
        print_json(page)
        return
    if not page["jobs"]:
        console.print(f"no jobs (of {page['total']})", highlight=False)
        return
    table = Table("ID", "STATUS", "PROJECT", "NAME", "SUBMITTED", box=None)
    for job in page["jobs"]:
        created = datetime.fromisoformat(job["created_at"]) if job.get("created_at") else None
        table.add_row(str(job["id"]), job["status"], job["project"], job["name"],
                      _when(created))  # fmt: skip
    console.print(table, highlight=False)
    first = page["offset"] + 1
    console.print(f"jobs {first}-{first + len(page['jobs']) - 1} of {page['total']}",
                  highlight=False)  # fmt: skip


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _status_line(status: str, reason: str | None) -> str:
    if not reason:
        return status
    # "cancelled while running", "failed - lost: no heartbeat ..."
    return f"{status} {reason}" if reason.startswith("while ") else f"{status} - {reason}"


def show_text(job: dict[str, Any]) -> list[str]:
    """``quarry jobs show``'s lines for a job as the API shows it."""
    from quarry.jobs import readable_memory

    r = job["resources"]
    lines = [f"job {job['id']} {job['name']} (project {job['project']}): "
             f"{_status_line(job['status'], job.get('reason'))}"]  # fmt: skip
    waiting = job.get("waiting")
    if waiting:
        lines.append(f"queued: {_ordinal(waiting['position'] + 1)} in the queue; "
                     f"{waiting['why']}")  # fmt: skip
    lines.append(f"resources: {r['cpus']:g} cpus, {readable_memory(r['memory'])} memory, "
                 f"{r['gpus']} gpus")  # fmt: skip
    if job.get("output"):
        lines.append(f"output: {job['output']}")
    for a in job.get("attempts", []):
        why = f" - {a['reason']}" if a.get("reason") else ""
        peak = f", peak {readable_memory(a['peak_memory'])}" if a.get("peak_memory") else ""
        lines.append(f"  attempt {a['number']}: {a['outcome']}{why} (limit "
                     f"{readable_memory(a['memory'])}{peak})")  # fmt: skip
    return lines


@jobs_app.command("show")
@fail_cleanly
def show_cmd(job_id: int, server: Server = None, as_json: AsJson = False) -> None:
    """A job: its status, why it waits and its place in the queue, resources, output folder,
    and every attempt with its outcome and reason."""
    job = _client(server).job(job_id)
    if as_json:
        print_json(job)
        return
    for line in show_text(job):
        console.print(line, highlight=False, soft_wrap=True)


@jobs_app.command("logs")
@fail_cleanly
def logs_cmd(
    job_id: int,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Follow until it ends.")] = False,
    server: Server = None,
    as_json: AsJson = False,
) -> None:
    """The output of a job's latest attempt."""
    client = _client(server)
    if follow and not as_json:
        for chunk in client.follow_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()
        return
    text = client.logs(job_id)
    if as_json:
        print_json({"id": job_id, "log": text})
    else:
        sys.stdout.write(text)


@jobs_app.command("cancel")
@fail_cleanly
def cancel_cmd(job_id: int, server: Server = None, as_json: AsJson = False) -> None:
    """Cancel a queued or running job; a job that has ended is an error (nothing cancelled)."""
    job = _client(server).cancel(job_id)
    if as_json:
        print_json(job)
    else:
        console.print(f"job {job['id']} {_status_line(job['status'], job.get('reason'))}",
                      highlight=False)  # fmt: skip
