"""``--store quarry+http://HOST:PORT/NAME``: a dataset of the service opened as a local store
(a mirror of its files), read by the library as the store itself is, under the same rules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.data import Store, read_bars, table_spec
from quarry.data._ingest import ingest_frame
from quarry.data._mirror import mirror
from quarry.exceptions import PermissionDenied, UsageError
from tests.dataservice.conftest import Service

pytestmark = pytest.mark.service


def test_a_mirror_reads_as_the_store_does(service: Service, tmp_path: Path) -> None:
    url = f"quarry+{service.url}/market"
    folder = mirror(url, service.tokens["bob"], root=tmp_path)
    here, there = Store(folder), Store(service.store)
    for args in ({"as_of": "2015-03-08"}, {"adjust": "adjusted"}, {"universe": "large"}):
        assert_frame_equal(read_bars(here, ["close", "eps"], **args),  # type: ignore[arg-type]
                           read_bars(there, ["close", "eps"], **args))  # type: ignore[arg-type]  # fmt: skip
    assert [c.as_dict() for c in here.commits()] == [c.as_dict() for c in there.commits()]


def test_a_new_commit_reaches_the_mirror_and_nothing_is_fetched_twice(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "store"
    shutil.copytree(service.store, copy)
    service.jobs.add_dataset("copy", str(copy), owner="ann", project="alpha", visibility="public")
    url = f"quarry+{service.url}/copy"
    folder = mirror(url, service.tokens["bob"], root=tmp_path / "m")
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*.parquet")}
    row = read_bars(Store(copy), ["open", "high", "low", "close", "volume"]).row(5, named=True)
    fixed = pl.DataFrame([{**row, "close": row["low"]}])
    ingest_frame(Store(copy), table_spec("bars"), fixed)
    mirror(url, service.tokens["bob"], root=tmp_path / "m")
    assert_frame_equal(read_bars(Store(folder), ["close"]), read_bars(Store(copy), ["close"]))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # kept, not fetched again
    monkeypatch.setenv("QUARRY_TOKEN", service.tokens["bob"])
    with pytest.raises(UsageError, match="read here from a mirror"):
        ingest_frame(Store(f"quarry+{service.url}/copy"), table_spec("bars"), fixed)


def test_a_mirror_follows_the_rules(service: Service, tmp_path: Path) -> None:
    with pytest.raises(PermissionDenied, match="dataset 'annsown' is private"):
        mirror(f"quarry+{service.url}/annsown", service.tokens["bob"], root=tmp_path)
    with pytest.raises(UsageError, match="write quarry\\+http://HOST:PORT/DATASET"):
        Store("quarry+http://127.0.0.1:1/")
    (read,) = [r for r in service.jobs.reads("annsown")] or [None]
    assert read is None  # a refused listing reads nothing


def test_the_command_line_reads_through_the_service(service: Service, tmp_path: Path) -> None:
    out = tmp_path / "bars.parquet"
    env = {**os.environ, "QUARRY_TOKEN": service.tokens["carl"], "QUARRY_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "quarry.cli", "data", "read", "--store",
         f"quarry+{service.url}/alpha", "--fields", "close", "--as-of", "2015-03-08",
         "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = read_bars(Store(service.store), ["close"], as_of="2015-03-08")
    assert_frame_equal(pl.read_parquet(out), expected)
    *files, listing = service.jobs.reads("alpha")  # newest first: the listing, then each file
    assert (listing.user, listing.route) == ("carl", "files")
    assert files and {(r.user, r.route) for r in files} == {("carl", "file")}
    assert sum(r.bytes for r in files) == sum(
        p.stat().st_size
        for p in (tmp_path / "cache").rglob("*")
        if p.is_file() and p.suffix in (".json", ".parquet") and not p.name.startswith(".")
    )
