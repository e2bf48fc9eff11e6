"""`quarry models` over a real MLflow registry (SQLite under the test's QUARRY_HOME), and
`quarry --version`."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import mlflow

from quarry.tracking import alias_version, client, experiment_id
from tests.cli.helpers import run


def _model(name: str, versions: int, source: Path) -> None:
    registry = client()
    registry.create_registered_model(name)
    for _ in range(versions):
        registry.create_model_version(name, source=source.as_uri())


def test_version_prints_the_installed_version() -> None:
    code, out, _ = run("--version")
    assert code == 0
    assert out.strip() == version("quarry")


def test_promote_then_rollback_with_the_history_in_order(tmp_path: Path) -> None:
    _model("alpha", 3, tmp_path)
    code, out, err = run("models", "promote", "alpha", "1", "--by", "ana", "--reason", "first")
    assert (code, err) == (0, "")
    assert "champion of alpha: (none) -> version 1" in out
    code, out, _ = run(
        "models", "promote", "alpha", "3", "--by", "ben", "--reason", "better", "--json"
    )
    assert code == 0
    moved = json.loads(out)
    assert (moved["from"], moved["to"], moved["by"], moved["reason"]) == (1, 3, "ben", "better")
    code, out, _ = run("models", "rollback", "alpha", "--by", "cyd", "--reason", "drift")
    assert code == 0
    assert "champion of alpha: version 3 -> version 1" in out
    assert alias_version("alpha", "champion") == 1
    code, out, _ = run("models", "show", "alpha", "--json")
    assert code == 0
    shown = json.loads(out)
    assert [(e["from"], e["to"], e["by"], e["reason"]) for e in shown["history"]] == [
        (None, 1, "ana", "first"),
        (1, 3, "ben", "better"),
        (3, 1, "cyd", "drift"),
    ]
    assert shown["aliases"] == {"champion": 1}
    assert [v["version"] for v in shown["versions"]] == [3, 2, 1]
    code, out, _ = run("models", "show", "alpha")
    assert code == 0
    assert "ben" in out and "better" in out and "drift" in out


def test_a_promotion_against_a_stale_version_is_refused(tmp_path: Path) -> None:
    _model("beta", 3, tmp_path)
    assert run("models", "promote", "beta", "1", "--by", "ana")[0] == 0
    # ben saw version 1 and promotes 2; ana, who also saw 1, then promotes 3
    assert run("models", "promote", "beta", "2", "--expect", "1", "--by", "ben")[0] == 0
    code, out, err = run("models", "promote", "beta", "3", "--expect", "1", "--by", "ana")
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "now points at version 2" in err and "expected version 1" in err
    assert alias_version("beta", "champion") == 2
    code, _, err = run("models", "promote", "beta", "3", "--expect", "banana")
    assert code == 1 and "--expect banana" in err


def test_unknown_names_give_one_line_naming_what_exists(tmp_path: Path) -> None:
    code, out, err = run("models", "show", "gamma")
    assert (code, out) == (1, "") and len(err.strip().splitlines()) == 1
    assert "no registered model 'gamma' (no model is registered yet" in err
    _model("gamma", 2, tmp_path)
    cases = [
        (("models", "show", "gama"), "no registered model 'gama' (models: gamma)"),
        (("models", "promote", "gamma", "5"), "model gamma has no version 5 (versions: 1, 2)"),
        (
            ("models", "rollback", "gamma", "--alias", "prod"),
            "model gamma has no alias 'prod' (it has none)",
        ),
        (("models", "promote", "gamma", "1", "--alias", "v1"), "v1"),
    ]
    for args, message in cases:
        code, _, err = run(*args)
        assert code == 1, args
        assert len(err.strip().splitlines()) == 1, err
        assert message in err, err


def test_list_shows_each_model_with_its_champions_figures(tmp_path: Path) -> None:
    code, out, _ = run("models", "list", "--json")
    assert (code, json.loads(out)) == (0, [])
    _model("delta", 1, tmp_path)
    with mlflow.start_run(experiment_id=experiment_id("cli-test")) as trained:
        mlflow.set_tags({"quarry.model_type": "lightgbm", "quarry.columns": "158"})
        mlflow.log_metrics({"test_rank_ic": 0.052, "backtest_sharpe": 1.4, "train_ic": 0.3})
    client().create_model_version("delta", source=tmp_path.as_uri(), run_id=trained.info.run_id)
    assert run("models", "promote", "delta", "2", "--by", "ana")[0] == 0
    _model("epsilon", 1, tmp_path)
    code, out, _ = run("models", "list", "--json")
    assert code == 0
    listed = {m["name"]: m for m in json.loads(out)}
    assert listed["delta"]["latest_version"] == 2
    assert listed["delta"]["aliases"] == {"champion": 2}
    assert listed["delta"]["figures"] == {"test_rank_ic": 0.052, "backtest_sharpe": 1.4}
    assert listed["epsilon"]["champion"] is None
    code, out, _ = run("models", "list")
    assert code == 0
    assert "delta" in out and "epsilon" in out and "0.052" in out
    code, out, _ = run("models", "show", "delta", "--json")
    newest = json.loads(out)["versions"][0]
    assert (newest["model_type"], newest["features"]) == ("lightgbm", 158)
