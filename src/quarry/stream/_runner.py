"""The live loop: bars in from the broker, features, scores, positions and orders out.

For each bar time, in order:

1. the bars (one snapshot, or single bars gathered until a later time arrives) update the
   online features (``quarry.features._online``: research's plan and kernels);
2. on the schedule, the champion scores them (the served model at its alias, followed as
   serving follows it), TopK-Dropout turns the scores into target positions, and the
   change from the last positions into paper orders (on the committer's thread, below);
3. the bar is kept on disk (the state's bars) and its outputs stored with its record, in
   one transaction (the scores as the one Arrow record that is published);
4. the outputs are published, each message with an id made of its subject and bar time,
   so a copy published again after a restart is dropped by the broker;
5. only then are the bar's messages acknowledged.

Steps 2 (once the model is chosen) to 5 run on a thread of their own (``_committer``), bar
after bar in order, while the next bar's features are computed; the health counts a bar
once it is committed. The positions are that thread's alone.

A restart (even after kill -9) rebuilds the features' state from the kept bars and resumes
from the consumer's last acknowledged message: a redelivered bar already stored is
published again only if its record says it was not, and never processed twice.

A message that is not bars, or a bar time older than the stream's, goes to the dead-letter
subject with the reason, and the stream goes on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from quarry.exceptions import DataError, UsageError
from quarry.stream._brokers import Broker, Message, Subscription, connect
from quarry.stream._committer import Committer
from quarry.stream._config import StreamConfig
from quarry.stream._outputs import BarRecord, OutputStore
from quarry.stream._snapshots import Bars, Malformed, decode, encode_frame

__all__ = ["Health", "StreamRunner"]

_log = logging.getLogger("quarry.stream")

PUBLISHED_AT = "quarry-published-at"  # the publisher's clock, seconds since the epoch


@dataclass
class Health:
    """What the stream reports: on /metrics, in its progress lines and in --json."""

    bars: int = 0  # bar times processed by this run
    scored: int = 0
    redelivered: int = 0  # messages of bars already processed (a restart), acknowledged
    dead_letters: int = 0
    last_bar: str | None = None
    model: str | None = None
    model_version: int | None = None
    nan_rate: float = 0.0  # of the last bar's features
    feature_ms: float = 0.0  # the last bar's feature update
    bars_per_second: float = 0.0
    started: float = field(default_factory=time.time)
    # from each bar's publication to its outputs', ms (percentiles taken when read)
    _lags: deque[float] = field(default_factory=lambda: deque(maxlen=10_000), repr=False)
    _feature_times: deque[float] = field(default_factory=lambda: deque(maxlen=10_000), repr=False)

    def view(self) -> dict[str, Any]:
        # no deep copy: /metrics reads this while the runner appends to the deques
        out = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        lags, times = tuple(self._lags), tuple(self._feature_times)
        out["lag_p50_ms"], out["lag_p99_ms"] = _pct(lags, 50), _pct(lags, 99)
        out["feature_ms_p50"], out["feature_ms_p99"] = _pct(times, 50), _pct(times, 99)
        return out

    def line(self) -> str:
        lags = tuple(self._lags)
        lag = (f"lag p50 {_pct(lags, 50):.0f} ms p99 {_pct(lags, 99):.0f} ms" if lags
               else "lag -")  # fmt: skip
        model = f"{self.model} v{self.model_version}" if self.model else "features only"
        return (
            f"bars {self.bars:,} (last {self.last_bar}) | {self.bars_per_second:.1f} bars/s | "
            f"{lag} | features {self.feature_ms:.0f} ms | {model} | NaN {self.nan_rate:.1%} | "
            f"dead letters {self.dead_letters} | redelivered {self.redelivered}"
        )


class _StatusFile:
    """The stream's health in ``$QUARRY_HOME/streams/DURABLE.json``, rewritten at most once a
    second (and once more when it stops), for the dashboard: a file, because the stream is a
    process of its own that the server does not start."""

    def __init__(self, name: str) -> None:
        from quarry.settings import streams_dir

        self.path = streams_dir() / f"{name}.json"
        self.written = 0.0

    def write(self, health: Health, *, stopped: bool = False) -> None:
        now = time.monotonic()
        if not stopped and now - self.written < 1.0:
            return
        self.written = now
        from quarry._json import dumps

        view = {**health.view(), "name": self.path.stem, "pid": os.getpid(),
                "updated_at": datetime.now(UTC).isoformat(), "stopped": stopped}  # fmt: skip
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(dumps(view))
            temporary.replace(self.path)
        except OSError as exc:  # the stream goes on: its status is a convenience
            _log.warning("could not write the stream's status to %s: %s", self.path, exc)


def _pct(values: Iterable[float], q: float) -> float | None:
    array = np.fromiter(values, float)
    return float(np.percentile(array, q)) if array.size else None


class _Champion:
    """The model a stream scores with: a registered model at an alias, followed."""

    def __init__(self, ref: str) -> None:
        from quarry.serve._catalog import Catalog, ModelRef

        self.ref = ModelRef.parse(ref)
        self.catalog = Catalog([self.ref])
        self.catalog.start()
        self.checked = time.monotonic()

    def current(self) -> tuple[int, Any]:
        if time.monotonic() - self.checked > 1.0:  # follow the alias, as serving does
            self.checked = time.monotonic()
            for name, old, new in self.catalog.refresh():
                _log.warning("model %s: version %s -> %s", name, old, new)
        served = self.catalog.served(self.ref.name)
        if served is None:
            raise UsageError(f"model {self.ref}: nothing is served at that alias")
        version = self.catalog.version(served)
        return version.version, version.packaged


class StreamRunner:
    def __init__(self, config: StreamConfig, *, broker: Broker | None = None) -> None:
        from quarry.features import FEATURE_SETS
        from quarry.features._online import OnlineFeatures

        self.config = config
        self.champion = _Champion(config.model) if config.model else None
        if config.features is None:
            assert self.champion is not None
            features = dict(self.champion.current()[1].inputs())
        elif isinstance(config.features, str):
            make = FEATURE_SETS.get(config.features)
            if make is None:
                raise UsageError(
                    f"features {config.features!r}: not a feature set; choose one of "
                    f"{', '.join(FEATURE_SETS)} or give NAME: EXPR pairs"
                )
            features = make()
        else:
            features = dict(config.features)
        self.online = OnlineFeatures(features)
        self.fields = self.online.fields
        self.universe = set(config.universe) if config.universe else None
        self.schedule = config.when
        self.broker = broker or connect(config.broker)
        self.own_broker = broker is None
        self.store = OutputStore(config.outputs)
        self.health = Health(model=self.champion.ref.name if self.champion else None)
        self.held: dict[str, int] = {}
        self.last_scored: datetime | None = None
        self._pending: dict[datetime, list[tuple[pl.DataFrame, Message]]] = {}
        self._last_features: tuple[str, pl.DataFrame] | None = None
        self._scorer: tuple[int, Callable[[np.ndarray], np.ndarray]] | None = None
        try:
            restored = self._restore()
            self._warm_up(features, kernels=not restored)
        except BaseException:
            self.store.close()
            if self.own_broker:
                self.broker.close()
            raise
        room = config.instruments or (len(config.universe) if config.universe else None)
        if room:
            self.online.reserve(room)
        # bars processed, and those of them not yet committed (stored, published, acked)
        self._processed = 0
        self._inflight: set[str] = set()
        self._committer = Committer(config.outputs)

    # -- restart -----------------------------------------------------------------------------

    def _warm_up(self, features: Mapping[str, Any], *, kernels: bool) -> None:
        """Two made-up bars of three instruments through a throwaway copy of the features
        (``kernels``: a restart's replay has run the real ones), then the champion's scorer:
        the kernels' stream modes are loaded (or compiled) and the model readied now,
        before the first real bar, which would otherwise wait a second or more, and the bars
        queued behind it with it. A model that cannot score these features fails here."""
        from quarry.features._online import OnlineFeatures

        names = pl.Series("instrument", ["warm-up-a", "warm-up-b", "warm-up-c"])
        matrix = np.ones((len(names), len(self.online.names)))
        if kernels:
            trial = OnlineFeatures(features)
            for bar in range(2):
                values = np.arange(1.0, 4.0) + bar
                frame = pl.DataFrame({"instrument": names, **dict.fromkeys(trial.fields, values)})
                when = datetime(2000, 1, 1, 0, bar, tzinfo=UTC)
                names, matrix = trial.update_matrix(when, frame)
        if self.champion is not None:
            version, packaged = self.champion.current()
            self._score(version, packaged, datetime(2000, 1, 1, tzinfo=UTC), names, matrix)

    def _restore(self) -> bool:
        """Rebuild the state of a stream that ran before in this outputs folder (False:
        none did)."""
        last = self.store.last()
        if last is None:
            return False
        kept = self.store.kept_bars(last.bar_index)
        indices = [i for i, _, _ in kept]
        if not kept or indices != list(range(indices[0], last.bar_index + 1)):
            raise UsageError(
                f"{self.store.bars_dir}: the bars kept for the state are incomplete (have "
                f"{indices[:1]}..{indices[-1:]}, need up to {last.bar_index}); start the "
                "stream with a new outputs folder"
            )
        if indices[0] > 0 and len(kept) < self.online.depth:
            raise UsageError(
                f"{self.store.bars_dir}: {len(kept)} bars kept, the features read "
                f"{self.online.depth}; start the stream with a new outputs folder"
            )
        first = self.store.first_bars()
        self.online.resume(indices[0], first)
        for _, when, frame in kept:
            features = self.online.update(datetime.fromisoformat(when), frame)
        # the last bar's features, in case its outputs were stored but never published
        self._last_features = (last.bar_time, features)
        self.held = self.store.held()
        scored = self.store.last_scored()
        self.last_scored = None if scored is None else datetime.fromisoformat(scored)
        self.health.last_bar = last.bar_time
        _log.info("resumed after bar %s (number %d)", last.bar_time, last.bar_index)
        return True

    # -- the loop --------------------------------------------------------------------------

    def run(
        self,
        *,
        max_bars: int | None = None,
        idle_exit: float | None = None,
        stop: threading.Event | None = None,
        progress: Callable[[Health], None] | None = None,
        every: float = 5.0,
    ) -> Health:
        """Process bars until ``stop`` is set, ``max_bars`` bar times are processed, or no
        message came for ``idle_exit`` seconds."""
        sub = self.broker.subscribe(self.config.subjects.bars, self.config.durable)
        idle_since = time.monotonic()
        shown = time.monotonic()
        status = _StatusFile(self.config.durable)
        try:
            while not (stop is not None and stop.is_set()):
                status.write(self.health)
                self._committer.check()
                if max_bars is not None and self._processed >= max_bars:
                    break
                # a few at a time: a snapshot of the whole market is megabytes, and what is
                # fetched but not processed waits out the broker's ack deadline
                messages = sub.fetch(8, 0.2)
                if messages:
                    idle_since = time.monotonic()
                    self._take(messages, max_bars, stop)
                else:
                    quiet = time.monotonic() - idle_since
                    if quiet >= self.config.gather_seconds:
                        self._flush_pending()
                    if idle_exit is not None and quiet > idle_exit:
                        break
                if progress is not None and time.monotonic() - shown > every:
                    shown = time.monotonic()
                    progress(self.health)
            # single bars still gathering stay unacknowledged: delivered again next time
        finally:
            try:
                self._close(sub)
            finally:
                status.write(self.health, stopped=True)
        return self.health

    def _close(self, sub: Subscription) -> None:
        try:
            self._committer.drain()  # every processed bar committed before the stop
        finally:
            self._committer.close()
            sub.close()
            self.store.close()
            if self.own_broker:
                self.broker.close()

    def _take(
        self, messages: list[Message], max_bars: int | None, stop: threading.Event | None
    ) -> None:
        for m in messages:
            # a stop (or the bar limit) leaves the rest unacknowledged: redelivered next time
            if (stop is not None and stop.is_set()) or (
                max_bars is not None and self._processed >= max_bars
            ):
                return
            try:
                bars = decode(m.data, self.fields)
            except Malformed as e:
                self._dead(m, str(e))
                continue
            if self._already(bars, m):
                continue
            # a bar time after the gathered single bars closes them
            for t in sorted(t for t in self._pending if t < bars.time):
                self._process(t, *self._gathered(t))
            if bars.complete:
                if bars.time in self._pending:
                    frames, msgs = self._gathered(bars.time)
                    both = pl.concat([frames, bars.frame], how="diagonal_relaxed")
                    both = both.unique("instrument", keep="last", maintain_order=True)
                    self._process(bars.time, both, [*msgs, m])
                else:
                    self._process(bars.time, bars.frame, [m])
            else:
                self._pending.setdefault(bars.time, []).append((bars.frame, m))

    def _gathered(self, t: datetime) -> tuple[pl.DataFrame, list[Message]]:
        parts = self._pending.pop(t)
        frame = pl.concat([f for f, _ in parts], how="diagonal_relaxed")
        frame = frame.unique("instrument", keep="last", maintain_order=True)
        return frame, [m for _, m in parts]

    def _flush_pending(self) -> None:
        for t in sorted(self._pending):
            self._process(t, *self._gathered(t))

    def _already(self, bars: Bars, m: Message) -> bool:
        """A message of a bar this stream has processed (a redelivery, or the same bytes
        sent again) is acknowledged and the bar's outputs published if they were not; any
        other message at or before the last bar is late, and goes to the dead letters."""
        key = bars.time.isoformat()
        if key in self._inflight:  # its bar is being committed: decide on what is stored
            self._committer.drain()
        record = self.store.record(key)
        if record is not None and self.store.seen(key, _digest(m)):
            if not record.published:
                bodies = self.store.bodies(key) if record.scored else {}
                kept = self._last_features
                features = kept[1] if kept is not None and kept[0] == key else None
                self._publish(key, bodies, m.headers, features)
                self.store.mark_published(key)
            self.health.redelivered += 1
            m.ack()
            return True
        last = self.online.last_time
        if last is not None and bars.time <= last:  # type: ignore[operator]
            done = " and was processed already" if record is not None else ""
            self._dead(m, f"late bar: {key} is not after the stream's last bar, {last}{done}")
            return True
        return False

    def _dead(self, m: Message, reason: str) -> None:
        headers = {"reason": reason[:500], "subject": m.subject, "message-id": m.id}
        new = self.broker.publish(
            self.config.subjects.dead_letter, m.data, msg_id=f"dead:{m.subject}:{m.id}",
            headers=headers,
        )  # fmt: skip
        # a message redelivered after its dead letter went out (the stream stopped before
        # acknowledging it) is acknowledged again, not counted again
        if new:
            self.health.dead_letters += 1
            _log.warning("dead letter (%s): %s", m.subject, reason)
        m.ack()

    # -- one bar -----------------------------------------------------------------------------

    def _process(self, when: datetime, frame: pl.DataFrame, messages: list[Message]) -> None:
        if self.universe is not None:
            frame = frame.filter(pl.col("instrument").is_in(self.universe))
        key = when.isoformat()
        index = self.online.bars
        t0 = time.perf_counter()
        try:
            # a matrix, as the model scores it: no frame of 158 columns built and taken apart
            instruments, matrix = self.online.update_matrix(when, frame)
        except DataError as e:  # refused before any state changed: the stream goes on
            for m in messages:
                self._dead(m, str(e))
            return
        took = (time.perf_counter() - t0) * 1000
        new = [(s, index) for s in sorted(self.online.added)]  # instruments first seen
        version, packaged = None, None
        if self.champion is not None and self._due(when):
            version, packaged = self.champion.current()
            self.last_scored = when
        kept = frame.select("instrument", *self.fields)
        headers = _first_headers(messages)
        depth = self.online.depth
        count = frame.height

        def commit(store: OutputStore) -> None:
            # Scored and decided here, after the bars before it, while the runner's thread
            # goes on with the next bar's features: the features are the stream's longest
            # step, and they take a core's worth of the bar's time on their own.
            outputs = {}
            if packaged is not None and version is not None:
                scores = self._score(version, packaged, when, instruments, matrix)
                outputs = self._decide(key, instruments, scores, version)
            nan_rate = float(np.isnan(matrix).mean()) if matrix.size else 0.0
            features = None
            if self.config.subjects.features:
                features = self.online.frame(when, instruments, matrix)
            record = BarRecord(key, index, count, version, bool(outputs), False)
            # each output encoded once: the scores are stored as they are published
            bodies = {name: encode_frame(frame) for name, frame in outputs.items()}
            digests = [_digest(m) for m in messages]
            try:
                store.keep_bar(index, key, kept)
                store.store(record, outputs, new, digests, bodies)
                store.prune_bars(index, depth)
            except (sqlite3.Error, OSError) as e:
                raise DataError(
                    f"bar {key}: could not be stored in {store.folder}: {e}; its messages "
                    "stay unacknowledged, so the stream processes it again once restarted"
                ) from e
            self._publish(key, bodies, headers, features)
            store.mark_published(key)
            for m in messages:
                m.ack()
            self._inflight.discard(key)
            self._count(key, version, bool(outputs), nan_rate, took, headers)

        self._processed += 1
        self._inflight.add(key)
        self._committer.submit(commit)

    def _score(self, version: int, packaged: Any, when: datetime, instruments: pl.Series,
               matrix: np.ndarray) -> np.ndarray:  # fmt: skip
        """The champion's scores of the bar: from the matrix when its processors are
        row-wise (prepared once per version), else from a frame of the bar's features."""
        if matrix.shape[0] == 0:  # a bar of none of the universe: some models refuse no rows
            return np.empty(0, dtype=np.float64)
        if not packaged.row_wise:
            frame = self.online.frame(when, instruments, matrix)
            return np.asarray(packaged.score(frame), dtype=np.float64).reshape(-1)
        if self._scorer is None or self._scorer[0] != version:
            # One thread: this runs beside the features, whose kernels take both cores of a
            # small machine; LightGBM's own threads there made every kernel wait for a core
            # (the features' update 47-49 ms a bar at 10 a second, 36-42 with one thread).
            scorer = packaged.matrix_scorer(self.online.names, threads=1)
            self._scorer = (version, scorer)
        return self._scorer[1](matrix)

    def _count(
        self,
        key: str,
        version: int | None,
        scored: bool,
        nan_rate: float,
        took: float,
        headers: dict[str, str],
    ) -> None:
        """A committed bar in the health."""
        h = self.health
        h.bars += 1
        h.scored += scored
        h.last_bar = key
        h.model_version = version if version is not None else h.model_version
        h.nan_rate = nan_rate
        h.feature_ms = took
        h._feature_times.append(took)
        h.bars_per_second = h.bars / max(time.time() - h.started, 1e-9)
        sent = headers.get(PUBLISHED_AT)
        if sent:
            h._lags.append((time.time() - float(sent)) * 1000)

    def _due(self, when: datetime) -> bool:
        s = self.schedule
        if s.seconds is not None:
            last = self.last_scored
            return last is None or (when - last).total_seconds() >= s.seconds
        if s.at:
            return when.time().replace(second=0, microsecond=0) in s.at
        return True

    def _decide(
        self, key: str, names: pl.Series | list[str], scores: np.ndarray, version: int
    ) -> dict[str, pl.DataFrame]:
        """Scores, TopK-Dropout's target positions and the orders that reach them."""
        from quarry.portfolio._topk import topk_dropout_day

        strategy = self.config.strategy
        names = pl.Series("instrument", names, dtype=pl.String)
        # The bar's instruments, then those held that it lacks (unscored): whole-array work
        # (in Arrow, no Python string per instrument), as the bar holds thousands and the
        # book a few dozen.
        inside = names.is_in(pl.Series(list(self.held), dtype=pl.String))
        present = set(names.filter(inside).to_list())  # a few dozen at most
        extra = sorted(set(self.held).difference(present))
        s = np.concatenate([scores, np.full(len(extra), np.nan)])
        held = np.concatenate([inside.to_numpy(), np.ones(len(extra), dtype=bool)])
        universe = pl.concat([names, pl.Series("instrument", extra, dtype=pl.String)])

        def named(at: np.ndarray) -> list[str]:
            return universe.gather(at).to_list()

        days = np.zeros(len(s), dtype=np.int64)
        at = np.flatnonzero(held)
        days[at] = [self.held[n] for n in named(at)]
        sell, buy = topk_dropout_day(s, held, days, topk=strategy.topk, n_drop=strategy.n_drop)
        after = np.flatnonzero((held & ~sell) | buy)
        weight = 1.0 / strategy.topk
        self.held = dict(zip(named(after), (days[after] + 1).tolist(), strict=True))
        scores_frame = pl.DataFrame(
            {"bar_time": pl.repeat(key, len(names), dtype=pl.String, eager=True),
             "instrument": names, "score": scores, "model_version": version},
            schema_overrides={"model_version": pl.Int64},
        )  # fmt: skip
        positions = pl.DataFrame(
            {"bar_time": key, "instrument": list(self.held), "weight": weight,
             "days_held": list(self.held.values()), "model_version": version},
            schema_overrides={"model_version": pl.Int64, "days_held": pl.Int64},
        )  # fmt: skip
        traded = [(n, "buy", weight) for n in named(np.flatnonzero(buy))]
        traded += [(n, "sell", 0.0) for n in named(np.flatnonzero(sell))]
        orders = pl.DataFrame(
            [(key, n, side, w, version) for n, side, w in traded],
            schema={"bar_time": pl.String, "instrument": pl.String, "side": pl.String,
                    "target_weight": pl.Float64, "model_version": pl.Int64},
            orient="row",
        )  # fmt: skip
        return {"scores": scores_frame, "positions": positions, "orders": orders}

    def _publish(
        self,
        key: str,
        bodies: dict[str, bytes],
        headers: dict[str, str],
        features: pl.DataFrame | None = None,
    ) -> None:
        """A bar's outputs (Arrow IPC, by output name) and features out to the broker, each
        with an id of its subject and bar time."""
        subjects = self.config.subjects
        extra = {"bar-time": key}
        if PUBLISHED_AT in headers:
            extra[PUBLISHED_AT] = headers[PUBLISHED_AT]
        if features is not None and subjects.features:
            body = encode_frame(features)
            self.broker.publish(subjects.features, body, msg_id=f"f:{key}", headers=extra)
        for name in ("scores", "positions", "orders"):
            if name in bodies:
                subject = getattr(subjects, name)
                self.broker.publish(subject, bodies[name], msg_id=f"{name}:{key}", headers=extra)


def _digest(m: Message) -> str:
    return hashlib.blake2b(m.data, digest_size=16).hexdigest()


def _first_headers(messages: list[Message]) -> dict[str, str]:
    for m in messages:
        if m.headers:
            return m.headers
    return {}
