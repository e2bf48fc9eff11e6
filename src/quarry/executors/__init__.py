"""Where research steps run: one small interface, a registry by name.

A research step that splits into independent pieces (walk-forward windows, search trials,
feature chunks) hands them to an ``Executor``: ``local`` runs them one after another in this
process; ``ray`` runs them as Ray tasks on a cluster (``quarry run --executor ray
--ray-address auto|URL``). Large read-only inputs (the features panel, the bars) go through
``share`` once: on Ray they enter the object store once and every task on a node reads them
without a copy, instead of each task reloading them. Results come back in the order of the
items, whatever order the tasks finished in, so both executors give the same answer.
"""

from quarry.executors._base import Executor, LocalExecutor, Shared
from quarry.executors._registry import EXECUTORS, executor

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "Shared", "executor"]
