"""Model metadata: what a registered version is, who made it and from what, checked against
the JSON Schema kept beside this module (``model_metadata.schema.json``, shipped with the
package; ``docs/reference/model-metadata.schema.json`` is generated from it).

The schema is the one statement of the rules. jsonschema is not one of Quarry's
dependencies, so the schema is read here by a small interpreter of the keywords it uses; a
keyword it does not know is refused when the schema is loaded (the file cannot promise a
check that is not made), and the tests hold the interpreter's verdicts to jsonschema's.

Where a version's metadata lives: a model-version tag ``quarry.metadata`` holding the JSON
of every field but ``name`` and ``version``, which are the version's own keys in the
registry. The tag is written by the call that creates the version, so no version exists
without it, and a reader (the serving service) gets it with one registry request, no
artifact download (``quarry.tracking.model_metadata``).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from typing import Any

from quarry._json import dumps
from quarry.exceptions import DataError, UsageError

__all__ = [
    "DEFAULT_PROJECT",
    "FILLED",
    "METADATA_TAG",
    "METADATA_VERSION",
    "PROJECT_TAG",
    "SCHEMA_FILE",
    "decode",
    "encode",
    "metadata_schema",
    "validate_metadata",
]

SCHEMA_FILE = "model_metadata.schema.json"
METADATA_VERSION = 1
METADATA_TAG = "quarry.metadata"
# A registered-model tag: the project every version of the model belongs to.
PROJECT_TAG = "quarry.project"
DEFAULT_PROJECT = "default"
# What ``register`` fills in itself, from its arguments, the run and the registry.
FILLED = ("metadata_version", "name", "version", "run_id", "metrics")
# MLflow's limit on a model-version tag's value, in characters.
TAG_LIMIT = 100_000
# Where a person gives each field in a workflow file.
WORKFLOW_KEYS = {
    "description": "tracking.description",
    "authors": "tracking.authors",
    "licence": "tracking.licence",
    "project": "tracking.project",
}

# The keywords the interpreter checks, and those that only describe.
_CHECKED = frozenset({"type", "const", "required", "properties", "additionalProperties",
                      "items", "minItems", "minLength", "pattern", "minimum"})  # fmt: skip
_ANNOTATIONS = frozenset({"$schema", "$comment", "title", "description", "default", "format",
                          "examples"})  # fmt: skip
_MISSING = "is missing"
_JSON_TYPES = {"string": "text", "integer": "an integer", "number": "a number",
               "boolean": "true or false", "array": "a list", "object": "a mapping",
               "null": "null"}  # fmt: skip

Where = tuple[str | int, ...]


@functools.cache
def _schema() -> dict[str, Any]:
    text = resources.files("quarry.tracking").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    _check_keywords(schema, "")
    return schema


def metadata_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a registered version's metadata."""
    return copy.deepcopy(_schema())


def _check_keywords(node: Mapping[str, Any], where: str) -> None:
    unknown = set(node) - _CHECKED - _ANNOTATIONS
    if unknown:  # the schema file was changed beyond what is checked here: a bug, not input
        raise RuntimeError(f"{SCHEMA_FILE}{where}: keywords not checked by Quarry: {unknown}")
    for name, child in node.get("properties", {}).items():
        _check_keywords(child, f"{where}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), Mapping):
            _check_keywords(node[key], f"{where}[{key}]")


# -- checking a record ---------------------------------------------------------------------------


def _is(value: Any, kind: str) -> bool:
    """JSON Schema's types (an integer may be written 3.0; true is not a number)."""
    if isinstance(value, bool):
        return kind == "boolean"
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return {
        "number": isinstance(value, int | float),
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
        "null": value is None,
    }.get(kind, False)


def _kind(value: Any) -> str:
    for kind in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is(value, kind):
            return _JSON_TYPES[kind]
    return type(value).__name__


def _same(value: Any, const: Any) -> bool:
    if isinstance(value, bool) or isinstance(const, bool):
        return type(value) is type(const) and value == const
    return bool(value == const)


def _problems(node: Mapping[str, Any], value: Any, path: Where) -> Iterator[tuple[Where, str]]:
    """Every way ``value`` breaks ``node``'s rules, each with where."""
    kinds = node.get("type")
    if kinds is not None:
        allowed = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, k) for k in allowed):
            wanted = " or ".join(_JSON_TYPES[k] for k in allowed)
            yield path, f"should be {wanted}, got {_kind(value)}"
            return
    if "const" in node and not _same(value, node["const"]):
        yield path, f"should be {json.dumps(node['const'])}, got {json.dumps(value)[:60]}"
    if isinstance(value, str):
        if len(value) < node.get("minLength", 0):
            yield path, "should not be empty"
        elif "pattern" in node and re.search(node["pattern"], value) is None:
            yield path, f"should match {node['pattern']}, got {value[:60]!r}"
    if _is(value, "number") and "minimum" in node and value < node["minimum"]:
        yield path, f"should be at least {node['minimum']}, got {value}"
    if isinstance(value, list):
        if len(value) < node.get("minItems", 0):
            yield path, "should not be empty"
        if "items" in node:
            for index, item in enumerate(value):
                yield from _problems(node["items"], item, (*path, index))
    if isinstance(value, dict):
        for key in node.get("required", ()):
            if key not in value:
                yield (*path, key), _MISSING
        known = node.get("properties", {})
        others = node.get("additionalProperties", True)
        for key, item in value.items():
            if key in known:
                yield from _problems(known[key], item, (*path, key))
            elif others is False:
                yield (*path, key), "is not a field of model metadata"
            elif isinstance(others, Mapping):
                yield from _problems(others, item, (*path, key))


