"""A worker: admits queued jobs that fit its free capacity, runs each attempt on a backend,
sends heartbeats for the attempts whose processes are alive, stops cancelled ones, and
records how each ended (which retries it per its policy)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from quarry.jobs._backends import Backend, Handle, backend
from quarry.jobs._store import JobStore

__all__ = ["Worker", "machine_memory"]


def machine_memory() -> int:
    """Total memory in bytes (/proc/meminfo)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 8 << 30


class Worker:
    """Runs jobs from ``store`` within ``cpus`` and ``memory`` (bytes), logs under ``logs``."""

    def __init__(
        self,
        store: JobStore,
        logs: Path,
        *,
        name: str | None = None,
        cpus: float | None = None,
        memory: int | None = None,
        runner: Backend | str = "local",
        heartbeat_every: float = 1.0,
    ) -> None:
        self.store = store
        self.logs = logs
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.cpus = float(cpus if cpus is not None else os.cpu_count() or 1)
        self.memory = int(memory if memory is not None else machine_memory())
        self.runner = backend(runner) if isinstance(runner, str) else runner
        self.heartbeat_every = heartbeat_every
        self.running: dict[int, tuple[Handle, int, float, int]] = {}  # attempt -> handle, job,..
        self._beat = 0.0

    def log_path(self, job_id: int, number: int) -> Path:
        return self.logs / f"job-{job_id}" / f"attempt-{number}.log"

    def step(self) -> int:
        """One round: finish what ended, stop what was cancelled, admit what fits; how many
        attempts are running afterwards."""
        for attempt_id, (handle, _job, _cpus, _mem) in list(self.running.items()):
            ended = self.runner.poll(handle)
            if ended is not None:
                self.store.finish(
                    attempt_id, ended.outcome, reason=ended.reason, exit_code=ended.exit_code,
                    peak_memory=ended.peak_memory,
                )  # fmt: skip
                del self.running[attempt_id]
        if self.running:
            jobs = {job for _h, job, _c, _m in self.running.values()}
            cancelled = self.store.cancelled(jobs)
            for handle, job, _c, _m in self.running.values():
                if job in cancelled:
                    self.runner.stop(handle, "cancelled")
        free_cpus = self.cpus - sum(c for _h, _j, c, _m in self.running.values())
        free_memory = self.memory - sum(m for _h, _j, _c, m in self.running.values())
        if free_cpus > 0 and free_memory > 0:
            pids: dict[int, int] = {}
            for claim in self.store.claim(self.name, cpus=free_cpus, memory=free_memory,
                                          limit=64):  # fmt: skip
                log = self.log_path(claim.job_id, claim.number)
                try:
                    handle = self.runner.start(claim.attempt_id, claim.manifest, claim.memory, log)
                except OSError as exc:  # no such command, a bad workdir: the attempt failed
                    self.store.finish(claim.attempt_id, "failed", reason=f"cannot start: {exc}")
                    continue
                pids[claim.attempt_id] = handle.pid
                self.running[claim.attempt_id] = (handle, claim.job_id, claim.cpus, claim.memory)
            self.store.started(pids)
        now = time.monotonic()
        if now - self._beat >= self.heartbeat_every:
            self.store.heartbeat(list(self.running))  # only attempts whose process is alive
            self._beat = now
        return len(self.running)

    def run(
        self, stop: threading.Event | None = None, *, until_idle: bool = False, every: float = 0.1
    ) -> None:
        """Step until ``stop`` is set (or, ``until_idle``, until nothing runs or waits)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            busy = self.step()
            if until_idle and busy == 0 and self.store.counts().get("queued", 0) == 0:
                return
            stop.wait(every)
        for handle, _job, _c, _m in self.running.values():
            self.runner.stop(handle, "cancelled")
