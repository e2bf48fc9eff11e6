"""``quarry admin backup --every``: a backup a period until SIGINT, one line each, all of
them listed as complete."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from quarry.admin import list_backups
from quarry.jobs import JobStore
from tests.admin.conftest import QUARRY


@pytest.mark.service
@pytest.mark.slow
def test_every_second_until_sigint(tmp_path: Path, s3_env: dict[str, str]) -> None:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    with JobStore(db) as jobs:
        jobs.create_token("ann", "alpha")
    to = f"s3://{s3_env['bucket']}/every"
    process = subprocess.Popen(
        [*QUARRY, "admin", "backup", "--to", to, "--db", db, "--every", "1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    assert process.stdout is not None
    lines = []
    while len(lines) < 2:  # each backup says so as it finishes, one JSON line each
        line = process.stdout.readline()
        assert line, process.communicate(timeout=30)[1]
        lines.append(json.loads(line))
    process.send_signal(signal.SIGINT)
    rest, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    lines += [json.loads(line) for line in rest.splitlines()]  # one may have finished meanwhile
    made = len(lines)
    assert err.strip().splitlines()[-1] == f"stopped after {made} backup{'s' * (made != 1)}"

    ids = [line["id"] for line in lines]
    assert ids == sorted(set(ids)) and len(ids) >= 2
    assert all(line["parts"]["jobs"]["files"] == 1 for line in lines)
    listed = list_backups(to)
    assert [(b.id, b.complete) for b in listed] == [(i, True) for i in ids]
    # about a second apart (the period; the first backup also paid for its imports before
    # its start was taken), not several: the schedule kept its time
    gaps = [(b.started_at - a.started_at).total_seconds() for a, b in itertools.pairwise(listed)]
    assert all(0.5 <= gap <= 2.5 for gap in gaps), gaps
