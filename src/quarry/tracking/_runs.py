"""The tracked runs, a page at a time: what the dashboard's runs table and a run's page read.

A page costs the same with ten runs or ten thousand; nothing here reads every run. On a SQL
tracking store (the default SQLite, or PostgreSQL) a page of the table is read with three
queries of MLflow's own tables: the page's runs, then only their headline figures and the
gate's tags; MLflow's search loads every metric, parameter and tag of each run of the page
and took 150-350 ms a page of 50 on this machine, where these take 20. Its paging token is
MLflow's (a base64 offset), and a tracking server (http) is asked through MLflow's client.

A workflow run's figures are the training run's metrics: the test segment's IC and Rank IC
(``test_ic``...), the backtest's (``backtest_sharpe``...) and the gate's.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from quarry.exceptions import UsageError
from quarry.tracking._mlflow import client, tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from sqlalchemy import Engine

__all__ = [
    "RUN_FIGURES",
    "RunPage",
    "RunSummary",
    "get_run",
    "open_store",
    "run_artifact",
    "search_runs",
]

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
    artifact_uri: str = ""

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
        artifact_uri=info.artifact_uri or "",
    )


_first_open = threading.Lock()
_opened: set[str] = set()


def open_store() -> MlflowClient:
    """MLflow's client, the tracking store opened by one thread at a time the first time:
    opening a new SQLite store creates its tables, and two threads doing it at once (the
    dashboard's warm-up and its first page) fail with "table already exists"."""
    uri = tracking_uri()
    if uri in _opened:
        return client()
    with _first_open:
        found = client()
        found.search_experiments(max_results=1)  # creates the store's tables when new
        _opened.add(uri)
        return found


def _experiments() -> dict[str, str]:
    from mlflow.entities import ViewType

    found = open_store().search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000)
    return {e.experiment_id: e.name for e in found}


def _offset(page_token: str | None) -> int:
    """The offset in MLflow's page token (base64 of ``{"offset": N}``)."""
    if not page_token:
        return 0
    try:
        offset = json.loads(base64.b64decode(page_token, validate=True))["offset"]
    except (ValueError, TypeError, KeyError, binascii.Error):
        offset = None
    if not isinstance(offset, int) or offset < 0:
        raise UsageError(f"page token {page_token[:40]!r}: not a page of this listing; start "
                         "again from the first page")  # fmt: skip
    return offset


def _token(offset: int) -> str:
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


@functools.cache
def _engine(uri: str) -> Engine:
    from sqlalchemy import create_engine

    return create_engine(uri, pool_pre_ping=True)


def _sql_page(
    uri: str, experiment_ids: list[str], experiments: dict[str, str], max_results: int,
    offset: int,
) -> tuple[list[RunSummary], bool]:  # fmt: skip
    """The page's runs (and whether more follow) from MLflow's tables, in MLflow's order
    (newest start first, then the run's id), with the table's figures and the gate's tags."""
    from sqlalchemy import bindparam, text

    ids = [int(i) for i in experiment_ids]
    with _engine(uri).connect() as db:
        runs = db.execute(
            text("SELECT run_uuid, name, experiment_id, status, start_time, end_time FROM runs "
                 "WHERE lifecycle_stage = 'active' AND experiment_id IN :ids "
                 "ORDER BY start_time DESC, run_uuid LIMIT :n OFFSET :k")
            .bindparams(bindparam("ids", expanding=True)),
            {"ids": ids, "n": max_results + 1, "k": offset},
        ).all()  # fmt: skip
        more = len(runs) > max_results
        runs = runs[:max_results]
        uuids = [r.run_uuid for r in runs]
        metrics: dict[str, dict[str, float]] = {u: {} for u in uuids}
        tags: dict[str, dict[str, str]] = {u: {} for u in uuids}
        if uuids:
            keys = [key for _, key, _ in RUN_FIGURES]
            for row in db.execute(
                text("SELECT run_uuid, key, value, is_nan FROM latest_metrics "
                     "WHERE run_uuid IN :uuids AND key IN :keys")
                .bindparams(bindparam("uuids", expanding=True), bindparam("keys", expanding=True)),
                {"uuids": uuids, "keys": keys},
            ):  # fmt: skip
                metrics[row.run_uuid][row.key] = math.nan if row.is_nan else float(row.value)
            for row in db.execute(
                text("SELECT run_uuid, key, value FROM tags WHERE run_uuid IN :uuids "
                     "AND key LIKE 'quarry.gate.%'")
                .bindparams(bindparam("uuids", expanding=True)),
                {"uuids": uuids},
            ):  # fmt: skip
                tags[row.run_uuid][row.key] = row.value
    out = [RunSummary(run_id=r.run_uuid, name=r.name or r.run_uuid[:8],
                      experiment=experiments.get(str(r.experiment_id), str(r.experiment_id)),
                      status=r.status, started=_when(r.start_time), ended=_when(r.end_time),
                      metrics=metrics[r.run_uuid], tags=tags[r.run_uuid])
           for r in runs]  # fmt: skip
    return out, more


def _sql_uri() -> str | None:
    """The tracking store's database URL when it is one this module reads directly."""
    uri = tracking_uri()
    return uri if uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql") else None


def search_runs(
    *, experiment: str | None = None, max_results: int = 50, page_token: str | None = None
) -> RunPage:
    """A page of runs, newest first, of ``experiment`` (by name) or of every experiment;
    ``next_token`` asks for the next page (None on the last). A run on the page carries the
    table's figures (``RUN_FIGURES``) and the gate's tags, and may carry more."""
    experiments = _experiments()
    ids = [i for i, name in experiments.items() if experiment is None or name == experiment]
    if not ids:
        return RunPage([], None, sorted(experiments.values()))
    uri = _sql_uri()
    if uri is not None:
        offset = _offset(page_token)
        runs, more = _sql_page(uri, ids, experiments, max_results, offset)
        return RunPage(runs, _token(offset + max_results) if more else None,
                       sorted(experiments.values()))  # fmt: skip
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
        run = open_store().get_run(run_id)
    except MlflowException:
        return None
    name = client().get_experiment(run.info.experiment_id).name
    return _summary(run, {run.info.experiment_id: name})


def run_artifact(run_id: str, path: str, artifact_uri: str | None = None) -> Path | None:
    """A local copy (or the file itself, on a local artifact store) of the run's artifact
    ``path``, or None when the run has none such; ``artifact_uri``: the run's, when known
    (``RunSummary.artifact_uri``), saves asking the tracking store for it."""
    from urllib.parse import unquote, urlsplit

    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        root = artifact_uri or client().get_run(run_id).info.artifact_uri or ""
        if root.startswith("file:"):  # read in place: no copy of a report per page view
            local_file = Path(unquote(urlsplit(root).path)) / path
            return local_file if local_file.is_file() else None
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)
    except (MlflowException, OSError):
        return None
    found = Path(local)
    return found if found.is_file() else None
