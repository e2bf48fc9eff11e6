"""The Ray backend: each attempt is a Ray job, submitted to the cluster's job API (the
dashboard's address, ``http://HEAD:8265``), with Ray's own ``JobSubmissionClient``.

- **Once only.** An attempt is the Ray job ``quarry-attempt-<attempt id>-<admission time in
  microseconds>``. Ray refuses a second job of the same id, so an attempt submitted again
  (after an answer that was lost, by an adopting worker) never runs twice. The time keeps
  the ids of two job databases on one cluster apart (a fresh database counts from 1 again).
- **Placement.** ``cpus``, ``gpus`` and ``memory`` become ``entrypoint_num_cpus``,
  ``entrypoint_num_gpus`` and ``entrypoint_memory``; a label ``ray.io/...`` selects nodes by
  label (``entrypoint_label_selector``), ``resource/NAME: N`` asks for N of a custom
  resource; every other label is metadata of the Ray job only.
- **Limits.** Ray's ``entrypoint_memory`` places a job and limits nothing: the command runs
  under the guard (``python -m quarry.jobs._guard``), which kills its process tree past the
  attempt's memory, and with only the attempt's declared environment (as a local attempt).
  The guard also ends an attempt past its timeout, counted from the command's start (not
  from the time Ray took to place it) and kept across server restarts; the backend stops
  the Ray job itself should the guard not have ended it a few seconds later.
- **Endings.** SUCCEEDED: succeeded. FAILED with an exit code: failed; with the guard's OOM
  line: oom_killed; the command died of a signal, Ray's supervisor or node died: lost (Ray's
  message in one line); killed by Ray's memory monitor: oom_killed; Ray could not set it up
  or place it: failed. STOPPED by Quarry: timed_out or cancelled; by someone else: lost.
- **Logs.** Ray keeps the job's output; the backend copies what is new into the attempt's
  log file (``quarry jobs logs -f`` reads it) at most every ``log_every`` seconds and once
  more at the end, leaving out Ray's own preamble and the guard's bookkeeping line.
- **Few requests.** Statuses are cached for ``refresh`` seconds; with ``list_from`` attempts
  or more running, one ``list_jobs`` answers for all of them.
- **Restarts.** Ray's jobs do not depend on the server, so the backend is ``detachable``: a
  stopping worker leaves them running and the next one adopts them (``adopt``); its workers'
  names begin ``ray@<address>/``, which tells whose attempts they are.

``python`` (default: this interpreter's path, the same on every node of Quarry's one image)
runs the guard and a workflow's ``quarry run`` on the nodes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import signal
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from quarry.exceptions import UsageError
from quarry.jobs._backends import (
    BACKENDS,
    DEFAULT_PASS_ENV,
    Backend,
    Ended,
    Handle,
    Launch,
    _command,
    attempt_environment,
)
from quarry.jobs._manifest import Manifest

__all__ = ["ADDRESS_VARS", "RayBackend", "cluster_resources", "placement", "submission_id"]

_log = logging.getLogger("quarry.jobs")

# Where the address comes from when --ray-address is not given, in this order.
ADDRESS_VARS = ("QUARRY_RAY_ADDRESS", "RAY_ADDRESS")
_PREFIX = "quarry-attempt-"
_BACKSTOP = 10.0  # seconds past its timeout after which the backend stops a job itself
_STOP_WAIT = 15.0  # seconds the watchdog waits for a job Ray is stopping (Ray's own grace: 3)
_RAY_OOM = re.compile(r"out of memory|outofmemory|memory monitor|\bOOM\b", re.IGNORECASE)
# Ray's failures that no retry on the same cluster would cure: the job cannot run there.
_CANNOT_RUN = (
    "RUNTIME_ENV_SETUP_FAILURE",
    "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE",
    "JOB_SUPERVISOR_ACTOR_START_TIMEOUT",
    "JOB_ENTRYPOINT_COMMAND_START_ERROR",
)


def _one_line(text: str | None, limit: int = 200) -> str:
    line = next((x.strip() for x in (text or "").splitlines() if x.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _ray_error(exc: BaseException) -> str:
    """A failed request's reason in one line: Ray's SDK gives the server's whole traceback,
    whose last line says what was wrong."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip() not in ("", ".")]
    return _one_line(lines[-1] if lines else type(exc).__name__)


