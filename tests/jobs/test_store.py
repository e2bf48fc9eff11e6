"""The durable queue on SQLite and on the machine's PostgreSQL: admission by capacity,
priority and fair share, retries, stale attempts, and claims that never run a job twice."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quarry.exceptions import ManifestError, UsageError
from quarry.jobs import JobStore

PG = "postgresql://postgres@127.0.0.1:5432"


def _manifest(name: str, project: str = "p", cpus: float = 1, memory: int = 1 << 30,
              priority: int = 0, **retries: Any) -> dict[str, Any]:  # fmt: skip
    return {"name": name, "project": project, "priority": priority,
            "resources": {"cpus": cpus, "memory": memory, "gpus": 0},
            "run": {"command": ["true"]}, "retries": retries}  # fmt: skip


@pytest.fixture
def postgres() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL, dropped afterwards."""
    import psycopg

    name = f"quarry_jobs_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{PG}/{name}"
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    url = (
        f"sqlite:///{tmp_path / 'jobs.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres")
    )
    with JobStore(url) as opened:
        yield opened


def test_the_schema_comes_from_the_migrations(store: JobStore) -> None:
    from sqlalchemy import inspect, text

    tables = set(inspect(store.engine).get_table_names())
    assert {"jobs", "attempts", "members", "tokens", "project_variables",
            "alembic_version"} <= tables  # fmt: skip
    with store.engine.connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar() == "0006"
    with JobStore(store.url):  # opening again migrates nothing and fails nothing
        pass


def test_admission_fits_the_free_capacity(store: JobStore) -> None:
    big = store.submit(_manifest("big", cpus=4, memory=8 << 30))
    small = [store.submit(_manifest(f"s{i}", cpus=1, memory=1 << 30)) for i in range(3)]
    got = store.claim("w", cpus=2, memory=4 << 30, limit=10)
    assert [c.job_id for c in got] == small[:2]  # the big one does not fit; two small do
    assert store.job(big).status == "queued"  # type: ignore[union-attr]
    got = store.claim("w", cpus=8, memory=16 << 30, limit=10)
    assert [c.job_id for c in got] == [big, small[2]]


def test_priority_then_fair_share_then_age(store: JobStore) -> None:
    a = [store.submit(_manifest(f"a{i}", project="alpha")) for i in range(3)]
    b = [store.submit(_manifest(f"b{i}", project="beta")) for i in range(2)]
    urgent = store.submit(_manifest("u", project="alpha", priority=5))
    order = [store.claim("w", cpus=1, memory=1 << 30)[0].job_id for _ in range(6)]
    # the urgent job first; then alpha has one running, beta none: beta's oldest; then
    # one each: the oldest of all (alpha's); ...
    assert order == [urgent, b[0], a[0], b[1], a[1], a[2]]


def test_a_retried_job_waits_its_backoff_and_gets_more_memory_after_an_oom(
    store: JobStore,
) -> None:
    job = store.submit(_manifest("m", memory=1 << 30, max=2, backoff=0.0, on=["oom", "lost"],
                                 memory_multiplier_on_oom=2.0))  # fmt: skip
    first = store.claim("w", cpus=4, memory=8 << 30)[0]
    assert store.finish(first.attempt_id, "oom_killed", peak_memory=1 << 30) == "queued"
    second = store.claim("w", cpus=4, memory=8 << 30)[0]
    assert (second.job_id, second.number, second.memory) == (job, 2, 2 << 30)
    assert store.finish(second.attempt_id, "failed", exit_code=3) == "failed"  # not in "on"
    attempts = store.attempts(job)
    assert [(a.outcome, a.memory) for a in attempts] == [("oom_killed", 1 << 30),
                                                          ("failed", 2 << 30)]  # fmt: skip
    slow = store.submit(_manifest("slow", max=1, backoff=3600.0, on=["failed"]))
    attempt = store.claim("w", cpus=4, memory=8 << 30)[0]
    assert store.finish(attempt.attempt_id, "failed", exit_code=1) == "queued"
    assert store.claim("w", cpus=4, memory=8 << 30) == []  # an hour's backoff first
    assert store.job(slow).attempts == 1  # type: ignore[union-attr]


