"""The job manifest: sizes, durations, every field's checks, error paths, files, round trips."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from quarry.exceptions import UsageError
from quarry.jobs._manifest import (
    DataMount,
    Manifest,
    ManifestError,
    Resources,
    Retries,
    Run,
    check_capacity,
    format_memory,
    load_manifest,
    manifest_from_dict,
    manifest_from_yaml,
    parse_duration,
    parse_memory,
    validation_problems,
)

GI = 1024**3
MI = 1024**2


def minimal(**fields: Any) -> dict[str, Any]:
    return {"name": "job", "run": {"command": ["python", "train.py"]}, **fields}


def problems(data: object) -> list[dict[str, str]]:
    with pytest.raises(ManifestError) as info:
        manifest_from_dict(data)
    return [dict(p) for p in info.value.problems]


def only_problem(data: object) -> dict[str, str]:
    found = problems(data)
    assert len(found) == 1, found
    return found[0]


# -- memory ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4Gi", 4 * 1024**3),
        ("512Mi", 512 * 1024**2),
        ("1Ki", 1024),
        ("2Ti", 2 * 1024**4),
        ("1Pi", 1024**5),
        ("1G", 1_000_000_000),
        ("100M", 100_000_000),
        ("500k", 500_000),
        ("3K", 3_000),
        ("2T", 2_000_000_000_000),
        ("1.5Gi", 1_610_612_736),  # 3 * 2**29
        ("0.5Ki", 512),
        ("0.1k", 100),
        ("1.0001Ki", 1025),  # 1024.1024 bytes rounds up
        ("4GiB", 4 * 1024**3),
        ("1MB", 1_000_000),
        (" 4 Gi ", 4 * 1024**3),
        ("2048", 2048),
        ("0", 0),
        (2048, 2048),
        (0, 0),
        (3.0, 3),
    ],
)
def test_parse_memory(text: str | int, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (-1, "negative"),
        ("-1Gi", "negative"),
        ("abc", "not a memory size"),
        ("", "not a memory size"),
        ("Gi", "not a memory size"),
        ("4Gx", "unknown unit 'Gx'"),
        ("512m", r"unknown unit 'm' \(did you mean '512Mi' or '512M'\?\)"),
        ("4gb", r"did you mean '4Gi' or '4G'\?"),
        ("1.5", "not a whole number of bytes"),
        (1.5, "not a whole number of bytes"),
        (True, "not a memory size"),
        (None, "not a memory size"),
        ([4], "not a memory size"),
        (math.inf, "not a memory size"),
    ],
)
def test_parse_memory_rejects(value: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_memory(value)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (1000, "1k"),
        (1024, "1Ki"),
        (1536, "1536"),  # shorter than 1.5Ki
        (4 * 1024**3, "4Gi"),
        (1536 * 1024**2, "1.5Gi"),
        (512 * 1024**2, "512Mi"),
        (10**9, "1G"),
        (100 * 10**6, "100M"),
        (123_456_789, "123456789"),
        (3 * 1024**5, "3Pi"),
    ],
)
def test_format_memory(n: int, text: str) -> None:
    assert format_memory(n) == text
    assert parse_memory(text) == n


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_format_memory_rejects(bad: Any) -> None:
    with pytest.raises(ValueError, match="not a number of bytes"):
        format_memory(bad)


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        ("1h30m", 5400.0),
        ("1m 30s", 90.0),
        ("1.5h", 5400.0),
        ("90", 90.0),
        ("0", 0.0),
        (45, 45.0),
        (0.5, 0.5),
    ],
)
def test_parse_duration(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("-5s", "negative"),
        (-1, "at least 0 seconds"),
        ("5x", "not a duration"),
        ("h", "not a duration"),
        ("", "not a duration"),
        ("1 2h", "not a duration"),
        ("1h-30m", "not a duration"),
        (True, "not a duration"),
        (None, "not a duration"),
        (math.inf, "at least 0 seconds"),
    ],
)
def test_parse_duration_rejects(value: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_duration(value)


# -- resources -------------------------------------------------------------------------------


def test_resources_defaults_and_text_memory() -> None:
    assert Resources() == Resources(cpus=1.0, memory=GI, gpus=0)
    r = Resources.model_validate({"cpus": 0.5, "memory": "16Gi", "gpus": 2})
    assert (r.cpus, r.memory, r.gpus) == (0.5, 16 * GI, 2)


@pytest.mark.parametrize(
    ("resources", "path", "match"),
    [
        ({"cpus": -1}, "resources.cpus", r"should be greater than 0 \(got -1\)"),
        ({"cpus": 0}, "resources.cpus", "greater than 0"),
        ({"cpus": float("nan")}, "resources.cpus", "finite"),
        ({"cpus": True}, "resources.cpus", "expected a number, got True"),
        ({"cpus": "many"}, "resources.cpus", "valid number"),
        ({"memory": "0"}, "resources.memory", "greater than 0"),
        ({"memory": "-4Gi"}, "resources.memory", "negative"),
        ({"memory": "4Gx"}, "resources.memory", "unknown unit 'Gx'"),
        ({"gpus": -1}, "resources.gpus", "greater than or equal to 0"),
        ({"gpus": 1.5}, "resources.gpus", "integer"),
        ({"gpus": True}, "resources.gpus", "expected a number"),
    ],
)
def test_resources_rejects(resources: dict[str, Any], path: str, match: str) -> None:
    problem = only_problem(minimal(resources=resources))
    assert problem["path"] == path
    assert problem["message"].startswith(path)
    assert re.search(match, problem["message"]), problem["message"]


# -- data ------------------------------------------------------------------------------------


def test_data_mounts() -> None:
    m = manifest_from_dict(
        minimal(data=[{"dataset": "cn_daily"}, {"dataset": "out", "mode": "rw"}])
    )
    assert m.data == [DataMount(dataset="cn_daily", mode="ro"), DataMount(dataset="out", mode="rw")]


@pytest.mark.parametrize(
    ("data", "path", "match"),
    [
        ([{"dataset": "a", "mode": "rx"}], "data[0].mode", r"should be 'ro' or 'rw' \(got 'rx'\)"),
        ([{"dataset": ""}], "data[0].dataset", "at least 1 character"),
        ([{"mode": "ro"}], "data[0].dataset", "data[0].dataset is required"),
        (
            [{"dataset": "a"}, {"dataset": "a", "mode": "rw"}],
            "data",
            "'a' is listed more than once",
        ),
        ({"dataset": "a"}, "data", "valid list"),
    ],
)
def test_data_rejects(data: Any, path: str, match: str) -> None:
    problem = only_problem(minimal(data=data))
    assert problem["path"] == path
    assert re.search(re.escape(match) if "[" in match else match, problem["message"])


# -- run -------------------------------------------------------------------------------------


def test_run_workflow_or_command() -> None:
    assert manifest_from_dict(minimal(run={"workflow": "wf.yaml"})).run == Run(workflow="wf.yaml")
    m = manifest_from_dict(minimal(run={"command": ["python", "x.py"], "workdir": "/srv"}))
    assert (m.run.workflow, m.run.command, m.run.workdir) == (None, ["python", "x.py"], "/srv")


@pytest.mark.parametrize(
    ("run", "path", "message"),
    [
        ({}, "run", "run: give either workflow or command"),
        ({"workdir": "/srv"}, "run", "run: give either workflow or command"),
        ({"workflow": "w.yaml", "command": ["x"]}, "run",
         "run: give either workflow or command, not both"),
        ({"workflow": "w.yaml", "workdir": "/srv"}, "run",
         "run: workdir goes with command, not with workflow"),
        ({"command": []}, "run.command",
         "run.command should have at least 1 item, not 0 (got [])"),
        ({"command": "python x.py"}, "run.command",
         "run.command: command is a list of arguments, e.g. [python, train.py], "
         "not the text 'python x.py'"),
        ({"command": ["python", 3]}, "run.command[1]",
         "run.command[1] should be text, got 3; quote it in YAML: '3'"),
        ({"workflow": ""}, "run.workflow",
         "run.workflow should have at least 1 character (got '')"),
    ],
)  # fmt: skip
def test_run_rejects(run: dict[str, Any], path: str, message: str) -> None:
    assert only_problem(minimal(run=run)) == {"path": path, "message": message}


def test_missing_run_names_run() -> None:
    problem = only_problem({"name": "job"})
    assert problem["path"] == "run"
    assert problem["message"].startswith("run is required")


# -- retries ---------------------------------------------------------------------------------


def test_retries_defaults_and_durations() -> None:
    assert manifest_from_dict(minimal()).retries == Retries(
        max=0, backoff=1.0, on=["lost"], memory_multiplier_on_oom=2.0
    )
    r = manifest_from_dict(
        minimal(retries={"max": 3, "backoff": "2m", "on": ["oom", "lost"],
                         "memory_multiplier_on_oom": 1.5})
    ).retries  # fmt: skip
    assert (r.max, r.backoff, r.on, r.memory_multiplier_on_oom) == (3, 120.0, ["oom", "lost"], 1.5)
    assert manifest_from_dict(minimal(retries={"backoff": 30})).retries.backoff == 30.0


@pytest.mark.parametrize(
    ("retries", "path", "match"),
    [
        ({"max": -1}, "retries.max", "greater than or equal to 0"),
        ({"backoff": -1}, "retries.backoff", "at least 0 seconds"),
        ({"backoff": "soon"}, "retries.backoff", "'soon' is not a duration"),
        ({"on": ["crash"]}, "retries.on[0]", "should be 'failed', 'oom' or 'lost'"),
        ({"on": ["oom", "oom"]}, "retries.on", "oom listed more than once"),
        ({"on": ["oom"], "memory_multiplier_on_oom": 0.5}, "retries.memory_multiplier_on_oom",
         "greater than or equal to 1"),
        ({"memory_multiplier_on_oom": 3}, "retries.memory_multiplier_on_oom",
         "no effect unless retries.on includes oom"),
    ],
)  # fmt: skip
def test_retries_rejects(retries: dict[str, Any], path: str, match: str) -> None:
    problem = only_problem(minimal(retries=retries))
    assert problem["path"] == path
    assert match in problem["message"]


# -- the top level ---------------------------------------------------------------------------


def test_minimal_manifest_defaults() -> None:
    m = manifest_from_dict(minimal())
    assert (m.name, m.description, m.project, m.priority, m.timeout) == (
        "job",
        "",
        "default",
        0,
        None,
    )
    assert (m.resources, m.data, m.env, m.labels) == (Resources(), [], {}, {})


@pytest.mark.parametrize("name", ["train-lgb", "a", "v1.2_nightly", "9lives", "x" * 100])
def test_name_accepts_slugs(name: str) -> None:
    assert manifest_from_dict(minimal(name=name)).name == name


@pytest.mark.parametrize("name", ["", "my job", "-flag", ".hidden", "a/b", "x" * 101, "é"])
def test_name_rejects_non_slugs(name: str) -> None:
    problem = only_problem(minimal(name=name))
    assert problem["path"] == "name"
    assert "not a valid name" in problem["message"]


def test_project_is_a_slug() -> None:
    assert manifest_from_dict(minimal(project="alpha-team")).project == "alpha-team"
    assert only_problem(minimal(project="alpha team"))["path"] == "project"


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [("1h", 3600.0), ("30m", 1800.0), ("90s", 90.0), (90, 90.0), (None, None)],
)
def test_timeout(timeout: Any, seconds: float | None) -> None:
    assert manifest_from_dict(minimal(timeout=timeout)).timeout == seconds


@pytest.mark.parametrize(
    ("timeout", "match"),
    [
        (0, "greater than 0"),
        ("0s", "greater than 0"),
        ("-1h", "negative"),
        ("later", "not a duration"),
    ],
)
def test_timeout_rejects(timeout: Any, match: str) -> None:
    problem = only_problem(minimal(timeout=timeout))
    assert problem["path"] == "timeout"
    assert match in problem["message"]


@pytest.mark.parametrize("priority", [-100, 0, 100])
def test_priority_bounds_accept(priority: int) -> None:
    assert manifest_from_dict(minimal(priority=priority)).priority == priority


@pytest.mark.parametrize(
    ("priority", "match"),
    [
        (101, "less than or equal to 100"),
        (-101, "greater than or equal to -100"),
        (1.5, "integer"),
        (True, "expected a number"),
    ],
)
def test_priority_rejects(priority: Any, match: str) -> None:
    problem = only_problem(minimal(priority=priority))
    assert problem["path"] == "priority"
    assert match in problem["message"]


def test_env_and_labels() -> None:
    m = manifest_from_dict(
        minimal(env={"OMP_NUM_THREADS": "4", "_X": ""}, labels={"team": "alpha"})
    )
    assert (m.env, m.labels) == ({"OMP_NUM_THREADS": "4", "_X": ""}, {"team": "alpha"})


@pytest.mark.parametrize(
    ("fields", "path", "match"),
    [
        ({"env": {"THREADS": 4}}, "env.THREADS", "env.THREADS should be text, got 4; quote it"),
        ({"env": {"1BAD": "x"}}, "env", "'1BAD': an environment variable name"),
        ({"env": {"MY-VAR": "x"}}, "env", "'MY-VAR'"),
        ({"env": {"KEY": "a\0b"}}, "env", "KEY: a value holds a NUL character"),
        ({"env": ["A=1"]}, "env", "valid dictionary"),
        ({"labels": {"team": 7}}, "labels.team", "should be text"),
        ({"labels": {"": "x"}}, "labels", "a label key is"),
        ({"description": 5}, "description", "should be text"),
    ],
)
def test_env_labels_description_reject(fields: dict[str, Any], path: str, match: str) -> None:
    problem = only_problem(minimal(**fields))
    assert problem["path"] == path
    assert match in problem["message"]


# -- unknown keys and error reporting --------------------------------------------------------


def test_unknown_key_at_top_level() -> None:
    problem = only_problem(minimal(resorces={"cpus": 2}))
    assert problem["path"] == "resorces"
    assert problem["message"].startswith(
        "unknown key 'resorces' at the top level (did you mean 'resources'?); valid keys there: "
        "name, description, project, resources, data, run"
    )


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ({"resources": {"cpu": 2}}, "resources.cpu",
         "unknown key 'cpu' in resources (did you mean 'cpus'?); "
         "valid keys there: cpus, memory, gpus"),
        ({"data": [{"dataset": "a"}, {"dataset": "b", "mod": "rw"}]}, "data[1].mod",
         "unknown key 'mod' in data[1] (did you mean 'mode'?); valid keys there: dataset, mode"),
        ({"retries": {"tries": 3}}, "retries.tries",
         "unknown key 'tries' in retries; "
         "valid keys there: max, backoff, on, memory_multiplier_on_oom"),
        ({"run": {"command": ["x"], "cwd": "/"}}, "run.cwd",
         "unknown key 'cwd' in run; valid keys there: workflow, command, workdir"),
    ],
)  # fmt: skip
def test_unknown_nested_key_names_key_and_path(
    fields: dict[str, Any], path: str, message: str
) -> None:
    assert only_problem(minimal(**fields)) == {"path": path, "message": message}


def test_every_problem_is_reported_and_the_line_is_one_line() -> None:
    with pytest.raises(ManifestError) as info:
        manifest_from_dict({"name": "bad name", "resources": {"cpus": -2, "gpu": 1}}, "job.yaml")
    err = info.value
    assert [p["path"] for p in err.problems] == ["name", "resources.cpus", "resources.gpu", "run"]
    assert isinstance(err, UsageError)
    assert "\n" not in str(err)
    assert str(err).startswith("job.yaml: name: 'bad name' is not a valid name")
    assert str(err).count("job.yaml") == 1
    assert err.lines()[1] == "job.yaml: resources.cpus should be greater than 0 (got -2)"


@pytest.mark.parametrize(("data", "kind"), [(None, "nothing"), ([1, 2], "a list"), ("x", "a str")])
def test_not_a_mapping(data: object, kind: str) -> None:
    assert only_problem(data) == {
        "path": "",
        "message": f"a manifest is a mapping (name, resources, run, ...), got {kind}",
    }


def test_validation_problems_from_a_raw_validation_error() -> None:
    with pytest.raises(ValidationError) as info:
        Manifest.model_validate({"name": "job", "run": {"command": ["x"]}, "priority": 500})
    assert validation_problems(info.value) == [
        {"path": "priority", "message": "priority should be less than or equal to 100 (got 500)"}
    ]


def test_models_are_frozen() -> None:
    m = manifest_from_dict(minimal())
    with pytest.raises(ValidationError, match="frozen"):
        m.priority = 5  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        m.resources.cpus = 64  # type: ignore[misc]


# -- JSON round trip -------------------------------------------------------------------------

FULL = {
    "name": "train-lgb",
    "description": "nightly retrain",
    "project": "research",
    "resources": {"cpus": 4, "memory": "16Gi", "gpus": 1},
    "data": [{"dataset": "cn_daily", "mode": "ro"}, {"dataset": "scratch", "mode": "rw"}],
    "run": {"command": ["python", "train.py", "--fast"], "workdir": "/srv/research"},
    "env": {"OMP_NUM_THREADS": "4"},
    "retries": {"max": 3, "backoff": "30s", "on": ["lost", "oom"], "memory_multiplier_on_oom": 1.5},
    "timeout": "2h",
    "priority": 10,
    "labels": {"team": "alpha"},
}


def test_json_round_trip_stores_bytes_and_seconds() -> None:
    m = manifest_from_dict(FULL)
    stored = json.loads(m.to_json())
    assert stored["resources"] == {"cpus": 4.0, "memory": 16 * GI, "gpus": 1}
    assert stored["retries"]["backoff"] == 30.0
    assert stored["timeout"] == 7200.0
    back = Manifest.from_json(m.to_json())
    assert back == m
    assert back.to_json() == m.to_json()
    assert manifest_from_dict(stored) == m  # the store's dict form reads back the same


def test_from_json_rejects_bad_json_and_bad_manifests() -> None:
    with pytest.raises(ManifestError, match=r"^stored manifest: not valid JSON"):
        Manifest.from_json("{not json")
    with pytest.raises(ManifestError, match=r"^stored manifest: run is required"):
        Manifest.from_json('{"name": "job"}')


# -- capacity --------------------------------------------------------------------------------


def test_check_capacity_accepts_what_fits_exactly() -> None:
    m = manifest_from_dict(minimal(resources={"cpus": 16, "memory": "16Gi", "gpus": 1}))
    assert check_capacity(m, Resources(cpus=16, memory=16 * GI, gpus=1)) is None


def test_check_capacity_names_request_and_capacity() -> None:
    m = manifest_from_dict(minimal(name="big", resources={"memory": "64Gi"}))
    with pytest.raises(ManifestError) as info:
        check_capacity(m, Resources.model_validate({"cpus": 16, "memory": "16Gi"}))
    message = "resources.memory 64Gi exceeds the largest worker's 16Gi"
    assert info.value.problems == [{"path": "resources.memory", "message": message}]
    assert str(info.value) == "job 'big': resources.memory 64Gi exceeds the largest worker's 16Gi"


def test_check_capacity_lists_each_resource_over() -> None:
    m = manifest_from_dict(minimal(resources={"cpus": 32.5, "memory": "1536Mi", "gpus": 2}))
    with pytest.raises(ManifestError) as info:
        check_capacity(m, Resources(cpus=8, memory=GI, gpus=0))
    assert info.value.problems == [
        {"path": "resources.cpus", "message": "resources.cpus 32.5 exceeds the largest worker's 8"},
        {"path": "resources.memory",
         "message": "resources.memory 1.5Gi exceeds the largest worker's 1Gi"},
        {"path": "resources.gpus", "message": "resources.gpus 2: no worker has any gpus"},
    ]  # fmt: skip


# -- files -----------------------------------------------------------------------------------

JOB_YAML = """\
name: train-lgb
description: nightly retrain
project: research
resources: {cpus: 4, memory: 16Gi, gpus: 1}
data:
  - {dataset: cn_daily, mode: ro}
  - {dataset: scratch, mode: rw}
