"""Memory limits by cgroup v2, where the machine delegates one with the memory controller.

Each attempt gets a child cgroup of the worker's own (``/proc/self/cgroup``'s ``0::`` line,
under the unified mount) with ``memory.max`` set to its limit and swap off, so the kernel
itself stops it; ``memory.events`` then says whether it was OOM-killed, and
``memory.peak`` (or the highest ``memory.current`` seen) how much it used. Where there is no
such cgroup (cgroup v1, no memory controller delegated, no write access: this project's
machines), ``find`` returns None and the local backend watches resident memory instead.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

__all__ = ["CgroupV2"]


class CgroupV2:
    """Child cgroups for attempts under ``base`` (the worker's own cgroup directory)."""

    def __init__(self, base: Path) -> None:
        self.base = base

    @classmethod
    def find(cls, mount: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self/cgroup"),
             ) -> CgroupV2 | None:  # fmt: skip
        """The worker's cgroup, if it is v2, has the memory controller and can be written."""
        try:
            lines = proc.read_text().splitlines()
            own = next(line[3:] for line in lines if line.startswith("0::"))
            base = mount / own.lstrip("/")
            if "memory" not in (mount / "cgroup.controllers").read_text().split():
                return None
            if "memory" not in (base / "cgroup.controllers").read_text().split():
                return None
            probe = base / "quarry-probe"
            probe.mkdir(exist_ok=True)
            probe.rmdir()
        except (OSError, StopIteration):
            return None
        return cls(base)

    def create(self, name: str, memory: int) -> Path:
        """A child cgroup limited to ``memory`` bytes, without swap."""
        with contextlib.suppress(OSError):  # a parent may need the controller enabled
            (self.base / "cgroup.subtree_control").write_text("+memory")
        path = self.base / name
        path.mkdir(exist_ok=True)
        (path / "memory.max").write_text(str(memory))
        if (path / "memory.swap.max").exists():
            (path / "memory.swap.max").write_text("0")
        return path

    @staticmethod
    def add(path: Path, pid: int) -> None:
        (path / "cgroup.procs").write_text(str(pid))

    @staticmethod
    def oom_killed(path: Path) -> bool:
        try:
            for line in (path / "memory.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    @staticmethod
    def usage(path: Path) -> int:
        """Peak bytes where the kernel keeps it (memory.peak), else the current ones."""
        for name in ("memory.peak", "memory.current"):
            try:
                return int((path / name).read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        return 0

    @staticmethod
    def remove(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.rmdir()
