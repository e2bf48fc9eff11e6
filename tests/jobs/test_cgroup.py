"""The cgroup v2 memory limit's file protocol, on a cgroup tree laid out in a folder: this
machine has cgroup v1 (no v2 memory controller), so the kernel's enforcement itself cannot
run here; what Quarry writes and reads can."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from quarry.jobs import manifest_from_dict
from quarry.jobs._backends import Launch, LocalBackend
from quarry.jobs._cgroup import CgroupV2


def _tree(tmp_path: Path, controllers: str = "cpu memory pids") -> tuple[Path, Path]:
    mount = tmp_path / "cgroup"
    own = mount / "workers" / "w1"
    own.mkdir(parents=True)
    (mount / "cgroup.controllers").write_text(controllers)
    (own / "cgroup.controllers").write_text(controllers)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/workers/w1\n")
    return mount, proc


def test_find_needs_a_v2_cgroup_with_the_memory_controller(tmp_path: Path) -> None:
    mount, proc = _tree(tmp_path)
    found = CgroupV2.find(mount, proc)
    assert found is not None and found.base == mount / "workers" / "w1"
    mount2, proc2 = _tree(tmp_path / "b", controllers="cpu pids")
    assert CgroupV2.find(mount2, proc2) is None
    v1 = tmp_path / "v1"
    v1.write_text("4:memory:/x\n1:cpu:/\n")  # no unified line
    assert CgroupV2.find(mount, v1) is None


def test_the_backend_limits_and_reads_an_attempts_cgroup(tmp_path: Path) -> None:
    mount, proc = _tree(tmp_path)
    group = CgroupV2.find(mount, proc)
    assert group is not None
    runner = LocalBackend(cgroup=group)
    sleep = [sys.executable, "-c", "import time; time.sleep(30)"]
    manifest = manifest_from_dict({"name": "s", "resources": {"cpus": 1},
                                   "run": {"command": sleep}})  # fmt: skip
    handle = runner.start(Launch(1, 7, manifest, 100 << 20, tmp_path / "a.log", tmp_path / "out"))
    path = mount / "workers" / "w1" / "quarry-attempt-7"
    assert (path / "memory.max").read_text() == str(100 << 20)
    assert (path / "cgroup.procs").read_text() == str(handle.pid)
    assert runner.poll(handle) is None
    # the kernel's side, played here: it records the OOM kill and kills the process
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (path / "memory.peak").write_text(str(101 << 20))
    os.kill(handle.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (ended := runner.poll(handle)) is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert ended.outcome == "oom_killed" and ended.peak_memory == 101 << 20
