"""``quarry server start``: the API, the workers and the watchdog in one process.

The API serves requests on the main thread (uvicorn); each worker and the watchdog loop in
threads of their own. Everything lives in the database, so a server killed mid-run loses
nothing: on restart, the attempts it was running have no heartbeat any more, the watchdog
ends them as lost (their processes died with the server), and they run again per their
retry policy.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from quarry.jobs._api import create_app
from quarry.jobs._manifest import Resources
from quarry.jobs._store import JobStore
from quarry.jobs._watchdog import Watchdog
from quarry.jobs._worker import Worker, machine_memory

__all__ = ["serve"]


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
) -> None:
    """Run the service until interrupted. ``workers`` share this machine's ``cpus`` and
    ``memory`` equally (default all of them)."""
    import uvicorn

    from quarry.settings import quarry_home

    store = JobStore(db)
    logs = logs or quarry_home() / "job-logs"
    cpus = float(cpus if cpus is not None else os.cpu_count() or 1)
    memory = int(memory if memory is not None else machine_memory())
    share = Resources(cpus=cpus / workers, memory=max(memory // workers, 1))
    stop = threading.Event()
    node = f"{os.uname().nodename}:{os.getpid()}"
    pool = [Worker(store, logs, name=f"{node}:{k}", cpus=share.cpus, memory=share.memory)
            for k in range(workers)]  # fmt: skip
    threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in pool]
    watchdog = Watchdog(store, stale_after=stale_after)
    threads.append(threading.Thread(target=watchdog.run, args=(stop,), daemon=True))
    for thread in threads:
        thread.start()
    try:
        uvicorn.run(create_app(store, capacity=share, logs=logs), host=host, port=port,
                    log_level="warning")  # fmt: skip
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        store.close()
