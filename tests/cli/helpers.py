"""Running the CLI in-process, as the tests do."""

from __future__ import annotations

from typer.testing import CliRunner

from quarry.cli import app

_runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``quarry ARGS`` (no progress bars, wide output)."""
    result = _runner.invoke(app, list(args), env={"QUARRY_NO_PROGRESS": "1", "COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr
