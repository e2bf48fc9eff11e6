"""The watchdog: no job stays "running" without a live process behind it.

A worker sends heartbeats only for attempts whose process it has just seen alive. When an
attempt's heartbeat is older than ``stale_after`` seconds, its process or its worker died
(a SIGKILL, an OOM kill of the worker, a crashed server): the watchdog ends the attempt as
``lost`` with that reason, and the store retries the job per its policy (``on: [lost]`` by
default) or fails it. A broker cannot tell a killed consumer from a slow one; a heartbeat
with a deadline can.

An attempt on a detachable backend (Ray) may outlive its worker, so the watchdog asks that
backend first (through ``worker``, whose backend sees the attempt's cluster). One that ended
there is recorded as it really ended (succeeded, failed with its exit code ...). One still
running is stopped before it is ended as lost: its worker is gone, and no live worker adopted
it within ``stale_after`` (adoption comes well before), so left alone it would run unwatched,
and its retry could run beside it; stopping it is the one way no job runs twice. One that
never reached the backend is queued again without spending a retry. While Ray cannot be
asked, the attempt is left as it is for the next sweep.

A sweep that fails (the database away for a while) is logged and counted in ``health``; the
watchdog goes on sweeping.
"""

from __future__ import annotations

import logging
import threading

from quarry.jobs._backends import Ended
from quarry.jobs._loops import LoopHealth, run_loop
from quarry.jobs._store import JobStore, Unfinished
from quarry.jobs._worker import NEVER_SUBMITTED, Worker

__all__ = ["Watchdog"]

_log = logging.getLogger("quarry.jobs")


class Watchdog:
    """Ends attempts of ``store`` whose heartbeat is older than ``stale_after`` seconds,
    asking ``worker``'s backend first about those it can see (a detachable backend's)."""

    def __init__(
        self, store: JobStore, *, stale_after: float = 5.0, worker: Worker | None = None
    ) -> None:
        self.store = store
        self.stale_after = stale_after
        self.worker = worker
        self.health = LoopHealth("watchdog")

    def sweep(self) -> list[int]:
        """End every stale attempt as lost (or as its backend says it ended); their ids."""
        stale = self.store.stale(self.stale_after)
        runner = self.worker.runner if self.worker is not None else None
        seen: dict[int, Unfinished] = {}
        if stale and runner is not None and runner.detachable:
            seen = {a.attempt_id: a for a in self.store.unfinished(ids=stale)}
        ended = []
        for attempt_id in stale:
            attempt = seen.get(attempt_id)
            if runner is not None and attempt is not None and runner.owns(attempt.worker):
                if self._reconcile(attempt):
                    ended.append(attempt_id)
                continue
            status = self.store.finish(
                attempt_id, "lost",
                reason=f"no heartbeat for {self.stale_after:g} s: its process or worker died",
            )  # fmt: skip
            _log.warning("watchdog: attempt %d had no heartbeat for %g s: lost; its job is %s",
                         attempt_id, self.stale_after, status)  # fmt: skip
            ended.append(attempt_id)
        return ended

    def _reconcile(self, attempt: Unfinished) -> bool:
        """End a stale attempt as its backend says; whether it was ended now."""
        assert self.worker is not None
        try:
            found = self.worker.runner.reconcile(self.worker.relaunch(attempt))
        except OSError as exc:  # the backend away: the next sweep asks again
            _log.warning("watchdog: attempt %d had no heartbeat for %g s and the %s backend "
                         "cannot be asked now (%s); trying again", attempt.attempt_id,
                         self.stale_after, self.worker.runner.name, exc)  # fmt: skip
            return False
        if found == "stopping":
            return False
        if found == "absent":
            if self.store.requeue(attempt.attempt_id, NEVER_SUBMITTED):
                _log.warning("watchdog: job %d attempt %d %s", attempt.job_id, attempt.number,
                             NEVER_SUBMITTED)  # fmt: skip
            return True
        assert isinstance(found, Ended)
        reason = found.reason
        if found.outcome == "lost":
            reason = f"no heartbeat for {self.stale_after:g} s; {found.reason}"
        status = self.store.finish(attempt.attempt_id, found.outcome, reason=reason,
                                   exit_code=found.exit_code, peak_memory=found.peak_memory,
                                   max_memory=self.worker.memory)  # fmt: skip
        _log.warning("watchdog: job %d attempt %d had no heartbeat for %g s; its %s job %s%s; "
                     "the job is %s", attempt.job_id, attempt.number, self.stale_after,
                     self.worker.runner.name, found.outcome,
                     f" ({found.reason})" if found.reason else "", status)  # fmt: skip
        return True

    def run(self, stop: threading.Event, *, every: float = 1.0) -> None:
        """Sweep every ``every`` seconds until ``stop`` is set, surviving failed sweeps."""
        run_loop(self.health, self.sweep, stop, every=every, pause_after_error=every)