def _status_code(exc: BaseException) -> int | None:
    """The HTTP status of a failed request to Ray's job API (its SDK raises RuntimeError):
    the innermost, as the head wraps its node agent's 400 in a 500 of its own."""
    found = re.findall(r"status code (\d{3})", str(exc))
    return int(found[-1]) if found else None


def ray_address(address: str | None) -> str:
    """The job API's URL: ``address``, else the first of ``ADDRESS_VARS`` that is set."""
    where = "--ray-address"
    if not address:
        for var in ADDRESS_VARS:
            if os.environ.get(var):
                address, where = os.environ[var], f"--ray-address (from ${var})"
                break
    if not address:
        raise UsageError("--ray-address: give the Ray dashboard's URL, e.g. "
                         "http://127.0.0.1:8265 (or set QUARRY_RAY_ADDRESS)")  # fmt: skip
    if not address.startswith(("http://", "https://")):
        raise UsageError(f"{where} {address}: give the URL of the Ray dashboard, where its job "
                         "API answers, e.g. http://HEAD:8265 (not the cluster's GCS "
                         "address)")  # fmt: skip
    return address.rstrip("/")


def cluster_resources(address: str, timeout: float = 10.0) -> dict[str, float]:
    """The total resources of the cluster's live nodes (``CPU``, ``memory`` in bytes,
    ``GPU``, custom ones), from the dashboard's REST API: no Ray driver is started."""
    url = f"{address}/nodes?view=summary"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - http(s) only
            nodes = json.load(r)["data"]["summary"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--ray-address {address}: cannot read the cluster's nodes "
                         f"({_one_line(str(exc)) or type(exc).__name__}); check the "
                         "address and that the cluster is up") from None  # fmt: skip
    total: dict[str, float] = {}
    for node in nodes:
        raylet = node.get("raylet", {})
        if raylet.get("state") != "ALIVE":
            continue
        for name, amount in raylet.get("resourcesTotal", {}).items():
            total[name] = total.get(name, 0.0) + float(amount)
    return total


def submission_id(launch: Launch) -> str:
    """The Ray job of ``launch``'s attempt: ``quarry-attempt-<id>-<admitted, in us>``."""
    if launch.started_at is None:
        return f"{_PREFIX}{launch.attempt_id}"
    micros = (_utc(launch.started_at) - _EPOCH) // timedelta(microseconds=1)
    return f"{_PREFIX}{launch.attempt_id}-{micros}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(at: datetime) -> datetime:
    """``at`` in UTC; a naive time (SQLite gives them back) is UTC already."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def placement(manifest: Manifest) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """The manifest's labels for Ray: the label selector (``ray.io/...`` labels), custom
    resources (``resource/NAME: N``) and metadata (the other labels, the job's name and
    project). A resource label whose value is not a positive number is a ``ValueError``."""
    selector: dict[str, str] = {}
    resources: dict[str, float] = {}
    metadata = {"quarry.job": manifest.name, "quarry.project": manifest.project}
    for key, value in manifest.labels.items():
        if key.startswith("ray.io/"):
            selector[key] = value
        elif key.startswith("resource/"):
            name = key.removeprefix("resource/")
            try:
                amount = float(value)
            except ValueError:
                amount = math.nan
            if not name or not math.isfinite(amount) or amount <= 0:
                raise ValueError(f"labels.{key}: {value!r} is not a positive number of Ray's "
                                 f"resource {name!r}; give e.g. '1'")  # fmt: skip
            resources[name] = amount
        else:
            metadata.setdefault(key, value)
    return selector, resources, metadata


@dataclass(frozen=True)
class _RayJob:
    """What Ray says of one job."""

    status: str  # PENDING RUNNING STOPPED SUCCEEDED FAILED
    message: str
    error_type: str | None
    exit_code: int | None
    entrypoint: str
    node: str | None

    @property
    def terminal(self) -> bool:
        return self.status in ("STOPPED", "SUCCEEDED", "FAILED")

    @classmethod
    def of(cls, info: Any) -> _RayJob:
        status = getattr(info.status, "value", info.status)
        error = getattr(info.error_type, "value", info.error_type)
        return cls(str(status), info.message or "", str(error) if error else None,
                   info.driver_exit_code, info.entrypoint or "",
                   getattr(info, "driver_node_id", None))  # fmt: skip


def _client(address: str, timeout: float) -> Any:
    """Ray's job client for ``address``, whose requests give up after ``timeout`` seconds
    (Ray's own wait for ever: one hung dashboard would hang every worker)."""
    try:
        import ray
        from ray.dashboard.modules.dashboard_sdk import SubmissionClient
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise UsageError(
            "--backend ray needs Ray, which is not installed: pip install 'quarry[ray]'"
        ) from None

    class Client(JobSubmissionClient):
        def __init__(self, url: str) -> None:
            # Not JobSubmissionClient's own: it would take $RAY_ADDRESS over the address it
            # is given (as ray.init does), and the server was told which cluster to use.
            SubmissionClient.__init__(self, address=url)
            self._client_ray_version = ray.__version__
            self._check_connection_and_version(min_version="2.8")  # entrypoint_memory

        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout)
            return super()._do_request(method, endpoint, **kwargs)

    try:
        return Client(address)
    except (OSError, RuntimeError, ValueError) as exc:
        raise UsageError(f"--ray-address {address}: cannot reach Ray's job API "
                         f"({_one_line(str(exc))}); check the address (the dashboard's, e.g. "
                         "http://HEAD:8265) and that the cluster is up") from None  # fmt: skip


