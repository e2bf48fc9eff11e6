"""What a command costs before it works: ``--help`` loads none of the heavy libraries (each
one is imported by the command that uses it), so it answers at once."""

from __future__ import annotations

from pathlib import Path

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


SIBLINGS = ("quarry.cli._data", "quarry.cli._features", "quarry.cli._train", "quarry.cli._search",
            "quarry.cli._backtest", "quarry.cli._run", "quarry.cli._jobs", "quarry.cli._models",
            "quarry.cli._serve", "pydantic")  # fmt: skip


@pytest.mark.parametrize(
    ("command", "loads"),
    [
        ("backtest", {"quarry.cli._backtest"}),
        ("data ingest", {"quarry.cli._data"}),
        ("jobs submit", {"quarry.cli._jobs"}),
        ("search", {"quarry.cli._search", "quarry.cli._train"}),  # search reuses train's options
    ],
)
def test_a_command_builds_only_itself(command: str, loads: set[str]) -> None:
    """Only the command asked for is imported and built; and Typer's help flag, which no one
    gave, does not load Pydantic to read its empty value."""
    code, imported, stdout = imports_of(*command.split(), "--help", watch=SIBLINGS)
    assert code == 0 and "Usage" in stdout
    assert set(imported) == loads


def test_the_root_help_lists_every_command_in_order() -> None:
    from quarry.cli._main import SUBCOMMANDS

    code, _, stdout = imports_of("--help")
    assert code == 0
    commands = stdout.split("Commands", 1)[1]
    listed = [line.split()[1] for line in commands.splitlines()
              if line.startswith("│ ") and line[2] != " "]  # fmt: skip
    assert listed == [*SUBCOMMANDS, "version"]


def test_a_command_that_fails_to_build_is_not_taken_for_a_missing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer
    from typer.testing import CliRunner

    from quarry.cli._lazy_commands import lazy_group

    (tmp_path / "needs_a_setting.py").write_text("import os\nSETTING = os.environ['NO_SUCH']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = typer.Typer(cls=lazy_group({"broken": "needs_a_setting:app"}))

    @app.callback()
    def root() -> None:
        """A group (with a callback), as quarry's root is."""

    result = CliRunner().invoke(app, ["broken", "--help"])
    assert "No such command" not in result.output
    assert isinstance(result.exception, RuntimeError)
    assert "command 'broken' could not be built: KeyError('NO_SUCH')" in str(result.exception)
