"""The durable job queue: jobs and attempts in SQLite (default, under ``$QUARRY_HOME``) or
PostgreSQL, shared safely by several schedulers and workers.

- The schema is made and upgraded by Alembic (``migrate``), on first open.
- ``claim`` admits queued jobs that fit a worker's free capacity, in order of priority, then
  fair share (the project with the fewest running jobs first), then age. It is atomic: on
  PostgreSQL the candidates are locked with ``FOR UPDATE SKIP LOCKED``, so two schedulers
  never take the same job and neither waits for the other; on SQLite the transaction takes
  the database's write lock when it begins (``BEGIN IMMEDIATE``), so claims run one at a time.
- ``finish`` records an attempt's outcome and either retries the job (back in the queue after
  its backoff, with more memory after an OOM when its policy asks) or ends it.
- ``stale`` finds running attempts whose heartbeat stopped: the watchdog's question.
- ``requeue`` puts back the attempt of a worker that is shutting down (outcome ``requeued``):
  it does not count against the job's retries.
- ``unfinished`` and ``take_over`` let a worker adopt the attempts of a dead one whose
  processes outlive it (Ray's jobs): the attempt becomes the new worker's only if it still
  belongs to the old one (a compare-and-set), so two workers never adopt the same attempt.
- Project variables (``set_variable``, ``unset_variable``, ``variables``) are what a
  project's attempts may read (its credentials): ``claim`` hands each attempt its own
  project's, and only those; ``variables`` lists names, never values. A manifest may not
  name one of its project's variables in its ``env`` (``submit`` refuses it): a job does not
  shadow its project's credentials.

The manifest travels typed: ``submit`` takes a ``Manifest`` (a mapping is validated first),
``Claimed.manifest`` is one, and retries read the stored manifest back as one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Engine, case, create_engine, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, aliased

from quarry.exceptions import AccessDenied, ManifestError, UsageError
from quarry.jobs._datasets import DatasetInfo, Identity, check_dataset_name, refusal
from quarry.jobs._manifest import Manifest, manifest_from_dict, readable_memory
from quarry.jobs._schema import (
    VISIBILITIES,
    Attempt,
    DataRead,
    Dataset,
    Job,
    Member,
    ProjectVariable,
    Token,
)

__all__ = [
    "DATA_TOKEN_VARIABLE",
    "RESERVED_VARIABLES",
    "Claimed",
    "JobStore",
    "TokenInfo",
    "Unfinished",
    "VariableInfo",
    "check_variable_name",
    "default_url",
    "migrate",
]

# ``requeued``: stopped because its worker shut down; not a try, the job runs again.
OUTCOMES = ("succeeded", "failed", "oom_killed", "timed_out", "cancelled", "lost", "requeued")
# What a retry policy's ``on`` names, by outcome.
_RETRY_KIND = {"failed": "failed", "timed_out": "failed", "oom_killed": "oom", "lost": "lost"}


_VARIABLE_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
# Set by the service for each attempt: a project variable of that name would mislead its jobs.
# The variable an attempt of a job that declares ``data`` finds its own token in.
DATA_TOKEN_VARIABLE = "QUARRY_DATA_TOKEN"  # noqa: S105 (a variable's name, not a secret)
RESERVED_VARIABLES = ("QUARRY_JOB_ID", "QUARRY_JOB_OUT", DATA_TOKEN_VARIABLE)


def check_variable_name(name: str) -> str:
    """``name`` if it may name a project variable (``[A-Z_][A-Z0-9_]*``, not one the service
    sets itself), else ``UsageError`` saying what to give."""
    if not _VARIABLE_NAME.fullmatch(name) or len(name) > 200:
        raise UsageError(f"variable name {name!r}: use capital letters, digits and _, not "
                         "starting with a digit (e.g. AWS_ACCESS_KEY_ID)")  # fmt: skip
    if name in RESERVED_VARIABLES:
        raise UsageError(f"variable name {name!r} is set by the job service for each attempt; "
                         "choose another name")  # fmt: skip
    return name


def _check_project(project: str) -> str:
    from quarry.jobs._manifest import _SLUG

    if not _SLUG.fullmatch(project):
        raise UsageError(
            f"project {project!r}: a project's name is letters, digits, '-', '_' and '.', "
            "starting with a letter or digit, at most 100 characters"
        )
    return project


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _revoke_job_tokens(s: Session, job_id: int, now: datetime) -> None:
    """End a job's data tokens: its attempt ended, was put back or cancelled."""
    s.execute(
        update(Token)
        .where(Token.job_id == job_id, Token.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def _why(outcome: str, reason: str | None) -> str:
    return f"{outcome}: {reason}" if reason else outcome


def _now() -> datetime:
    return datetime.now(UTC)


def default_url() -> str:
    """``$QUARRY_DB`` (so that a deployment hands the URL over in the environment, never in
    a command line that any process listing shows), else SQLite under ``$QUARRY_HOME``."""
    import os

    from quarry.settings import quarry_home

    if os.environ.get("QUARRY_DB"):
        return os.environ["QUARRY_DB"]

    path = quarry_home() / "jobs.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith(("sqlite", "postgresql")):
        raise UsageError(f"--db {url}: give sqlite:///PATH or postgresql://USER@HOST/DB")
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _connect(dbapi: Any, _record: Any) -> None:
        dbapi.isolation_level = None  # transactions are begun below, not by the driver
        dbapi.execute("PRAGMA journal_mode=WAL")
        # WAL with NORMAL sync survives a crash of any process (not a power cut) and commits
        # without an fsync each: the queue's throughput on SQLite
        dbapi.execute("PRAGMA synchronous=NORMAL")
        dbapi.execute("PRAGMA busy_timeout=60000")
        dbapi.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock now: claims serialize

    return engine


def migrate(engine: Engine) -> None:
    """Bring the database's schema to the newest migration."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":  # two servers starting at once take turns
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7240510016)")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@dataclass(frozen=True)
class Ending:
    """How one attempt ended, for ``finish_many``."""

    attempt_id: int
    outcome: str
    reason: str | None = None
    exit_code: int | None = None
    peak_memory: int | None = None


@dataclass(frozen=True)
class TokenInfo:
    """An API token as ``tokens list`` shows it (never the secret itself)."""

    id: int
    user: str
    projects: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class VariableInfo:
    """A project variable as ``projects env list`` shows it: never its value."""

    project: str
    name: str
    set_by: str
    set_at: datetime


@dataclass(frozen=True)
class Claimed:
    """A job admitted to a worker, and the attempt it now runs as; ``env``: its project's
    variables (kept out of ``repr``, so that no log line shows a value); ``started_at``:
    when it was admitted (UTC)."""

    job_id: int
    attempt_id: int
    number: int
    manifest: Manifest
    cpus: float
    memory: int
    gpus: int
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    started_at: datetime | None = None


@dataclass(frozen=True)
class Unfinished:
    """An attempt without an outcome, with what a worker needs to watch it (``memory``: its
    limit; ``started_at``: UTC)."""

    attempt_id: int
    job_id: int
    number: int
    worker: str
    manifest: Manifest
    cpus: float
    memory: int
    gpus: int
    started_at: datetime


class JobStore:
    """One database of jobs; ``url`` default SQLite under ``$QUARRY_HOME``."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = _engine(self.url)
        self.postgres = self.engine.dialect.name == "postgresql"
        try:
            migrate(self.engine)
        except OperationalError as exc:  # a folder that does not exist, a server away
            shown = make_url(self.url).render_as_string(hide_password=True)
            first = (str(exc.orig).strip().splitlines() or ["cannot connect"])[0]
            raise UsageError(
                f"--db {shown}: cannot open the job database ({first}); check the path or "
                "the server"
            ) from None

    def close(self) -> None:
        """Close the database connections."""
        self.engine.dispose()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    # -- submitting and reading ---------------------------------------------------------------

    def submit(self, manifest: Manifest | Mapping[str, Any], *, owner: str | None = None) -> int:
        """Queue a manifest (a mapping is validated first: ``ManifestError``); the new job's
        id. A manifest whose ``env`` names one of its project's variables is refused
        (``ManifestError``): a job must not shadow its project's credentials."""
        if not isinstance(manifest, Manifest):
            manifest = manifest_from_dict(manifest)
        resources = manifest.resources
        job = Job(
            name=manifest.name, project=manifest.project, owner=owner, status="queued",
            priority=manifest.priority, cpus=resources.cpus, memory=resources.memory,
            gpus=resources.gpus, manifest=manifest.to_json(), attempts=0,
            max_retries=manifest.retries.max, created_at=_now(),
        )  # fmt: skip
        with self.session() as s:
            if manifest.env:
                taken = set(s.scalars(select(ProjectVariable.name).where(
                    ProjectVariable.project == manifest.project,
                    ProjectVariable.name.in_(list(manifest.env)),
                )))  # fmt: skip
                if taken:
                    raise ManifestError([
                        {"path": f"env.{name}", "message": f"env.{name}: project "
                         f"{manifest.project!r} sets {name} itself and a job cannot replace "
                         "its project's variables; remove it from env"}
                        for name in sorted(taken)
                    ])  # fmt: skip
            if manifest.data:
                self._check_mounts(s, manifest, owner)
            s.add(job)
            s.flush()
            return int(job.id)

    def _check_mounts(self, s: Session, manifest: Manifest, owner: str | None) -> None:
        """Every dataset the manifest declares exists, and its submitter may use it so
        (``ManifestError`` for an unknown one, ``AccessDenied`` for one they may not)."""
        names = [m.dataset for m in manifest.data]
        known = {d.name: DatasetInfo.of(d)
                 for d in s.scalars(select(Dataset).where(Dataset.name.in_(names)))}  # fmt: skip
        missing = [(k, m.dataset) for k, m in enumerate(manifest.data) if m.dataset not in known]
        if missing:
            raise ManifestError([
                {"path": f"data[{k}].dataset", "message": f"data[{k}].dataset: no dataset "
                 f"{name!r} is registered; `quarry datasets list` shows them"}
                for k, name in missing
            ])  # fmt: skip
        projects = frozenset(s.scalars(select(Member.project).where(Member.user == owner)))
        who = Identity(owner or "", projects)
        for m in manifest.data:
            why = refusal(who, known[m.dataset], m.mode)
            if why is not None:
                raise AccessDenied(f"data: {why}")

    def job(self, job_id: int) -> Job | None:
        with self.session() as s:
            return s.get(Job, job_id)

    def attempts(self, job_id: int) -> list[Attempt]:
        with self.session() as s:
            rows = s.scalars(
                select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number)
            )
            return list(rows)

    def counts(self) -> dict[str, int]:
        """Jobs by status."""
        with self.session() as s:
            rows = s.execute(select(Job.status, func.count()).group_by(Job.status))
            return {status: int(n) for status, n in rows}

    # -- scheduling ---------------------------------------------------------------------------

    def claim(
        self, worker: str, *, cpus: float, memory: int, gpus: int = 0, limit: int = 1
    ) -> list[Claimed]:
        """Admit up to ``limit`` queued jobs that fit ``cpus``, ``memory`` (bytes) and
        ``gpus`` together, and start an attempt of each on ``worker``."""
        now = _now()
        running = aliased(Job)
        busy = (
            select(func.count())
            .where(running.project == Job.project, running.status == "running")
            .scalar_subquery()
        )
        query = (
            select(Job)
            .where(
                Job.status == "queued",
                (Job.not_before.is_(None)) | (Job.not_before <= now),
                Job.cpus <= cpus, Job.memory <= memory, Job.gpus <= gpus,
            )
            .order_by(Job.priority.desc(), busy.asc(), Job.id.asc())
            .limit(max(limit, 1) * 4)
        )  # fmt: skip
        if self.postgres:
            query = query.with_for_update(skip_locked=True, of=Job)
        taken: list[Claimed] = []
        admitted: list[tuple[Job, Attempt]] = []
        with self.session() as s:
            free_cpus, free_memory, free_gpus = cpus, memory, gpus
            candidates = list(s.scalars(query))
            # Fair share inside the batch too: each job taken counts for its project
            # before the next pick (the query's order saw the running jobs only).
            counted = select(Job.project, func.count()).where(Job.status == "running")
            running_now = {p: int(n) for p, n in s.execute(counted.group_by(Job.project))}
            while candidates and len(admitted) < limit:
                fits = [j for j in candidates if j.cpus <= free_cpus
                        and j.memory <= free_memory and j.gpus <= free_gpus]  # fmt: skip
                if not fits:
                    break
                job = min(fits, key=lambda j: (-j.priority, running_now.get(j.project, 0), j.id))
                candidates.remove(job)
                running_now[job.project] = running_now.get(job.project, 0) + 1
                free_cpus -= job.cpus
                free_memory -= job.memory
                free_gpus -= job.gpus
                job.status = "running"
                job.attempts += 1
                job.started_at = job.started_at or now
                attempt = Attempt(job_id=job.id, number=job.attempts, worker=worker,
                                  memory=job.memory, started_at=now, heartbeat_at=now)  # fmt: skip
                s.add(attempt)
                s.flush()
                admitted.append((job, attempt))
            # each attempt gets its own project's variables, read in the claim's transaction
            envs: dict[str, dict[str, str]] = {}
            if admitted:
                projects = {job.project for job, _ in admitted}
                for v in s.scalars(
                    select(ProjectVariable).where(ProjectVariable.project.in_(projects))
                ):
                    envs.setdefault(v.project, {})[v.name] = v.value
            for job, attempt in admitted:
                manifest = Manifest.from_json(job.manifest)
                env = envs.get(job.project, {})
                if manifest.data:  # its own token, for the datasets it declared
                    _revoke_job_tokens(s, job.id, now)  # an earlier attempt's, if any
                    token = "qt_" + secrets.token_urlsafe(32)
                    s.add(Token(user=job.owner or "", digest=_digest(token), created_at=now,
                                job_id=job.id))  # fmt: skip
                    env = {**env, DATA_TOKEN_VARIABLE: token}
                taken.append(Claimed(job.id, attempt.id, attempt.number, manifest, job.cpus,
                                     job.memory, job.gpus, env, now))  # fmt: skip
        return taken

    def attempt_stats(self) -> tuple[dict[str, int], tuple[float, int]]:
        """Attempts by outcome (``running`` for unfinished ones), and the sum and count of
        seconds from a job's submission to its first attempt's start."""
        with self.session() as s:
            rows = s.execute(select(Attempt.outcome, func.count()).group_by(Attempt.outcome))
            outcomes = {outcome or "running": int(n) for outcome, n in rows}
            # summed by the database: a scrape must not read every job ever run
            wait: ColumnElement[Any]
            if self.postgres:
                wait = func.extract("epoch", Job.started_at - Job.created_at)
            else:
                wait = (func.julianday(Job.started_at) - func.julianday(Job.created_at)) * 86400
            total, count = s.execute(
                select(func.coalesce(func.sum(wait), 0.0), func.count()).where(
                    Job.started_at.is_not(None)
                )
            ).one()
        return outcomes, (float(total), int(count))

    def scheduling_latency(self, bounds: Sequence[float]) -> tuple[list[int], float, int]:
        """Seconds from a job's submission to its first attempt's start, as a histogram
        counted by the database: how many waited at most each of ``bounds`` (cumulative),
        their sum, and how many started."""
        wait: ColumnElement[Any]
        if self.postgres:
            wait = func.extract("epoch", Job.started_at - Job.created_at)
        else:
            wait = (func.julianday(Job.started_at) - func.julianday(Job.created_at)) * 86400
        columns = [func.coalesce(func.sum(case((wait <= b, 1), else_=0)), 0) for b in bounds]
        with self.session() as s:
            row = s.execute(
                select(func.coalesce(func.sum(wait), 0.0), func.count(), *columns).where(
                    Job.started_at.is_not(None)
                )
            ).one()
        return [int(n) for n in row[2:]], float(row[0]), int(row[1])

    def cancelled(self, job_ids: set[int]) -> set[int]:
        """Which of ``job_ids`` were cancelled."""
        with self.session() as s:
            rows = s.scalars(select(Job.id).where(Job.id.in_(job_ids), Job.status == "cancelled"))
            return set(rows)

    def started(self, pids: dict[int, int]) -> None:
        """Record the process ids of attempts just started (attempt id -> pid)."""
        if not pids:
            return
        with self.session() as s:  # one UPDATE by primary key, executed for every row
            s.execute(update(Attempt), [{"id": a, "pid": p} for a, p in pids.items()])

    def heartbeat(self, attempt_ids: list[int]) -> set[int]:
        """Record that these attempts' processes are alive; the ones among them that were
        ended meanwhile (the watchdog gave them up as lost), whose processes must be stopped
        so that a job never runs twice."""
        if not attempt_ids:
            return set()
        with self.session() as s:
            s.execute(
                update(Attempt)
                .where(Attempt.id.in_(attempt_ids), Attempt.outcome.is_(None))
                .values(heartbeat_at=_now())
            )
            closed = s.scalars(
                select(Attempt.id).where(Attempt.id.in_(attempt_ids), Attempt.outcome.is_not(None))
            )
            return set(closed)

    def stale(self, older_than: float) -> list[int]:
        """Running attempts whose last heartbeat is more than ``older_than`` seconds old."""
        limit = _now() - timedelta(seconds=older_than)
        with self.session() as s:
            rows = s.scalars(
                select(Attempt.id).where(Attempt.outcome.is_(None), Attempt.heartbeat_at < limit)
            )
            return list(rows)

    def unfinished(
        self,
        *,
        ids: Sequence[int] | None = None,
        worker_prefix: str | None = None,
        older_than: float | None = None,
        exclude: Collection[str] = (),
    ) -> list[Unfinished]:
        """Attempts without an outcome, oldest first: those of ``ids``, of workers whose
        names begin with ``worker_prefix`` and are not in ``exclude``, whose heartbeat is
        more than ``older_than`` seconds old (each filter only when given)."""
        where: list[ColumnElement[bool]] = [Attempt.outcome.is_(None)]
        if ids is not None:
            where.append(Attempt.id.in_(list(ids)))
        if worker_prefix:
            where.append(Attempt.worker.startswith(worker_prefix, autoescape=True))
        if older_than is not None:
            where.append(Attempt.heartbeat_at < _now() - timedelta(seconds=older_than))
        if exclude:
            where.append(Attempt.worker.not_in(list(exclude)))
        query = select(Attempt, Job).join(Job, Job.id == Attempt.job_id).where(*where)
        with self.session() as s:
            rows = s.execute(query.order_by(Attempt.id)).all()
            return [Unfinished(a.id, a.job_id, a.number, a.worker, Manifest.from_json(j.manifest),
                               j.cpus, a.memory, j.gpus,
                               a.started_at.replace(tzinfo=UTC) if a.started_at.tzinfo is None
                               else a.started_at) for a, j in rows]  # fmt: skip

    def take_over(self, attempt_id: int, worker: str, was: str) -> bool:
        """Make the unfinished attempt of worker ``was`` the attempt of ``worker`` (its
        heartbeat now); whether it did: False when it ended or another worker took it."""
        with self.session() as s:
            done = s.execute(
                update(Attempt)
                .where(Attempt.id == attempt_id, Attempt.outcome.is_(None), Attempt.worker == was)
                .values(worker=worker, heartbeat_at=_now())
                .execution_options(synchronize_session=False)
            )
            return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    def taken_over(self, worker: str, attempt_ids: list[int]) -> set[int]:
        """Which of ``attempt_ids`` (``worker``'s) another worker has taken over since."""
        if not attempt_ids:
            return set()
        with self.session() as s:
            rows = s.scalars(
                select(Attempt.id).where(
                    Attempt.id.in_(attempt_ids), Attempt.outcome.is_(None), Attempt.worker != worker
                )
            )
            return set(rows)

    def finish(
        self,
        attempt_id: int,
        outcome: str,
        *,
        reason: str | None = None,
        exit_code: int | None = None,
        peak_memory: int | None = None,
        max_memory: int | None = None,
    ) -> str:
        """Record how an attempt ended and move its job on: the job's new status. An attempt
        already finished (by its worker or the watchdog) is left as it was. ``max_memory``:
        the most a retry after an OOM may ask for (the reporting worker's capacity)."""
        ending = Ending(attempt_id, outcome, reason, exit_code, peak_memory)
        return self.finish_many([ending], max_memory=max_memory)[0]

    def finish_many(self, endings: list[Ending], *, max_memory: int | None = None) -> list[str]:
        """``finish`` for several attempts in one transaction (a worker's step ends many at
        once: one commit each cost 4 ms on PostgreSQL); their jobs' new statuses."""
        for e in endings:
            if e.outcome not in OUTCOMES:
                raise ValueError(f"unknown outcome {e.outcome!r}")
        if not endings:
            return []
        with self.session() as s:
            return [self._finish(s, e, max_memory) for e in endings]

    def _finish(self, s: Session, e: Ending, max_memory: int | None) -> str:
        attempt_id, outcome, reason = e.attempt_id, e.outcome, e.reason
        exit_code, peak_memory = e.exit_code, e.peak_memory
        now = _now()
        attempt = s.get(Attempt, attempt_id, with_for_update=self.postgres)
        if attempt is None or attempt.outcome is not None:
            job = s.get(Job, attempt.job_id) if attempt else None
            return job.status if job else "unknown"
        attempt.outcome, attempt.reason, attempt.finished_at = outcome, reason, now
        attempt.exit_code, attempt.peak_memory = exit_code, peak_memory
        _revoke_job_tokens(s, attempt.job_id, now)  # the attempt's data token ends with it
        job = s.get(Job, attempt.job_id, with_for_update=self.postgres)
        assert job is not None
        if job.status == "cancelled":
            return job.status
        retries = Manifest.from_json(job.manifest).retries
        kind = _RETRY_KIND.get(outcome)
        # tries spent: attempts, less those put back by a worker shutting down
        requeued = s.scalar(
            select(func.count()).where(Attempt.job_id == job.id, Attempt.outcome == "requeued")
        )
        spent = job.attempts - int(requeued or 0)
        if (
            outcome != "succeeded"
            and kind is not None
            and kind in retries.on
            and spent <= job.max_retries
        ):
            job.status = "queued"
            backoff = retries.backoff * 2 ** (spent - 1)
            job.not_before = now + timedelta(seconds=backoff)
            if outcome == "oom_killed":
                grown = int(job.memory * retries.memory_multiplier_on_oom)
                if max_memory is not None and grown > max_memory:
                    if job.memory >= max_memory:  # no worker could give it more
                        job.status, job.finished_at = "failed", now
                        job.reason = (f"{_why(outcome, reason)}; a retry would need more "
                                      f"than the {readable_memory(max_memory)} a worker "
                                      "has")  # fmt: skip
                        return job.status
                    grown = max_memory
                job.memory = grown
            job.reason = f"attempt {attempt.number} {_why(outcome, reason)}"
            return job.status
        ended = {"succeeded": "succeeded", "cancelled": "cancelled"}
        job.status = ended.get(outcome, "failed")
        job.finished_at = now
        # "failed: exit code 3" beside the status failed would say failed twice
        job.reason = reason if outcome == job.status else _why(outcome, reason)
        return job.status

    # -- project variables ---------------------------------------------------------------------

    def set_variable(self, project: str, name: str, value: str, *, set_by: str) -> bool:
        """Set ``project``'s variable ``name`` (``[A-Z_][A-Z0-9_]*``) to ``value``; whether it
        is new (False: replaced). A name or value a process could not receive is a
        ``UsageError``."""
        _check_project(project)
        check_variable_name(name)
        if "\0" in value:
            raise UsageError(f"variable {name}: its value holds a NUL character, which an "
                             "environment variable cannot; give the value without it")  # fmt: skip
        with self.session() as s:
            found = s.get(ProjectVariable, (project, name), with_for_update=self.postgres)
            if found is None:
                s.add(ProjectVariable(project=project, name=name, value=value, set_by=set_by,
                                      set_at=_now()))  # fmt: skip
                return True
            found.value, found.set_by, found.set_at = value, set_by, _now()
            return False

    def unset_variable(self, project: str, name: str) -> bool:
        """Remove ``project``'s variable ``name``; whether there was one."""
        with self.session() as s:
            found = s.get(ProjectVariable, (project, name))
            if found is None:
                return False
            s.delete(found)
            return True

    def variables(self, project: str) -> list[VariableInfo]:
        """``project``'s variables by name: who set each and when, never the values."""
        with self.session() as s:
            rows = s.execute(
                select(ProjectVariable.name, ProjectVariable.set_by, ProjectVariable.set_at)
                .where(ProjectVariable.project == project)
                .order_by(ProjectVariable.name)
            )
            return [VariableInfo(project, name, by, at) for name, by, at in rows]

    def project_env(self, project: str) -> dict[str, str]:
        """``project``'s variables with their values: what its attempts get."""
        with self.session() as s:
            rows = s.execute(
                select(ProjectVariable.name, ProjectVariable.value).where(
                    ProjectVariable.project == project
                )
            )
            return {name: value for name, value in rows}

    # -- users and tokens ---------------------------------------------------------------------

    def create_token(self, user: str, project: str) -> str:
        """Make ``user`` a member of ``project`` and give them a new API token (shown once,
        stored only as its digest)."""
        _check_project(project)  # a name no manifest could use would be a dead membership
        token = "qt_" + secrets.token_urlsafe(32)
        with self.session() as s:
            if s.get(Member, (user, project)) is None:
                s.add(Member(user=user, project=project))
            s.add(Token(user=user, digest=_digest(token), created_at=_now()))
        return token

    def authenticate(self, token: str) -> tuple[str, set[str]] | None:
        """The token's user and their projects, or None for an unknown or revoked token; its
        last use is recorded (to the minute: a busy client does not write on every call).
        A job's own token is not a user's: it reads data, and opens no other API (a job
        could otherwise submit another declaring what its own manifest left out)."""
        who = self.identify(token)
        if who is None or who.job_id is not None:
            return None
        return who.user, set(who.projects)

    def identify(self, token: str) -> Identity | None:
        """Who ``token`` speaks for (a job's own token: with its job and the datasets its
        manifest declared), or None for an unknown or revoked token, or a job's token whose
        job is not running."""
        now = _now()
        with self.session() as s:
            found = s.scalar(select(Token).where(Token.digest == _digest(token)))
            if found is None or found.revoked_at is not None:
                return None
            last = found.last_used_at
            if last is not None and last.tzinfo is None:  # SQLite gives naive UTC back
                last = last.replace(tzinfo=UTC)
            if last is None or now - last > timedelta(minutes=1):
                found.last_used_at = now
            projects = frozenset(s.scalars(select(Member.project).where(Member.user == found.user)))
            if found.job_id is None:
                return Identity(found.user, projects)
            job = s.get(Job, found.job_id)
            if job is None or job.status != "running":  # its attempt ended, however it did
                return None
            declared = {m.dataset: m.mode for m in Manifest.from_json(job.manifest).data}
            return Identity(found.user, projects, found.job_id, declared)

    # -- datasets and their audit log ----------------------------------------------------------

    def add_dataset(
        self,
        name: str,
        location: str,
        *,
        owner: str,
        project: str,
        visibility: str = "project",
        description: str | None = None,
        replace: bool = False,
    ) -> DatasetInfo:
        """Register the store at ``location`` as dataset ``name`` (``UsageError`` when the
        name is taken, unless ``replace``)."""
        try:
            check_dataset_name(name)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        _check_project(project)
        if visibility not in VISIBILITIES:
            raise UsageError(f"--visibility {visibility!r}: choose one of "
                             f"{', '.join(VISIBILITIES)}")  # fmt: skip
        with self.session() as s:
            row = s.get(Dataset, name)
            if row is not None and not replace:
                raise UsageError(f"dataset {name!r} is already registered (at {row.location}); "
                                 "give --replace to change it")  # fmt: skip
            if row is None:
                row = Dataset(name=name, created_at=_now())
                s.add(row)
            row.location, row.owner, row.project = location, owner, project
            row.visibility, row.description = visibility, description
            s.flush()
            return DatasetInfo.of(row)

    def remove_dataset(self, name: str) -> bool:
        """Forget dataset ``name`` (its store and audit log are kept); whether it existed."""
        with self.session() as s:
            row = s.get(Dataset, name)
            if row is not None:
                s.delete(row)
            return row is not None

    def dataset(self, name: str) -> DatasetInfo | None:
        with self.session() as s:
            row = s.get(Dataset, name)
            return DatasetInfo.of(row) if row is not None else None

    def datasets(self) -> list[DatasetInfo]:
        """Every registered dataset, by name."""
        with self.session() as s:
            return [DatasetInfo.of(d) for d in s.scalars(select(Dataset).order_by(Dataset.name))]

    def record_read(
        self,
        who: Identity,
        dataset: str,
        *,
        route: str,
        commit: str,
        as_of: str | None,
        rows: int,
        size: int,
        query: str,
    ) -> None:
        """Write one read to the audit log."""
        with self.session() as s:
            s.add(DataRead(at=_now(), user=who.user, job_id=who.job_id, dataset=dataset,
                           route=route, commit=commit, as_of=as_of, rows=rows, bytes=size,
                           query=query))  # fmt: skip

    def reads(self, dataset: str, *, limit: int = 100, offset: int = 0) -> list[DataRead]:
        """A dataset's audit log, newest first."""
        with self.session() as s:
            query = (select(DataRead).where(DataRead.dataset == dataset)
                     .order_by(DataRead.id.desc()).limit(limit).offset(offset))  # fmt: skip
            return list(s.scalars(query))

    def tokens(self) -> list[TokenInfo]:
        """Every user's API token, oldest first, with its user's projects (jobs' own tokens,
        made and ended by the service, are not listed)."""
        with self.session() as s:
            rows = list(s.scalars(select(Token).where(Token.job_id.is_(None)).order_by(Token.id)))
            members: dict[str, list[str]] = {}
            for m in s.scalars(select(Member).order_by(Member.project)):
                members.setdefault(m.user, []).append(m.project)
            return [TokenInfo(t.id, t.user, members.get(t.user, []), t.created_at,
                              t.last_used_at, t.revoked_at) for t in rows]  # fmt: skip

    def revoke_token(self, token_id: int) -> bool | None:
        """Revoke a token: it answers 401 from now on. Whether it was revoked now (False:
        already), or None when there is no such token."""
        with self.session() as s:
            token = s.get(Token, token_id)
            if token is None:
                return None
            if token.revoked_at is not None:
                return False
            token.revoked_at = _now()
            return True

    def jobs(
        self,
        *,
        projects: set[str] | None = None,
        status: str | None = None,
        project: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        """A page of jobs, newest first, and how many match in all."""
        where: list[ColumnElement[bool]] = []
        if projects is not None:
            where.append(Job.project.in_(projects))
        if status is not None:
            where.append(Job.status == status)
        if project is not None:
            where.append(Job.project == project)
        # the page's ids first, from the index alone, then only their rows: ordering every
        # matching row and skipping OFFSET of them read whole rows (manifests too), 0.6-0.9 s
        # for a deep page of 100,000 jobs, where this takes 50 ms
        ids = select(Job.id).where(*where).order_by(Job.id.desc()).limit(limit).offset(offset)
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(Job).where(*where)) or 0
            page = s.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id.desc()))
            return list(page), int(total)

    def requeue(self, attempt_id: int, reason: str) -> bool:
        """End a running attempt as ``requeued`` because its worker is shutting down, and
        queue its job again without counting it against the job's retries; whether it was
        still running."""
        with self.session() as s:
            attempt = s.get(Attempt, attempt_id, with_for_update=self.postgres)
            if attempt is None or attempt.outcome is not None:
                return False
            attempt.outcome, attempt.reason, attempt.finished_at = "requeued", reason, _now()
            _revoke_job_tokens(s, attempt.job_id, _now())
            job = s.get(Job, attempt.job_id, with_for_update=self.postgres)
            if job is not None and job.status == "running":
                job.status, job.reason, job.not_before = "queued", reason, None
            return True

    def cancel(self, job_id: int) -> bool | None:
        """Cancel a queued or running job (a running attempt is stopped by its worker, which
        sees the status): whether it was cancelled now (False: it had already ended), or
        None when there is no such job."""
        with self.session() as s:
            job = s.get(Job, job_id, with_for_update=self.postgres)
            if job is None:
                return None
            if job.status not in ("queued", "running"):
                return False
            was = job.status
            job.status, job.finished_at = "cancelled", _now()
            _revoke_job_tokens(s, job_id, job.finished_at)
            job.reason = f"while {was}"  # shown after the status: "cancelled while running"
            return True

    def queue_position(self, job_id: int) -> int | None:
        """How many queued jobs would be admitted before this queued one (higher priority,
        or as high and older; fair share may reorder projects), or None when not queued."""
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.status != "queued":
                return None
            ahead = s.scalar(
                select(func.count()).where(
                    Job.status == "queued",
                    (Job.priority > job.priority)
                    | ((Job.priority == job.priority) & (Job.id < job.id)),
                )
            )
            return int(ahead or 0)
