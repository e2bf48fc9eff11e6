"""Reading the YAML a user writes (workflows, job manifests): one strict loader for all of them.

PyYAML reads YAML 1.1, where ``yes``, ``no``, ``on``, ``off``, ``y`` and ``n`` are booleans
(so ``seed: yes`` is 1 and a top-level ``on:`` is the key True), ``010`` is 8, ``1:30`` is 90,
and a key given twice silently keeps its last value. ``load_yaml`` reads YAML 1.2's core
schema instead, and refuses what a configuration file has no use for:

- only ``true`` and ``false`` (also ``True``, ``TRUE``, ``False``, ``FALSE``) are booleans;
  ``yes`` is the text "yes", which a model expecting a number or a boolean then refuses by
  name;
- integers are decimal, ``0o`` octal or ``0x`` hexadecimal; floats have a point or an exponent
  (``1e-3`` is a float), or are ``.inf``, ``-.inf`` or ``.nan``; ``~``, ``null`` and nothing
  are null; everything else is text, dates included (``2020-01-02``): the model reading a
  value decides whether it is a date;
- every key is the text written (``on:`` is the key "on", ``1:`` the key "1"); a list or a
  mapping as a key is refused, and so is a key given twice in one mapping (``<<`` merges
  stay, and keys written after them override what they merge);
- only the core tags (``!!str``, ``!!int``, ``!!float``, ``!!bool``, ``!!null``, ``!!seq``,
  ``!!map``): no ``!!python/...``, ``!!set``, ``!!binary``, ``!!timestamp`` or local tags;
- a document that refers to itself through an alias, expands through aliases to more than
  ``MAX_NODES`` values (a "billion laughs"), or nests more than ``MAX_DEPTH`` levels deep is
  refused before anything is built from it.

A problem raises ``YamlError`` (a ``UsageError``) naming the source, the line and column,
and what is wrong. ``Document.line`` gives the line of a value by its path, so a later
validation error (pydantic's ``loc``) can name its line too.

Examples
--------
>>> doc = load_yaml("on: [push]\\nseed: yes\\nrate: 1e-3\\n")
>>> doc.data, doc.line(("seed",))
({'on': ['push'], 'seed': 'yes', 'rate': 0.001}, 2)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from quarry.exceptions import UsageError, YamlError

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "Document",
    "StrictModel",
    "YamlError",
    "load_yaml",
    "read_file",
]

MAX_NODES = 100_000  # values (keys included) a document may expand to through its aliases
MAX_DEPTH = 100  # levels of nesting

_TAG = "tag:yaml.org,2002:"
_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}


class _Refused(yaml.constructor.ConstructorError):  # type: ignore[misc]
    """A document this loader refuses on purpose; its problem is the whole message."""

    def __init__(self, problem: str, node: Node) -> None:
        super().__init__(None, None, problem, node.start_mark)


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    """PyYAML's safe loader with YAML 1.2's core schema, text keys, and no key twice."""

    # the tables are this class's own, filled below: nothing of YAML 1.1's is inherited
    yaml_implicit_resolvers: ClassVar[dict[str | None, list[tuple[str, re.Pattern[str]]]]] = {}
    yaml_constructors: ClassVar[dict[str | None, Any]] = {}

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[str, Any]:
        if not isinstance(node, MappingNode):
            raise _Refused(f"expected a mapping, found {node.id}", node)
        first: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _TAG + "merge":
                continue
            key = _key(key_node)
            if key in first:
                raise _Refused(
                    f"found the key {key!r} twice (first on line {first[key]}); keep one",
                    key_node,
                )
            first[key] = key_node.start_mark.line + 1
        self.flatten_mapping(node)  # ``<<`` merges first, so that the keys written win
        return {_key(k): self.construct_object(v, deep=deep) for k, v in node.value}


def _key(node: Node) -> str:
    if not isinstance(node, ScalarNode):
        raise _Refused(f"a key must be text, not a {node.id}", node)
    return str(node.value)


def _null(loader: _Loader, node: Node) -> None:
    loader.construct_scalar(node)


def _bool(loader: _Loader, node: Node) -> bool:
    text = loader.construct_scalar(node)
    if text not in _BOOL:
        raise _Refused(f"{text!r} is not a boolean; write true or false", node)
    return _BOOL[text]


def _int(loader: _Loader, node: Node) -> int:
    text = loader.construct_scalar(node)
    if not _INT.fullmatch(text):
        raise _Refused(f"{text!r} is not an integer", node)
    try:
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        raise _Refused(f"{text[:20]}... is too long an integer", node) from None


def _float(loader: _Loader, node: Node) -> float:
    text = loader.construct_scalar(node)
    if not (_FLOAT.fullmatch(text) or re.fullmatch(r"[-+]?[0-9]+", text)):
        raise _Refused(f"{text!r} is not a number", node)
    if text.lower().lstrip("+-") == ".inf":
        return -math.inf if text.startswith("-") else math.inf
    if text.lower() == ".nan":
        return math.nan
    return float(text)


def _undefined(loader: _Loader, node: Node) -> None:
    raise _Refused(
        f"the tag {node.tag!r} is not taken here; write plain YAML (text, numbers, true or "
        "false, null, lists and mappings)",
        node,
    )


# (tag, the first characters it can start with, its pattern); ints are tried before floats
for _tag, _first, _pattern in [
    ("bool", [*"tTfF"], r"true|True|TRUE|false|False|FALSE"),
    ("int", [*"-+0123456789"], _INT.pattern),
    ("float", [*"-+.0123456789"], _FLOAT.pattern),
    ("null", [*"~nN", ""], r"~|null|Null|NULL|"),  # "": an empty value
    ("merge", ["<"], r"<<"),
]:
    _Loader.add_implicit_resolver(_TAG + _tag, re.compile(f"^(?:{_pattern})$"), _first)
for _tag, _construct in [
    ("null", _null),
    ("bool", _bool),
    ("int", _int),
    ("float", _float),
    ("str", yaml.SafeLoader.construct_yaml_str),
    ("seq", yaml.SafeLoader.construct_yaml_seq),
    ("map", yaml.SafeLoader.construct_yaml_map),
]:
    _Loader.add_constructor(_TAG + _tag, _construct)
_Loader.add_constructor(None, _undefined)


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: Node) -> None:
    """Refuse a node graph that refers to itself, or whose expansion (aliases followed) is
    more than ``MAX_NODES`` values or ``MAX_DEPTH`` levels; in time linear in its nodes."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    path: set[int] = set()  # the nodes being expanded: the current path from the root
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        kids = _children(node)
        if finished:
            path.discard(id(node))
            size[id(node)] = 1 + sum(size[id(k)] for k in kids)
            depth[id(node)] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[id(node)] > MAX_NODES:
                raise _Refused(
                    f"the aliases (*name) here expand the file to more than {MAX_NODES} "
                    "values; write the values out instead",
                    node,
                )
            if depth[id(node)] > MAX_DEPTH:
                raise _Refused(f"the file is nested more than {MAX_DEPTH} levels deep", node)
            continue
        if id(node) in size:
            continue
        path.add(id(node))
        stack.append((node, True))
        for kid in kids:
            if id(kid) in path:
                raise _Refused("this value refers to itself through an alias", kid)
            if id(kid) not in size:
                stack.append((kid, False))