class RayBackend(Backend):
    """Attempts as Ray jobs on the cluster whose dashboard is at ``address`` (default
    ``$QUARRY_RAY_ADDRESS``, else ``$RAY_ADDRESS``); see the module docstring.

    Examples
    --------
    >>> runner = RayBackend("http://127.0.0.1:8265")  # doctest: +SKIP
    >>> Worker(store, logs, runner=runner, cpus=8, memory=32 << 30)  # doctest: +SKIP
    """

    name = "ray"
    detachable = True

    def __init__(
        self,
        address: str | None = None,
        *,
        pass_env: tuple[str, ...] | list[str] = DEFAULT_PASS_ENV,
        python: str | None = None,
        refresh: float = 0.5,
        log_every: float = 1.0,
        timeout: float = 30.0,
        list_from: int = 8,
    ) -> None:
        self.address = ray_address(address)
        self.pass_env = tuple(pass_env)
        self.python = python or sys.executable
        self.refresh = refresh
        self.log_every = log_every
        self.list_from = list_from
        self.worker_prefix = f"ray@{self.address}/"
        self.client = _client(self.address, timeout)
        self._lock = threading.Lock()  # one request for statuses at a time; others reuse it
        self._jobs: dict[str, tuple[float, _RayJob | None]] = {}  # by id: when asked, answer
        self._live: dict[str, float] = {}  # ids polled lately: when
        self._warned = 0.0

    def capacity(self) -> tuple[float, int, int]:
        """The CPUs, memory (bytes) and GPUs of the cluster's live nodes now: 0 for a
        cluster scaled to zero."""
        total = cluster_resources(self.address)
        return total.get("CPU", 0.0), int(total.get("memory", 0)), int(total.get("GPU", 0))

    # -- starting --------------------------------------------------------------------------

    def entrypoint(self, launch: Launch) -> str:
        """The shell command Ray runs: the guard around the attempt's command."""
        manifest = launch.manifest
        guard = [self.python, "-m", "quarry.jobs._guard", "--memory", str(launch.memory)]
        if manifest.timeout:
            guard += ["--timeout", f"{manifest.timeout:g}"]
        if manifest.run.workdir:
            guard += ["--workdir", manifest.run.workdir]
        argv = [*guard, "--", *_command(manifest, launch.out, self.python)]
        if any("\0" in a for a in argv):
            raise ValueError("embedded null byte")  # as a local attempt's start says
        # exec: the guard itself is the process Ray watches, signals and reports on
        return "exec " + shlex.join(argv)

    def start(self, launch: Launch) -> Handle:
        from quarry.jobs._guard import ENV_VAR, encode_env

        manifest, resources = launch.manifest, launch.manifest.resources
        selector, custom, metadata = placement(manifest)
        entrypoint = self.entrypoint(launch)
        env = attempt_environment(launch, self.pass_env)
        metadata |= {"quarry.job_id": str(launch.job_id), "quarry.attempt": str(launch.attempt_id)}
        request = {
            "entrypoint": entrypoint, "submission_id": submission_id(launch),
            "runtime_env": {"env_vars": {ENV_VAR: encode_env(env)}},
            "entrypoint_num_cpus": resources.cpus, "entrypoint_num_gpus": resources.gpus or None,
            "entrypoint_memory": launch.memory, "entrypoint_resources": custom or None,
            "entrypoint_label_selector": selector or None, "metadata": metadata,
        }  # fmt: skip
        launch.log.parent.mkdir(parents=True, exist_ok=True)
        launch.log.touch()
        handle = self._handle(launch, entrypoint, written=0)
        handle.extra["request"] = request
        handle.extra["unsure_since"] = time.monotonic()
        self._submit(handle)
        return handle

    def _handle(self, launch: Launch, entrypoint: str, written: int | None) -> Handle:
        """A handle whose deadline is set when it is first seen running: the backstop to
        the guard's own timeout."""
        handle = Handle(launch.attempt_id, None, launch.memory, None)
        handle.extra.update(id=submission_id(launch), log=launch.log, entrypoint=entrypoint,
                            written=written, next_log=0.0, request=None, stop_sent=False,
                            timeout=launch.manifest.timeout)  # fmt: skip
        return handle

    def _submit(self, handle: Handle) -> None:
        """Submit the handle's pending request. A refusal is a ``ValueError``; no answer (or
        a server error) leaves it pending: it may have reached Ray, so ``poll`` asks Ray and
        submits it again under the same id, which Ray refuses if it did."""
        try:
            self.client.submit_job(**handle.extra["request"])
        except RuntimeError as exc:
            code = _status_code(exc)
            if "already exists" not in str(exc) and (code is None or code < 500):
                raise ValueError(f"Ray refused the job: {_ray_error(exc)}") from None
            if "already exists" not in str(exc):
                self._warn(exc)
                return
        except OSError as exc:
            self._warn(exc)
            return
        handle.extra["request"] = None  # on Ray now, once

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned > 30:  # one line per half minute while Ray is away
            self._warned = now
            _log.warning("ray: the job API at %s did not answer: %s", self.address,
                         _one_line(str(exc)) or type(exc).__name__)  # fmt: skip

    # -- watching --------------------------------------------------------------------------

    def _status(self, job_id: str, *, fresh: bool = False) -> _RayJob | None:
        """What Ray says of ``job_id`` (None: it has no such job), at most ``refresh`` s old
        unless ``fresh``. An unreachable Ray raises ``OSError``."""
        with self._lock:
            now = time.monotonic()
            self._live[job_id] = now
            known = self._jobs.get(job_id)
            if not fresh and known is not None and now - known[0] < self.refresh:
                return known[1]
            recent = now - 10 * self.refresh - 5
            self._live = {k: t for k, t in self._live.items() if t > recent}
            self._jobs = {k: v for k, v in self._jobs.items() if k in self._live}
            try:
                if not fresh and len(self._live) >= self.list_from:
                    listed = {d.submission_id: d for d in self.client.list_jobs()}
                    at = time.monotonic()
                    for live in self._live:
                        found = listed.get(live)
                        self._jobs[live] = (at, _RayJob.of(found) if found else None)
                else:
                    info = self.client.get_job_info(job_id)
                    self._jobs[job_id] = (time.monotonic(), _RayJob.of(info))
            except RuntimeError as exc:  # an HTTP error: 404 is Ray's "no such job"
                if _status_code(exc) != 404:
                    raise OSError(str(exc)) from None
                self._jobs[job_id] = (time.monotonic(), None)
            return self._jobs[job_id][1]

    def poll(self, handle: Handle) -> Ended | None:
        now = time.monotonic()
        job_id = handle.extra["id"]
        if handle.extra["request"] is not None:
            return self._poll_unsent(handle, now)
        try:
            job = self._status(job_id)
            if job is None:  # asked once more, by itself, before it is given up
                job = self._status(job_id, fresh=True)
        except OSError as exc:  # Ray away for a moment: as far as we know, it runs
            self._warn(exc)
            return None
        if job is None:
            return Ended("lost", "Ray has no record of its job any more (was the cluster "
                         "restarted?)")  # fmt: skip
        if not job.terminal:
            self._mirror(handle, job, final=False)
            timeout = handle.extra["timeout"]
            if timeout and handle.deadline is None and job.status == "RUNNING":
                handle.deadline = now + timeout + _BACKSTOP
            if handle.stopping is None and handle.deadline is not None and now > handle.deadline:
                self.stop(handle, "timed_out")
            elif handle.stopping is not None and not handle.extra["stop_sent"]:
                self._send_stop(handle)
            return None
        return self._ending(handle, job, self._mirror(handle, job, final=True))

    def _poll_unsent(self, handle: Handle, now: float) -> Ended | None:
        """An attempt whose submission had no answer: whether Ray has it, else submit it
        again (the same id: never twice); lost after five minutes without Ray."""
        try:
            job = self._status(handle.extra["id"], fresh=True)
        except OSError as exc:
            self._warn(exc)
            if now - handle.extra["unsure_since"] > 300:
                return Ended("lost", f"Ray's job API at {self.address} did not answer for 5 "
                             f"minutes: {_one_line(str(exc))}")  # fmt: skip
            return None
        if job is not None:
            handle.extra["request"] = None
            return None
        if handle.stopping is not None:  # stopped before it ever reached Ray
            return Ended(handle.stopping)
        try:
            self._submit(handle)
        except ValueError as exc:
            return Ended("failed", f"cannot start: {exc}")
        return None

    def stop(self, handle: Handle, why: str) -> None:
        handle.stopping = handle.stopping or why
        if handle.extra["request"] is None:
            self._send_stop(handle)

    def _send_stop(self, handle: Handle) -> None:
        try:
            self.client.stop_job(handle.extra["id"])
        except RuntimeError:  # no such job, or it has ended: nothing to stop
            pass
        except OSError as exc:  # poll sends it again
            self._warn(exc)
            return
        handle.extra["stop_sent"] = True

    # -- logs and endings ------------------------------------------------------------------

    def _mirror(self, handle: Handle, job: _RayJob, *, final: bool) -> str:
        """Copy the new part of the job's output into the attempt's log file (while it runs,
        whole lines at most every ``log_every`` s); the output read (for the guard's lines),
        or "" when it could not be read."""
        now = time.monotonic()
        if not final and now < handle.extra["next_log"]:
            return ""
        try:
            raw = self.client.get_job_logs(handle.extra["id"])
        except (OSError, RuntimeError):
            handle.extra["next_log"] = now + self.log_every
            return ""
        took = time.monotonic() - now
        # a long log costs a long read: read it less often
        handle.extra["next_log"] = time.monotonic() + max(self.log_every, 20 * took)
        shown = _shown(str(raw), handle.extra["id"], job.entrypoint or handle.extra["entrypoint"],
                       final=final)  # fmt: skip
        log: Path = handle.extra["log"]
        written: int | None = handle.extra["written"]
        if written is None:  # adopted: what an earlier server copied stays if it matches
            before = log.read_text(errors="replace") if log.exists() else ""
            written = len(before) if shown.startswith(before) else -1
        if written < 0 or len(shown) < written:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(shown)
        elif len(shown) > written:
            with open(log, "a") as f:
                f.write(shown[written:])
        handle.extra["written"] = len(shown)
        return str(raw)

    def _ending(self, handle: Handle, job: _RayJob, raw: str) -> Ended:
        """How the attempt ended, from Ray's record and the guard's lines in its output
        (Ray's message holds the output's tail when it could not be read)."""
        from quarry.jobs._guard import MARK, OOM_EXIT, START_EXIT, TIMEOUT_EXIT

        text = _shown(raw or job.message, handle.extra["id"], job.entrypoint, final=True,
                      keep_ended=True)  # fmt: skip
        peaks = re.findall(rf"{MARK}ended peak=(\d+)", text)
        peak = (int(peaks[-1]) or None) if peaks else None
        code, stopping = job.exit_code, handle.stopping
        ooms = re.findall(rf"{MARK}oom_killed: ([^\n]*)", text)
        if code == OOM_EXIT and ooms:
            return Ended("oom_killed", ooms[-1], code, peak)
        if code == TIMEOUT_EXIT and f"{MARK}timed_out: " in text:
            return Ended("timed_out", None, code, peak)
        if job.status == "SUCCEEDED" and stopping == "cancelled":
            return Ended("succeeded", None, 0, peak)  # it ended before the stop reached it
        if stopping in ("timed_out", "cancelled"):
            return Ended(stopping, None, code, peak)
        if job.status == "SUCCEEDED":
            return Ended("succeeded", None, 0, peak)
        if stopping == "lost":
            return Ended("lost", "stopped: its attempt had been given up", code, peak)
        if job.status == "STOPPED":
            return Ended("lost", "its Ray job was stopped outside Quarry", code, peak)
        starts = re.findall(rf"{MARK}cannot_start: ([^\n]*)", text)
        if code == START_EXIT and starts:
            return Ended("failed", f"cannot start: {starts[-1]}", code, peak)
        if code is not None and code > 0:
            return Ended("failed", f"exit code {code}", code, peak)
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return Ended("lost", f"the process died of {name}", code, peak)
        message = _one_line(job.message) or f"Ray reported {job.error_type or job.status}"
        if _RAY_OOM.search(job.message):
            return Ended("oom_killed", f"Ray's memory monitor: {message}", code, peak)
        if job.error_type in _CANNOT_RUN:
            return Ended("failed", f"Ray could not run it: {message}", code, peak)
        return Ended("lost", message, code, peak)

    # -- restarts --------------------------------------------------------------------------

    def adopt(self, launch: Launch) -> Handle | None:
        job_id = submission_id(launch)
        job = self._status(job_id, fresh=True)
        if job is None:
            return None
        return self._handle(launch, job.entrypoint, written=None)

    def reconcile(self, launch: Launch) -> Ended | Literal["absent", "stopping"]:
        handle = self.adopt(launch)
        if handle is None:
            return "absent"
        job = self._status(handle.extra["id"], fresh=True)
        assert job is not None  # Ray forgets no job it just told of
        if job.terminal:
            return self._ending(handle, job, self._mirror(handle, job, final=True))
        handle.stopping = "lost"
        self._send_stop(handle)
        deadline = time.monotonic() + _STOP_WAIT
        while job is not None and not job.terminal and time.monotonic() < deadline:
            time.sleep(0.2)
            job = self._status(handle.extra["id"], fresh=True)
        if job is None or not job.terminal:
            return "stopping"
        ended = self._ending(handle, job, self._mirror(handle, job, final=True))
        return Ended("lost", "it was still running on Ray: stopped, so that its retry cannot "
                     "run beside it", ended.exit_code, ended.peak_memory)  # fmt: skip


def _shown(raw: str, job_id: str, entrypoint: str, *, final: bool, keep_ended: bool = False) -> str:
    """The job's own output in Ray's log: after Ray's preamble (all of it when the command
    never ran, which then says why), whole lines only while it runs, without the guard's
    ``ended`` line unless ``keep_ended``."""
    from quarry.jobs._guard import MARK

    preamble = f"Running entrypoint for job {job_id}: {entrypoint}\n"
    at = raw.find(preamble) if entrypoint else -1
    if at >= 0:
        body = raw[at + len(preamble) :]
    else:
        body = raw if final else ""
    if not final:
        body = body[: body.rfind("\n") + 1]
    if keep_ended:
        return body
    return re.sub(rf"{MARK}ended peak=\d+\n?", "", body)


BACKENDS[RayBackend.name] = RayBackend
