"""The Ray executor: each piece of a step is a Ray task.

Shared inputs enter the object store once (``ray.put``) and every task receives the
reference: Ray hands the task the stored value, read in place from shared memory on its node
(numpy arrays and Arrow buffers are not copied), so a panel used by 8 windows is stored once
per node, not loaded 8 times. A Polars frame is stored as an Arrow table and read back as a
frame over the same buffers.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from quarry.exceptions import QuarryError, UsageError
from quarry.executors._base import Done, Executor, Shared

__all__ = ["RayExecutor"]

T = TypeVar("T")
R = TypeVar("R")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(
            "--executor ray needs Ray, which is not installed: pip install 'quarry[ray]'"
        ) from None
    return ray


def _reachable(address: str | None) -> None:
    """Refuse a ``host:port`` nobody listens on at once: Ray itself would wait a minute."""
    if not address or address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"--ray-address {address}: cannot reach a Ray cluster there ({exc}); start one "
            "with `ray start --head`, or give its address (host:port, ray://host:10001, or "
            "auto)"
        ) from None


def _piece(fn: Callable[..., Any], item: Any, kinds: dict[str, str], **values: Any) -> Any:
    """One task: the shared values back in their own types, then ``fn``."""
    import polars as pl

    for name, kind in kinds.items():
        if kind == "polars":
            values[name] = pl.from_arrow(values[name], rechunk=False)
    return fn(item, **values)


class RayExecutor(Executor):
    """Tasks on the Ray cluster at ``address`` (see ``quarry.executors.executor``)."""

    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        ray = _import_ray()
        self._ray = ray
        address = address or os.environ.get("RAY_ADDRESS") or None
        self._owned = False
        if not ray.is_initialized():
            _reachable(address)
            try:
                ray.init(address=address, log_to_driver=False, include_dashboard=False,
                         configure_logging=False)  # fmt: skip
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = (str(exc).strip().splitlines() or ["cannot connect"])[0]
                raise UsageError(
                    f"--ray-address {address}: cannot reach a Ray cluster there ({first}); "
                    "start one with `ray start --head`, or give its address (host:port, "
                    "ray://host:10001, or auto)"
                ) from None
            self._owned = True
        self._remote = ray.remote(_piece)

    @property
    def workers(self) -> int:
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def share(self, value: T) -> Shared[T]:
        import polars as pl

        if isinstance(value, pl.DataFrame):
            return Shared(self._ray.put(value.to_arrow()), "polars")
        return Shared(self._ray.put(value))

    def map(
        self,
        fn: Callable[..., R],
        items: Sequence[Any],
        *,
        shared: Mapping[str, Shared[Any]] | None = None,
        cpus: float = 1.0,
        done: Done | None = None,
    ) -> list[R]:
        ray = self._ray
        shared = dict(shared or {})
        kinds = {name: s.kind for name, s in shared.items() if s.kind != "object"}
        refs = {name: s.ref for name, s in shared.items()}
        task = self._remote.options(num_cpus=cpus, max_retries=1)
        pending = [task.remote(fn, item, kinds, **refs) for item in items]
        order = {ref: k for k, ref in enumerate(pending)}
        results: list[Any] = [None] * len(pending)
        waiting, finished = list(pending), 0
        try:
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1)
                for ref in ready:
                    results[order[ref]] = ray.get(ref)
                    finished += 1
                    if done is not None:
                        done(finished, len(pending))
        except ray.exceptions.RayTaskError as exc:
            # The other pieces are left to finish, their results dropped with their refs (a
            # driver that exits, as a command does, takes its job's tasks with it). Cancelling
            # them raced Ray's own bookkeeping: a piece finishing as it was cancelled aborted
            # this process in a RAY_CHECK ("Tried to complete task that was not pending"; Ray
            # 2.60, ray-project/ray#54798 for the same race), the user's error lost with it.
            cause = exc.cause
            if isinstance(cause, QuarryError):
                raise cause from None
            raise
        return results

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False
