"""The runs a page at a time: read from MLflow's tables directly on a SQL tracking store,
they are MLflow's own search's answer (the same runs, order, figures and tags)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from quarry.exceptions import UsageError
from quarry.tracking import _runs
from quarry.tracking._runs import RUN_FIGURES, search_runs


@pytest.fixture
def runs() -> list[str]:
    from quarry.tracking import client, experiment_id

    mlflow = client()
    made = []
    for k in range(9):
        exp = experiment_id("a" if k % 3 else "b")
        start = 1_700_000_000_000 + (k // 2) * 1000  # pairs share a start: the id decides
        run = mlflow.create_run(exp, run_name=f"r{k}", start_time=start)
        rid = run.info.run_id
        mlflow.log_metric(rid, "test_ic", 0.01 * k)
        mlflow.log_metric(rid, "test_ic", 0.02 * k)  # the latest value is shown
        mlflow.log_metric(rid, "backtest_sharpe", math.nan if k == 4 else k / 3)
        mlflow.log_metric(rid, "other", 1.0)
        mlflow.set_tag(rid, "quarry.gate.promoted", "true" if k % 2 else "false")
        mlflow.set_tag(rid, "unrelated", "x")
        if k == 7:
            mlflow.delete_run(rid)
        else:
            mlflow.set_terminated(rid)
        made.append(rid)
    return made


def _all(pages: int, **kwargs: Any) -> list[list[tuple[Any, ...]]]:
    out, token = [], None
    for _ in range(pages):
        page = search_runs(max_results=3, page_token=token, **kwargs)
        out.append([(r.run_id, r.name, r.experiment, r.status, r.started,
                     {k: r.figure(k) for _, k, _ in RUN_FIGURES},
                     r.tags.get("quarry.gate.promoted")) for r in page.runs])  # fmt: skip
        token = page.next_token
        if token is None:
            break
    return out


def test_the_sql_pages_are_mlflows_own(runs: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert _runs._sql_uri() is not None  # the default SQLite store: read directly
    direct = _all(5)
    direct_a = _all(5, experiment="a")
    monkeypatch.setattr(_runs, "_sql_uri", lambda: None)
    assert direct == _all(5) and direct_a == _all(5, experiment="a")
    flat = [row for page in direct for row in page]
    assert [len(p) for p in direct] == [3, 3, 2]  # 8 runs: the deleted one is not listed
    assert runs[7] not in {row[0] for row in flat}
    assert flat[0][5]["test_ic"] == pytest.approx(0.16)  # r8, the newest, its latest value
    nan_run = next(row for row in flat if row[1] == "r4")
    assert nan_run[5]["backtest_sharpe"] is None  # NaN shows as no figure


def test_a_token_not_of_this_listing_says_so(runs: list[str]) -> None:
    with pytest.raises(UsageError, match="start again from the first page"):
        search_runs(page_token="not base64!")  # noqa: S106
    with pytest.raises(UsageError, match="not a page"):
        search_runs(page_token="eyJvZmZzZXQiOiAtMX0=")  # noqa: S106 ({"offset": -1})