def test_stale_attempts_and_a_second_finish(store: JobStore) -> None:
    store.submit(_manifest("x", max=1, on=["lost"], backoff=0.0))
    attempt = store.claim("w", cpus=1, memory=1 << 30)[0]
    assert store.stale(older_than=3600) == []
    assert store.stale(older_than=-1) == [attempt.attempt_id]
    assert store.finish(attempt.attempt_id, "lost", reason="no heartbeat") == "queued"
    # the worker, late, says it succeeded: the attempt's outcome stays as recorded
    store.finish(attempt.attempt_id, "succeeded")
    assert store.attempts(attempt.job_id)[0].outcome == "lost"


def _drain(url: str, worker: str, out: Any) -> None:
    seen: list[int] = []
    with JobStore(url) as store:
        while True:
            got = store.claim(worker, cpus=64, memory=1 << 40, limit=5)
            if not got:
                break
            for c in got:
                seen.append(c.job_id)
                store.finish(c.attempt_id, "succeeded")
    out.put(seen)


@pytest.mark.slow
@pytest.mark.service
def test_a_thousand_jobs_two_schedulers_each_runs_exactly_once(postgres: str) -> None:
    with JobStore(postgres) as store:
        _thousand(store, postgres)


def _thousand(store: JobStore, postgres: str) -> None:
    ids = [store.submit(_manifest(f"j{i}", project=f"p{i % 7}")) for i in range(1000)]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [context.Process(target=_drain, args=(postgres, f"w{k}", out)) for k in range(2)]
    for w in workers:
        w.start()
    seen = [out.get(timeout=240) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    assert sorted(seen[0] + seen[1]) == ids  # every job once, none twice
    assert seen[0] and seen[1]  # both schedulers took part
    assert store.counts() == {"succeeded": 1000}
    assert all(len(store.attempts(i)) == 1 for i in ids[:50])


def test_memory_after_an_oom_grows_only_to_what_a_worker_has(store: JobStore) -> None:
    job = store.submit(_manifest("m", memory=150 << 20, max=3, backoff=0.0, on=["oom"],
                                 memory_multiplier_on_oom=1.5))  # fmt: skip
    first = store.claim("w", cpus=1, memory=200 << 20)[0]
    assert store.finish(first.attempt_id, "oom_killed", max_memory=200 << 20) == "queued"
    assert store.job(job).memory == 200 << 20  # type: ignore[union-attr]  # capped, not 225Mi
    second = store.claim("w", cpus=1, memory=200 << 20)[0]
    assert store.finish(second.attempt_id, "oom_killed", max_memory=200 << 20) == "failed"
    assert "more than" in (store.job(job).reason or "")  # type: ignore[union-attr]


def test_fair_share_holds_inside_one_claim(store: JobStore) -> None:
    a = [store.submit(_manifest(f"a{i}", project="alpha")) for i in range(4)]
    b = [store.submit(_manifest(f"b{i}", project="beta")) for i in range(2)]
    got = [c.job_id for c in store.claim("w", cpus=4, memory=4 << 30, limit=4)]
    assert got == [a[0], b[0], a[1], b[1]]  # not alpha's four oldest


def test_scheduling_latency_is_summed_by_the_database(store: JobStore) -> None:
    ids = [store.submit(_manifest(f"l{i}")) for i in range(3)]
    store.claim("w", cpus=8, memory=8 << 30, limit=2)
    _, (total, count) = store.attempt_stats()
    expected = []
    for job_id in ids:
        job = store.job(job_id)
        assert job is not None
        if job.started_at is not None:
            expected.append((job.started_at - job.created_at).total_seconds())
    assert count == len(expected) == 2
    assert total == pytest.approx(sum(expected), abs=2e-3)


def test_an_oom_retry_gets_twice_the_memory_by_default_up_to_the_largest_worker(
    store: JobStore,
) -> None:
    job = store.submit(_manifest("m", memory=1 << 30, max=3, backoff=0.0, on=["oom"]))
    first = store.claim("w", cpus=1, memory=3 << 30)[0]
    assert store.finish(first.attempt_id, "oom_killed", max_memory=3 << 30) == "queued"
    assert store.job(job).memory == 2 << 30  # type: ignore[union-attr]  # 2x, not 1x
    second = store.claim("w", cpus=1, memory=3 << 30)[0]
    assert store.finish(second.attempt_id, "oom_killed", max_memory=3 << 30) == "queued"
    assert store.job(job).memory == 3 << 30  # type: ignore[union-attr]  # the worker's most


def test_project_variables_round_trip_and_reach_only_their_projects_attempts(
    store: JobStore,
) -> None:
    assert store.set_variable("alpha", "API_KEY", "a-secret", set_by="ops") is True
    assert store.set_variable("alpha", "BUCKET", "s3://alpha", set_by="ops") is True
    assert store.set_variable("beta", "API_KEY", "b-secret", set_by="ops") is True
    assert store.set_variable("alpha", "API_KEY", "a-secret-2", set_by="eve") is False  # replaced
    listed = store.variables("alpha")
    assert [(v.name, v.set_by) for v in listed] == [("API_KEY", "eve"), ("BUCKET", "ops")]
    assert not hasattr(listed[0], "value")  # the listing cannot show a value
    assert store.project_env("alpha") == {"API_KEY": "a-secret-2", "BUCKET": "s3://alpha"}
    assert store.project_env("beta") == {"API_KEY": "b-secret"}
    a = store.submit(_manifest("a", project="alpha"))
    b = store.submit(_manifest("b", project="beta"))
    c = store.submit(_manifest("c", project="gamma"))
    claimed = {x.job_id: x for x in store.claim("w", cpus=8, memory=8 << 30, limit=10)}
    assert dict(claimed[a].env) == {"API_KEY": "a-secret-2", "BUCKET": "s3://alpha"}
    assert dict(claimed[b].env) == {"API_KEY": "b-secret"}
    assert dict(claimed[c].env) == {}
    assert "a-secret" not in repr(claimed[a])  # a logged claim shows no value
    assert store.unset_variable("alpha", "BUCKET") is True
    assert store.unset_variable("alpha", "BUCKET") is False
    assert store.project_env("alpha") == {"API_KEY": "a-secret-2"}
    assert store.variables("gamma") == []


def test_a_manifest_cannot_shadow_its_projects_variables(store: JobStore) -> None:
    store.set_variable("alpha", "API_KEY", "a-secret", set_by="ops")
    shadowing = {**_manifest("x", project="alpha"), "env": {"API_KEY": "mine", "OTHER": "1"}}
    with pytest.raises(ManifestError, match=r"^manifest: env\.API_KEY: project 'alpha' sets "
                       r"API_KEY itself") as caught:  # fmt: skip
        store.submit(shadowing)
    assert caught.value.problems[0]["path"] == "env.API_KEY"
    assert "a-secret" not in str(caught.value)
    assert store.counts() == {}  # nothing queued
    # another project may use the name; so may alpha once the variable is gone
    store.submit({**shadowing, "project": "beta"})
    store.unset_variable("alpha", "API_KEY")
    store.submit(shadowing)
    assert store.counts() == {"queued": 2}


@pytest.mark.parametrize(
    ("project", "name", "value", "message"),
    [
        ("alpha", "api_key", "v", "variable name 'api_key': use capital letters"),
        ("alpha", "1KEY", "v", "variable name '1KEY'"),
        ("alpha", "A-B", "v", "variable name 'A-B'"),
        ("alpha", "QUARRY_JOB_ID", "v", "is set by the job service for each attempt"),
        ("alpha", "KEY", "a\0b", "NUL character"),
        ("al pha", "KEY", "v", "project 'al pha': a project's name is letters"),
    ],
)
def test_a_variable_a_process_could_not_receive_is_refused(
    store: JobStore, project: str, name: str, value: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        store.set_variable(project, name, value, set_by="ops")
    assert store.variables(project) == []


def test_the_database_url_comes_from_quarry_db_when_no_db_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment hands the URL over in the environment (never in a command line): every
    command that opens the job database without --db reads $QUARRY_DB."""
    from typer.testing import CliRunner

    from quarry.cli import app

    target = tmp_path / "from-env.db"
    monkeypatch.setenv("QUARRY_DB", f"sqlite:///{target}")
    result = CliRunner().invoke(app, ["tokens", "create", "--user", "ann", "--project", "alpha"])
    assert result.exit_code == 0, result.output
    with JobStore(f"sqlite:///{target}") as store:  # the token is in that database
        assert store.authenticate(result.output.strip()) == ("ann", {"alpha"})
    assert not (tmp_path / "quarry-home" / "jobs.db").exists()  # not in the default place