@dataclass(frozen=True)
class Document:
    """What ``load_yaml`` read: the ``data`` and the node graph it was built from."""

    data: Any
    root: Node | None = field(default=None, repr=False, compare=False)

    def line(self, loc: Sequence[str | int]) -> int | None:
        """The line (1-based) of the value at ``loc`` (keys and list indexes, as pydantic's
        error locations), or of the nearest value on the way to it the file has; None for
        none (or an empty ``loc``)."""
        node, line = self.root, None
        for part in loc:
            if isinstance(node, MappingNode):
                found = [(k, v) for k, v in node.value if k.value == str(part)]
                if not found:
                    break
                key, node = found[-1]
                line = key.start_mark.line + 1
            elif isinstance(node, SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    break
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line


def load_yaml(text: str, source: str = "<yaml>") -> Document:
    """Read one YAML document as YAML 1.2's core schema does, strictly (see the module).

    Parameters
    ----------
    text : str
        The document.
    source : str
        What to call it in errors, usually the file's path.

    Raises
    ------
    YamlError
        Naming ``source``, the line and the column, for a syntax error, a key given twice, a
        key that is not text, an unknown tag, more than one document, or an alias expansion or
        nesting beyond the bounds.
    """
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return Document(None)
        _check_expansion(root)
        return Document(loader.construct_document(root), root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if isinstance(exc, _Refused):
            problem = exc.problem
        elif isinstance(exc, yaml.composer.ComposerError) and "another document" in str(
            exc.problem
        ):
            problem = "a file holds one YAML document; remove the '---' and what follows it"
        else:
            problem = f"not valid YAML ({exc.problem or exc.context})"
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise YamlError(source, problem, line, column) from None
    except yaml.YAMLError as exc:  # the reader's: a character YAML does not allow
        raise YamlError(source, f"not valid YAML ({exc})") from None
    except RecursionError:  # the composer recurses once per level
        raise YamlError(source, f"the file is nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()


def read_file(path: str | Path, what: str) -> str:
    """The text of a file a user wrote (UTF-8), or a UsageError naming it and why it cannot
    be read (missing, a folder, not text)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"{path}: cannot read the {what} ({reason})") from None


class StrictModel(BaseModel):
    """The base of every model of a file a user writes (a workflow, a job manifest): an
    unknown key is an error, nothing is coerced (no text read as a number, no number as a
    bool), no infinity or NaN, and a loaded file cannot be changed."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, strict=True, allow_inf_nan=False
    )
