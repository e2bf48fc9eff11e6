"""Reference docs for the files a user writes, generated from the models that read them,
and for a registered model's metadata, generated from its schema.

``python -m quarry.cli._reference docs/reference`` writes, for the workflow file
(``quarry.workflows.Workflow``) and the job manifest (``quarry.jobs.Manifest``), a JSON Schema
(``workflow.schema.json``, ``manifest.schema.json``) and a Markdown page (``workflow.md``,
``manifest.md``) listing every key with its type, default, constraints and description, one
table per section; and the same pair for model metadata (``model-metadata.schema.json``, a
copy of the schema shipped in ``quarry/tracking``, and ``model-metadata.md``).
``tests/cli/test_reference.py`` checks that the committed files are what this writes, so a
changed model or schema fails the tests until the files are regenerated.

The schemas are pydantic's, with three corrections: a memory size and a duration accept the
text the manifest reads (``4Gi``, ``1h30m``) as well as numbers; pydantic's ``gt``/``ge``
left on constrained types whose validator runs first become JSON Schema's
``exclusiveMinimum``/``minimum``; and the optimizer's settings (a dataclass) take their
descriptions from its numpydoc docstring. Defaults made by a factory are written too.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from quarry.jobs._manifest import (
    _DURATION_PART,
    _NUMBER,
    _UNITS,
    Manifest,
    format_memory,
    parse_duration,
    parse_memory,
)
from quarry.tracking import metadata_schema
from quarry.workflows import Workflow

__all__ = ["REFERENCES", "Reference", "json_schema", "main", "markdown", "render", "write"]

COMMAND = "python -m quarry.cli._reference docs/reference"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

# what parse_memory and parse_duration read, as JSON Schema patterns (the parsers strip spaces)
_UNIT_TEXT = "|".join(sorted((re.escape(u) for u in _UNITS if u), key=lambda u: (-len(u), u)))
MEMORY_PATTERN = rf"^\s*(?:{_NUMBER.pattern})\s*(?:{_UNIT_TEXT})?\s*$"
DURATION_PATTERN = rf"^\s*(?:{_NUMBER.pattern}|(?:{_DURATION_PART.pattern})+)\s*$"

_TEXT_FORMS: dict[Callable[..., Any], JsonSchemaValue] = {
    parse_memory: {
        "type": ["integer", "string"],
        "pattern": MEMORY_PATTERN,
        "examples": ["4Gi", "512Mi", "1.5Gi", "100M"],
    },
    parse_duration: {
        "type": ["number", "string"],
        "pattern": DURATION_PATTERN,
        "examples": ["90s", "30m", "2h", "1h30m"],
    },
}
_PLURAL = {"text": "texts", "mapping": "mappings", "integer": "integers", "number": "numbers"}
_BOUNDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


@dataclass(frozen=True)
class Reference:
    """One file type: its model (None: a schema kept as a file, ``origin``), its page's
    title and the page's opening text."""

    model: type[BaseModel] | None
    title: str
    intro: str
    origin: str = ""


REFERENCES: dict[str, Reference] = {
    "workflow": Reference(
        Workflow,
        "The workflow file",
        "One YAML file describes a research run: `quarry run FILE --out DIR` (or a job's "
        "`run: {workflow: FILE}`). The file is read as YAML 1.2 (`yes` and dates are text; a "
        "key given twice is an error) and checked whole before anything runs: an unknown key, "
        "a value of the wrong type (`topk: '5'`), a bad expression or a setting the engine "
        "would refuse is reported with its place and line. Give either `segments` or "
        "`walk_forward`. Examples: `examples/workflows/`.",
    ),
    "manifest": Reference(
        Manifest,
        "The job manifest",
        "One YAML file describes a job: `quarry jobs submit FILE`. It is read as YAML 1.2 "
        "(`on:` is the key `on`, `yes` is text) and checked before it is queued: an unknown "
        "key or a value of the wrong type is an error naming its place and line (the REST API "
        "answers 422 with the same problems). Memory is stored in bytes and durations in "
        "seconds.",
    ),
    "model-metadata": Reference(
        None,
        "Model metadata",
        "What a registered model version is, who made it and from what. A version is "
        "registered only with it: `quarry run` builds it from the workflow file's `tracking` "
        "section (`description`, required with `register`; `authors`, default the OS user; "
        "`licence`, default `proprietary`; `project`, default `default`) and from the run "
        "(features, training window, store and commits, metrics, the workflow file's path and "
        "SHA-256), and `quarry.tracking.register` checks it against this schema before "
        "anything is registered. It is stored as the version's registry tag `quarry.metadata` "
        "(every field but `name` and `version`, the version's own keys); "
        "`quarry.tracking.model_metadata(NAME, VERSION)` reads it back, `quarry models show "
        "NAME` shows it and `--json` gives it whole.",
        "src/quarry/tracking/model_metadata.schema.json",
    ),
}