def _where(path: Where) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text or "the record"


def _how(missing: Sequence[Where]) -> str:
    keys = [WORKFLOW_KEYS[p[0]] for p in missing if len(p) == 1 and p[0] in WORKFLOW_KEYS]
    python = "in the metadata passed to quarry.tracking.register"
    if keys:
        return f" (in the workflow file: {', '.join(keys)}; from Python: {python})"
    return f" (give {'it' if len(missing) == 1 else 'them'} {python})"


def validate_metadata(
    record: Mapping[str, Any], *, subject: str = "model metadata"
) -> dict[str, Any]:
    """``record`` as JSON data (dates and the like as text, NaN as null), checked against the
    metadata schema (``metadata_schema``).

    Raises
    ------
    UsageError
        One line: ``subject``, the missing fields by name and where to give them, then every
        other problem with its place, e.g. ``model metadata: missing description, licence
        (in the workflow file: tracking.description, tracking.licence; ...)``.
    """
    if not isinstance(record, Mapping):
        raise UsageError(f"{subject}: give a mapping of fields, got {type(record).__name__}")
    data: dict[str, Any] = json.loads(dumps(dict(record), indent=None))
    problems = list(_problems(_schema(), data, ()))
    if not problems:
        return data
    missing = [path for path, what in problems if what is _MISSING]
    parts = [f"{_where(path)} {what}" for path, what in problems if what is not _MISSING]
    if missing:
        parts.insert(0, f"missing {', '.join(map(_where, missing))}{_how(missing)}")
    raise UsageError(f"{subject}: " + "; ".join(parts))


# -- storing it in the registry ------------------------------------------------------------------


def encode(record: Mapping[str, Any]) -> str:
    """The tag's text: a checked record without ``name`` and ``version``."""
    body = {k: v for k, v in record.items() if k not in ("name", "version")}
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if len(text) > TAG_LIMIT:
        raise UsageError(
            f"model metadata of {record.get('name')}: {len(text):,} characters of JSON, more "
            f"than the registry keeps with a version ({TAG_LIMIT:,}); the "
            f"{len(record.get('features') or [])} features take most of it: register a model "
            "of fewer features"
        )
    return text


def decode(name: str, version: int, text: str) -> dict[str, Any]:
    """A version's metadata from its tag, with its name and version, checked.

    Raises DataError when the tag is not metadata this schema accepts (edited by hand)."""
    damaged = f"model {name} version {version}: its metadata (tag {METADATA_TAG}) is damaged"
    try:
        body = json.loads(text)
    except ValueError:
        raise DataError(f"{damaged}: not JSON ({text[:60]!r}); register the model again") from None
    if not isinstance(body, dict):
        raise DataError(f"{damaged}: not a mapping; register the model again")
    try:
        return validate_metadata({"name": name, "version": version, **body}, subject=damaged)
    except UsageError as exc:
        raise DataError(f"{exc}; register the model again") from None
