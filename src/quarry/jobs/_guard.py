"""The guard: what the worker does for a local attempt, done beside an attempt that runs where
no worker watches it (a Ray node).

``python -m quarry.jobs._guard --memory BYTES [--timeout SECONDS] [--workdir DIR] -- COMMAND...``
runs COMMAND as its child, in a process group of its own that dies with the guard, and:

- gives it only the attempt's declared environment (``QUARRY_GUARD_ENV``, base64 JSON, so
  that Ray's ``${VAR}`` expansion of ``runtime_env`` variables cannot touch a value), plus
  what Ray sets for a job's driver (``RAY_*``, the accelerators it was given); none of the
  node's own variables (a cluster's credentials);
- watches the resident memory of the child's whole process tree and kills the tree past
  BYTES: Ray's ``entrypoint_memory`` only places a job, it limits nothing. It then prints
  ``quarry-guard: oom_killed: ...`` and exits with ``OOM_EXIT``;
- kills the tree when it has run SECONDS, prints ``quarry-guard: timed_out: ...`` and exits
  with ``TIMEOUT_EXIT``: counted from the command's start, which the guard alone sees (not
  the time Ray took to place it), and kept across restarts of the server;
- forwards SIGTERM, SIGINT and SIGHUP to the child's group (Ray stops a job with SIGTERM);
- when the child ends, kills what is left of its group, prints ``quarry-guard: ended
  peak=BYTES`` (the peak resident memory, which the backend reads and leaves out of the log
  it shows) and ends as the child did: its exit code, or death by the same signal.

A command that cannot be started (a missing folder) prints ``quarry-guard: cannot_start:
...`` and exits with ``START_EXIT``. These exit codes are only believed with their line.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from quarry.jobs._backends import _die_with_parent, _tree_rss
from quarry.jobs._manifest import readable_memory

__all__ = ["ENV_VAR", "OOM_EXIT", "START_EXIT", "TIMEOUT_EXIT", "encode_env", "main"]

# Unusual codes; an ending is read as the guard's only when its line is in the log too.
START_EXIT = 212
OOM_EXIT = 213
TIMEOUT_EXIT = 214
ENV_VAR = "QUARRY_GUARD_ENV"
MARK = "quarry-guard: "
# What Ray sets for a job's driver, which the command keeps: its cluster address and job
# config (a job may use Ray itself), unbuffered output, the accelerators it was given.
_FROM_RAY = re.compile(r"RAY_\w*|PYTHONUNBUFFERED|\w+_VISIBLE_(DEVICES|CORES|CHIPS)")
_EVERY = 0.05  # seconds between two looks at the tree's memory


def encode_env(env: Mapping[str, str]) -> str:
    """``env`` as the guard reads it from ``QUARRY_GUARD_ENV``."""
    return base64.b64encode(json.dumps(dict(env)).encode()).decode()


def _environment(own: Mapping[str, str]) -> dict[str, str]:
    if ENV_VAR not in own:  # run by hand: the command gets the guard's environment
        return dict(own)
    declared: dict[str, str] = json.loads(base64.b64decode(own[ENV_VAR]))
    ray = {k: v for k, v in own.items() if _FROM_RAY.fullmatch(k)}
    return {**ray, **declared}


def _say(text: str) -> None:
    sys.stdout.write(f"{MARK}{text}\n")
    sys.stdout.flush()


def _end_as(code: int) -> int:
    """Die of the signal that ended the child (negative ``code``), else return ``code``."""
    if code >= 0:
        return code
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
    return 128 - code  # a signal that does not end a process by default


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(
        prog="python -m quarry.jobs._guard",
        description="Run COMMAND with a memory limit on its process tree.",
        usage="%(prog)s --memory BYTES [--timeout SECONDS] [--workdir DIR] -- COMMAND...",
    )
    parser.add_argument("--memory", type=int, required=True, help="The limit in bytes.")
    parser.add_argument("--timeout", type=float, help="Seconds it may run.")
    parser.add_argument("--workdir", help="The folder COMMAND runs in.")
    options = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        parser.error("give the command after --")
    return options, command


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command as the module docstring says; the exit code to end with."""
    options, command = _parse(sys.argv[1:] if argv is None else argv)
    limit: int = options.memory
    # Ray blocks SIGINT in its processes and a child inherits the mask: the command must not.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    env = _environment(os.environ)
    out = env.get("QUARRY_JOB_OUT")
    if out:  # the job's folder, on this node
        with contextlib.suppress(OSError):
            Path(out).mkdir(parents=True, exist_ok=True)
    setpriv = shutil.which("setpriv")
    try:
        # the command is what the job's owner asked to run, as a list (no shell)
        child = subprocess.Popen(  # noqa: S603
            [setpriv, "--pdeathsig", "KILL", "--", *command] if setpriv else command,
            cwd=options.workdir or None, env=env, stdin=subprocess.DEVNULL, process_group=0,
            preexec_fn=None if setpriv else _die_with_parent,
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        _say(f"cannot_start: {exc}")
        _say("ended peak=0")
        return START_EXIT

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    peak = 0
    deadline = time.monotonic() + options.timeout if options.timeout else math.inf
    while child.poll() is None:
        rss = _tree_rss(child.pid)
        peak = max(peak, rss)
        if rss > limit or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            if rss > limit:
                _say(f"oom_killed: resident memory {readable_memory(rss)} passed the limit of "
                     f"{readable_memory(limit)}")  # fmt: skip
            else:
                _say(f"timed_out: it ran longer than {options.timeout:g} s")
            _say(f"ended peak={peak}")
            return OOM_EXIT if rss > limit else TIMEOUT_EXIT
        time.sleep(_EVERY)
    with contextlib.suppress(ProcessLookupError):  # nothing of the attempt outlives it
        os.killpg(child.pid, signal.SIGKILL)
    _say(f"ended peak={peak}")
    return _end_as(child.returncode)


if __name__ == "__main__":
    sys.exit(main())
