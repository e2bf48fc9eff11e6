"""The tracked runs, a page at a time: what the dashboard's runs table and a run's page read.

MLflow's own search does the paging (its page token), so a page costs the same with ten runs
or ten thousand; nothing here reads every run. A workflow run's figures are the training
run's metrics: the test segment's IC and Rank IC (``test_ic``...), the backtest's
(``backtest_sharpe``...) and the gate's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from quarry.exceptions import UsageError
from quarry.tracking._mlflow import client

if TYPE_CHECKING:
    from mlflow.entities import Run

__all__ = ["RUN_FIGURES", "RunPage", "RunSummary", "get_run", "run_artifact", "search_runs"]

#: the runs table's figures: (label, the metric's key, how it reads)
RUN_FIGURES = (
    ("IC", "test_ic", "num"),
    ("Rank IC", "test_rank_ic", "num"),
    ("Sharpe", "backtest_sharpe", "num"),
    ("Excess return", "backtest_excess_annualized_return", "pct"),
    ("Max drawdown", "backtest_max_drawdown", "pct"),
)


@dataclass(frozen=True)
class RunSummary:
    """One tracked run: its figures (metrics), settings (params) and tags."""

    run_id: str
    name: str
    experiment: str
    status: str
    started: datetime | None
    ended: datetime | None
    metrics: dict[str, float]
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def figure(self, key: str) -> float | None:
        value = self.metrics.get(key)
        return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class RunPage:
    runs: list[RunSummary]
    next_token: str | None
    experiments: list[str]


def _when(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def _summary(run: Run, experiments: dict[str, str]) -> RunSummary:
    info, data = run.info, run.data
    return RunSummary(
        run_id=info.run_id,
        name=info.run_name or info.run_id[:8],
        experiment=experiments.get(info.experiment_id, info.experiment_id),
        status=info.status,
        started=_when(info.start_time),
        ended=_when(info.end_time),
        metrics=dict(data.metrics),
        params=dict(data.params),
        tags={k: v for k, v in data.tags.items() if not k.startswith("mlflow.")},
    )


def _experiments() -> dict[str, str]:
    from mlflow.entities import ViewType

    found = client().search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000)
    return {e.experiment_id: e.name for e in found}


def search_runs(
    *, experiment: str | None = None, max_results: int = 50, page_token: str | None = None
) -> RunPage:
    """A page of runs, newest first, of ``experiment`` (by name) or of every experiment;
    ``next_token`` asks for the next page (None on the last)."""
    experiments = _experiments()
    ids = [i for i, name in experiments.items() if experiment is None or name == experiment]
    if not ids:
        return RunPage([], None, sorted(experiments.values()))
    from mlflow.exceptions import MlflowException

    try:
        found = client().search_runs(
            ids, max_results=max_results, page_token=page_token,
            order_by=["attributes.start_time DESC"],
        )  # fmt: skip
    except MlflowException as exc:
        if page_token is None:
            raise
        raise UsageError(f"page token {page_token[:40]!r}: not a page of this listing "
                         f"({exc.message}); start again from the first page") from None  # fmt: skip
    token = found.token.decode() if isinstance(found.token, bytes) else found.token
    return RunPage([_summary(r, experiments) for r in found], token or None,
                   sorted(experiments.values()))  # fmt: skip


def get_run(run_id: str) -> RunSummary | None:
    """The run ``run_id``, or None when the tracking store has no such run."""
    from mlflow.exceptions import MlflowException

    try:
        run = client().get_run(run_id)
    except MlflowException:
        return None
    name = client().get_experiment(run.info.experiment_id).name
    return _summary(run, {run.info.experiment_id: name})


def run_artifact(run_id: str, path: str) -> Path | None:
    """A local copy (or the file itself, on a local artifact store) of the run's artifact
    ``path``, or None when the run has none such."""
    from urllib.parse import unquote, urlsplit

    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        root = client().get_run(run_id).info.artifact_uri or ""
        if root.startswith("file:"):  # read in place: no copy of a report per page view
            local_file = Path(unquote(urlsplit(root).path)) / path
            return local_file if local_file.is_file() else None
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)
    except (MlflowException, OSError):
        return None
    found = Path(local)
    return found if found.is_file() else None
