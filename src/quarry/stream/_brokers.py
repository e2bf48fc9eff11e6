"""Message brokers behind one small interface: NATS JetStream, Redis Streams, and in-process.

What a stream needs of a broker is little: publish bytes to a subject, at most once per
message id (a restarted stream publishes a bar's outputs again, and the broker drops the
copy), and read a subject through a durable consumer that redelivers whatever was not
acknowledged. Each broker maps that onto its own primitives:

- NATS JetStream: one stream per subject (created on first use), ``Nats-Msg-Id`` for
  de-duplication within the stream's duplicate window, and a durable pull consumer with
  explicit acks.
- Redis Streams: a stream key per subject, a consumer group per durable name (its pending
  list is the redelivery), and de-duplication by a marker key set in the same server-side
  script as the XADD, so a message and its marker are written together or not at all.
- ``memory``: the same semantics within one process, for tests and the embedded default.

``connect(url)`` picks the broker from the URL's scheme (``nats://``, ``redis://``,
``memory://NAME``); ``BROKERS`` is the name registry.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlparse

from quarry.exceptions import QuarryError, UsageError

__all__ = ["BROKERS", "Broker", "BrokerError", "Message", "Subscription", "connect"]

T = TypeVar("T")
_log = logging.getLogger("quarry.stream")

# How long a broker keeps a message id to drop a repeat of it: longer than any restart.
DEDUP_SECONDS = 24 * 3600


class BrokerError(QuarryError):
    """The broker cannot be reached or refused an operation."""


@dataclass
class Message:
    """One message read through a durable consumer; ``ack`` once it is processed."""

    subject: str
    data: bytes
    headers: dict[str, str]
    id: str
    _ack: Callable[[], None] = field(repr=False)
    delivered: int = 1  # 2 or more: a redelivery

    def ack(self) -> None:
        self._ack()


class Subscription(ABC):
    @abstractmethod
    def fetch(self, batch: int = 64, timeout: float = 0.5) -> list[Message]:
        """Up to ``batch`` messages, waiting at most ``timeout`` seconds for the first."""

    def close(self) -> None:
        return None


class Broker(ABC):
    kind: ClassVar[str]

    @abstractmethod
    def publish(
        self, subject: str, data: bytes, *, msg_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> bool:  # fmt: skip
        """Publish; False when ``msg_id`` was published before (the copy is dropped)."""

    @abstractmethod
    def subscribe(self, subject: str, durable: str) -> Subscription:
        """A durable consumer of ``subject``: it resumes after the last acknowledged
        message and redelivers the unacknowledged ones."""

    def purge(self, subject: str) -> None:  # noqa: B027
        """Remove every message of ``subject`` and its consumers (tests, replays)."""

    def close(self) -> None:
        return None

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- in-process -----------------------------------------------------------------------------


class _Topic:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, dict[str, str]]] = []
        self.ids: set[str] = set()
        # durable name -> (next offset to deliver, unacknowledged offsets -> deliveries)
        self.groups: dict[str, tuple[list[int], dict[int, int]]] = {}
        self.ready = threading.Condition()


class MemoryBroker(Broker):
    """Topics held by this process, shared by every broker of the same name."""

    kind = "memory"
    _spaces: ClassVar[dict[str, dict[str, _Topic]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str = "default") -> None:
        with self._lock:
            self.topics = self._spaces.setdefault(name, {})

    def _topic(self, subject: str) -> _Topic:
        with self._lock:
            return self.topics.setdefault(subject, _Topic())

    def publish(
        self, subject: str, data: bytes, *, msg_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> bool:  # fmt: skip
        topic = self._topic(subject)
        with topic.ready:
            if msg_id is not None:
                if msg_id in topic.ids:
                    return False
                topic.ids.add(msg_id)
            topic.messages.append((bytes(data), dict(headers or {})))
            topic.ready.notify_all()
        return True

    def subscribe(self, subject: str, durable: str) -> Subscription:
        topic = self._topic(subject)
        with topic.ready:
            state = topic.groups.setdefault(durable, ([0], {}))
        # a new subscriber gets the unacknowledged messages first, as after a restart
        return _MemorySubscription(subject, topic, state, redeliver=sorted(state[1]))

    def purge(self, subject: str) -> None:
        with self._lock:
            self.topics.pop(subject, None)


class _MemorySubscription(Subscription):
    def __init__(
        self, subject: str, topic: _Topic, state: tuple[list[int], dict[int, int]],
        redeliver: list[int],
    ) -> None:  # fmt: skip
        self.subject, self.topic, self.state = subject, topic, state
        self.redeliver = redeliver

    def _message(self, offset: int) -> Message:
        data, headers = self.topic.messages[offset]
        pending = self.state[1]
        pending[offset] = pending.get(offset, 0) + 1

        def ack() -> None:
            with self.topic.ready:
                pending.pop(offset, None)

        return Message(self.subject, data, headers, str(offset), ack, pending[offset])

    def fetch(self, batch: int = 64, timeout: float = 0.5) -> list[Message]:
        with self.topic.ready:
            out = [self._message(o) for o in self.redeliver[:batch]]
            del self.redeliver[:batch]
            cursor = self.state[0]
            if not out and cursor[0] >= len(self.topic.messages):
                self.topic.ready.wait(timeout)
            while len(out) < batch and cursor[0] < len(self.topic.messages):
                out.append(self._message(cursor[0]))
                cursor[0] += 1
        return out


# -- NATS JetStream ---------------------------------------------------------------------------


class _Loop:
    """An asyncio loop on a thread of its own: nats-py is asynchronous, streams are not."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="nats")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def cancel_the_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(cancel_the_rest(), timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            if not self.thread.is_alive():
                self.loop.close()


