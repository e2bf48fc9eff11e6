"""Each broker: publication at most once per id, durable consumers, redelivery in order."""

from __future__ import annotations

import pytest

from quarry.exceptions import UsageError
from quarry.stream import Broker, BrokerError, connect
from tests.stream.conftest import BROKER_URLS, Subjects


def test_a_message_id_is_published_once_and_read_in_order(
    broker: Broker, subjects: Subjects
) -> None:
    assert broker.publish(subjects.bars, b"one", msg_id="1", headers={"k": "v"})
    assert not broker.publish(subjects.bars, b"one again", msg_id="1")
    assert broker.publish(subjects.bars, b"two", msg_id="2")
    assert broker.publish(subjects.bars, b"three")
    got = broker.subscribe(subjects.bars, "d").fetch(10, 2.0)
    assert [m.data for m in got] == [b"one", b"two", b"three"]
    assert got[0].headers["k"] == "v"


def test_a_new_consumer_resumes_after_the_acknowledged_and_gets_the_rest_in_order(
    broker: Broker, subjects: Subjects
) -> None:
    for i in range(6):
        broker.publish(subjects.bars, str(i).encode(), msg_id=str(i))
    first = broker.subscribe(subjects.bars, "d")
    got = first.fetch(4, 2.0)
    for m in got[:2]:
        m.ack()
    first.close()
    # as after kill -9: a new consumer of the same durable name, unacknowledged in flight
    again = connect(BROKER_URLS[broker.kind])
    try:
        sub = again.subscribe(subjects.bars, "d")
        data = []
        while len(data) < 4:
            batch = sub.fetch(10, 2.0)
            assert batch, f"only {data} came back"
            data += [m.data for m in batch]
        assert data == [b"2", b"3", b"4", b"5"]
    finally:
        again.close()


def test_durable_names_are_independent(broker: Broker, subjects: Subjects) -> None:
    broker.publish(subjects.bars, b"x")
    a = broker.subscribe(subjects.bars, "a").fetch(10, 2.0)
    a[0].ack()
    assert [m.data for m in broker.subscribe(subjects.bars, "b").fetch(10, 2.0)] == [b"x"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nats://127.0.0.1:1", r"cannot reach NATS at nats://127.0.0.1:1: .*nats-server"),
        ("redis://127.0.0.1:1/0", r"cannot reach Redis at redis://127.0.0.1:1/0: .*redis-server"),
    ],
)
def test_an_unreachable_broker_is_one_line(url: str, message: str) -> None:
    with pytest.raises(BrokerError, match=message) as caught:
        connect(url)
    assert "\n" not in str(caught.value)


def test_an_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(UsageError, match="nats://, redis://"):
        connect("kafka://127.0.0.1:9092")
