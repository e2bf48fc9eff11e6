"""What the stream does with each kind of message: snapshots, single bars, malformed and
late ones (the dead-letter subject, with the reason), and a redelivered bar."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from quarry.exceptions import DataError
from quarry.features import compute
from quarry.stream import Broker, StreamConfig, StreamRunner, encode
from quarry.stream._brokers import connect
from quarry.stream._outputs import OutputStore
from tests.stream.conftest import BROKER_URLS, Subjects

FEATURES = {"M3": "Mean($close, 3)", "D1": "$close / Ref($close, 1)"}
T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def snapshot(minute: int, closes: dict[str, float]) -> bytes:
    return encode(at(minute), pl.DataFrame({"instrument": list(closes),
                                            "close": list(closes.values())}))  # fmt: skip


def config(broker: Broker, subjects: Subjects, tmp_path: Path) -> StreamConfig:
    return StreamConfig.model_validate(
        {"broker": BROKER_URLS[broker.kind], "features": FEATURES,
         "subjects": subjects.config(), "outputs": str(tmp_path / "out")}
    )  # fmt: skip


def read(broker: Broker, subject: str) -> list[tuple[bytes, dict[str, str]]]:
    sub = broker.subscribe(subject, "check")
    out = []
    while batch := sub.fetch(100, 1.0):
        for m in batch:
            out.append((m.data, m.headers))
            m.ack()
    return out


def test_malformed_and_late_messages_go_to_the_dead_letter_subject_and_the_stream_goes_on(
    broker: Broker, subjects: Subjects, tmp_path: Path
) -> None:
    bad = {
        b"\x00\x01 not bars": "neither an Arrow IPC stream nor JSON",
        b'{"instrument": "A", "close": 1.0}': "has no 'time'",
        encode(at(1), pl.DataFrame({"instrument": ["A"], "open": [1.0]})): "lacks field(s) close",
        snapshot(0, {"A": 9.0}): "late bar: 2024-01-02T14:30:00+00:00 is not after",
    }
    messages = [snapshot(0, {"A": 10.0, "B": 20.0}), snapshot(1, {"A": 11.0, "B": 21.0}),
                *bad, snapshot(2, {"A": 12.0})]  # fmt: skip
    for i, body in enumerate(messages):
        broker.publish(subjects.bars, body, msg_id=str(i))
    health = StreamRunner(config(broker, subjects, tmp_path), broker=broker).run(idle_exit=1.0)
    assert (health.bars, health.dead_letters) == (3, 4)
    dead = read(broker, subjects.dead_letter)
    assert [d for d, _ in dead] == list(bad)  # the messages themselves, in order
    for (_, headers), reason in zip(dead, bad.values(), strict=True):
        assert reason in headers["reason"], headers
        assert headers["subject"] == subjects.bars
    features = read(broker, subjects.features)
    assert len(features) == 3


def test_single_bars_are_gathered_by_time_and_give_the_batch_features(
    broker: Broker, subjects: Subjects, tmp_path: Path
) -> None:
    rows = [("A", 0, 10.0), ("B", 0, 20.0), ("B", 1, 21.0), ("A", 1, 11.0), ("A", 2, 12.5),
            ("B", 4, 19.0), ("A", 4, 12.0)]  # fmt: skip
    for inst, minute, close in rows:
        body = {"instrument": inst, "time": at(minute).isoformat(), "close": close}
        broker.publish(subjects.bars, json.dumps(body).encode())
    health = StreamRunner(config(broker, subjects, tmp_path), broker=broker).run(idle_exit=1.0)
    assert health.bars == 4
    frame = pl.DataFrame(
        {"instrument": [r[0] for r in rows], "date": [at(r[1]) for r in rows],
         "close": [r[2] for r in rows]}
    ).sort("date", "instrument")  # fmt: skip
    expected = compute(frame, FEATURES)
    got = pl.concat(pl.read_ipc_stream(d) for d, _ in read(broker, subjects.features))
    joined = expected.join(got, on=["instrument", "date"], suffix="_got")
    assert joined.height == len(rows)
    for name in FEATURES:
        assert joined[name].to_list() == joined[f"{name}_got"].to_list()


def test_a_second_run_acknowledges_what_is_done_and_publishes_nothing_again(
    broker: Broker, subjects: Subjects, tmp_path: Path
) -> None:
    for m in range(3):
        broker.publish(subjects.bars, snapshot(m, {"A": 10.0 + m}), msg_id=str(m))
    cfg = config(broker, subjects, tmp_path)
    assert StreamRunner(cfg, broker=broker).run(idle_exit=0.5).bars == 3
    # the same bars again under new ids, as a feed that resends after its own restart
    for m in range(3):
        broker.publish(subjects.bars, snapshot(m, {"A": 10.0 + m}), msg_id=f"again{m}")
    broker.publish(subjects.bars, snapshot(3, {"A": 14.0}), msg_id="3")
    again = connect(BROKER_URLS[broker.kind]) if broker.kind != "memory" else broker
    health = StreamRunner(cfg, broker=again).run(idle_exit=0.5)
    assert (health.bars, health.redelivered, health.dead_letters) == (1, 3, 0)
    times = [h["bar-time"] for _, h in read(broker, subjects.features)]
    assert times == [at(m).isoformat() for m in range(4)]


def test_a_snapshot_completes_single_bars_of_its_time(
    broker: Broker, subjects: Subjects, tmp_path: Path
) -> None:
    # A and B come alone, then a snapshot of the same minute that has B again (it wins)
    for inst, close in (("A", 10.0), ("B", 20.0)):
        body = {"instrument": inst, "time": at(0).isoformat(), "close": close}
        broker.publish(subjects.bars, json.dumps(body).encode())
    broker.publish(subjects.bars, snapshot(0, {"B": 21.0, "C": 30.0}))
    broker.publish(subjects.bars, snapshot(1, {"A": 11.0, "B": 22.0, "C": 31.0}))
    health = StreamRunner(config(broker, subjects, tmp_path), broker=broker).run(idle_exit=1.0)
    assert (health.bars, health.dead_letters) == (2, 0)
    first = pl.read_ipc_stream(read(broker, subjects.features)[0][0]).sort("instrument")
    assert first["instrument"].to_list() == ["A", "B", "C"]
    assert first["M3"].to_list() == [10.0, 21.0, 30.0]


def test_a_dead_letter_redelivered_is_published_and_counted_once(
    broker: Broker, subjects: Subjects, tmp_path: Path
) -> None:
    from quarry.stream._brokers import Message

    runner = StreamRunner(config(broker, subjects, tmp_path), broker=broker)
    acks: list[str] = []
    junk = Message(subjects.bars, b"\x00 junk", {}, "7", lambda: acks.append("7"))
    runner._dead(junk, "neither Arrow nor JSON")
    runner._dead(junk, "neither Arrow nor JSON")  # redelivered: the first ack never came
    assert runner.health.dead_letters == 1
    assert len(read(broker, subjects.dead_letter)) == 1
    assert acks == ["7", "7"]  # acknowledged both times, so it is not delivered a third
    runner.store.close()


def test_a_bar_sent_again_while_it_is_being_committed_is_a_redelivery_not_a_late_bar(
    broker: Broker, subjects: Subjects, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The committer stores a bar while the runner reads the next message: the same bytes
    # again must wait for that commit and be acknowledged as done, not sent to dead letters
    # as a bar older than the stream's last.
    slow = OutputStore.store

    def store_slowly(self: OutputStore, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.5)
        slow(self, *args, **kwargs)

    monkeypatch.setattr(OutputStore, "store", store_slowly)
    broker.publish(subjects.bars, snapshot(0, {"A": 10.0}), msg_id="0")
    broker.publish(subjects.bars, snapshot(0, {"A": 10.0}), msg_id="0-again")
    broker.publish(subjects.bars, snapshot(1, {"A": 11.0}), msg_id="1")
    health = StreamRunner(config(broker, subjects, tmp_path), broker=broker).run(idle_exit=0.5)
    assert (health.bars, health.redelivered, health.dead_letters) == (2, 1, 0)
    times = [h["bar-time"] for _, h in read(broker, subjects.features)]
    assert times == [at(0).isoformat(), at(1).isoformat()]


def test_a_bar_that_cannot_be_stored_stops_the_stream_with_the_reason(
    broker: Broker, subjects: Subjects, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stream that can no longer store its bars must not go on fetching as if all were
    # well (nothing would tell): it stops, raising why; the bar stays unacknowledged.
    stored = OutputStore.store

    def store_once(self: OutputStore, record: Any, *args: Any, **kwargs: Any) -> None:
        if record.bar_index > 0:
            raise sqlite3.OperationalError("database or disk is full")
        stored(self, record, *args, **kwargs)

    monkeypatch.setattr(OutputStore, "store", store_once)
    for m in range(2):
        broker.publish(subjects.bars, snapshot(m, {"A": 10.0 + m}), msg_id=str(m))
    runner = StreamRunner(config(broker, subjects, tmp_path), broker=broker)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            runner.run()  # no idle exit: only the failure ends it
        except BaseException as e:
            raised.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the stream went on after a bar could not be stored"
    assert len(raised) == 1 and isinstance(raised[0], DataError)
    assert str(raised[0]) == (
        f"bar {at(1).isoformat()}: could not be stored in {tmp_path / 'out'}: database or disk "
        "is full; its messages stay unacknowledged, so the stream processes it again once "
        "restarted"
    )
    assert runner.health.bars == 1
    assert [h["bar-time"] for _, h in read(broker, subjects.features)] == [at(0).isoformat()]
