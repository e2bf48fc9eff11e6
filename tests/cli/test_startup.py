"""What a command costs before it works: ``--help`` loads none of the heavy libraries (each
one is imported by the command that uses it), so it answers at once."""

from __future__ import annotations

import pytest

from tests.cli.helpers import imports_of


@pytest.mark.parametrize(
    "command",
    [
        "",
        "data",
        "data read",
        "features compute",
        "train",
        "search",
        "backtest",
        "run",
        "serve",
        "server start",
        "jobs",
        "models",
        "tokens create",
    ],
)
def test_help_imports_no_heavy_library(command: str) -> None:
    code, imported, stdout = imports_of(*command.split(), "--help")
    assert "Usage" in stdout, stdout
    assert (code, imported) == (0, []), command
