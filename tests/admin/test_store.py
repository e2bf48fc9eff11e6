"""A data store backed up and restored: the same point-in-time reads and the same commits;
and a commit that lands while the files are copied is left out whole, never half in."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import quarry.admin._delta
from quarry.admin import backup, list_backups, restore
from quarry.data import Store, generate, ingest_frame, read_bars, table_spec

FIELDS = ["open", "high", "low", "close", "volume"]
# inside the generated history (before and after its own vendor corrections), after it but
# before the correction below, and the latest
AS_OF = ["2015-02-13", "2015-03-20T23:00", "2015-12-31", None]


def _corrected(store: Store) -> None:
    """A vendor correction on top of the generated market: two closes, known later."""
    last = read_bars(store, ["open", "high", "low", "close", "volume"]).tail(2)
    fixed = last.with_columns(pl.col("close") * 1.01).with_columns(
        pl.max_horizontal("high", "close").alias("high")
    )
    ingest_frame(
        store, table_spec("bars"), fixed, knowledge_time="2016-01-04T22:00", source="correction"
    )


def _reads(store: Store) -> list[pl.DataFrame]:
    return [read_bars(store, FIELDS, as_of=as_of, adjust="adjusted") for as_of in AS_OF]


def _newest(store: Store) -> dict[str, int]:
    newest: dict[str, int] = {}
    for commit in store.commits():
        newest[commit.table] = max(newest.get(commit.table, -1), commit.version)
    return newest


@pytest.mark.service
def test_a_store_comes_back_with_the_same_reads_at_every_as_of_and_the_same_commits(
    tmp_path: Path, s3_env: dict[str, str]
) -> None:
    original = Store(tmp_path / "store")
    generate(original, instruments=4, days=60, seed=3)
    _corrected(original)
    to = f"s3://{s3_env['bucket']}/stores"
    manifest = backup(to, store=tmp_path / "store")
    assert [p.name for p in manifest.parts] == ["store"]
    assert manifest.store_versions == _newest(original)
    assert manifest.store_versions["bars"] == 2  # generated (v0, v1), then the correction
    assert set(manifest.skipped) == {"jobs", "tracking"}  # none under this QUARRY_HOME
    logs = [f.path for f in manifest.part("store").files if "/_delta_log/" in f.path]  # type: ignore[union-attr]
    assert "store/bars/_delta_log/00000000000000000002.json" in logs

    done = restore(to, store=tmp_path / "restored")
    assert done.targets == {"store": str(tmp_path / "restored")}
    copy = Store(tmp_path / "restored")
    assert copy.commits() == original.commits()
    for as_of, mine, theirs in zip(AS_OF, _reads(original), _reads(copy), strict=True):
        assert mine.height > 0, as_of
        assert_frame_equal(theirs, mine)
    # the correction is what the latest read sees, and not what was known before it
    assert not _reads(copy)[2].equals(_reads(copy)[3])
    assert [b.complete for b in list_backups(to)] == [True]


@pytest.mark.service
def test_a_commit_made_while_the_files_are_copied_stays_out_of_the_backup(
    tmp_path: Path, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Store(tmp_path / "store")
    generate(original, instruments=3, days=40, seed=5)
    commits_before, reads_before = original.commits(), _reads(original)
    real_snapshot = quarry.admin._delta.snapshot_store

    def snapshot_then_ingest(store: str) -> quarry.admin._delta.StoreSnapshot:
        taken = real_snapshot(store)
        _corrected(original)  # an ingest lands between the snapshot and the copy
        return taken

    monkeypatch.setattr(quarry.admin._delta, "snapshot_store", snapshot_then_ingest)
    manifest = backup(f"s3://{s3_env['bucket']}/race", store=tmp_path / "store")
    assert _newest(original)["bars"] == 2  # the ingest did commit
    assert manifest.store_versions["bars"] == 1  # the backup is of the commit before it

    restore(f"s3://{s3_env['bucket']}/race", store=tmp_path / "restored")
    copy = Store(tmp_path / "restored")
    assert copy.commits() == commits_before
    for mine, theirs in zip(reads_before, _reads(copy), strict=True):
        assert_frame_equal(theirs, mine)
    assert not (tmp_path / "restored/bars/_delta_log/00000000000000000002.json").exists()
