"""The workflow file: read by the strict YAML loader, every problem checked before a step runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from quarry.data import Store, generate
from quarry.exceptions import UsageError
from quarry.workflows import Workflow, load_workflow
from tests.cli.helpers import run

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "workflows").glob("*.yaml"))

# A valid workflow; each test changes a line or two. Line numbers below count from "name".
GOOD = """\
name: small
data:
  store: STORE
features:
  set: none
  extra: {REV5: "-($close / Ref($close, 5) - 1)", MOM5: "$close / Ref($close, 5) - 1"}
model:
  type: lightgbm
  params: {num_boost_round: 5}
  seed: 0
segments:
  train: 2015-01-02:2015-03-06
  valid: 2015-03-16:2015-03-31
  test: 2015-04-09:2015-05-06
backtest:
  topk: 4
  n_drop: 1
  open_cost: 0.0005
tracking:
  experiment: small
"""


def _write(tmp_path: Path, text: str, name: str = "w.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(UsageError) as info:
        load_workflow(path)
    return info.value.lines()


def test_the_base_workflow_is_valid(tmp_path: Path) -> None:
    spec = load_workflow(_write(tmp_path, GOOD))
    assert (spec.backtest.topk, spec.backtest.n_drop, spec.model.seed) == (4, 1, 0)
    assert spec.segments == {"train": "2015-01-02:2015-03-06", "valid": "2015-03-16:2015-03-31",
                             "test": "2015-04-09:2015-05-06"}  # fmt: skip


# -- the YAML itself ---------------------------------------------------------------------------


def test_a_duplicate_key_is_refused_with_the_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("  n_drop: 1\n", "  n_drop: 1\n  topk: 50\n"))
    (line,) = _problems(path)
    assert line.startswith(f"{path}: line 18, column 3: ")
    assert "'topk' twice (first on line 16)" in line


def test_seed_yes_is_text_and_refused_by_name(tmp_path: Path) -> None:
    # YAML 1.1 read ``yes`` as True, which pydantic took for the seed 1
    (line,) = _problems(_write(tmp_path, GOOD.replace("seed: 0", "seed: yes")))
    assert (
        line == f"{tmp_path / 'w.yaml'}: model.seed: should be a valid integer, got 'yes' (line 10)"
    )


def test_a_boolean_setting_takes_only_true_or_false(tmp_path: Path) -> None:
    text = GOOD.replace("  topk: 4\n  n_drop: 1\n", "  strategy: optimizer\n  optimizer:\n"
                        "    long_only: yes\n")  # fmt: skip
    (line,) = _problems(_write(tmp_path, text))
    assert "backtest.optimizer.long_only" in line and "'yes'" in line
    spec = load_workflow(_write(tmp_path, text.replace("long_only: yes", "long_only: false")))
    assert spec.backtest.optimizer is not None and spec.backtest.optimizer.long_only is False


def test_a_top_level_on_is_an_unknown_key_named_on(tmp_path: Path) -> None:
    (line,) = _problems(_write(tmp_path, GOOD + "on: [push]\n"))
    assert line.startswith(f"{tmp_path / 'w.yaml'}: unknown key 'on' at the top level")
    assert line.endswith("(line 21)")


def test_a_quoted_number_is_not_a_number(tmp_path: Path) -> None:
    (line,) = _problems(_write(tmp_path, GOOD.replace("topk: 4", "topk: '4'")))
    assert (
        "backtest.topk: should be a valid integer, got '4'; write the number without quotes" in line
    )


def test_a_billion_laughs_file_is_refused_quickly(tmp_path: Path) -> None:
    bomb = ['    a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    bomb += [f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    text = GOOD.replace("  params: {num_boost_round: 5}\n", "  params:\n" + "\n".join(bomb) + "\n")
    (line,) = _problems(_write(tmp_path, text))
    assert "aliases" in line and "more than 100000 values" in line
    assert re.search(r": line 1[0-9], column", line)  # where the expansion first gets too big


def test_dates_stay_dates(tmp_path: Path) -> None:
    text = GOOD.replace("data:\n", "data:\n  start: 2015-01-05\n  as_of: 2015-06-30\n")
    spec = load_workflow(_write(tmp_path, text))
    assert str(spec.data.start) == "2015-01-05" and spec.data.as_of == "2015-06-30"
    (line,) = _problems(_write(tmp_path, text.replace("2015-01-05", "2015-13-05")))
    assert "data.start: '2015-13-05' is not a date" in line and line.endswith("(line 3)")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_each_example_loads_as_it_did(path: Path) -> None:
    # the reference: PyYAML's YAML 1.1 reading, as the loader read them before
    before = Workflow.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    spec = load_workflow(path)
    # but for the store, which is now read from the file's folder (see the test below)
    assert before.data.store is not None and spec.data.store is not None
    assert Path(spec.data.store) == (path.parent / before.data.store).resolve()
    before = before.model_copy(update={"data": spec.data})
    # and for the file it was read from, which load_workflow records with its digest
    assert spec.source is not None and spec.source.path == str(path.resolve())
    before._source = spec.source
    assert spec == before
    assert spec.model_dump(mode="json") == before.model_dump(mode="json")


def test_a_relative_store_is_read_from_the_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job or another shell runs the file from elsewhere: the store it names is the same."""
    folder = tmp_path / "research" / "workflows"
    folder.mkdir(parents=True)
    path = folder / "w.yaml"
    path.write_text(GOOD.replace("store: STORE", "store: ../stores/main"))
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_workflow(path).data.store == str(tmp_path / "research" / "stores" / "main")
    for fixed in ("/data/stores/main", "s3://bucket/stores/main"):
        path.write_text(GOOD.replace("store: STORE", f"store: {fixed}"))
        assert load_workflow(path).data.store == fixed


