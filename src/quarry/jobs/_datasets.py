"""Datasets and who may use them: the rules the job service and the data service share.

A dataset is a named store with an owner (a user), a project and a visibility:

- ``public``: every user with a token reads it (market data every project needs);
- ``project``: the members of its project read it;
- ``private``: only its owner reads it (an owner reads their datasets whatever they are).

Writing is for its owner, and for its project's members unless it is private. A job's own
token (``Identity.job_id``) narrows this to what the job's manifest declared under ``data``:
a dataset it did not list is refused even when its user could read it, and one listed
``ro`` is not written. Every refusal is a sentence naming the dataset and why, which the
APIs answer with 403.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from quarry.jobs._schema import VISIBILITIES, Dataset

__all__ = ["DatasetInfo", "Identity", "Mode", "check_dataset_name", "refusal"]

Mode = Literal["ro", "rw"]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_dataset_name(name: str) -> str:
    """A dataset's name as URLs and tickets carry it: letters, digits, ``.``, ``_``, ``-``."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"dataset name {name!r}: use letters, digits, '.', '_' and '-' (up to 100, "
            "starting with a letter or digit), e.g. us_equities"
        )
    return name


@dataclass(frozen=True)
class Identity:
    """Who a token speaks for: its user, their projects, and for a job's own token the job
    and the datasets its manifest declared (name to mode)."""

    user: str
    projects: frozenset[str]
    job_id: int | None = None
    declared: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset as the registry keeps it."""

    name: str
    location: str
    owner: str
    project: str
    visibility: str
    description: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: Dataset) -> DatasetInfo:
        return cls(
            row.name,
            row.location,
            row.owner,
            row.project,
            row.visibility,
            row.description,
            row.created_at,
        )

    def view(self) -> dict[str, object]:
        return {
            "name": self.name,
            "owner": self.owner,
            "project": self.project,
            "visibility": self.visibility,
            "description": self.description,
        }


def refusal(who: Identity, dataset: DatasetInfo, mode: Mode = "ro") -> str | None:
    """Why ``who`` may not use ``dataset`` in ``mode``, or None when they may."""
    assert dataset.visibility in VISIBILITIES
    name = dataset.name
    if who.job_id is not None:
        declared = who.declared.get(name)
        if declared is None:
            return (
                f"job {who.job_id} did not declare dataset {name!r} in its manifest's data; "
                f"add {{dataset: {name}, mode: {mode}}} to it"
            )
        if mode == "rw" and declared != "rw":
            return f"job {who.job_id} declared dataset {name!r} read-only (mode: ro)"
    if mode == "ro":
        if dataset.visibility == "public" or dataset.owner == who.user:
            return None
        if dataset.visibility == "project" and dataset.project in who.projects:
            return None
        if dataset.visibility == "private" and dataset.owner == who.user:
            return None
        whose = (
            f"the members of project {dataset.project!r}"
            if dataset.visibility == "project"
            else f"its owner {dataset.owner!r}"
        )
        return f"dataset {name!r} is {dataset.visibility}: only {whose} may read it"
    if dataset.owner == who.user:
        return None
    if dataset.visibility != "private" and dataset.project in who.projects:
        return None
    return f"dataset {name!r} is written only by its owner {dataset.owner!r}" + (
        ""
        if dataset.visibility == "private"
        else f" and the members of project {dataset.project!r}"
    )