def _stream_name(subject: str) -> str:
    """A JetStream stream's name for a subject (names may not hold dots or wildcards)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in subject)
    return f"QUARRY_{safe}"


class NatsBroker(Broker):
    kind = "nats"

    def __init__(self, url: str) -> None:
        import nats

        self.url = url
        self._loop = _Loop()
        self._closing = False

        async def on_error(e: Exception) -> None:
            # nats-py prints its connection's errors unless given a callback; a closing
            # connection's are expected
            _log.log(logging.DEBUG if self._closing else logging.WARNING, "NATS: %s", e)

        try:
            self._nc = self._loop.run(
                nats.connect(url, connect_timeout=3, max_reconnect_attempts=3, error_cb=on_error),
                timeout=10,
            )
        except Exception as e:
            self._loop.stop()
            raise BrokerError(
                f"cannot reach NATS at {url}: {e or type(e).__name__}; is nats-server "
                "running with JetStream (nats-server -js)?"
            ) from None
        self._js = self._nc.jetstream()
        self._streams: set[str] = set()

    def _ensure(self, subject: str) -> str:
        from nats.js.api import StreamConfig
        from nats.js.errors import NotFoundError

        name = _stream_name(subject)
        if name in self._streams:
            return name
        try:
            try:
                self._loop.run(self._js.stream_info(name))
            except NotFoundError:
                config = StreamConfig(name=name, subjects=[subject], duplicate_window=DEDUP_SECONDS)
                self._loop.run(self._js.add_stream(config))
        except NotFoundError:
            raise
        except Exception as e:  # no JetStream answers: a plain nats-server
            raise BrokerError(
                f"NATS at {self.url} did not answer for JetStream ({type(e).__name__}: {e}); "
                "start nats-server with JetStream on (-js)"
            ) from None
        self._streams.add(name)
        return name

    def publish(
        self, subject: str, data: bytes, *, msg_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> bool:  # fmt: skip
        self._ensure(subject)
        hdrs = dict(headers or {})
        if msg_id is not None:
            hdrs["Nats-Msg-Id"] = msg_id
        try:
            ack = self._loop.run(self._js.publish(subject, data, headers=hdrs or None))
        except Exception as e:
            raise BrokerError(f"NATS at {self.url} refused a message to {subject}: {e}") from None
        return not ack.duplicate

    def subscribe(self, subject: str, durable: str) -> Subscription:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        stream = self._ensure(subject)
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=60, max_ack_pending=-1)
        try:
            info = self._loop.run(self._js.consumer_info(stream, durable))
        except NotFoundError:
            info = None
        if info is not None and info.num_ack_pending:
            # A consumer that stopped with messages in flight (a killed stream) would get
            # them again only after ack_wait, and after newer ones: restart it just past
            # its last acknowledged message, so that what follows comes now and in order.
            self._loop.run(self._js.delete_consumer(stream, durable))
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = info.ack_floor.stream_seq + 1 if info.ack_floor else 1

        async def make() -> Any:
            js = self._js
            return await js.pull_subscribe(subject, durable=durable, stream=stream, config=config)

        return _NatsSubscription(self._loop, subject, self._loop.run(make()))

    def purge(self, subject: str) -> None:
        from nats.js.errors import NotFoundError

        try:
            self._loop.run(self._js.delete_stream(_stream_name(subject)))
        except NotFoundError:
            pass
        self._streams.discard(_stream_name(subject))

    def close(self) -> None:
        self._closing = True
        try:
            self._loop.run(self._nc.close(), timeout=5)
        except Exception as e:  # closing: a connection already gone is closed enough
            _log.debug("closing the NATS connection: %s", e)
        self._loop.stop()


class _NatsSubscription(Subscription):
    def __init__(self, loop: _Loop, subject: str, sub: Any) -> None:
        self.loop, self.subject, self.sub = loop, subject, sub

    def fetch(self, batch: int = 64, timeout: float = 0.5) -> list[Message]:
        import nats.errors

        try:
            msgs = self.loop.run(self.sub.fetch(batch, timeout=timeout), timeout=timeout + 30)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        out = []
        for m in msgs:
            meta = m.metadata

            def ack(m: Any = m) -> None:
                self.loop.run(m.ack_sync())

            out.append(
                Message(
                    m.subject,
                    m.data,
                    dict(m.headers or {}),
                    str(meta.sequence.stream),
                    ack,
                    meta.num_delivered,
                )
            )
        return out

    def close(self) -> None:
        try:
            self.loop.run(self.sub.unsubscribe(), timeout=5)
        except Exception as e:  # the consumer stays durable on the server either way
            _log.debug("unsubscribing from %s: %s", self.subject, e)


# -- Redis Streams ----------------------------------------------------------------------------

# XADD only when the message id was not seen: the marker and the message in one atomic step.
_PUBLISH = """
if ARGV[1] ~= '' then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return 0 end
end
local fields = {'data', ARGV[3]}
for i = 4, #ARGV, 2 do table.insert(fields, ARGV[i]); table.insert(fields, ARGV[i + 1]) end
redis.call('XADD', KEYS[1], '*', unpack(fields))
return 1
"""


class RedisBroker(Broker):
    kind = "redis"

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self._r = redis.Redis.from_url(url, socket_connect_timeout=3)
        try:
            self._r.ping()
        except redis.RedisError as e:
            raise BrokerError(
                f"cannot reach Redis at {url}: {e}; is redis-server running?"
            ) from None
        self._publish = self._r.register_script(_PUBLISH)

    def publish(
        self, subject: str, data: bytes, *, msg_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> bool:  # fmt: skip
        extra: list[Any] = []
        for k, v in (headers or {}).items():
            extra += [f"h:{k}", v]
        marker = f"quarry:dedup:{subject}:{msg_id or ''}"
        args = [msg_id or "", DEDUP_SECONDS, data, *extra]
        try:
            done = self._publish(keys=[subject, marker], args=args)
        except Exception as e:  # redis.RedisError: the connection, or the server refused
            raise BrokerError(f"Redis at {self.url} refused a message to {subject}: {e}") from None
        return bool(done)

    def subscribe(self, subject: str, durable: str) -> Subscription:
        import redis

        try:
            self._r.xgroup_create(subject, durable, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise BrokerError(f"Redis refused the consumer group {durable!r}: {e}") from None
        return _RedisSubscription(self._r, subject, durable)

    def purge(self, subject: str) -> None:
        self._r.delete(subject)
        for key in self._r.scan_iter(f"quarry:dedup:{subject}:*"):
            self._r.delete(key)

    def close(self) -> None:
        self._r.close()


class _RedisSubscription(Subscription):
    def __init__(self, r: Any, subject: str, group: str) -> None:
        self.r, self.subject, self.group = r, subject, group
        self.consumer = f"{group}-consumer"
        self.backlog = True  # first, this consumer's unacknowledged messages (a restart)
        self.cursor = "0"  # the last backlog entry read

    def fetch(self, batch: int = 64, timeout: float = 0.5) -> list[Message]:
        start = self.cursor if self.backlog else ">"
        block = None if self.backlog else max(int(timeout * 1000), 1)
        reply = self.r.xreadgroup(
            self.group, self.consumer, {self.subject: start}, count=batch, block=block
        )
        entries = reply[0][1] if reply else []
        if self.backlog and not entries:
            self.backlog = False
            return self.fetch(batch, timeout)
        out = []
        for entry_id, fields in entries:
            key = entry_id.decode()
            if self.backlog:
                self.cursor = key
            if not fields:  # acknowledged meanwhile and trimmed
                continue
            headers = {k.decode()[2:]: v.decode() for k, v in fields.items() if k.startswith(b"h:")}

            def ack(key: str = key) -> None:
                self.r.xack(self.subject, self.group, key)

            again = 2 if self.backlog else 1
            out.append(Message(self.subject, fields[b"data"], headers, key, ack, again))
        if self.backlog and len(entries) < batch:
            self.backlog = False
        return out


# -- registry -------------------------------------------------------------------------------

BROKERS: dict[str, Callable[[str], Broker]] = {
    "memory": lambda url: MemoryBroker(urlparse(url).netloc or "default"),
    "nats": NatsBroker,
    "redis": RedisBroker,
}


def connect(url: str) -> Broker:
    """The broker a URL names: nats://host:4222, redis://host:6379/0 or memory://NAME."""
    scheme = urlparse(url).scheme
    make = BROKERS.get(scheme)
    if make is None:
        raise UsageError(
            f"broker {url!r}: start the URL with one of {', '.join(s + '://' for s in BROKERS)}"
        )
    return make(url)
