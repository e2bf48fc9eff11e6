"""``quarry server start``: the API, the workers and the watchdog in one process.

Each worker, the watchdog and the API (uvicorn) run in threads of their own; the main thread
waits for SIGTERM or SIGINT. Then the API stops, each worker stops its running attempts and
queues their jobs again without spending a retry (outcome ``requeued``), and the log says how
many. uvicorn is kept off the main thread on purpose: there it catches SIGTERM and raises it
again after its own shutdown, which ended the process before the workers had put anything
back. A server killed outright (SIGKILL) loses nothing either: its attempts' heartbeats stop,
the next server's watchdog ends them as lost, and they run again per their retry policy.

On SQLite, one server per database: a second is refused with one line naming the first (an
advisory lock on ``DB.server-lock``, released by the kernel when its holder exits, so a
crash leaves nothing stale). Two servers on one SQLite file are on one machine, and each
would admit jobs up to the whole machine's cores. On PostgreSQL several servers (one per
machine) may share the queue: claims are atomic (``FOR UPDATE SKIP LOCKED``) and each server
admits only what its own workers have free.

With ``backend="ray"`` the attempts are Ray jobs on the cluster at ``ray_address`` (its
dashboard's URL), and capacity defaults to the cluster's live nodes' totals. Ray's jobs do
not depend on the server: a stopping server leaves them running (the log says how many), and
a starting one adopts the unfinished attempts of that cluster before its watchdog runs (on
SQLite, where it is the only server, all of them at once; one that never reached Ray is
queued again without spending a retry).

Another service may share the process and the port (``serve``'s ``mount``, ``background``
and ``loops``): ``quarry server start --serve-models`` serves the models' API so.

The server logs to stderr, one line each: its start, its stop, each attempt's ending (job
id, outcome, duration) and every failed pass of a background loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from quarry.exceptions import UsageError
from quarry.jobs._api import create_app
from quarry.jobs._backends import DEFAULT_PASS_ENV, Backend, LocalBackend
from quarry.jobs._loops import LoopHealth
from quarry.jobs._manifest import Resources, readable_memory
from quarry.jobs._ray import RayBackend
from quarry.jobs._store import JobStore, default_url
from quarry.jobs._watchdog import Watchdog
from quarry.jobs._worker import Worker, machine_memory

__all__ = ["one_server", "serve"]

_log = logging.getLogger("quarry.jobs")


def _log_to_stderr() -> None:
    if not _log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        _log.addHandler(handler)
        _log.setLevel(logging.INFO)
        _log.propagate = False


@contextlib.contextmanager
def one_server(url: str, listen: str) -> Iterator[None]:
    """Hold the SQLite database ``url`` for this server; ``UsageError`` naming the other
    server when one holds it. PostgreSQL databases are shared and not held."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        yield
        return
    lock_path = Path(f"{database}.server-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            try:
                other = json.loads(lock.read())
                who = f"pid {other['pid']}, {other['listen']}, since {other['since']}"
            except (ValueError, KeyError, TypeError):
                who = "starting"
            raise UsageError(
                f"--db {url}: another quarry server ({who}) already serves this database; "
                "stop it, or give this one another --db (two servers on one SQLite file would "
                "each admit jobs up to the machine's capacity)"
            ) from None
        lock.seek(0)
        lock.truncate()
        since = datetime.now(UTC).isoformat(timespec="seconds")
        lock.write(json.dumps({"pid": os.getpid(), "listen": listen, "since": since}))
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)  # the kernel releases the lock as the file closes


