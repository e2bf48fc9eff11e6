"""The committer: bars committed in order on a thread of their own; after a failure, nothing
later is committed and the runner gets the error."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from quarry.stream._committer import Committer
from quarry.stream._outputs import OutputStore


def test_bars_are_committed_in_order_and_drain_waits_for_them(tmp_path: Path) -> None:
    committer = Committer(tmp_path / "out")
    done: list[int] = []
    gate = threading.Event()

    def job(k: int) -> None:
        def run(store: OutputStore) -> None:
            assert isinstance(store, OutputStore)
            if k == 0:
                gate.wait(5)  # the first bar is slow: the others wait behind it
            done.append(k)

        committer.submit(run)

    job(0)
    job(1)  # waits in the queue
    threading.Timer(0.2, gate.set).start()
    job(2)  # blocks until there is room, then queues
    committer.drain()
    assert done == [0, 1, 2]
    committer.close()


def test_after_a_failure_nothing_later_is_committed_and_the_error_reaches_the_runner(
    tmp_path: Path,
) -> None:
    committer = Committer(tmp_path / "out")
    done: list[str] = []
    queued = threading.Event()

    def fail(store: OutputStore) -> None:
        queued.wait(5)  # "after" is queued behind this bar before it fails
        raise RuntimeError("the broker refused the scores")

    committer.submit(lambda store: done.append("before"))
    committer.submit(fail)
    committer.submit(lambda store: done.append("after"))
    queued.set()
    with pytest.raises(RuntimeError, match="refused the scores"):
        committer.drain()
    assert done == ["before"]
    with pytest.raises(RuntimeError, match="refused the scores"):
        committer.submit(lambda store: done.append("later"))
    committer.close()
    assert done == ["before"]
