"""A worker: admits queued jobs that fit its free capacity, runs each attempt on a backend,
sends heartbeats for the attempts whose processes are alive, stops cancelled ones, and
records how each ended (which retries it per its policy). Each job gets a folder of its own,
``OUTPUTS/<job id>/out`` (``$QUARRY_JOB_OUT``; a workflow's ``--out``), and each ending is
logged in one line.

On a detachable backend (Ray), attempts outlive their worker: a stopping worker leaves them
running, and a worker adopts the unfinished attempts of its backend's cluster that no live
worker heartbeats (``adopt``: at the server's start, then every ``adopt_every`` seconds)."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from quarry.jobs._backends import Backend, Handle, Launch, backend
from quarry.jobs._loops import LoopHealth
from quarry.jobs._manifest import readable_memory
from quarry.jobs._store import Ending, JobStore, Unfinished

__all__ = ["Running", "Worker", "machine_memory"]

_log = logging.getLogger("quarry.jobs")
NEVER_SUBMITTED = ("it never reached the backend: its server stopped between admitting and "
                   "starting it; queued again without spending a retry")  # fmt: skip


def machine_memory() -> int:
    """Total memory in bytes (/proc/meminfo)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 8 << 30


class Worker:
    """Runs jobs from ``store`` within ``cpus``, ``memory`` (bytes) and ``gpus``, logs under
    ``logs``, each job's files under ``outputs`` (default: ``jobs`` beside ``logs``). Its
    name begins with its backend's ``worker_prefix``. On a detachable backend it adopts the
    attempts of that backend's cluster whose heartbeat is older than ``adopt_after`` seconds,
    but never those of ``peers`` (the workers of its own server, which are alive)."""

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
        gpus: int = 0,
        adopt_after: float = 3.0,
        adopt_every: float = 1.0,
    ) -> None:
        self.store = store
        self.logs = logs
        self.outputs = outputs or logs.parent / "jobs"
        self.runner = backend(runner) if isinstance(runner, str) else runner
        self.name = self.runner.worker_prefix + (name or f"{socket.gethostname()}:{os.getpid()}")
        self.cpus = float(cpus if cpus is not None else os.cpu_count() or 1)
        self.memory = int(memory if memory is not None else machine_memory())
        self.gpus = gpus
        self.heartbeat_every = heartbeat_every
        self.adopt_after = adopt_after
        self.adopt_every = adopt_every
        self.peers: set[str] = {self.name}  # live workers whose attempts are not adopted
        self._adopted_at = time.monotonic()  # the server adopts once before the first step
        self.running: dict[int, Running] = {}  # by attempt id
        self.cores = sorted(os.sched_getaffinity(0))
        self.core_use = dict.fromkeys(self.cores, 0)
        self._beat = 0.0
        self.health = LoopHealth(f"worker {self.name}")
        self.requeued: list[int] = []  # jobs put back when this worker stopped
        self.detached: list[int] = []  # jobs left running on the backend when it stopped

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

    def relaunch(self, attempt: Unfinished) -> Launch:
        """What started an unfinished attempt, as far as adopting or reconciling it needs."""
        return Launch(attempt.job_id, attempt.attempt_id, attempt.manifest, attempt.memory,
                      self.log_path(attempt.job_id, attempt.number),
                      self.output_dir(attempt.job_id), started_at=attempt.started_at)  # fmt: skip

    def adopt(self, *, older_than: float, certain: bool = False) -> tuple[list[int], list[int]]:
        """Take over the unfinished attempts of this backend's cluster that no live worker
        heartbeats (none for ``older_than`` seconds, none of ``peers``): the ones the backend
        still knows become this worker's (heartbeats resume, their endings are recorded
        here). One it never got was admitted by a server that died before starting it: it is
        queued again without spending a retry when ``certain`` that its worker is dead (one
        server per SQLite database, at its start), else left to the watchdog. The jobs
        adopted and the jobs queued again."""
        if not self.runner.detachable:
            return [], []
        adopted: list[int] = []
        requeued: list[int] = []
        orphans = self.store.unfinished(worker_prefix=self.runner.worker_prefix,
                                        older_than=older_than, exclude=self.peers)  # fmt: skip
        for attempt in orphans:
            handle = self.runner.adopt(self.relaunch(attempt))
            if handle is None:
                if certain and self.store.requeue(attempt.attempt_id, NEVER_SUBMITTED):
                    _log.warning("job %d attempt %d %s", attempt.job_id, attempt.number,
                                 NEVER_SUBMITTED)  # fmt: skip
                    requeued.append(attempt.job_id)
                continue
            if not self.store.take_over(attempt.attempt_id, self.name, attempt.worker):
                continue  # it ended, or another worker took it first
            ran = (datetime.now(UTC) - attempt.started_at).total_seconds()
            self.running[attempt.attempt_id] = Running(
                handle, attempt.job_id, attempt.number, attempt.cpus, attempt.memory, set(),
                time.monotonic() - ran, attempt.gpus,
            )  # fmt: skip
            adopted.append(attempt.job_id)
            _log.info("job %d attempt %d adopted from %s: it still runs on the %s backend",
                      attempt.job_id, attempt.number, attempt.worker,
                      self.runner.name)  # fmt: skip
        return adopted, requeued

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
        if self.runner.detachable and time.monotonic() - self._adopted_at >= self.adopt_every:
            self._adopted_at = time.monotonic()
            try:
                self.adopt(older_than=self.adopt_after)
            except OSError:  # the backend away (it says so itself): adopt when it is back
                pass
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
        free_gpus = self.gpus - sum(r.gpus for r in self.running.values())
        if free_cpus > 0 and free_memory > 0:
            pids: dict[int, int] = {}
            for claim in self.store.claim(self.name, cpus=free_cpus, memory=free_memory,
                                          gpus=max(free_gpus, 0), limit=64):  # fmt: skip
                log = self.log_path(claim.job_id, claim.number)
                cores = self._take_cores(claim.cpus)
                launch = Launch(claim.job_id, claim.attempt_id, claim.manifest, claim.memory, log,
                                self.output_dir(claim.job_id), frozenset(cores), claim.env,
                                claim.started_at)  # fmt: skip
                try:
                    handle = self.runner.start(launch)
                except (OSError, ValueError) as exc:  # no such command, a bad workdir, a NUL
                    # in an argument: the attempt failed, the worker goes on
                    for core in cores:
                        self.core_use[core] -= 1
                    self.store.finish(claim.attempt_id, "failed", reason=f"cannot start: {exc}")
                    continue
                if handle.pid is not None:
                    pids[claim.attempt_id] = handle.pid
                self.running[claim.attempt_id] = Running(handle, claim.job_id, claim.number,
                                                         claim.cpus, claim.memory, cores,
                                                         time.monotonic(), claim.gpus)  # fmt: skip
            self.store.started(pids)
        now = time.monotonic()
        if now - self._beat >= self.heartbeat_every:
            # only attempts whose process is alive; one the watchdog gave up on meanwhile
            # (this worker stalled) is stopped, as its job may already run elsewhere
            for attempt_id in self.store.heartbeat(list(self.running)):
                self.runner.stop(self.running[attempt_id].handle, "lost")
            if self.runner.detachable:
                # adopted by another worker while this one stalled: that one watches it now
                for attempt_id in self.store.taken_over(self.name, list(self.running)):
                    run = self.running[attempt_id]
                    _log.warning("job %d attempt %d: another worker took it over; leaving it "
                                 "to that one", run.job, run.number)  # fmt: skip
                    self._release(attempt_id)
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
        process may still be alive. On a detachable backend nothing is stopped: what still
        runs is left running, in the database too, for the next worker to adopt
        (``detached``)."""
        for attempt_id, run in list(self.running.items()):
            ended = self.runner.poll(run.handle)
            if ended is None and self.runner.detachable:
                self.detached.append(run.job)
                self._release(attempt_id)
                continue
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
    gpus: int = 0
