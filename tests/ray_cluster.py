"""A real Ray cluster on loopback for the tests: a head and more nodes, each started with
``ray start`` in a session of its own, so that a node can be killed outright (its whole
process group) and the cluster torn down without touching any other Ray on the machine.

Every node has its own temporary folder under a short path (Ray's socket paths must stay
under 108 bytes) and every port is chosen free. The head takes one CPU; each extra node
declares its own custom resource (``node-1``, ``node-2``, ...) so a test can place work on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RayCluster", "RayNode"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray() -> str:
    return str(Path(sys.executable).with_name("ray"))


@dataclass
class RayNode:
    """One ``ray start``: its process group (the session leader's pid) and resources."""

    name: str
    process: subprocess.Popen[bytes]
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def pgid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL every process of this node (raylet, workers, agents): a dead machine."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)
        self.process.wait()


class RayCluster:
    """Start with ``RayCluster.start(extra_nodes=1)``; ``address`` is the GCS address
    (``ray.init(address=...)``), ``dashboard`` the job-submission URL."""

    def __init__(self, root: Path, port: int, dashboard_port: int) -> None:
        self.root = root
        self.port = port
        self.dashboard_port = dashboard_port
        self.nodes: list[RayNode] = []
        self.object_store = 1 << 30  # bytes of object store per node

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @classmethod
    def start(
        cls, *, extra_nodes: int = 1, cpus_per_node: int = 1, object_store: int = 1 << 30
    ) -> RayCluster:
        root = Path(tempfile.mkdtemp(prefix="qr", dir="/tmp"))
        cluster = cls(root, _free_port(), _free_port())
        cluster.object_store = object_store
        try:
            cluster._start_node("head", [
                "--head", f"--port={cluster.port}", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={cluster.dashboard_port}", "--include-dashboard=true",
                f"--num-cpus={cpus_per_node}", f"--temp-dir={root / 'head'}",
                f"--ray-client-server-port={_free_port()}",
            ], {})  # fmt: skip
            for k in range(1, extra_nodes + 1):
                cluster.add_node(cpus=cpus_per_node, name=f"node-{k}")
            cluster.wait_for(len(cluster.nodes))
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def add_node(self, *, cpus: int = 1, name: str | None = None) -> RayNode:
        name = name or f"node-{len(self.nodes)}"
        resources = {name: 1.0}
        return self._start_node(name, [
            f"--address={self.address}", f"--num-cpus={cpus}",
            f"--resources={json.dumps(resources)}",
        ], resources)  # fmt: skip

    def _start_node(self, name: str, args: list[str], resources: dict[str, float]) -> RayNode:
        with open(self.root / f"{name}.log", "wb") as log:  # the node keeps its own copy
            process = subprocess.Popen(
                [_ray(), "start", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                 "--block", f"--dashboard-agent-listen-port={_free_port()}",
                 f"--metrics-export-port={_free_port()}",
                 f"--object-store-memory={self.object_store}", *args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
            )  # fmt: skip
        node = RayNode(name, process, resources)
        self.nodes.append(node)
        return node

    def alive_nodes(self) -> int:
        """Nodes the head counts alive (from the dashboard's REST API; 0 while it starts)."""
        try:
            with urllib.request.urlopen(  # noqa: S310 - loopback, our own cluster
                f"{self.dashboard}/nodes?view=summary", timeout=2
            ) as r:
                summary = json.load(r)["data"]["summary"]
        except (OSError, ValueError, KeyError):
            return 0
        return sum(1 for n in summary if n.get("raylet", {}).get("state") == "ALIVE")

    def wait_for(self, nodes: int, timeout: float = 90.0) -> None:
        """Until ``nodes`` nodes are alive and the job API answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive_nodes() >= nodes and self._jobs_api_up():
                return
            time.sleep(0.5)
        logs = "\n".join(p.read_text()[-2000:] for p in self.root.glob("*.log"))
        raise RuntimeError(f"the Ray cluster did not start {nodes} nodes in {timeout:g} s:\n{logs}")

    def _jobs_api_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.dashboard}/api/jobs/", timeout=2):  # noqa: S310
                return True
        except OSError:
            return False

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.kill()
        self.nodes.clear()
        shutil.rmtree(self.root, ignore_errors=True)