def _capacity(
    runner: Backend, cpus: float | None, memory: int | None, gpus: int | None
) -> tuple[float, int, int]:
    """What the workers share: the flags, else this machine (local) or the Ray cluster's
    live nodes, which a cluster scaled to zero has none of: then the flags are needed."""
    if not isinstance(runner, RayBackend):
        if gpus:
            raise UsageError(f"--gpus {gpus}: the local backend gives jobs no GPUs; use "
                             "--backend ray")  # fmt: skip
        return (float(cpus if cpus is not None else os.cpu_count() or 1),
                int(memory if memory is not None else machine_memory()), 0)  # fmt: skip
    if cpus is not None and memory is not None and gpus is not None:
        return cpus, memory, gpus
    have_cpus, have_memory, have_gpus = runner.capacity()
    missing = [flag for flag, given, have in (("--cpus", cpus, have_cpus),
                                              ("--memory", memory, have_memory))
               if given is None and have <= 0]  # fmt: skip
    if missing:
        raise UsageError(f"{' and '.join(missing)}: the Ray cluster at {runner.address} has no "
                         "live CPUs or memory now (scaled to zero?); give --cpus and --memory: "
                         "how much of it this server may use once it grows")  # fmt: skip
    return (float(cpus if cpus is not None else have_cpus),
            int(memory if memory is not None else have_memory),
            int(gpus if gpus is not None else have_gpus))  # fmt: skip


