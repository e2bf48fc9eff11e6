"""The data service in a process: mounted on the job service's port by ``quarry server
start`` (its default), or alone (``quarry server start --only data``); Arrow Flight on a
port of its own when ``--flight-port`` is given."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from quarry.dataservice._app import DataService, create_data_app
from quarry.exceptions import UsageError
from quarry.jobs import JobStore

__all__ = ["DataStack", "build_data", "serve_data"]

_log = logging.getLogger("quarry.jobs")


@dataclass
class DataStack:
    """The data API built (``app``), and its Flight server if asked for, not yet serving."""

    service: DataService
    app: Any
    flight: Any = None
    threads: list[threading.Thread] = field(default_factory=list)

    def run_flight(self, stop: threading.Event) -> None:
        """Serve Flight until ``stop`` is set (a background loop of the job service)."""
        if self.flight is None:
            return
        thread = threading.Thread(target=self.flight.serve, name="flight", daemon=True)
        thread.start()
        stop.wait()
        self.flight.shutdown()
        thread.join(timeout=10)

    def collectors(self) -> list[Any]:
        return [_Registry(self.service)]

    def close(self) -> None:
        self.service.jobs.close()


class _Registry:
    """The data service's counters, and the machine's read-through cache's, for /metrics."""

    def __init__(self, service: DataService) -> None:
        self.service = service

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        from quarry.data import ReadCache

        yield from self.service.registry.collect()
        answers = self.service.answers
        yield GaugeMetricFamily(
            "quarry_data_answers_bytes", "Answers kept in memory.", answers.used
        )
        yield _hit_or_miss(
            "quarry_data_answers",
            "Reads answered from memory (hit) or read from the store (miss).",
            answers.hits,
            answers.misses,
        )
        stats = ReadCache().stats()
        yield _hit_or_miss(
            "quarry_read_cache",
            "This machine's read-through cache: reads "
            "answered from local disk (hit) or fetched (miss).",
            stats.hits,
            stats.misses,
        )
        yield _hit_or_miss(
            "quarry_read_cache_bytes",
            "Bytes the read-through cache answered (hit) or fetched (miss).",
            stats.hit_bytes,
            stats.miss_bytes,
        )
        yield GaugeMetricFamily(
            "quarry_read_cache_size_bytes",
            "Bytes the read-through cache holds on disk.",
            stats.size,
        )


def _hit_or_miss(name: str, documentation: str, hits: int, misses: int) -> Any:
    """A counter of two series, ``result="hit"`` and ``result="miss"``."""
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, documentation, labels=["result"])
    family.add_metric(["hit"], hits)
    family.add_metric(["miss"], misses)
    return family


def build_data(
    *,
    db: str | None = None,
    host: str = "127.0.0.1",
    flight_port: int | None = None,
    memory: int = 1 << 30,
    standalone: bool = False,
    auth_ttl: float = 5.0,
) -> DataStack:
    """The data API over the job database ``db`` (its tokens and datasets), and Flight on
    ``flight_port`` (none without one); an accepted token is trusted ``auth_ttl`` seconds
    (a revoked one answers 401 after at most that)."""
    jobs = JobStore(db)
    service = DataService(jobs, memory=memory, auth_ttl=auth_ttl)
    app = create_data_app(service, standalone=standalone)
    front = None
    if flight_port is not None:
        from quarry.dataservice._flight import FlightFront

        try:
            front = FlightFront(service, f"grpc+tcp://{host}:{flight_port}", auth_ttl=auth_ttl)
        except Exception as exc:  # the port taken: gRPC says so in its own words
            jobs.close()
            first = (str(exc).strip().splitlines() or ["cannot listen"])[0]
            raise UsageError(
                f"--flight-port {flight_port}: cannot listen on {host}:"
                f"{flight_port} ({first}); give another port"
            ) from None
    return DataStack(service, app, front)


def serve_data(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    db: str | None = None,
    flight_port: int | None = None,
) -> None:
    """Serve only the data API (and Flight) until SIGTERM or SIGINT."""
    from quarry._listen import listening

    stack = build_data(db=db, host=host, flight_port=flight_port, standalone=True)
    stop = threading.Event()
    flight = threading.Thread(target=stack.run_flight, args=(stop,), name="flight-loop")
    flight.start()

    def finish() -> None:
        stop.set()
        flight.join(timeout=15)
        stack.close()

    with listening(
        stack.app, host=host, port=port, name="data-api", on_stop=stop.set, then=finish
    ) as server:
        on = f", Flight on grpc://{host}:{flight_port}" if flight_port is not None else ""
        _log.info("data service on http://%s:%d (pid %d)%s", host, port, os.getpid(), on)
        server.wait()
    _log.info("stopped%s after %.0f s", server.by, server.seconds)
