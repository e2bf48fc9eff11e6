"""Execution backends: where an attempt's process runs. One small interface, a registry by
name; the local backend here and the Ray backend (``_ray``), both running the same manifests.

The local backend runs one subprocess per attempt, in its own process group, with its
output in a log file. Its CPU count is honoured by pinning it to that many cores and telling
the usual thread pools (OpenMP, BLAS, numba, Polars) as much; its memory limit by cgroup v2
where the worker's cgroup delegates the memory controller (``_cgroup``), else by watching
the resident memory of its whole process tree and killing the tree past the limit.

Every end is classified: ``succeeded``; ``failed`` with the exit code; ``oom_killed`` with the
peak memory; ``timed_out``; ``cancelled``; or ``lost`` when the process died of a signal
nobody here sent (a ``kill -9``, the kernel's OOM killer, a dying node).

An attempt does not inherit the worker's environment (its AWS keys, its database URL): it
gets the variables named in ``pass_env`` that the worker has (``DEFAULT_PASS_ENV`` unless the
server is told otherwise), the thread-pool sizes, ``QUARRY_JOB_ID`` and ``QUARRY_JOB_OUT``
(its own output folder), its manifest's ``env``, and its project's variables (only its own
project's), which win: a job cannot shadow its project's credentials (the store refuses such
a manifest at submit; a variable set after the job was queued still wins at its start).
``attempt_environment`` builds it for every backend.

A backend whose attempts outlive the worker (``detachable``: Ray's jobs run on the cluster,
not under the server) is not stopped when its worker stops; the next worker ``adopt``s what
is still running, and the watchdog asks it (``reconcile``) how a stale attempt really ended.
Its workers' names start with ``worker_prefix`` (which cluster their attempts run on).
"""

from __future__ import annotations

import abc
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from quarry.jobs._cgroup import CgroupV2
from quarry.jobs._manifest import Manifest, readable_memory

__all__ = [
    "BACKENDS",
    "DEFAULT_PASS_ENV",
    "THREAD_VARS",
    "Backend",
    "Ended",
    "Launch",
    "LocalBackend",
    "attempt_environment",
    "backend",
]

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS", "POLARS_MAX_THREADS")  # fmt: skip
# What an attempt gets from the worker's environment unless the server says otherwise: what
# a program needs to run and to find Quarry's state, no credentials.
DEFAULT_PASS_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR",
                    "VIRTUAL_ENV", "QUARRY_HOME", "QUARRY_TRACKING_URI")  # fmt: skip


@dataclass(frozen=True)
class Launch:
    """One attempt to start: its job and manifest, its memory limit in bytes (grown after an
    OOM), where its output goes (``log``) and its files (``out``), its cores (the backend's
    choice when None), its project's variables (``project_env``, kept out of ``repr``) and
    when it was admitted (``started_at``, UTC; part of its name on a remote backend)."""

    job_id: int
    attempt_id: int
    manifest: Manifest
    memory: int
    log: Path
    out: Path
    cores: frozenset[int] | None = None
    project_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    started_at: datetime | None = None


@dataclass(frozen=True)
class Ended:
    outcome: str
    reason: str | None = None
    exit_code: int | None = None
    peak_memory: int | None = None


@dataclass
class Handle:
    """A running attempt as its backend knows it (``pid`` None: not a process of this
    machine)."""

    attempt_id: int
    pid: int | None
    memory_limit: int
    deadline: float | None
    process: Any = None
    peak: int = 0
    stopping: str | None = None  # why we are stopping it: oom_killed, timed_out, cancelled
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    """Start, watch and stop attempts."""

    name: ClassVar[str]
    # Whether its attempts go on running when their worker stops (adopted by the next one).
    detachable: ClassVar[bool] = False
    # How the names of its workers begin: which cluster their attempts run on.
    worker_prefix: str = ""

    @abc.abstractmethod
    def start(self, launch: Launch) -> Handle:
        """Start the attempt's process as ``launch`` says."""

    @abc.abstractmethod
    def poll(self, handle: Handle) -> Ended | None:
        """How the attempt ended, or None while it runs (enforcing its limits meanwhile)."""

    @abc.abstractmethod
    def stop(self, handle: Handle, why: str) -> None:
        """Stop the attempt; the next ``poll`` reports ``why`` as its outcome."""

    def owns(self, worker: str) -> bool:
        """Whether attempts of the worker named ``worker`` run where this backend can see
        them (adopt, reconcile); never for a backend whose attempts die with their worker."""
        return self.detachable and worker.startswith(self.worker_prefix)

    def adopt(self, launch: Launch) -> Handle | None:
        """A detachable backend: the handle of an attempt another worker started, or None
        when it never reached the backend."""
        raise NotImplementedError(f"the {self.name} backend's attempts end with their worker")

    def reconcile(self, launch: Launch) -> Ended | Literal["absent", "stopping"]:
        """A detachable backend: how an attempt nobody watches ended. One still running is
        stopped first (``"stopping"`` until it has ended), so that its retry never runs
        beside it; ``"absent"`` when it never reached the backend."""
        raise NotImplementedError(f"the {self.name} backend's attempts end with their worker")


def attempt_environment(launch: Launch, pass_env: Sequence[str]) -> dict[str, str]:
    """The attempt's variables: those of ``pass_env`` this process has, the thread-pool sizes,
    the manifest's ``env``, the job's id and folder, then its project's variables."""
    count = max(1, math.ceil(launch.manifest.resources.cpus))
    passed = {k: os.environ[k] for k in pass_env if k in os.environ}
    job = {"QUARRY_JOB_ID": str(launch.job_id), "QUARRY_JOB_OUT": str(launch.out)}
    threads = {name: str(count) for name in THREAD_VARS}
    # the job's own id and folder last but for its project's: a manifest cannot move them
    return {**passed, **threads, **launch.manifest.env, **job, **launch.project_env}


