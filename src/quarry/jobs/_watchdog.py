"""The watchdog: no job stays "running" without a live process behind it.

A worker sends heartbeats only for attempts whose process it has just seen alive. When an
attempt's heartbeat is older than ``stale_after`` seconds, its process or its worker died
(a SIGKILL, an OOM kill of the worker, a crashed server): the watchdog ends the attempt as
``lost`` with that reason, and the store retries the job per its policy (``on: [lost]`` by
default) or fails it. A broker cannot tell a killed consumer from a slow one; a heartbeat
with a deadline can.

A sweep that fails (the database away for a while) is logged and counted in ``health``; the
watchdog goes on sweeping.
"""

from __future__ import annotations

import logging
import threading

from quarry.jobs._loops import LoopHealth, run_loop
from quarry.jobs._store import JobStore

__all__ = ["Watchdog"]

_log = logging.getLogger("quarry.jobs")


class Watchdog:
    """Ends attempts of ``store`` whose heartbeat is older than ``stale_after`` seconds."""

    def __init__(self, store: JobStore, *, stale_after: float = 5.0) -> None:
        self.store = store
        self.stale_after = stale_after
        self.health = LoopHealth("watchdog")

    def sweep(self) -> list[int]:
        """End every stale attempt as lost; their ids."""
        ended = self.store.stale(self.stale_after)
        for attempt_id in ended:
            status = self.store.finish(
                attempt_id, "lost",
                reason=f"no heartbeat for {self.stale_after:g} s: its process or worker died",
            )  # fmt: skip
            _log.warning("watchdog: attempt %d had no heartbeat for %g s: lost; its job is %s",
                         attempt_id, self.stale_after, status)  # fmt: skip
        return ended

    def run(self, stop: threading.Event, *, every: float = 1.0) -> None:
        """Sweep every ``every`` seconds until ``stop`` is set, surviving failed sweeps."""
        run_loop(self.health, self.sweep, stop, every=every, pause_after_error=every)
