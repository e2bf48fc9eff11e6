"""Research workflows: one YAML file runs data -> features -> train and predict -> signal
analysis -> backtest -> report -> tracking -> the promotion gate.

- ``load_workflow``: read and check a workflow file (pydantic; an unknown key names itself
  and the file).
- ``run_workflow``: run it, each step reused from the step cache when nothing it depends on
  changed (its settings, the steps before it, the store's commits).
- The gate (``_gate``): a registered model becomes the ``champion`` only by beating the
  current one on the same most recent test window, by the workflow's rules.
"""

from quarry.workflows._cache import StepCache, digest
from quarry.workflows._run import EXECUTORS, RunResult, run_workflow
from quarry.workflows._spec import Workflow, load_workflow

__all__ = ["EXECUTORS", "RunResult", "StepCache", "Workflow", "digest", "load_workflow",
           "run_workflow"]  # fmt: skip
