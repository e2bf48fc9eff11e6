"""``quarry serve``: the served models' API and the alias watcher in one process.

The catalog is started first (every model's version found and loaded once, so a model that
cannot score is refused at the start, in one line), then the watcher, then the API (uvicorn)
in a thread of its own while the main thread waits for SIGTERM or SIGINT, as the job
service's server does (``quarry._listen``). The
server logs to stderr, a line each: its start with the models it serves, each switch to a
promoted version, each version unloaded, and its stop.

It reads the job service's database (``--db``, as ``quarry server start``) for tokens and to
queue training jobs; both can run in one process or two against the same database.
``build_models`` builds the API without running it: ``quarry server start --serve-models``
mounts it beside the job service's on one port, and runs the watcher with its workers.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quarry.exceptions import UsageError
from quarry.jobs import JobStore
from quarry.serve._catalog import Catalog, ModelRef
from quarry.serve._watch import AliasWatcher

__all__ = ["ModelService", "build_models", "serve_models"]

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


@dataclass
class ModelService:
    """The serving API built and its catalog started, not yet listening: ``quarry serve``
    runs it on a port of its own, ``quarry server start --serve-models`` mounts ``app``
    beside the job API and runs ``follow`` with its other background loops."""

    app: Any  # fastapi.FastAPI
    catalog: Catalog
    watcher: AliasWatcher
    jobs: JobStore  # tokens and training jobs; closed by ``close``

    def follow(self, stop: threading.Event) -> None:
        """Follow the aliases until ``stop`` is set (the watcher has a thread of its own)."""
        _log.info("serving under /v2 (pid %d): %s", os.getpid(), self.served())
        self.watcher.start()
        try:
            stop.wait()
        finally:
            self.watcher.stop()

    def served(self) -> str:
        """What is served, for the start's log line: ``name@alias=vN, ...``."""
        return ", ".join(
            f"{s.ref}=v{s.version}" for s in map(self.catalog.served, self.catalog.names()) if s
        )

    def close(self) -> None:
        self.jobs.close()


def build_models(
    *,
    models: Sequence[ModelRef] | None = None,
    store: str | Path | None = None,
    db: str | None = None,
    max_loaded: int | None = None,
    memory: int | None = None,
    max_in_flight: int = 32,
    poll: float = 1.0,
) -> ModelService:
    """Check the settings, load every served model's version (a model that cannot score is
    refused here, in one line) and build the API; nothing listens and no thread runs yet.
    Logs a warning when predictions by date are refused for want of a store."""
    from quarry.serve._app import create_app

    if not poll > 0:
        raise UsageError(f"--poll {poll}: give a number of seconds above 0, e.g. 1")
    if max_in_flight < 1:
        raise UsageError(f"--max-in-flight {max_in_flight}: give 1 or more")
    data, warning = _data_store(store)
    catalog = Catalog(models, max_loaded=max_loaded, memory=memory)
    catalog.start()
    _log_to_stderr()  # (after the checks: a refused start is one line from the command)
    if warning:
        _log.warning("%s", warning)
    jobs = JobStore(db)
    watcher = AliasWatcher(catalog, every=poll)
    try:
        app = create_app(catalog, jobs=jobs, store=data, max_in_flight=max_in_flight,
                         watcher=watcher)  # fmt: skip
    except BaseException:
        jobs.close()
        raise
    return ModelService(app, catalog, watcher, jobs)


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
    from quarry._listen import listening

    service = build_models(models=models, store=store, db=db, max_loaded=max_loaded,
                           memory=memory, max_in_flight=max_in_flight, poll=poll)  # fmt: skip

    def finish() -> None:
        service.watcher.stop()
        service.close()

    service.watcher.start()
    with listening(service.app, host=host, port=port, name="serve-api", then=finish) as server:
        _log.info("serving on http://%s:%d (pid %d): %s", host, port, os.getpid(),
                  service.served())  # fmt: skip
        server.wait()
    _log.info("stopped%s after %.0f s", server.by, server.seconds)
