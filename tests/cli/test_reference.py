"""The reference docs of the workflow file, the job manifest and model metadata
(docs/reference)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from quarry._yaml import load_yaml
from quarry.cli._reference import COMMAND, render, write
from quarry.jobs import parse_duration, parse_memory
from quarry.workflows import load_workflow

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"
EXAMPLES = sorted((ROOT / "examples" / "workflows").glob("*.yaml"))


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((REFERENCE / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(name: str, document: Any) -> list[tuple[tuple[Any, ...], str]]:
    found = _validator(name).iter_errors(document)
    return sorted((tuple(e.absolute_path), e.validator) for e in found)  # type: ignore[misc]


@pytest.mark.parametrize("filename", list(render()))
def test_committed_reference_is_what_the_models_generate(filename: str) -> None:
    committed = REFERENCE / filename
    stale = f"docs/reference/{filename} is stale or missing; regenerate it: {COMMAND}"
    assert committed.exists(), stale
    assert committed.read_text(encoding="utf-8") == render()[filename], stale


def test_write_puts_every_file_in_the_folder(tmp_path: Path) -> None:
    written = write(tmp_path / "ref")
    assert sorted(p.name for p in written) == [
        "manifest.md", "manifest.schema.json", "model-metadata.md", "model-metadata.schema.json",
        "workflow.md", "workflow.schema.json",
    ]  # fmt: skip
    assert (tmp_path / "ref" / "workflow.md").read_text() == render()["workflow.md"]


def test_pages_list_every_key_of_every_section() -> None:
    page = render()["workflow.md"]
    for row in ("| `topk` | integer | `50` |", "| `store` | text or null | `null` |",
                "| `margin` | number | `0.0` |", "| `rebalance_every` | integer | `1` |",
                "| `register` | text or null | `null` |"):  # fmt: skip
        assert row in page
    # the store's folder: the file's, as load_workflow resolves it
    store = next(line for line in page.splitlines() if line.startswith("| `store` |"))
    assert "relative path is read from the workflow file's folder" in store
    manifest = render()["manifest.md"]
    assert "| `memory` | integer or text | `1073741824` (1Gi) | above 0;" in manifest
    assert "## `retries`" in manifest and "## `data[]`" in manifest
    metadata = render()["model-metadata.md"]
    assert "| `description` | text | required | not empty |" in metadata
    assert "| `authors` | list of texts | required | not empty; each not empty |" in metadata
    assert "## `features[]`" in metadata and "## `training_window`" in metadata
    assert '| `licence` | text | `"proprietary"` |' in page  # the workflow's tracking section


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_workflow_matches_the_schema(path: Path) -> None:
    load_workflow(path)  # the model accepts it too
    assert _errors("workflow", load_yaml(path.read_text(), str(path)).data) == []


def test_schema_refuses_an_unknown_key_and_topk_as_text() -> None:
    document = load_yaml(EXAMPLES[0].read_text()).data
    document["backtest"]["topk"] = "5"
    document["model"]["seeds"] = 1
    assert _errors("workflow", document) == [
        (("backtest", "topk"), "type"),
        (("model",), "additionalProperties"),
    ]


def test_manifest_schema_reads_sizes_and_durations_as_the_manifest_does() -> None:
    readme = (ROOT / "README.md").read_text()
    text = readme.split("cat > job.yaml <<'YAML'\n", 1)[1].split("YAML\n", 1)[0]
    document = load_yaml(text).data
    assert _errors("manifest", document) == []
    for memory in ("4Gi", "1.5Gi", "100M", " 512 MiB ", "2048", "4gb", "4 Gx", "-1Gi", "Gi"):
        try:
            parse_memory(memory)
            accepted = True
        except ValueError:
            accepted = False
        document["resources"]["memory"] = memory
        assert (_errors("manifest", document) == []) is accepted, memory
    document["resources"]["memory"] = "4Gi"
    for duration in ("90", "30s", "1h30m", "1.5h", "250ms", "2 h", "1x", "-5s", "h"):
        try:
            parse_duration(duration)
            accepted = True
        except ValueError:
            accepted = False
        document["timeout"] = duration
        assert (_errors("manifest", document) == []) is accepted, duration
    document["timeout"] = 0
    document["resources"]["cpu"] = 2
    assert _errors("manifest", document) == [
        (("resources",), "additionalProperties"),
        (("timeout",), "anyOf"),  # neither a positive duration nor null
    ]
