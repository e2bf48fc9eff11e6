"""``quarry admin ... --help`` answers at once: none of the heavy libraries is imported (each
command imports pyarrow, psycopg or MLflow's settings when it runs)."""

from __future__ import annotations

import pytest

from tests.cli.helpers import imports_of


@pytest.mark.parametrize("command", ["admin", "admin backup", "admin restore", "admin backups"])
def test_help_imports_no_heavy_library(command: str) -> None:
    code, imported, stdout = imports_of(*command.split(), "--help")
    assert "Usage" in stdout, stdout
    assert (code, imported) == (0, []), command


def test_the_group_lists_its_commands() -> None:
    code, _, stdout = imports_of("admin", "--help")
    assert code == 0
    for name in ("backup", "restore", "backups", "list"):
        assert f"│ {name} " in stdout, stdout
