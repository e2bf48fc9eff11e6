"""``quarry serve``: the served models' API and the alias watcher in one process.

The catalog is started first (every model's version found and loaded once, so a model that
cannot score is refused at the start, in one line), then the watcher, then the API (uvicorn)
in a thread of its own while the main thread waits for SIGTERM or SIGINT, as the job
service's server does: uvicorn on the main thread would take the signals for itself. The
server logs to stderr, a line each: its start with the models it serves, each switch to a
promoted version, each version unloaded, and its stop.

It reads the job service's database (``--db``, as ``quarry server start``) for tokens and to
queue training jobs; both can run in one process or two against the same database.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from quarry.exceptions import UsageError
from quarry.serve._catalog import Catalog, ModelRef

__all__ = ["serve_models"]

_log = logging.getLogger("quarry.serve")


def _log_to_stderr() -> None:
    if not _log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        _log.addHandler(handler)
        _log.setLevel(logging.INFO)
        _log.propagate = False


def _data_store(location: str | Path | None) -> tuple[Any, str | None]:
    """The store predictions by date read, and a warning to log: a given one must hold
    data; without one, the default is used if it holds data, and predictions by date are
    refused otherwise."""
    from quarry.data import Store
    from quarry.settings import default_store

    if location is not None:
        store = Store(location)
        store.require()
        return store, None
    store = Store(default_store())
    if not store.exists():
        return None, (f"no data store at {store.location.uri}: predictions by date are "
                      "refused (give --store); tables are scored")  # fmt: skip
    return store, None


def serve_models(
    *,
    host: str = "127.0.0.1",
    port: int = 8766,
    models: Sequence[ModelRef] | None = None,
    store: str | Path | None = None,
    db: str | None = None,
    max_loaded: int | None = None,
    memory: int | None = None,
    max_in_flight: int = 32,
    poll: float = 1.0,
) -> None:
    """Serve ``models`` (default: every registered model at ``champion``) until SIGTERM or
    SIGINT; see the module's docstring."""
    import uvicorn

    from quarry.jobs import JobStore
    from quarry.serve._app import create_app
    from quarry.serve._watch import AliasWatcher

    if not poll > 0:
        raise UsageError(f"--poll {poll}: give a number of seconds above 0, e.g. 1")
    data, warning = _data_store(store)
    catalog = Catalog(models, max_loaded=max_loaded, memory=memory)
    catalog.start()
    _log_to_stderr()  # (after the checks: a refused start is one line from the command)
    if warning:
        _log.warning("%s", warning)
    jobs = JobStore(db)
    watcher = AliasWatcher(catalog, every=poll)
    app = create_app(catalog, jobs=jobs, store=data, max_in_flight=max_in_flight,
                     watcher=watcher)  # fmt: skip
    api = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    api_thread = threading.Thread(target=api.run, name="serve-api")
    stopping = threading.Event()
    signalled: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signalled.append(signal.Signals(signum).name)
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    began = time.monotonic()
    try:
        watcher.start()
        api_thread.start()
        while not api.started and api_thread.is_alive():
            time.sleep(0.05)
        if not api.started:  # it could not listen (the port is taken ...)
            raise UsageError(f"--port {port}: cannot listen on {host}:{port}; is another "
                             "server using it? Give another --port")  # fmt: skip
        served = ", ".join(
            f"{s.ref}=v{s.version}" for s in map(catalog.served, catalog.names()) if s
        )
        _log.info("serving on http://%s:%d (pid %d): %s", host, port, os.getpid(), served)
        while not stopping.wait(0.5) and api_thread.is_alive():
            pass
    finally:
        api.should_exit = True
        if api_thread.is_alive():
            api_thread.join()
        watcher.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        jobs.close()
    by = f" by {signalled[0]}" if signalled else ""
    _log.info("stopped%s after %.0f s", by, time.monotonic() - began)
