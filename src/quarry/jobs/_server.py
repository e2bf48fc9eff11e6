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

The server logs to stderr, one line each: its start, its stop, each attempt's ending (job
id, outcome, duration) and every failed pass of a background loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from sqlalchemy import make_url

from quarry.exceptions import UsageError
from quarry.jobs._api import create_app
from quarry.jobs._backends import DEFAULT_PASS_ENV, LocalBackend
from quarry.jobs._manifest import Resources, readable_memory
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


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    db: str | None = None,
    workers: int = 1,
    cpus: float | None = None,
    memory: int | None = None,
    stale_after: float = 5.0,
    logs: Path | None = None,
    pass_env: Sequence[str] = DEFAULT_PASS_ENV,
) -> None:
    """Run the service until SIGTERM or SIGINT. ``workers`` share this machine's ``cpus`` and
    ``memory`` equally (default all of them); attempts get only the variables in ``pass_env``
    from this process's environment (plus their manifest's ``env``)."""
    import uvicorn

    from quarry.settings import quarry_home

    url = db or default_url()
    listen = f"http://{host}:{port}"
    with one_server(url, listen):
        _log_to_stderr()
        store = JobStore(url)
        home = quarry_home()
        logs = logs or home / "job-logs"
        outputs = home / "jobs"
        cpus = float(cpus if cpus is not None else os.cpu_count() or 1)
        memory = int(memory if memory is not None else machine_memory())
        share = Resources(cpus=cpus / workers, memory=max(memory // workers, 1))
        stop = threading.Event()
        node = f"{os.uname().nodename}:{os.getpid()}"
        runner = LocalBackend(pass_env=pass_env)
        pool = [Worker(store, logs, name=f"{node}:{k}", cpus=share.cpus, memory=share.memory,
                       runner=runner, outputs=outputs) for k in range(workers)]  # fmt: skip
        why = "the server stopped; queued again without spending a retry"
        threads = [threading.Thread(target=w.run, args=(stop,), kwargs={"why_stopped": why})
                   for w in pool]  # fmt: skip
        watchdog = Watchdog(store, stale_after=stale_after)
        threads.append(threading.Thread(target=watchdog.run, args=(stop,)))
        app = create_app(store, capacity=share, logs=logs,
                         loops=[*(w.health for w in pool), watchdog.health],
                         free=lambda: [w.free for w in pool], outputs=outputs)  # fmt: skip
        api = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        api_thread = threading.Thread(target=api.run, name="api")

        stopping = threading.Event()
        signalled: list[str] = []

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            signalled.append(signal.Signals(signum).name)
            stopping.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        began = time.monotonic()
        try:
            api_thread.start()
            while not api.started and api_thread.is_alive():
                time.sleep(0.05)
            if not api.started:  # it could not listen (the port is taken ...)
                raise UsageError(f"--port {port}: cannot listen on {host}:{port}; is another "
                                 "server using it? Give another --port")  # fmt: skip
            for thread in threads:
                thread.start()
            safe_url = make_url(url).render_as_string(hide_password=True)
            _log.info("server started on %s (pid %d): %d worker%s of %g cpus and %s each, "
                      "database %s", listen, os.getpid(), workers, "s" if workers > 1 else "",
                      share.cpus, readable_memory(share.memory), safe_url)  # fmt: skip
            while not stopping.wait(0.5) and api_thread.is_alive():
                pass
        finally:
            stop.set()  # no new attempt is admitted while the API winds down
            api.should_exit = True
            if api_thread.is_alive():
                api_thread.join()
            for thread in threads:
                if thread.is_alive():
                    thread.join(timeout=30)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            store.close()
        requeued = sorted(j for w in pool for j in w.requeued)
        jobs = f" (job{'s' if len(requeued) > 1 else ''} {', '.join(map(str, requeued))})"
        n = len(requeued)
        _log.info("server stopped%s after %.0f s: requeued %d running attempt%s%s; they run "
                  "again without spending a retry", f" by {signalled[0]}" if signalled else "",
                  time.monotonic() - began, n, "" if n == 1 else "s",
                  jobs if requeued else "")  # fmt: skip