run:
  command: [python, train.py, --fast]
  workdir: /srv/research
env: {OMP_NUM_THREADS: "4"}
retries:
  max: 3
  backoff: 30s
  on: [lost, oom]
  memory_multiplier_on_oom: 1.5
timeout: 2h
priority: 10
labels: {team: alpha}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_manifest_reads_the_full_example(tmp_path: Path) -> None:
    # a bare ``on`` is the key "on" here, not YAML 1.1's True
    assert load_manifest(write(tmp_path, JOB_YAML)) == manifest_from_dict(FULL)


def test_yes_no_on_off_stay_text() -> None:
    text = "name: job\nrun: {command: [x]}\nenv: {DEBUG: yes, QUIET: no, A: on, B: off}\n"
    assert manifest_from_yaml(text).env == {"DEBUG": "yes", "QUIET": "no", "A": "on", "B": "off"}


def test_yaml_true_is_still_a_boolean() -> None:
    problem = only_problem(minimal(env={"FAST": True}))
    assert problem["message"] == "env.FAST should be text, got True; quote it in YAML: 'True'"
    with pytest.raises(ManifestError, match=r"env.FAST should be text, got True"):
        manifest_from_yaml("name: job\nrun: {command: [x]}\nenv: {FAST: true}\n")


def test_load_manifest_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "name: job\nresources:\n  cpu: 2\nrun: {workflow: w.yaml}\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert str(info.value).startswith(
        f"{path}: unknown key 'cpu' in resources (did you mean 'cpus'?)"
    )
    assert info.value.problems[0]["path"] == "resources.cpu"
    assert info.value.source == str(path)


