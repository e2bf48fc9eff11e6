"""A worker: admits queued jobs that fit its free capacity, runs each attempt on a backend,
sends heartbeats for the attempts whose processes are alive, stops cancelled ones, and
records how each ended (which retries it per its policy). Each job gets a folder of its own,
``OUTPUTS/<job id>/out`` (``$QUARRY_JOB_OUT``; a workflow's ``--out``), and each ending is
logged in one line."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from quarry.jobs._backends import Backend, Handle, Launch, backend
from quarry.jobs._loops import LoopHealth
from quarry.jobs._manifest import readable_memory
from quarry.jobs._store import Ending, JobStore

__all__ = ["Running", "Worker", "machine_memory"]

_log = logging.getLogger("quarry.jobs")


def machine_memory() -> int:
    """Total memory in bytes (/proc/meminfo)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 8 << 30


class Worker:
    """Runs jobs from ``store`` within ``cpus`` and ``memory`` (bytes), logs under ``logs``,
    each job's files under ``outputs`` (default: ``jobs`` beside ``logs``)."""

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
        outputs: Path | None = None,
    ) -> None:
        self.store = store
        self.logs = logs
        self.outputs = outputs or logs.parent / "jobs"
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.cpus = float(cpus if cpus is not None else os.cpu_count() or 1)
        self.memory = int(memory if memory is not None else machine_memory())
        self.runner = backend(runner) if isinstance(runner, str) else runner
        self.heartbeat_every = heartbeat_every
        self.running: dict[int, Running] = {}  # by attempt id
        self.cores = sorted(os.sched_getaffinity(0))
        self.core_use = dict.fromkeys(self.cores, 0)
        self._beat = 0.0
        self.health = LoopHealth(f"worker {self.name}")
        self.requeued: list[int] = []  # jobs put back when this worker stopped

    def log_path(self, job_id: int, number: int) -> Path:
        return self.logs / f"job-{job_id}" / f"attempt-{number}.log"

    def output_dir(self, job_id: int) -> Path:
        """The job's own folder for its files, shared by its attempts only."""
        return self.outputs / str(job_id) / "out"

    @property
    def free(self) -> tuple[float, int]:
        """Free cpus and memory (bytes) now."""
        runs = list(self.running.values())
        return (self.cpus - sum(r.cpus for r in runs), self.memory - sum(r.memory for r in runs))

    def _take_cores(self, cpus: float) -> set[int]:
        """The least used ``ceil(cpus)`` cores: attempts side by side get cores of their own
        while there are enough."""
        count = min(max(1, math.ceil(cpus)), len(self.cores))
        chosen = sorted(self.cores, key=lambda c: (self.core_use[c], c))[:count]
        for core in chosen:
            self.core_use[core] += 1
        return set(chosen)

    def _release(self, attempt_id: int) -> None:
        for core in self.running.pop(attempt_id).cores:
            self.core_use[core] -= 1

    def step(self) -> int:
        """One round: finish what ended, stop what was cancelled, admit what fits; how many
        attempts are running afterwards."""
        endings: list[Ending] = []
        ended_runs: list[Running] = []
        for attempt_id, run in list(self.running.items()):
            ended = self.runner.poll(run.handle)
            if ended is not None:
                endings.append(Ending(attempt_id, ended.outcome, ended.reason, ended.exit_code,
                                      ended.peak_memory))  # fmt: skip
                ended_runs.append(run)
                self._release(attempt_id)
        statuses = self.store.finish_many(endings, max_memory=self.memory)  # one transaction
        now = time.monotonic()
        for e, run, status in zip(endings, ended_runs, statuses, strict=True):
            why = f" ({e.reason})" if e.reason else ""
            peak = f", peak {readable_memory(e.peak_memory)}" if e.peak_memory else ""
            then = "" if status == e.outcome else f"; job {status}"
            _log.info("job %d attempt %d %s%s after %.1f s%s%s", run.job, run.number, e.outcome,
                      why, now - run.started, peak, then)  # fmt: skip
        if self.running:
            cancelled = self.store.cancelled({run.job for run in self.running.values()})
            for run in self.running.values():
                if run.job in cancelled:
                    self.runner.stop(run.handle, "cancelled")
        free_cpus, free_memory = self.free
        if free_cpus > 0 and free_memory > 0:
            pids: dict[int, int] = {}
            for claim in self.store.claim(self.name, cpus=free_cpus, memory=free_memory,
                                          limit=64):  # fmt: skip
                log = self.log_path(claim.job_id, claim.number)
                cores = self._take_cores(claim.cpus)
                launch = Launch(claim.job_id, claim.attempt_id, claim.manifest, claim.memory, log,
                                self.output_dir(claim.job_id), frozenset(cores),
                                claim.env)  # fmt: skip
                try:
                    handle = self.runner.start(launch)
                except (OSError, ValueError) as exc:  # no such command, a bad workdir, a NUL
                    # in an argument: the attempt failed, the worker goes on
                    for core in cores:
                        self.core_use[core] -= 1
                    self.store.finish(claim.attempt_id, "failed", reason=f"cannot start: {exc}")
                    continue
                pids[claim.attempt_id] = handle.pid
                self.running[claim.attempt_id] = Running(handle, claim.job_id, claim.number,
                                                         claim.cpus, claim.memory, cores,
                                                         time.monotonic())  # fmt: skip
            self.store.started(pids)
        now = time.monotonic()
        if now - self._beat >= self.heartbeat_every:
            # only attempts whose process is alive; one the watchdog gave up on meanwhile
            # (this worker stalled) is stopped, as its job may already run elsewhere
            for attempt_id in self.store.heartbeat(list(self.running)):
                self.runner.stop(self.running[attempt_id].handle, "lost")
            self._beat = now
        return len(self.running)

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        until_idle: bool = False,
        every: float = 0.1,
        why_stopped: str | None = None,
    ) -> None:
        """Step until ``stop`` is set (or, ``until_idle``, until nothing runs or waits). A
        failing step (the database away for a moment) is logged, counted in ``health`` and
        tried again. On the way out, running attempts are stopped and their jobs queued again
        (``why_stopped`` is their reason), not counted as tries."""
        stop = stop or threading.Event()
        self.health.every = every
        try:
            while not stop.is_set():
                try:
                    busy = self.step()
                except Exception as exc:  # one bad round must not end a serving worker
                    if until_idle:
                        raise
                    self.health.failed(exc)
                    _log.error("%s: a step failed, trying again in 1 s: %s", self.health.name,
                               self.health.last_error)  # fmt: skip
                    stop.wait(1.0)
                    continue
                self.health.passed()
                if until_idle and busy == 0 and self.store.counts().get("queued", 0) == 0:
                    return
                stop.wait(every)
        finally:
            self.stop_all(why_stopped or f"worker {self.name} shut down")

    def stop_all(self, reason: str) -> None:
        """Stop every running attempt and queue its job again without spending a retry.

        An attempt that ended on its own first (its process exited before it was stopped)
        keeps that ending: requeueing it would run a finished job again. One that could not
        be reaped is left running in the database for the watchdog, never requeued while its
        process may still be alive."""
        for attempt_id, run in list(self.running.items()):
            ended = self.runner.poll(run.handle)
            if ended is None:
                self.runner.stop(run.handle, "cancelled")
                deadline = time.monotonic() + 5.0  # reaped, its log closed
                while (ended := self.runner.poll(run.handle)) is None:
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.02)
            try:
                if ended is None:
                    _log.error("job %d: attempt %d could not be stopped; the watchdog will "
                               "end it", run.job, run.number)  # fmt: skip
                elif ended.outcome != "cancelled":  # it ended by itself: that is its ending
                    self.store.finish_many([Ending(attempt_id, ended.outcome, ended.reason,
                                                   ended.exit_code, ended.peak_memory)],
                                           max_memory=self.memory)  # fmt: skip
                elif self.store.requeue(attempt_id, reason):
                    self.requeued.append(run.job)
            except Exception as exc:  # the database away: the watchdog will find it lost
                _log.error("job %d: could not be queued again: %s", run.job, exc)
            self._release(attempt_id)


@dataclass(frozen=True)
class Running:
    """An attempt this worker runs: its handle, job, resources and cores."""

    handle: Handle
    job: int
    number: int
    cpus: float
    memory: int
    cores: set[int]
    started: float  # time.monotonic() at its start
