"""Executors by name."""

from __future__ import annotations

from quarry.exceptions import UsageError
from quarry.executors._base import Executor, LocalExecutor

__all__ = ["EXECUTORS", "executor"]

EXECUTORS = ("local", "ray")


def executor(name: str = "local", *, address: str | None = None) -> Executor:
    """An executor by name: ``local``, or ``ray`` connected to ``address`` (``auto``: the
    cluster this machine belongs to, as ``ray start`` left it; a ``host:port`` GCS address
    or ``ray://`` client URL; None: ``$RAY_ADDRESS``, else a Ray started for this process).
    """
    if name == "local":
        if address is not None:
            raise UsageError("--ray-address goes with --executor ray, not with local")
        return LocalExecutor()
    if name == "ray":
        from quarry.executors._ray import RayExecutor

        return RayExecutor(address)
    raise UsageError(f"--executor {name!r}: choose one of {', '.join(EXECUTORS)}")