def test_load_manifest_yaml_syntax_error_gives_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: job\nrun: {command: [x]\npriority: 1\n")
    with pytest.raises(
        ManifestError, match=rf"^{re.escape(str(path))}: line 3, column 1: not valid YAML"
    ):
        load_manifest(path)


def test_load_manifest_duplicate_key_gives_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: job\nrun: {command: [x]}\nresources:\n  cpus: 2\n  cpus: 4\n")
    with pytest.raises(ManifestError, match=r": line 5, column 3: .*found the key 'cpus' twice"):
        load_manifest(path)


def test_load_manifest_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"nope\.yaml: cannot read the manifest"):
        load_manifest(tmp_path / "nope.yaml")
    with pytest.raises(ManifestError, match=r"job\.yaml: a manifest is a mapping .* got nothing"):
        load_manifest(write(tmp_path, ""))


# -- the shared strict YAML loader (quarry._yaml) --------------------------------------------


def test_yes_where_a_number_goes_is_refused_by_name() -> None:
    with pytest.raises(ManifestError) as info:
        manifest_from_yaml("name: job\nrun: {command: [x]}\npriority: yes\n", "job.yaml")
    assert [p["path"] for p in info.value.problems] == ["priority"]
    assert "'yes'" in info.value.problems[0]["message"]


