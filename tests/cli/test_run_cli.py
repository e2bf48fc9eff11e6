"""``quarry run`` as a script and a person see it: --json on stdout alone, the steps' times
and the tracking location on stderr, the libraries' chatter kept off it, the user's warnings
said once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quarry.data import Store, generate
from tests.cli.helpers import imports_of, parse_json, run
from tests.workflows.helpers import NOISE, REVERSAL, small_spec, write_spec


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("run-cli") / "store"
    generate(Store(path), 60, 300, seed=5, alpha_ic=0.15)
    return path


@pytest.mark.slow
def test_json_holds_the_results_and_stderr_the_steps_without_mlflow_chatter(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUARRY_HOME", str(tmp_path / "home"))
    # two nearly equal features and a tiny penalty: scikit-learn's LinAlgWarning territory
    features = {"REV5": REVERSAL, "NEAR": f"{REVERSAL} + 0.00001 * {NOISE}", "NOISE": NOISE}
    spec = small_spec(store, features={"extra": features},
                      model={"type": "linear", "params": {"alphas": [1e-9, 1.0]}})  # fmt: skip
    path = write_spec(tmp_path / "w.yaml", spec)
    code, stdout, stderr = run("run", str(path), "--out", str(tmp_path / "out"), "--json")
    assert code == 0, stderr
    printed = parse_json(stdout)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert printed["rank_ic"] == saved["rank_ic"] and printed["ic"] == saved["ic"]
    assert printed["max_drawdown"] == saved["max_drawdown"] < 0
    assert printed["model_version"] == saved["model_version"] == 1
    assert printed["report"] == str(tmp_path / "out" / "report.html")
    lines = stderr.splitlines()
    home = tmp_path / "home"
    assert lines[0] == f"tracking: sqlite:///{home / 'mlflow.db'} (QUARRY_HOME={home})"
    for step in ("features", "train", "backtest", "gate"):
        assert sum(line.startswith(f"{step}: ran in ") for line in lines) == 1, stderr
    assert "LinAlgWarning" not in stderr and "Successfully registered" not in stderr
    assert "Created version" not in stderr
    # again: every step but the gate is found in the cache, and says so
    code, stdout, stderr = run("run", str(path), "--out", str(tmp_path / "again"), "--json")
    assert code == 0, stderr
    assert {"features: cached", "train: cached", "backtest: cached"} <= set(stderr.splitlines())
    assert parse_json(stdout)["rank_ic"] == saved["rank_ic"]
    # a third time, as a fresh process: every step cached, and nothing heavy loaded to say so
    # (the champion comes from the registry memo, as nothing was written since)
    code, imported, stdout = imports_of("run", str(path), "--out", str(tmp_path / "3"), "--json")
    assert code == 0
    assert parse_json(stdout)["steps"] == dict.fromkeys(("features", "train", "backtest", "gate"),
                                                        "cached")  # fmt: skip
    assert set(imported) <= {"polars", "numpy", "pyarrow", "deltalake"}, imported


@pytest.mark.slow
def test_a_constant_model_is_said_once(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUARRY_HOME", str(tmp_path / "home"))
    spec = small_spec(store, features={"extra": {"ONE": "$close / $close"}},
                      model={"type": "linear", "params": {}})  # fmt: skip
    path = write_spec(tmp_path / "w.yaml", spec)
    for out in ("first", "cached"):
        code, stdout, stderr = run("run", str(path), "--out", str(tmp_path / out))
        assert code == 0, stderr
        assert stderr.count("warning: the model learned nothing") == 1, stderr
        assert "Created version" not in stderr and "Rank IC" in stdout


def _paragraphs(help_text: str) -> list[list[str]]:
    """The description's paragraphs (between the usage line and the first box), as lines."""
    body = help_text.split("Usage:", 1)[1].split("╭", 1)[0].splitlines()[1:]
    paragraphs: list[list[str]] = [[]]
    for line in body:
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p]


@pytest.mark.parametrize("command", [("run",), ("backtest",), ("features", "compute")])
def test_help_is_wrapped_by_the_terminal_not_by_hand(command: tuple[str, ...]) -> None:
    code, wide, _ = run(*command, "--help", columns=200)
    assert code == 0
    # each paragraph of the docstring is one line, or as many as 200 columns need
    for paragraph in _paragraphs(wide):
        assert all(len(line) > 150 for line in paragraph[:-1]), paragraph
    code, narrow, _ = run(*command, "--help", columns=80)
    assert code == 0
    for paragraph in _paragraphs(narrow):  # no line cut short before the paragraph ends
        assert all(len(line) > 60 for line in paragraph[:-1]), paragraph