# -- the JSON Schema -----------------------------------------------------------------------------


class _Schema(GenerateJsonSchema):
    """pydantic's JSON Schema with the text forms of sizes and durations and factory defaults."""

    def function_before_schema(
        self, schema: core_schema.BeforeValidatorFunctionSchema
    ) -> JsonSchemaValue:
        form = _TEXT_FORMS.get(schema["function"]["function"])
        if form is not None:
            return copy.deepcopy(form)  # pydantic adds the field's bounds to it
        return super().function_before_schema(schema)

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return factory()  # type: ignore[call-arg]
        return super().get_default_value(schema)


def _numpydoc_parameters(doc: str) -> tuple[str, dict[str, str]]:
    """A numpydoc docstring's text before its Parameters section, and each parameter's text."""
    head, found, rest = doc.partition("\nParameters\n----------\n")
    if not found:
        return doc, {}
    described: dict[str, str] = {}
    name = None
    for line in rest.splitlines():
        if line and not line.startswith(" "):
            if set(line) == {"-"}:  # the next section's underline: the previous line was its
                described.pop(name or "", None)  # title, not a parameter
                break
            name = line.split(" : ")[0].strip()
            described[name] = ""
        elif name is not None and line.strip():
            described[name] = (described[name] + " " + line.strip()).strip()
    return head.strip(), described


def _tidy(node: Any) -> Any:
    """Bounds under their JSON Schema names; no titles made from field names."""
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _BOUNDS and isinstance(value, int | float) and not isinstance(value, bool):
            out[_BOUNDS[key]] = value
        elif key == "properties" and isinstance(value, dict):
            out[key] = {
                name: _tidy({k: v for k, v in prop.items() if k != "title"})
                for name, prop in value.items()
            }
        else:
            out[key] = _tidy(value)
    return out


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a file that ``model`` reads."""
    schema = _tidy(model.model_json_schema(schema_generator=_Schema, mode="validation"))
    for definition in schema.get("$defs", {}).values():
        head, params = _numpydoc_parameters(definition.get("description", ""))
        if params:
            definition["description"] = head
            for name, prop in definition.get("properties", {}).items():
                if name in params and "description" not in prop:
                    prop["description"] = params[name]
    return {"$schema": DIALECT, **schema}


# -- the Markdown page ---------------------------------------------------------------------------


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    found: dict[str, Any] = schema["$defs"][ref.rsplit("/", 1)[1]]
    return found


def _section(schema: dict[str, Any], node: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The section a key holds (a mapping with its own keys) and how: "" or "[]" (a list)."""
    for branch in [node, *node.get("anyOf", [])]:
        target = _resolve(schema, branch)
        if "properties" in target:
            return target, ""
        items = branch.get("items")
        if isinstance(items, dict) and "properties" in _resolve(schema, items):
            return _resolve(schema, items), "[]"
    return None


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _type(schema: dict[str, Any], node: dict[str, Any]) -> str:
    if "$ref" in node:
        return "mapping" if "properties" in _resolve(schema, node) else "?"
    if "anyOf" in node:
        kinds = [_type(schema, b) for b in node["anyOf"] if b.get("type") != "null"]
        nullable = any(b.get("type") == "null" for b in node["anyOf"])
        return " or ".join(kinds) + (" or null" if nullable else "")
    kind = node.get("type")
    if isinstance(kind, list):
        return " or ".join(_type(schema, {**node, "type": k}) for k in kind)
    if "enum" in node:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if kind == "string":
        return "date (YYYY-MM-DD)" if node.get("format") == "date" else "text"
    if kind == "boolean":
        return "true or false"
    if kind == "array":
        item = _type(schema, node.get("items", {}))
        return f"list of {_PLURAL[item]}" if item in _PLURAL else f"list, each {item}"
    if kind == "object":
        values = node.get("additionalProperties")
        if isinstance(values, dict):
            return f"mapping of text to {_type(schema, values)}"
        return "mapping"
    return str(kind) if kind else "any"


