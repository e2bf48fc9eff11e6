"""kill -9 in the middle of a stream, then a restart: every bar scored, positioned and
published exactly once, with the outputs of a stream that was never stopped."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.ipc as ipc
import pytest

from quarry.data._minute_bars import minute_bars
from quarry.stream import Broker, OutputStore, StreamConfig, StreamRunner, connect, replay
from tests.stream.conftest import BROKER_URLS, Champion, Subjects, drain, open_broker


@pytest.fixture(params=["nats", "redis"])
def real_broker(request: pytest.FixtureRequest, subjects: Subjects) -> Iterator[Broker]:
    yield from open_broker(request.param, subjects)


def write_config(path: Path, url: str, subjects: Subjects, outputs: Path) -> Path:
    lines = [f"broker: {url}", "durable: live", "model: s-lgb@champion",
             "strategy: {topk: 8, n_drop: 2}", f"outputs: {outputs}", "subjects:"]  # fmt: skip
    lines += [f"  {k}: {v}" for k, v in subjects.config().items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def done_bars(outputs: Path) -> int:
    try:
        with sqlite3.connect(outputs / "stream.db") as db:
            return int(db.execute("SELECT COUNT(*) FROM bars_done").fetchone()[0])
    except sqlite3.Error:
        return 0


def messages(broker: Broker, subject: str, at_least: int = 0) -> list[tuple[str, pl.DataFrame]]:
    out = []
    for m in drain(broker, subject, at_least):
        frame = pl.from_arrow(ipc.open_stream(io.BytesIO(m.data)).read_all())
        out.append((m.headers["bar-time"], frame))
    return out  # type: ignore[return-value]


def test_kill_9_then_restart_scores_every_bar_exactly_once(
    real_broker: Broker, subjects: Subjects, tracking: Champion, tmp_path: Path
) -> None:
    bars = minute_bars(80, sessions=2, minutes=60, seed=2)
    times = bars["date"].n_unique()
    outputs = tmp_path / "out"
    config = write_config(tmp_path / "live.yaml", BROKER_URLS[real_broker.kind], subjects, outputs)

    # the feed, paced, while the stream runs
    def publish() -> None:
        with connect(BROKER_URLS[real_broker.kind]) as feed_broker:
            replay(feed_broker, subjects.bars, bars, rate=40.0)

    feed = threading.Thread(target=publish)
    command = [sys.executable, "-m", "quarry.cli", "stream", "run", "--config", str(config)]
    first = subprocess.Popen(command, env=os.environ.copy(), stderr=subprocess.PIPE)
    feed.start()
    deadline = time.monotonic() + 120
    try:
        while done_bars(outputs) < 30:
            assert first.poll() is None, first.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the stream processed no bars"
            time.sleep(0.01)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stderr.close()  # type: ignore[union-attr]
        feed.join()
    killed_at = done_bars(outputs)
    assert killed_at < times, "the stream finished before it was killed"
    second = subprocess.run([*command, "--idle-exit", "2", "--json"], env=os.environ.copy(),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert done_bars(outputs) == times
    # it went on from the last stored bar: it processed the rest only
    assert json.loads(second.stdout)["bars"] == times - killed_at

    # every bar has its scores (positions and orders only when the book changes)
    expected = {"scores": times, "positions": 0, "orders": 0}
    published = {name: messages(real_broker, getattr(subjects, name), n)
                 for name, n in expected.items()}  # fmt: skip
    for name, got in published.items():
        counts = Counter(t for t, _ in got)
        assert max(counts.values()) == 1, f"{name} published twice: {counts.most_common(3)}"
    assert len(published["scores"]) == times

    # the same bars through a stream never stopped give the same stored outputs
    calm = StreamConfig.model_validate(
        {"broker": "memory://calm", "model": "s-lgb@champion", "outputs": str(tmp_path / "calm"),
         "strategy": {"topk": 8, "n_drop": 2}, "subjects": subjects.config()}
    )  # fmt: skip
    memory = connect("memory://calm")
    replay(memory, subjects.bars, bars)
    StreamRunner(calm, broker=memory).run(idle_exit=0.5)
    restarted, never = OutputStore(outputs), OutputStore(tmp_path / "calm")
    for table in ("scores", "positions", "orders"):
        a = restarted.table(table).sort("bar_time", "instrument")
        b = never.table(table).sort("bar_time", "instrument")
        assert a.equals(b), f"{table} differ after the restart"
    # and what was published is what was stored
    scores = pl.concat(f for _, f in published["scores"]).sort("bar_time", "instrument")
    assert scores.equals(restarted.table("scores").sort("bar_time", "instrument"))


class Killed(BaseException):
    """Stands for kill -9 between a bar's commit and its publication."""


def test_a_bar_stored_but_not_published_is_published_once_after_a_restart(
    subjects: Subjects, tracking: Champion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    broker = connect(url)
    bars = minute_bars(6, sessions=1, minutes=6, missing=0.0)
    replay(broker, subjects.bars, bars)
    config = StreamConfig.model_validate(
        {"broker": url, "model": "s-lgb@champion", "schedule": "2m", "outputs": str(tmp_path),
         "subjects": subjects.config(), "strategy": {"topk": 2, "n_drop": 1}}
    )  # fmt: skip
    publish = StreamRunner._publish

    def dies_at_the_third_bar(self: StreamRunner, key: str, *args: object) -> None:
        if key.endswith("14:32:00+00:00") and not getattr(self, "restarted", False):
            raise Killed
        publish(self, key, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(StreamRunner, "_publish", dies_at_the_third_bar)
    with pytest.raises(Killed):
        StreamRunner(config, broker=broker).run(idle_exit=0.5)
    # a kill between keeping the next bar's file and committing it leaves a file too many
    OutputStore(tmp_path).keep_bar(3, "2024-01-02T14:33:00+00:00", bars.head(2))
    again = StreamRunner(config, broker=broker)
    again.restarted = True  # type: ignore[attr-defined]
    health = again.run(idle_exit=0.5)
    assert (health.bars, health.redelivered) == (3, 1)

    def times(subject: str) -> list[str]:
        return [t for t, _ in messages(broker, subject)]

    minute = [f"2024-01-02T14:3{m}:00+00:00" for m in range(6)]
    assert times(subjects.features) == minute
    # scored every two minutes, from the last bar scored before the restart
    assert times(subjects.scores) == [minute[0], minute[2], minute[4]]
    assert times(subjects.positions) == [minute[0], minute[2], minute[4]]