# -- every problem at once, before any step runs ---------------------------------------------

BAD = (
    GOOD.replace("type: lightgbm", "type: linear")
    .replace("params: {num_boost_round: 5}", "params: {kind: ridge, alpha: 3}")
    .replace("test: 2015-04-09:2015-05-06", "test: 2015-03-20:2015-05-06")
    .replace("  topk: 4\n  n_drop: 1\n  open_cost: 0.0005\n",
             "  topk: 0\n  n_drop: -1\n  hold_thresh: 0\n  open_cost: -0.01\n  slippage: -1\n"
             "  account: 0\n  optimizer: {max_weight: 2}\n")
    + "gate:\n  rules:\n    - {metric: sharp}\n"
)  # fmt: skip


def test_every_problem_is_reported_at_once_with_its_path_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, BAD)
    lines = _problems(path)
    assert all(line.startswith(f"{path}: ") for line in lines)
    where = {re.sub(r"^\S+: ", "", line).split(":")[0].split(" ")[0] for line in lines}
    assert where == {
        "model.params", "segments", "backtest.topk", "backtest.n_drop", "backtest.hold_thresh",
        "backtest.open_cost", "backtest.slippage", "backtest.account", "backtest.optimizer",
        "gate.rules.0.metric",
    }  # fmt: skip
    text = "\n".join(lines)
    assert (
        "backtest.topk must be at least 1, got 0; pass the number of names to hold (line 16)"
        in text
    )
    assert "backtest.n_drop must be 0 or more, got -1 (line 17)" in text
    assert "backtest.open_cost cannot be negative (line 19)" in text
    (params,) = [line for line in lines if "model.params" in line]
    assert "model.params: unknown linear parameter" in params and "alpha" in params
    assert "segments valid (2015-03-16:2015-03-31) and test (2015-03-20:2015-05-06) overlap" in text
    assert "backtest.optimizer: only the optimizer strategy reads it" in text


