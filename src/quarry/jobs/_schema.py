"""The job service's tables (SQLAlchemy 2). The schema itself is created and changed only by
the Alembic migrations in ``migrations/``; these definitions are what the code queries."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "STATUSES",
    "VISIBILITIES",
    "Attempt",
    "Base",
    "DataRead",
    "Dataset",
    "Job",
    "Member",
    "ProjectVariable",
    "Token",
]

# A job's life: queued -> running -> succeeded | failed | cancelled (a retried attempt puts
# it back to queued, with ``not_before`` for the backoff).
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
# Who may read a dataset: every user (market data), its project's members, or its owner.
VISIBILITIES = ("public", "project", "private")


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)  # fmt: skip
    name: Mapped[str] = mapped_column(String(100))
    project: Mapped[str] = mapped_column(String(100))
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    cpus: Mapped[float] = mapped_column(Float)
    memory: Mapped[int] = mapped_column(BigInteger)  # bytes, grown after an OOM when asked
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    manifest: Mapped[str] = mapped_column(Text)  # the manifest as JSON
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_jobs_status_priority", "status", "priority", "id"),
        Index("ix_jobs_project_status", "project", "status", "id"),  # a user's pages
    )


class Attempt(Base):
    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)  # fmt: skip
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(200))
    memory: Mapped[int] = mapped_column(BigInteger)  # the limit this attempt ran under
    outcome: Mapped[str | None] = mapped_column(String(20), nullable=True)  # None while running
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    peak_memory: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Member(Base):
    """A user's membership of a project: what the user may see and submit to."""

    __tablename__ = "members"

    user: Mapped[str] = mapped_column(String(100), primary_key=True)
    project: Mapped[str] = mapped_column(String(100), primary_key=True)


class Token(Base):
    """An API token, kept only as its SHA-256 digest."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)  # fmt: skip
    user: Mapped[str] = mapped_column(String(100))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # A job's own token (its attempts read data with it): limited to what its manifest's
    # ``data`` declares, revoked when the attempt ends.
    job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)


class ProjectVariable(Base):
    """An environment variable every attempt of a project's jobs gets (a credential, a
    bucket): set by an operator, its value never shown back."""

    __tablename__ = "project_variables"

    project: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    set_by: Mapped[str] = mapped_column(String(100))
    set_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Dataset(Base):
    """A named store: where it lives, whose it is and who may read it (``VISIBILITIES``)."""

    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    location: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(100))
    project: Mapped[str] = mapped_column(String(100))
    visibility: Mapped[str] = mapped_column(String(20))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DataRead(Base):
    """One read of a dataset through the data service: the audit log its owner reads."""

    __tablename__ = "data_reads"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)  # fmt: skip
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    user: Mapped[str] = mapped_column(String(100))
    job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    dataset: Mapped[str] = mapped_column(String(100))
    route: Mapped[str] = mapped_column(String(40))
    commit: Mapped[str] = mapped_column(Text)
    as_of: Mapped[str | None] = mapped_column(String(40), nullable=True)
    rows: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    query: Mapped[str] = mapped_column(Text)
