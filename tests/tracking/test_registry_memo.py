"""Aliases read from a SQLite tracking database are remembered until the database changes:
asked again after any write, by Quarry or by MLflow itself, whatever the clock says."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from quarry.tracking import _mlflow, alias_version, client, tracking_uri
from quarry.tracking._registry_memo import RegistryMemo, _stamp


def _model_with_versions(name: str, versions: int, where: Path) -> None:
    registry = client()
    registry.create_registered_model(name)
    for _ in range(versions):
        registry.create_model_version(name, source=where.as_uri(), run_id=None)


def _mlflow_asked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    asked: list[tuple[str, str]] = []
    real = _mlflow._alias_from_mlflow

    def counting(name: str, alias: str) -> int | None:
        asked.append((name, alias))
        return real(name, alias)

    monkeypatch.setattr(_mlflow, "_alias_from_mlflow", counting)
    return asked


def test_an_alias_moved_by_mlflow_itself_is_seen_at_the_next_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _model_with_versions("m", 3, tmp_path)
    registry = client()
    asked = _mlflow_asked(monkeypatch)
    assert alias_version("m", "champion") is None
    # moves straight after one another, within one tick of the file's clock
    for version in ("1", "2", "3", "1"):
        registry.set_registered_model_alias("m", "champion", version)
        assert alias_version("m", "champion") == int(version)
    registry.delete_registered_model_alias("m", "champion")
    assert alias_version("m", "champion") is None
    assert len(asked) == 6  # each read after a write asked MLflow


def test_an_unchanged_database_is_not_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _model_with_versions("m", 2, tmp_path)
    client().set_registered_model_alias("m", "champion", "2")
    asked = _mlflow_asked(monkeypatch)
    assert [alias_version("m", "champion") for _ in range(3)] == [2, 2, 2]
    assert [alias_version("m", "shadow") for _ in range(2)] == [None, None]
    assert asked == [("m", "champion"), ("m", "shadow")]


def test_a_write_outside_mlflow_also_clears_the_memo(tmp_path: Path) -> None:
    _model_with_versions("m", 2, tmp_path)
    client().set_registered_model_alias("m", "champion", "1")
    assert alias_version("m", "champion") == 1
    db = tracking_uri().removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:  # any committed write counts, not only MLflow's
        conn.execute("UPDATE registered_model_aliases SET version = 2 WHERE name = 'm'")
    assert alias_version("m", "champion") == 2


def test_only_a_sqlite_database_in_rollback_journal_mode_is_remembered(tmp_path: Path) -> None:
    assert RegistryMemo.open("postgresql://u@db/mlflow") is None
    assert RegistryMemo.open("http://tracking:5000") is None
    assert RegistryMemo.open(f"sqlite:///{tmp_path / 'absent.db'}") is None
    (tmp_path / "text.db").write_text("not a database" * 20)
    assert RegistryMemo.open(f"sqlite:///{tmp_path / 'text.db'}") is None
    wal = tmp_path / "wal.db"
    conn = sqlite3.connect(wal)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    assert RegistryMemo.open(f"sqlite:///{wal}") is None  # its -wal file is there
    conn.close()
    assert not Path(f"{wal}-wal").exists()
    assert RegistryMemo.open(f"sqlite:///{wal}") is None  # and its header says WAL
    plain = tmp_path / "plain.db"
    with sqlite3.connect(plain) as conn:
        conn.execute("CREATE TABLE t (x)")
    assert RegistryMemo.open(f"sqlite:///{plain}") is not None


def test_the_stamp_counts_every_committed_write(tmp_path: Path) -> None:
    db = tmp_path / "plain.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    counters = []
    for value in range(3):
        with sqlite3.connect(db) as conn:
            conn.execute("INSERT INTO t VALUES (?)", (value,))
        counters.append(_stamp(db)[0])  # type: ignore[index]
    assert counters[1] == counters[0] + 1 and counters[2] == counters[1] + 1


def test_a_restored_backup_is_asked_again(tmp_path: Path) -> None:
    """A reader that read the stamp before a promotion and MLflow after it keeps the new
    answer under the old stamp (which only ever makes it ask again, as the database moves
    on). A backup taken before the promotion and copied back with its times (cp -p) has
    that old counter, size and modification time: the change time and inode tell it apart."""
    _model_with_versions("m", 2, tmp_path)
    client().set_registered_model_alias("m", "champion", "1")
    db = Path(tracking_uri().removeprefix("sqlite:///"))
    backup = tmp_path / "backup.db"
    shutil.copy2(db, backup)
    before = RegistryMemo.open(tracking_uri())
    assert before is not None
    client().set_registered_model_alias("m", "champion", "2")
    before.remember("m\x00champion", 2)  # the reader in between
    shutil.copy2(backup, db)  # the registry as it was: champion 1
    assert alias_version("m", "champion") == 1