def test_n_drop_above_topk_and_optimizer_settings(tmp_path: Path) -> None:
    (line,) = _problems(_write(tmp_path, GOOD.replace("n_drop: 1", "n_drop: 5")))
    assert "backtest.n_drop (5) must not exceed topk (4)" in line
    text = GOOD.replace("  topk: 4\n  n_drop: 1\n", "  strategy: optimizer\n  optimizer:\n"
                        "    max_weight: 2\n    lookback: 1\n    risk_modle: factor\n")  # fmt: skip
    lines = _problems(_write(tmp_path, text))
    assert len(lines) == 3
    assert "backtest.optimizer.max_weight 2: give a share in (0, 1] (line 18)" in lines[0]
    assert "backtest.optimizer.lookback 1: give a whole number of days, 2 or more" in lines[1]
    assert "unknown key 'risk_modle' in backtest.optimizer" in lines[2]
    assert "(did you mean 'risk_model'?)" in lines[2]


def test_features_label_and_schedule_are_checked_at_load(tmp_path: Path) -> None:
    extra = 'MOM5: "Meen($close, 5)", LABEL0: "$open"'
    processors = "  processors: [{name: Fillnaa}]\n"
    text = GOOD.replace('MOM5: "$close / Ref($close, 5) - 1"', extra).replace(
        "features:\n", "label: Ref($close, -2\nfeatures:\n" + processors
    )
    lines = _problems(_write(tmp_path, text))
    where = [re.sub(r"^\S+: ", "", line).split(":")[0] for line in lines]
    assert where == ["features.extra.MOM5", "features.extra.LABEL0", "features.processors.0",
                     "label"]  # fmt: skip
    assert "features.extra.MOM5: unknown operator 'Meen'; did you mean Mean?" in lines[0]
    assert "features.extra.LABEL0: feature name 'LABEL0' is reserved" in lines[1]
    assert "unknown processor 'Fillnaa'" in lines[2]
    assert "expected ')'" in lines[3]
    rolling = GOOD.split("segments:")[0] + (
        "walk_forward: {start: 2015-04-01, end: 2015-03-01, step: 5}\n"
    )
    (line,) = _problems(_write(tmp_path, rolling))
    assert "walk_forward: the test period starts 2015-04-01, after it ends 2015-03-01" in line
    short = rolling.replace("end: 2015-03-01, step: 5", "end: 2015-05-01, step: 5, "
                            "train_days: 10, valid_days: 8")  # fmt: skip
    (line,) = _problems(_write(tmp_path, short))
    assert "walk_forward: train_days=10 leaves no day to train on" in line  # horizon 2: 11


def test_a_bad_strategy_setting_stops_the_run_before_any_step(tmp_path: Path) -> None:
    generate(Store(tmp_path / "store"), 12, 90, seed=3)
    text = GOOD.replace("STORE", str(tmp_path / "store")).replace("n_drop: 1", "n_drop: 9")
    path = _write(tmp_path, text.replace("open_cost: 0.0005", "open_cost: -1"))
    code, _, err = run("run", str(path), "--out", str(tmp_path / "out"))
    assert code == 1 and "Traceback" not in err
    assert "backtest.n_drop (9) must not exceed topk (4)" in err
    assert "backtest.open_cost cannot be negative" in err
    # nothing ran: no feature or step cache, no tracking (all under QUARRY_HOME), no output
    assert not (tmp_path / "quarry-home").exists()
    assert not (tmp_path / "out").exists()


def test_feature_names_and_model_columns_are_checked_at_load(tmp_path: Path) -> None:
    text = GOOD.replace("set: none", "set: alpha158").replace("MOM5:", "KMID:")
    (line,) = _problems(_write(tmp_path, text))
    assert "features.extra.KMID: 'KMID' is a feature of alpha158 already" in line
    text = GOOD.replace("  seed: 0\n", "  seed: 0\n  columns: [REV5, MOM6]\n")
    (line,) = _problems(_write(tmp_path, text))
    assert "model.columns: no feature 'MOM6' (did you mean 'MOM5'?)" in line
    assert line.endswith("(line 11)")
