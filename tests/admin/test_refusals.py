"""What backup and restore refuse, each in one line that names the thing and what to do: a
place that is not empty, an incomplete backup, a changed file, a bad bucket or endpoint."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from quarry.admin import Manifest, backup, list_backups, restore
from quarry.data import Store, generate
from quarry.exceptions import DataError, StoreNotFoundError, UsageError
from quarry.jobs import JobStore
from tests.cli.helpers import run


def _made(tmp_path: Path, to: str) -> Manifest:
    """A backup of a job database (with a token) and a small store."""
    (tmp_path / "home").mkdir()
    with JobStore(f"sqlite:///{tmp_path / 'home' / 'jobs.db'}") as jobs:
        jobs.create_token("ann", "alpha")
    generate(Store(tmp_path / "store"), instruments=2, days=30)
    return backup(to, db=f"sqlite:///{tmp_path / 'home' / 'jobs.db'}", store=tmp_path / "store")


def _one_line_error(*args: str) -> str:
    code, out, err = run(*args)
    assert (code, out) == (1, ""), err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".restoring-" in p.name)


@pytest.mark.service
def test_restore_refuses_a_place_that_is_not_empty_and_writes_nothing(
    tmp_path: Path, s3_env: dict[str, str]
) -> None:
    to = f"s3://{s3_env['bucket']}/q"
    _made(tmp_path, to)
    target = tmp_path / "target"
    target.mkdir()
    (target / "jobs.db").write_text("someone's database")
    with pytest.raises(
        UsageError,
        match=rf"^{re.escape(str(target / 'jobs.db'))} already "
        r"exists: restore into an empty place; move it away, or give --db",
    ):
        restore(to, db=f"sqlite:///{target / 'jobs.db'}", store=target / "store")
    assert (target / "jobs.db").read_text() == "someone's database"
    assert not (target / "store").exists()

    (target / "store").mkdir()
    (target / "store" / "notes.txt").write_text("x")
    line = _one_line_error(
        "admin",
        "restore",
        "--from",
        to,
        "--db",
        f"sqlite:///{target / 'new.db'}",
        "--store",
        str(target / "store"),
    )
    assert line == (
        f"error: {target / 'store'} is not empty: restore into an empty place; give "
        "--store a new or empty directory"
    )
    assert not (target / "new.db").exists()  # checked before anything was written
    assert sorted(p.name for p in target.iterdir()) == ["jobs.db", "store"]


@pytest.mark.service
def test_an_incomplete_backup_is_refused_and_the_newest_complete_one_is_taken(
    tmp_path: Path, s3_env: dict[str, str], bucket: Any
) -> None:
    to = f"s3://{s3_env['bucket']}/q"
    first = _made(tmp_path, to)
    second = backup(to, db=f"sqlite:///{tmp_path / 'home' / 'jobs.db'}")
    assert second.id > first.id
    bucket.delete_file(f"{s3_env['bucket']}/q/{second.id}/manifest.json")  # interrupted

    listed = list_backups(to)
    assert [(b.id, b.complete) for b in listed] == [(first.id, True), (second.id, False)]
    assert listed[0].files == first.files + 1 and listed[0].bytes > first.bytes  # + manifest
    assert listed[1].finished_at is None and listed[1].files == 1
    with pytest.raises(
        DataError,
        match=rf"^s3://{s3_env['bucket']}/q/{second.id} has no "
        r"manifest\.json: the backup is incomplete .* restore another one",
    ):
        restore(f"{to}/{second.id}", db=f"sqlite:///{tmp_path / 'new' / 'jobs.db'}")
    assert not (tmp_path / "new" / "jobs.db").exists()
    # without an id: the newest complete backup
    done = restore(to, db=f"sqlite:///{tmp_path / 'new' / 'jobs.db'}", store=tmp_path / "s2")
    assert done.manifest.id == first.id
    with JobStore(f"sqlite:///{tmp_path / 'new' / 'jobs.db'}") as jobs:
        assert [t.user for t in jobs.tokens()] == ["ann"]
    code, out, _ = run("admin", "backups", "--from", to)
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(r[0], r[-1]) for r in rows] == [(first.id, "complete"), (second.id, "manifest.json")]
    assert "incomplete: no manifest.json" in out

    bucket.delete_file(f"{s3_env['bucket']}/q/{first.id}/manifest.json")
    line = _one_line_error("admin", "restore", "--from", to, "--home", str(tmp_path / "h"))
    assert line == (
        f"error: no complete backup under {to} (only 2 incomplete ones): make one "
        f"with quarry admin backup --to {to}"
    )


@pytest.mark.service
def test_a_changed_file_fails_its_sha256_and_nothing_is_restored(
    tmp_path: Path, s3_env: dict[str, str], bucket: Any
) -> None:
    to = f"s3://{s3_env['bucket']}/q"
    made = _made(tmp_path, to)
    entry = next(f for f in made.part("store").files if f.path.endswith(".parquet"))  # type: ignore[union-attr]
    key = f"{s3_env['bucket']}/q/{made.id}/{entry.path}"
    with bucket.open_input_stream(key) as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF  # one bit flipped, the size unchanged
    with bucket.open_output_stream(key) as f:
        f.write(bytes(data))
    target = tmp_path / "target"
    with pytest.raises(
        DataError,
        match=rf"^s3://{s3_env['bucket']}/q/{made.id}/"
        rf"{re.escape(entry.path)}: its SHA-256 [0-9a-f]{{12}}\.\.\. \({len(data)} "
        rf"bytes\) is not the manifest's {entry.sha256[:12]}\.\.\..* nothing was "
        "restored",
    ):
        restore(to, db=f"sqlite:///{target / 'jobs.db'}", store=target / "store")
    # neither the database (downloaded fine) nor the store was put in place, nothing left over
    assert not (target / "jobs.db").exists() and not (target / "store").exists()
    assert _leftovers(target) == []


@pytest.mark.service
def test_bad_buckets_endpoints_and_credentials_are_one_line_each(
    tmp_path: Path, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    with JobStore(db):
        pass
    endpoint = s3_env["AWS_ENDPOINT_URL"]
    assert _one_line_error("admin", "backup", "--to", "s3://no-such-bucket-here/q", "--db", db) == (
        f"error: bucket 'no-such-bucket-here' does not exist at {endpoint}: create it (aws s3 "
        "mb s3://no-such-bucket-here) or give another bucket"
    )
    assert _one_line_error("admin", "backup", "--to", str(tmp_path / "b"), "--db", db) == (
        f"error: --to {tmp_path / 'b'}: give an S3 folder, s3://BUCKET/PREFIX"
    )
    with pytest.raises(
        StoreNotFoundError, match=rf"^no Quarry store at {re.escape(str(tmp_path))}"
    ):
        backup(f"s3://{s3_env['bucket']}/q", db=db, store=tmp_path)
    with pytest.raises(DataError, match=r"^--db sqlite:///.*/nothing\.db: no such SQLite database"):
        backup(f"s3://{s3_env['bucket']}/q", db=f"sqlite:///{tmp_path / 'nothing.db'}")
    assert list_backups(f"s3://{s3_env['bucket']}/q") == []  # nothing was started

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    line = _one_line_error("admin", "backups", "--from", f"s3://{s3_env['bucket']}/q")
    assert line.startswith(
        f"error: cannot reach S3 at http://127.0.0.1:9 to look at bucket {s3_env['bucket']} ("
    )
    assert line.endswith("check AWS_ENDPOINT_URL and that the server is up")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert _one_line_error("admin", "restore", "--from", f"s3://{s3_env['bucket']}/q") == (
        "error: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: set both, or neither "
        "to use the machine's own role"
    )
    assert _one_line_error("admin", "backup", "--to", "s3://x/y", "--every", "soon").startswith(
        "error: --every soon: "
    )
