"""Running the CLI in-process, as the tests do."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from quarry.cli import app

_runner = CliRunner()


def run(*args: str, columns: int = 200) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``quarry ARGS`` (no progress bars, wide output)."""
    env = {"QUARRY_NO_PROGRESS": "1", "COLUMNS": str(columns)}
    result = _runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON: write an undefined figure as null")


def parse_json(stdout: str) -> Any:
    """``stdout`` as strict JSON: NaN, Infinity and anything besides the one document fail."""
    return json.loads(stdout, parse_constant=_no_constant)