def _runner(backend: str, ray_address: str | None, pass_env: Sequence[str]) -> Backend:
    if backend == "ray":
        return RayBackend(ray_address, pass_env=list(pass_env))
    if backend != "local":
        raise UsageError(f"--backend {backend!r}: choose local or ray")
    if ray_address:
        raise UsageError("--ray-address: goes with --backend ray")
    return LocalBackend(pass_env=pass_env)


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    db: str | None = None,
    workers: int = 1,
    cpus: float | None = None,
    memory: int | None = None,
    gpus: int | None = None,
    stale_after: float = 5.0,
    logs: Path | None = None,
    pass_env: Sequence[str] = DEFAULT_PASS_ENV,
    backend: str = "local",
    ray_address: str | None = None,
    mount: Any | None = None,
    background: Sequence[Callable[[threading.Event], None]] = (),
    loops: Sequence[LoopHealth] = (),
    collectors: Sequence[Any] = (),
    extend: Callable[[Any], None] | None = None,
) -> None:
    """Run the service until SIGTERM or SIGINT. ``workers`` share ``cpus``, ``memory`` and
    ``gpus`` equally (default: all of this machine's, or of the Ray cluster's live nodes with
    ``backend="ray"``); attempts get only the variables in ``pass_env`` from this process's
    environment (plus their manifest's ``env``).

    Another service can share the process and the port: ``mount`` (an ASGI app) answers
    every path the job API has no route for (its own /healthz, /metrics and /docs stay the
    job service's); each of ``background`` runs in a thread of its own, started with the
    workers and given the event that stops them; ``loops`` are shown on /healthz and
    /metrics beside the workers' and the watchdog's, and ``collectors`` (Prometheus', such as
    the mounted app's registry) on /metrics. ``extend`` is called with the job API's app
    before anything is mounted, to add routes of a layer above (the dashboard's), which
    read the store, capacity, logs and outputs from its ``state``. (``quarry server start``
    serves the dashboard, the datasets and, with ``--serve-models``, the models this way;
    this layer knows nothing of them.)"""
    from quarry._listen import listening
    from quarry.settings import quarry_home

    url = db or default_url()
    listen = f"http://{host}:{port}"
    with one_server(url, listen):
        _log_to_stderr()
        runner = _runner(backend, ray_address, pass_env)
        cpus, memory, gpus = _capacity(runner, cpus, memory, gpus)
        store = JobStore(url)
        home = quarry_home()
        logs = logs or home / "job-logs"
        outputs = home / "jobs"
        share = Resources(cpus=cpus / workers, memory=max(memory // workers, 1),
                          gpus=gpus // workers)  # fmt: skip
        stop = threading.Event()
        node = f"{os.uname().nodename}:{os.getpid()}"
        # an attempt nobody heartbeats is adopted well before the watchdog would end it
        pool = [Worker(store, logs, name=f"{node}:{k}", cpus=share.cpus, memory=share.memory,
                       gpus=share.gpus, runner=runner, outputs=outputs,
                       adopt_after=0.6 * stale_after) for k in range(workers)]  # fmt: skip
        for w in pool:
            w.peers = {p.name for p in pool}
        why = "the server stopped; queued again without spending a retry"
        threads = [threading.Thread(target=w.run, args=(stop,), kwargs={"why_stopped": why})
                   for w in pool]  # fmt: skip
        watchdog = Watchdog(store, stale_after=stale_after, worker=pool[0])
        threads.append(threading.Thread(target=watchdog.run, args=(stop,)))
        threads += [threading.Thread(target=run, args=(stop,), name=f"background-{k}")
                    for k, run in enumerate(background)]  # fmt: skip
        app = create_app(store, capacity=share, logs=logs,
                         loops=[*(w.health for w in pool), watchdog.health, *loops],
                         free=lambda: [w.free for w in pool], outputs=outputs,
                         collectors=collectors)  # fmt: skip
        if extend is not None:
            extend(app)
        if mount is not None:
            # after the job API's routes, so it gets only the paths they do not answer
            app.mount("/", mount)

        def finish() -> None:  # the workers put back what runs, under our signal handlers
            stop.set()
            for thread in threads:
                if thread.is_alive():
                    thread.join(timeout=30)
            store.close()

        # stop first: no new attempt is admitted while the API winds down
        with listening(app, host=host, port=port, on_stop=stop.set, then=finish) as server:
            if runner.detachable:
                _adopt(pool[0], sole=make_url(url).get_backend_name() == "sqlite")
            for thread in threads:
                thread.start()
            safe_url = make_url(url).render_as_string(hide_password=True)
            on = f", on Ray at {runner.address}" if isinstance(runner, RayBackend) else ""
            _log.info("server started on %s (pid %d): %d worker%s of %g cpus and %s each%s, "
                      "database %s", listen, os.getpid(), workers, "s" if workers > 1 else "",
                      share.cpus, readable_memory(share.memory), on, safe_url)  # fmt: skip
            server.wait()
        by, took = server.by, server.seconds
        requeued = sorted(j for w in pool for j in w.requeued)
        n = len(requeued)
        if runner.detachable:
            left = sorted(j for w in pool for j in w.detached)
            more = f"; requeued {n} ({_jobs(requeued)})" if requeued else ""
            _log.info("server stopped%s after %.0f s: left %d attempt%s running on Ray%s%s; "
                      "the next server adopts them", by, took, len(left),
                      "" if len(left) == 1 else "s",
                      f" ({_jobs(left)})" if left else "", more)  # fmt: skip
            return
        _log.info("server stopped%s after %.0f s: requeued %d running attempt%s%s; they run "
                  "again without spending a retry", by, took, n, "" if n == 1 else "s",
                  f" ({_jobs(requeued)})" if requeued else "")  # fmt: skip


def _jobs(ids: list[int]) -> str:
    return f"job{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"


def _adopt(worker: Worker, *, sole: bool) -> None:
    """Adopt what a previous server left running on the backend, before the watchdog runs.
    The only server of its database (SQLite) knows the others are dead: it takes them all,
    and queues again those that never reached the backend."""
    try:
        adopted, requeued = worker.adopt(older_than=0.0 if sole else worker.adopt_after,
                                         certain=sole)  # fmt: skip
    except Exception as exc:  # the backend away: the worker tries again as it runs
        _log.error("could not adopt the attempts left on the %s backend, trying again as "
                   "the server runs: %s", worker.runner.name, exc)  # fmt: skip
        return
    if adopted or requeued:
        again = f"; queued {len(requeued)} again that never reached it" if requeued else ""
        _log.info("adopted %d attempt%s still on the %s backend%s%s", len(adopted),
                  "" if len(adopted) == 1 else "s", worker.runner.name,
                  f" ({_jobs(adopted)})" if adopted else "", again)  # fmt: skip
