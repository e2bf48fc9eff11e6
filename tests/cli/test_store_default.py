"""Without --store, commands use $QUARRY_HOME/store."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from quarry.cli import app


def test_store_defaults_to_quarry_home(tmp_path: Path) -> None:
    env = {"QUARRY_HOME": str(tmp_path / "home"), "QUARRY_NO_PROGRESS": "1"}
    runner = CliRunner()
    result = runner.invoke(app, ["data", "generate", "--instruments", "5", "--days", "40"], env=env)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "home" / "store" / "bars" / "_delta_log").is_dir()
    assert runner.invoke(app, ["data", "versions", "--json"], env=env).exit_code == 0