def _constraints(node: dict[str, Any], each: str = "") -> list[str]:
    found = []
    words = {"exclusiveMinimum": "above", "minimum": "at least", "exclusiveMaximum": "below",
             "maximum": "at most"}  # fmt: skip
    for key, word in words.items():
        if key in node:
            found.append(f"{each}{word} {node[key]:g}")
    if node.get("minLength") == 1:
        found.append(f"{each}not empty")
    if "minItems" in node:
        items = node["minItems"]
        found.append("not empty" if items == 1 else f"at least {items} items")
    if "examples" in node:
        found.append("text such as " + ", ".join(f"`{e}`" for e in node["examples"]))
    for branch in node.get("anyOf", []):
        found += _constraints(branch, each)
    if isinstance(node.get("items"), dict):
        found += _constraints(node["items"], "each ")
    return found


def _default(node: dict[str, Any], required: bool, section: bool) -> str:
    if required:
        return "required"
    if "default" not in node or section:  # a section's default: its keys' own
        return ""
    value = node["default"]
    text = f"`{json.dumps(value, sort_keys=True)}`"
    if node.get("pattern") == MEMORY_PATTERN and isinstance(value, int):
        text += f" ({format_memory(value)})"
    return text


def _cell(text: str) -> str:
    return " ".join(text.replace("``", "`").split()).replace("|", "\\|")


def _sections(
    schema: dict[str, Any], node: dict[str, Any], path: str
) -> Iterator[tuple[str, dict[str, Any], list[tuple[str, str]]]]:
    """Each section in the file's order, depth first: its path, its schema, and the link of
    every key that holds a section."""
    children = []
    links = []
    for key, prop in node.get("properties", {}).items():
        held = _section(schema, prop)
        if held is not None:
            target, suffix = held
            child = f"{path}.{key}{suffix}" if path else f"{key}{suffix}"
            children.append((child, target))
            links.append((key, child))
    yield path, node, links
    for child, target in children:
        yield from _sections(schema, target, child)


def markdown(name: str, schema: dict[str, Any]) -> str:
    """The reference page of file type ``name`` from its JSON Schema."""
    reference = REFERENCES[name]
    model = reference.model
    if model is not None:
        origin, edit = f"{model.__module__}.{model.__name__}", "the model's descriptions"
        use = (
            "for editors and checks in CI: with the YAML extension of VS Code, a first line "
            f"`# yaml-language-server: $schema=PATH/{name}.schema.json` completes and checks "
            "keys as you type."
        )
    else:
        origin, edit = reference.origin, "the schema's descriptions there"
        use = f"a copy of `{reference.origin}`, the one Quarry checks against."
    lines = [
        f"# {reference.title}",
        "",
        f"<!-- Generated from {origin} by `{COMMAND}`: edit {edit}, not this page. -->",
        "",
        reference.intro,
        "",
        f"Its JSON Schema is [{name}.schema.json]({name}.schema.json) (draft 2020-12), {use}",
    ]
    for path, node, links in _sections(schema, schema, ""):
        heading = f"`{path}`" if path else "Top level"
        lines += ["", f"## {heading}", ""]
        if node.get("description") and path:
            lines += [_cell(node["description"]), ""]
        lines += ["| key | type | default | constraints | description |", "|---|---|---|---|---|"]
        linked = dict(links)
        required = set(node.get("required", []))
        for key, prop in node.get("properties", {}).items():
            kind = _type(schema, prop)
            if key in linked:
                kind += f", see [`{linked[key]}`](#{_anchor(linked[key])})"
            section = key in linked and not linked[key].endswith("[]")
            row = [f"`{key}`", kind, _default(prop, key in required, section),
                   "; ".join(_constraints(prop)), prop.get("description", "")]  # fmt: skip
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


# -- the files -----------------------------------------------------------------------------------


def render() -> dict[str, str]:
    """Every reference file's name and text."""
    files = {}
    for name, reference in REFERENCES.items():
        schema = json_schema(reference.model) if reference.model else metadata_schema()
        files[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        files[f"{name}.md"] = markdown(name, schema)
    return files


def write(folder: Path) -> list[Path]:
    """Write every reference file into ``folder`` (made if missing); the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in render().items():
        path = folder / filename
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: {COMMAND.replace('docs/reference', 'FOLDER')}", file=sys.stderr)
        return 2
    for path in write(Path(args[0])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
