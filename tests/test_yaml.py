"""The strict YAML loader every file a user writes goes through: YAML 1.2's core schema."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pytest

from quarry._yaml import MAX_DEPTH, MAX_NODES, YamlError, load_yaml, read_file
from quarry.exceptions import UsageError


@pytest.mark.parametrize(
    ("text", "value"),
    [
        # YAML 1.1's booleans are text
        ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("y", "y"), ("n", "n"),
        ("Yes", "Yes"), ("OFF", "OFF"),
        # YAML 1.2's are booleans
        ("true", True), ("false", False), ("True", True), ("FALSE", False),
        # integers: decimal, 0o octal, 0x hexadecimal; YAML 1.1's 010 (8), 1:30 (90), 1_000
        # and 0b11 are decimal or text
        ("42", 42), ("-7", -7), ("+3", 3), ("010", 10), ("0o17", 15), ("0x1F", 31),
        ("1:30", "1:30"), ("1_000", "1_000"), ("0b11", "0b11"),
        # floats: with a point or an exponent (1.1 read 1e-3 as text)
        ("0.5", 0.5), ("-1.25", -1.25), (".5", 0.5), ("1.", 1.0), ("1e-3", 0.001),
        ("2.5E2", 250.0), (".inf", math.inf), ("-.Inf", -math.inf),
        # null
        ("~", None), ("null", None), ("NULL", None), ("", None),
        # no timestamps: a date is text for the model that reads it to parse
        ("2020-01-02", "2020-01-02"), ("2020-01-02 10:00:00", "2020-01-02 10:00:00"),
        ("'yes'", "yes"), ('"1"', "1"), ("!!str 5", "5"), ("!!float 5", 5.0),
    ],
)  # fmt: skip
def test_scalars_read_as_yaml_1_2_core(text: str, value: object) -> None:
    assert load_yaml(f"k: {text}\n").data == {"k": value}
    assert type(load_yaml(f"k: {text}\n").data["k"]) is type(value)


def test_nan() -> None:
    assert math.isnan(load_yaml("k: .nan\n").data["k"])


def test_keys_are_the_text_written() -> None:
    doc = load_yaml("on: 1\nyes: 2\n1: 3\ntrue: 4\nnull: 5\n'x': 6\n2020-01-02: 7\n")
    assert doc.data == {"on": 1, "yes": 2, "1": 3, "true": 4, "null": 5, "x": 6,
                        "2020-01-02": 7}  # fmt: skip
    assert all(type(k) is str for k in doc.data)


@pytest.mark.parametrize("text", ["? [a, b]\n: 1\n", "? {a: 1}\n: 1\n", "{[a]: 1}\n"])
def test_a_list_or_mapping_as_a_key_is_refused(text: str) -> None:
    with pytest.raises(YamlError, match=r"line 1, column \d+: a key must be text"):
        load_yaml(text, "f.yaml")


def test_a_key_given_twice_names_the_key_and_both_lines() -> None:
    with pytest.raises(YamlError) as info:
        load_yaml("a:\n  b: 1\n  c: 2\n  'b': 3\n", "f.yaml")
    err = info.value
    assert (err.source, err.line, err.column) == ("f.yaml", 4, 3)
    assert (
        str(err) == "f.yaml: line 4, column 3: found the key 'b' twice (first on line 2); keep one"
    )
    assert isinstance(err, UsageError) and err.lines() == [str(err)]
    # the same key in two mappings is fine
    assert load_yaml("a: {b: 1}\nc: {b: 2}\n").data == {"a": {"b": 1}, "c": {"b": 2}}


def test_merge_keys_and_overrides() -> None:
    text = "base: &base {x: 1, y: 2}\nmine:\n  <<: *base\n  y: 3\n"
    assert load_yaml(text).data["mine"] == {"x": 1, "y": 3}


def test_syntax_errors_give_the_line() -> None:
    with pytest.raises(YamlError, match=r"^f\.yaml: line 2, column 2: not valid YAML \("):
        load_yaml("a: [1, 2\nb: 3\n", "f.yaml")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a: !!python/object:os.system x\n", "line 1, column 4: .*python/object"),
        ("a: !!set {x, y}\n", "line 1, column 4: .*tag:yaml.org,2002:set"),
        ("a: !!binary aGk=\n", "tag:yaml.org,2002:binary"),
        ("a: !!timestamp 2020-01-02\n", "tag:yaml.org,2002:timestamp"),
        ("a: !custom x\n", "!custom"),
        ("a: !!int abc\n", "line 1, column 4: .*'abc' is not an integer"),
        ("a: !!bool yes\n", "line 1, column 4: .*'yes' is not a boolean"),
        ("a: " + "1" * 5000 + "\n", "line 1, column 4: 1111.* is too long an integer"),
    ],
)
def test_only_the_core_tags(text: str, match: str) -> None:
    with pytest.raises(YamlError, match=match):
        load_yaml(text)


def test_a_billion_laughs_is_refused_before_it_is_built() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    started = time.perf_counter()
    with pytest.raises(YamlError) as info:
        load_yaml("\n".join(lines) + "\n", "bomb.yaml")
    assert time.perf_counter() - started < 5
    # a4 expands to 66,430 values, a5 to 597,871: the line of a5
    assert info.value.line == 6
    assert f"more than {MAX_NODES} values" in str(info.value)


def test_aliases_within_the_bound_are_fine() -> None:
    doc = load_yaml("a: &a [1, 2]\nb: *a\nc: *a\n")
    assert doc.data == {"a": [1, 2], "b": [1, 2], "c": [1, 2]}


def test_a_document_that_contains_itself_is_refused() -> None:
    with pytest.raises(YamlError, match=r"line 1, column 4: .*refers to itself"):
        load_yaml("a: &a [1, *a]\n")


def test_nesting_is_bounded() -> None:
    with pytest.raises(YamlError, match=f"nested more than {MAX_DEPTH} levels"):
        load_yaml("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n")
    with pytest.raises(YamlError, match="nested more than"):  # deeper than Python's stack
        load_yaml("a: " + "[" * 5000 + "]" * 5000 + "\n")
    chain = [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, MAX_DEPTH + 2)]
    with pytest.raises(YamlError, match="nested more than"):  # deep only through aliases
        load_yaml("a0: &a0 [x]\n" + "\n".join(chain) + "\n")


def test_lines_of_keys_and_items() -> None:
    doc = load_yaml("a:\n  b: 1\n  c:\n    - x\n    - {d: 2}\ne: 3\n")
    assert doc.line(("a",)) == 1
    assert doc.line(("a", "b")) == 2
    assert doc.line(("a", "c", 1)) == 5
    assert doc.line(("a", "c", 1, "d")) == 5
    assert doc.line(("e",)) == 6
    assert doc.line(("a", "missing")) == 1  # the nearest place the file has
    assert doc.line(("nowhere",)) is None


@pytest.mark.parametrize(("text", "data"), [("", None), ("# only a comment\n", None),
                                            ("- 1\n", [1]), ("x\n", "x")])  # fmt: skip
def test_documents_of_any_shape(text: str, data: object) -> None:
    assert load_yaml(text).data == data


def test_more_than_one_document_is_refused() -> None:
    with pytest.raises(YamlError, match=r"line 2, column 1: .*one YAML document"):
        load_yaml("a: 1\n---\nb: 2\n")


def test_a_file_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    binary = tmp_path / "params.bin"
    binary.write_bytes(b"\xff\xfe\x00learning_rate: 0.1")
    for path, why in ((binary, "can't decode"), (tmp_path / "gone.yaml", "No such file"),
                      (tmp_path, "Is a directory")):  # fmt: skip
        with pytest.raises(UsageError, match=f"^{re.escape(str(path))}: cannot read the "
                           f"parameters \\(.*{why}"):  # fmt: skip
            read_file(path, "parameters")