def _command(manifest: Manifest, out: Path, python: str = sys.executable) -> list[str]:
    run = manifest.run
    if run.command:
        return list(run.command)
    assert run.workflow is not None  # the manifest has one or the other
    # A workflow runs through the same CLI a person would use, into the job's own folder.
    return [python, "-m", "quarry.cli", "run", run.workflow, "--out", str(out)]


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the worker that started it dies: a requeued
    job must not also go on running in an orphan."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and every descendant (from /proc; 0 once gone)."""
    total, stack, seen = 0, [pid], set()
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError, IndexError):
            continue
    return total


class LocalBackend(Backend):
    """Subprocesses on this machine; memory limited by cgroup v2 where the worker's cgroup
    allows it (``cgroup``, default found at start), else by watching resident memory."""

    name = "local"

    def __init__(
        self, cgroup: CgroupV2 | bool | None = True, *, pass_env: Sequence[str] = DEFAULT_PASS_ENV
    ) -> None:
        self.cgroup = CgroupV2.find() if cgroup is True else (cgroup or None)
        self.pass_env = tuple(pass_env)

    def environment(self, launch: Launch) -> dict[str, str]:
        """The attempt's variables (``attempt_environment``)."""
        return attempt_environment(launch, self.pass_env)

    def start(self, launch: Launch) -> Handle:
        attempt_id, manifest, memory, log = (launch.attempt_id, launch.manifest, launch.memory,
                                             launch.log)  # fmt: skip
        count = max(1, math.ceil(manifest.resources.cpus))
        env = self.environment(launch)
        pinned = set(launch.cores or sorted(os.sched_getaffinity(0))[:count])
        # The cgroup first: a failure leaves no process behind.
        group = None
        if self.cgroup is not None:
            group = self.cgroup.create(f"quarry-attempt-{attempt_id}", memory)
        log.parent.mkdir(parents=True, exist_ok=True)
        launch.out.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")  # handed to the child; closed by poll
        workdir = manifest.run.workdir
        command = _command(manifest, launch.out)
        # No Python runs in the child (a preexec function made every start wait ~8 ms on a
        # fork of this process): its own process group from subprocess, its death with the
        # worker from util-linux's setpriv where there is one, its cores set from here.
        setpriv = shutil.which("setpriv")
        try:
            # the command is what the job's owner asked to run, as a list (no shell)
            process = subprocess.Popen(  # noqa: S603
                [setpriv, "--pdeathsig", "KILL", "--", *command] if setpriv else command,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=workdir or None, env=env, process_group=0,
                preexec_fn=None if setpriv else _die_with_parent,
            )  # fmt: skip
        except (OSError, ValueError):  # ValueError: a NUL in an argument or a variable
            out.close()
            if group is not None:
                CgroupV2.remove(group)
            raise
        if group is not None:
            try:
                CgroupV2.add(group, process.pid)
            except OSError:  # not limited as asked: stop it rather than run it unbounded
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                out.close()
                CgroupV2.remove(group)
                raise
        with contextlib.suppress(OSError):  # already gone: poll reports how it ended
            os.sched_setaffinity(process.pid, pinned)
        timeout = manifest.timeout
        deadline = time.monotonic() + timeout if timeout else None
        handle = Handle(attempt_id, process.pid, memory, deadline, process)
        handle.extra["log"] = out
        if group is not None:
            handle.extra["cgroup"] = group
        return handle

    def poll(self, handle: Handle) -> Ended | None:
        process: subprocess.Popen[bytes] = handle.process
        code = process.poll()
        group: Path | None = handle.extra.get("cgroup")
        if code is None:
            rss = CgroupV2.usage(group) if group else _tree_rss(process.pid)
            handle.peak = max(handle.peak, rss)
            if group is None and rss > handle.memory_limit and handle.stopping is None:
                self.stop(handle, "oom_killed")
            elif handle.deadline is not None and time.monotonic() > handle.deadline:
                if handle.stopping is None:
                    self.stop(handle, "timed_out")
            return None
        handle.extra["log"].close()
        if group is not None:
            handle.peak = max(handle.peak, CgroupV2.usage(group))
            if CgroupV2.oom_killed(group) and handle.stopping is None:
                handle.stopping = "oom_killed"  # the kernel enforced the limit
            CgroupV2.remove(group)
        peak = handle.peak or None
        if handle.stopping == "oom_killed":
            return Ended("oom_killed", f"resident memory {readable_memory(handle.peak)} passed "
                         f"the limit of {readable_memory(handle.memory_limit)}", code,
                         peak)  # fmt: skip
        if code == 0 and handle.stopping == "cancelled":
            # it exited by itself before the stop reached it: it finished
            return Ended("succeeded", None, 0, peak)
        if handle.stopping in ("timed_out", "cancelled"):
            return Ended(handle.stopping, None, code, peak)
        if code == 0:
            return Ended("succeeded", None, 0, peak)
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:  # a real-time signal has no name
                name = f"signal {-code}"
            return Ended("lost", f"the process died of {name}", code, peak)
        return Ended("failed", f"exit code {code}", code, peak)

    def stop(self, handle: Handle, why: str) -> None:
        handle.stopping = handle.stopping or why
        try:
            os.killpg(handle.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


BACKENDS: dict[str, type[Backend]] = {LocalBackend.name: LocalBackend}


def backend(name: str) -> Backend:
    """A backend by its registry name."""
    from quarry.exceptions import UsageError

    if name not in BACKENDS:
        raise UsageError(f"--backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name]()
