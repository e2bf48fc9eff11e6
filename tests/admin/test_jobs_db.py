"""The job database backed up while a real server runs and jobs arrive, restored into an
empty place, and served again: the same jobs, the same answers, the same tokens."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from quarry.admin import backup, restore
from quarry.exceptions import AuthenticationError, UsageError
from quarry.jobs import Client, JobStore
from tests.admin.conftest import QuarryServer, job, until
from tests.cli.helpers import run

_ORDER = {"queued": 0, "running": 1, "succeeded": 2}
_ENDED = ("succeeded", "failed", "lost", "cancelled", "oom_killed", "timed_out")


def _token(db: str) -> str:
    code, out, err = run(
        "tokens", "create", "--user", "ann", "--project", "alpha", "--db", db, "--json"
    )
    assert code == 0, err
    return str(json.loads(out)["token"])


def _listed(client: Client) -> dict[int, tuple[str, str]]:
    """Every job the server lists: id -> (name, status). (Its ``total`` is not compared
    with the page: jobs arrive meanwhile, and the count and the page are two statements.)"""
    page = client.jobs(limit=500)
    assert len(page["jobs"]) < 500  # one page holds them all
    return {j["id"]: (j["name"], j["status"]) for j in page["jobs"]}


def _answer(client: Client, job_id: int) -> dict[str, Any]:
    """A job as the server shows it, but for its output folder (under the server's home)."""
    shown = client.job(job_id)
    shown.pop("output")
    return shown


@contextmanager
def _jobs_arriving(client: Client) -> Iterator[list[int]]:
    """Jobs submitted one after another, from before the block until after it."""
    submitted: list[int] = []
    stop = threading.Event()

    def submit() -> None:
        k = 0
        while not stop.is_set():
            submitted.append(client.submit(job(f"busy-{k}"))["id"])
            k += 1
            stop.wait(0.02)

    thread = threading.Thread(target=submit)
    thread.start()
    try:
        until(lambda: len(submitted) >= 3)
        yield submitted
        seen = len(submitted)
        until(lambda: len(submitted) >= seen + 2)  # still arriving after the backup
    finally:
        stop.set()
        thread.join()


def _round_trip(
    tmp_path: Path,
    s3_env: dict[str, str],
    kind: str,
    db: str,
    new_db: str,
    take_backup: Callable[[str], dict[str, Any]],
    give_back: Callable[[str], None],
) -> None:
    """Serve ``db``, back it up while jobs arrive, restore it to ``new_db``, serve that."""
    to = f"s3://{s3_env['bucket']}/quarry"
    (tmp_path / "home").mkdir()
    token = _token(db)
    with QuarryServer(tmp_path / "home", db) as server:
        client = Client(server.url, token)
        settled = [client.submit(job(f"settled-{k}"))["id"] for k in range(3)]
        until(lambda: all(client.job(i)["status"] == "succeeded" for i in settled))
        answers = {i: _answer(client, i) for i in settled}
        with _jobs_arriving(client) as submitted:
            before = _listed(client)
            manifest = take_backup(to)
            after = _listed(client)
        # the backup ran while jobs arrived: some came during it, and after it
        assert len(settled) + len(submitted) > len(after) > len(before) >= 6
    assert manifest["job_db"] == kind
    assert manifest["parts"]["jobs"]["files"] == 1
    give_back(to)

    # the queue as it was at one moment during the backup (read before a server moves it on):
    # every job listed before it, none submitted after it, each with its own name, in a state
    # it went through meanwhile
    with JobStore(new_db) as store:
        page, total = store.jobs(limit=500)
        restored = {j.id: (j.name, j.status) for j in page}
    assert total == len(restored)
    assert set(before) <= set(restored) <= set(after)
    assert sorted(restored) == list(range(1, len(restored) + 1))
    for job_id, (name, status) in restored.items():
        assert name == after[job_id][0]
        if job_id in before:
            assert _ORDER[before[job_id][1]] <= _ORDER[status] <= _ORDER[after[job_id][1]]

    with QuarryServer(tmp_path / "restored-home", new_db) as server:
        client = Client(server.url, token)  # the same token authenticates
        served = _listed(client)
        assert {i: name for i, (name, _) in served.items()} == {
            i: name for i, (name, _) in restored.items()
        }
        # settled jobs answer exactly as before: attempts, workers, times, manifest
        for job_id in settled:
            assert _answer(client, job_id) == answers[job_id]
        # the restored queue works: what was in flight ends, a new job takes a new id (on
        # PostgreSQL maybe not the next: a sequence is dumped as it stood, ahead of a job
        # that was being inserted)
        new = client.submit(job("after-restore"))
        assert new["id"] > max(restored)
        until(lambda: all(s in _ENDED for _, s in _listed(client).values()), 60)
        assert {s for _, s in _listed(client).values()} == {"succeeded"}
        with pytest.raises(AuthenticationError):
            Client(server.url, "qt_not-a-token").jobs()


@pytest.mark.service
@pytest.mark.slow
def test_a_sqlite_queue_backed_up_under_load_restores_to_a_server_that_answers_the_same(
    tmp_path: Path, s3_env: dict[str, str]
) -> None:
    db = f"sqlite:///{tmp_path / 'home' / 'jobs.db'}"
    restored_db = tmp_path / "restored-home" / "jobs.db"

    def take_backup(to: str) -> dict[str, Any]:
        code, out, err = run("admin", "backup", "--to", to, "--db", db, "--json")
        assert code == 0, err
        return dict(json.loads(out))

    def give_back(to: str) -> None:
        # into an empty home: the job database goes to its default place there
        code, out, err = run(
            "admin", "restore", "--from", to, "--home", str(tmp_path / "restored-home"), "--json"
        )
        assert code == 0, err
        done = json.loads(out)
        assert done["targets"] == {"jobs": f"sqlite:///{restored_db}"}
        with sqlite3.connect(restored_db) as conn:  # a whole database, not a page of one
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    _round_trip(tmp_path, s3_env, "sqlite", db, f"sqlite:///{restored_db}", take_backup, give_back)


@pytest.mark.service
@pytest.mark.slow
def test_a_postgresql_queue_round_trips_through_pg_dump_and_pg_restore(
    tmp_path: Path, s3_env: dict[str, str], new_postgres: Callable[[], str]
) -> None:
    db, empty = new_postgres(), new_postgres()
    # as SQLAlchemy spells it, with its driver: pg_dump and pg_restore get libpq's form
    restored_db = empty.replace("postgresql://", "postgresql+psycopg://")

    def take_backup(to: str) -> dict[str, Any]:
        return backup(to, db=db).as_dict()

    def give_back(to: str) -> None:
        done = restore(to, db=restored_db)
        assert done.targets == {"jobs": empty} and done.manifest.job_db == "postgresql"
        with pytest.raises(UsageError, match=r"already has \d+ tables \(public\.alembic_"):
            restore(to, db=restored_db)  # not twice: the database is no longer empty

    _round_trip(tmp_path, s3_env, "postgresql", db, restored_db, take_backup, give_back)
