"""The store's commits under faults: a writer killed mid-commit, writers racing each other,
a location that cannot be written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.data import Store, ingest_frame, read_bars, table_spec
from quarry.exceptions import ConflictError, DataError
from tests.helpers import bars_frame

ROOT = Path(__file__).resolve().parents[2]

# Writes a large correction of every seeded bar plus many new bars in one commit, saying
# "writing" just before the commit starts.
WORKER = textwrap.dedent(
    """
    import sys, numpy as np, polars as pl
    from quarry.data import Store, ingest_frame, table_spec
    n = int(sys.argv[2])
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({
        "instrument": [f"N{i % 2000:05d}" for i in range(n)],
        "date": pl.date_range(
            pl.date(2000, 1, 1), pl.date(2000, 1, 1) + pl.duration(days=n - 1), eager=True
        ),
        "open": rng.uniform(1, 2, n), "high": np.full(n, 3.0), "low": np.full(n, 0.5),
        "close": rng.uniform(1, 2, n), "volume": np.full(n, 100.0),
    })
    print("writing", flush=True)
    ingest_frame(Store(sys.argv[1]), table_spec("bars"), frame, knowledge_time="2021-01-01")
    print("done", flush=True)
    """
)


@pytest.mark.slow
def test_kill_9_during_ingest_leaves_previous_version_intact(store: Store, tmp_path: Path) -> None:
    ingest_frame(
        store,
        table_spec("bars"),
        bars_frame([("A", "2020-01-02", 10.0)]),
        knowledge_time="2020-02-01",
    )
    before_commits = store.commits()
    before = read_bars(store, ["close"])
    rows = 3_000_000
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    outcomes = []
    for delay in (0.0, 0.1, 0.3, 0.6):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(store.location), str(rows)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        commits = store.commits()
        if commits == before_commits:
            outcomes.append("intact")
            assert_frame_equal(read_bars(store, ["close"]), before)
        else:
            # The commit finished before the kill: then all of it is there, never a part.
            assert len(commits) == len(before_commits) + 1
            assert commits[-1].rows == rows
            outcomes.append("complete")
            break
    assert "intact" in outcomes, f"no kill landed during a commit: {outcomes}"
    # The store still takes writes after the kills: no lock or half-written log was left.
    ingest_frame(
        store,
        table_spec("bars"),
        bars_frame([("A", "2020-01-03", 11.0)]),
        knowledge_time="2021-02-01",
    )
    assert read_bars(store, ["close"]).filter(pl.col("instrument") == "A")["close"].to_list() == [
        10.0,
        11.0,
    ]


def test_commit_on_a_stale_snapshot_is_a_conflict(store: Store) -> None:
    bars = table_spec("bars")
    ingest_frame(store, bars, bars_frame([("A", "2020-01-02", 10.0)]), knowledge_time="2020-02-01")
    stale = store.table("bars")  # writer 1 reads the table ...
    ingest_frame(store, bars, bars_frame([("A", "2020-01-02", 10.5)]), knowledge_time="2020-03-01")
    with pytest.raises(ConflictError, match="another writer committed"):  # ... writer 2 won
        store.commit(
            bars,
            bars_frame([("A", "2020-01-02", 9.0)]),
            knowledge_time=datetime(2020, 4, 1, tzinfo=UTC),
            base=stale,
        )
    assert [c.version for c in store.commits()] == [0, 1]
    assert read_bars(store, ["close"])["close"].to_list() == [10.5]


def test_two_creators_of_a_table_conflict(store: Store) -> None:

    bars = table_spec("bars")
    store.commit(
        bars,
        bars_frame([("A", "2020-01-02", 1.0)]),
        knowledge_time=datetime(2020, 1, 3, tzinfo=UTC),
        base=None,
    )
    with pytest.raises(ConflictError, match="created bars"):
        store.commit(
            bars,
            bars_frame([("B", "2020-01-02", 2.0)]),
            knowledge_time=datetime(2020, 1, 3, tzinfo=UTC),
            base=None,
        )
    assert read_bars(store, ["close"])["instrument"].to_list() == ["A"]


@pytest.mark.slow
def test_concurrent_cli_writers_never_corrupt(store: Store, tmp_path: Path) -> None:
    """Four CLI processes correct the same table from the same snapshot: each holds its
    snapshot at a barrier just before committing, so exactly one can win; the others fail
    with a one-line conflict and write nothing."""
    seed = [(f"I{i}", "2020-01-02", 10.0) for i in range(4)]
    ingest_frame(store, table_spec("bars"), bars_frame(seed), knowledge_time="2020-02-01")
    go = tmp_path / "go"
    procs = []
    for i in range(4):
        csv = tmp_path / f"fix{i}.csv"
        csv.write_text(
            f"instrument,date,open,high,low,close,volume\nI{i},2020-01-02,10,20,5,{11 + i},1000\n"
        )
        code = textwrap.dedent(
            f"""
            import os, sys, time
            import quarry.data._store as st
            commit = st.Store.commit
            def gated(self, *args, **kwargs):
                open({str(tmp_path / f"ready{i}")!r}, "w").close()
                while not os.path.exists({str(go)!r}):
                    time.sleep(0.005)
                return commit(self, *args, **kwargs)
            st.Store.commit = gated
            from quarry.cli import main
            sys.argv = ["quarry", "data", "ingest", "bars", {str(csv)!r},
                        "--store", {str(store.location)!r}, "--knowledge-time", "2020-03-01"]
            main()
            """
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.time() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(4)):
        assert time.time() < deadline, "writers did not reach the barrier"
        time.sleep(0.01)
    go.touch()  # every writer now holds the same snapshot
    results = [(p.wait(60), *p.communicate()) for p in procs]
    winners = [i for i, (rc, _, _) in enumerate(results) if rc == 0]
    assert len(winners) == 1, results
    for rc, _out, err in results:
        if rc != 0:
            assert rc == 1, err
            assert "another writer committed" in err and "Traceback" not in err, err
            assert len(err.strip().splitlines()) == 1
    assert len(store.commits()) == 2
    closes = dict(read_bars(store, ["close"]).select("instrument", "close").iter_rows())
    for i in range(4):
        assert closes[f"I{i}"] == (11.0 + i if i in winners else 10.0)


def test_unwritable_store_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError) as err:
        ingest_frame(
            Store(blocker / "store"), table_spec("bars"), bars_frame([("A", "2020-01-02", 1.0)])
        )
    assert "\n" not in str(err.value)