def test_a_date_like_value_is_text() -> None:
    # YAML 1.1 made it a datetime.date, which a text field refused
    text = "name: job\ndescription: 2024-01-31\nrun: {command: [x]}\nenv: {SINCE: 2024-01-31}\n"
    m = manifest_from_yaml(text)
    assert (m.description, m.env) == ("2024-01-31", {"SINCE": "2024-01-31"})


def test_a_duplicate_key_in_a_nested_flow_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "name: job\nrun: {command: [x], command: [y]}\n")
    with pytest.raises(ManifestError, match=r": line 2, column 21: .*'command' twice"):
        load_manifest(path)


def test_yaml_problems_carry_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: job\nrun: {command: [x]}\nresources:\n  cpus: -2\n  gpu: 1\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.lines() == [
        f"{path}: resources.cpus should be greater than 0 (got -2) (line 4)",
        f"{path}: unknown key 'gpu' in resources (did you mean 'gpus'?); valid keys there: "
        "cpus, memory, gpus (line 5)",
    ]
    assert [p["path"] for p in info.value.problems] == ["resources.cpus", "resources.gpu"]


def test_an_alias_bomb_is_refused() -> None:
    lines = ["name: job", "run: {command: [x]}", "labels:", '  a0: &a0 ["x", "x", "x", "x"]']
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 4)}]" for i in range(1, 12)]
    with pytest.raises(ManifestError, match=r"line \d+, column \d+: the aliases .* more than"):
        manifest_from_yaml("\n".join(lines) + "\n")
