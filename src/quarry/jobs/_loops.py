"""Background loops that survive their errors and say how they are doing.

Every periodic loop of the service (each worker, the watchdog) runs its passes through
``run_loop``: a pass that raises is logged (one line with the error) and counted, and the loop
goes on after a pause; a pass that completes is recorded. ``LoopHealth`` is what /healthz and
/metrics show: when each loop last completed a pass, how many passes and errors it had, and
its last error.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["LoopHealth", "run_loop"]

_log = logging.getLogger("quarry.jobs")


@dataclass
class LoopHealth:
    """How one background loop is doing; updated by the loop, read by the API."""

    name: str
    every: float = 1.0  # seconds between passes
    passes: int = 0
    errors: int = 0
    last_pass: datetime | None = None  # when the last pass completed
    last_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def passed(self) -> None:
        with self._lock:
            self.passes += 1
            self.last_pass = datetime.now(UTC)

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0]

    def stale(self, grace: float = 30.0) -> bool:
        """Whether no pass completed within ``grace`` seconds plus the loop's period."""
        if self.last_pass is None:
            return False  # just started
        age = (datetime.now(UTC) - self.last_pass).total_seconds()
        return age > grace + self.every

    def view(self) -> dict[str, Any]:
        with self._lock:
            return {"passes": self.passes, "errors": self.errors,
                    "last_pass": self.last_pass.isoformat() if self.last_pass else None,
                    "last_error": self.last_error}  # fmt: skip


def run_loop(
    health: LoopHealth,
    one_pass: Callable[[], object],
    stop: threading.Event,
    *,
    every: float,
    pause_after_error: float = 1.0,
) -> None:
    """Call ``one_pass`` every ``every`` seconds until ``stop`` is set. An exception is logged
    and counted, never the end of the loop."""
    health.every = every
    while not stop.is_set():
        try:
            one_pass()
        except Exception as exc:  # a database away for a while must not end the loop
            health.failed(exc)
            _log.error("%s: a pass failed, trying again in %g s: %s", health.name,
                       pause_after_error, health.last_error)  # fmt: skip
            stop.wait(pause_after_error)
            continue
        health.passed()
        stop.wait(every)
