"""The data service over Arrow Flight, for bulk readers: the same reads, tokens and rules as
HTTP, with no JSON on the data's path.

A read's descriptor is the HTTP path of the same read (``/v1/datasets/NAME/bars?...``,
``DataQuery.path``). ``GetFlightInfo`` answers its schema and several endpoints, each a slice
of the rows; the client fetches them in parallel with ``DoGet``. A ticket names its slice and
the commit it belongs to, so slices of two commits are never joined: a read that a new
commit overtook is refused, to be read again. The token comes in the ``authorization``
header (``Bearer TOKEN``) of every call; each ``DoGet`` is written to the audit log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from quarry.data import DataQuery
from quarry.dataservice._app import DataService
from quarry.dataservice._catalog import NoSuchDataset, StillChanging
from quarry.exceptions import AccessDenied, QuarryError
from quarry.jobs import Identity

__all__ = ["FlightFront"]

_MIN_SLICE = 64 * 1024  # rows: smaller reads are one stream
MAX_STREAMS = 64


class _Auth(flight.ServerMiddleware):  # type: ignore[misc]
    def __init__(self, who: Identity) -> None:
        self.who = who


class _AuthFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Every call's token, looked up in the job database (an accepted one trusted for a few
    seconds, as over HTTP)."""

    def __init__(self, service: DataService, ttl: float = 5.0) -> None:
        self.service, self.ttl = service, ttl
        self._seen: dict[str, tuple[float, Identity]] = {}
        self._lock = threading.Lock()

    def start_call(self, info: Any, headers: dict[str, list[str]]) -> _Auth:
        values = headers.get("authorization") or []
        scheme, _, token = (values[0] if values else "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        who = self._identify(token) if token else None
        if who is None:
            raise flight.FlightUnauthenticatedError(
                "give a valid API token: header authorization: Bearer TOKEN"
            )
        return _Auth(who)

    def _identify(self, token: str) -> Identity | None:
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(token)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        who = self.service.identify(token)
        with self._lock:
            if who is None:
                self._seen.pop(token, None)
            else:
                if len(self._seen) > 10_000:
                    self._seen.clear()
                self._seen[token] = (now, who)
        return who


class FlightFront(flight.FlightServerBase):  # type: ignore[misc]
    """The Flight server at ``location`` (``grpc+tcp://HOST:PORT``) over ``service``;
    ``streams``: the endpoints a large read is cut into."""

    def __init__(
        self, service: DataService, location: str, *, streams: int = 4, auth_ttl: float = 5.0
    ) -> None:
        super().__init__(location, middleware={"auth": _AuthFactory(service, auth_ttl)})
        self.service, self.streams = service, min(max(streams, 1), MAX_STREAMS)

    def _who(self, context: Any) -> Identity:
        auth: _Auth = context.get_middleware("auth")
        return auth.who

    def _table(self, context: Any, path: str) -> tuple[DataQuery, Any, pa.Table, str]:
        try:
            query = DataQuery.from_path(path)
            info = self.service.catalog.check(self._who(context), query.dataset)
            table, commit = self.service.table(info, query)
        except AccessDenied as exc:
            raise flight.FlightUnauthorizedError(str(exc)) from None
        except (NoSuchDataset, StillChanging, QuarryError) as exc:
            raise flight.FlightServerError(str(exc)) from None
        return query, info, table, commit

    def list_flights(self, context: Any, criteria: bytes) -> Iterator[flight.FlightInfo]:
        """Each readable dataset's bars, as a descriptor to ask about."""
        for info in self.service.catalog.readable(self._who(context)):
            descriptor = flight.FlightDescriptor.for_command(
                DataQuery("bars", info.name).path.encode()
            )
            yield flight.FlightInfo(pa.schema([]), descriptor, [], -1, -1)

    def get_flight_info(self, context: Any, descriptor: Any) -> flight.FlightInfo:
        path = bytes(descriptor.command).decode()
        _, _, table, commit = self._table(context, path)
        rows = table.num_rows
        parts = max(1, min(self.streams, rows // _MIN_SLICE))
        endpoints = [
            flight.FlightEndpoint(f"{k}/{parts} {commit}\n{path}".encode(), [])
            for k in range(parts)
        ]
        return flight.FlightInfo(table.schema, descriptor, endpoints, rows, table.nbytes)

    def do_get(self, context: Any, ticket: Any) -> flight.RecordBatchStream:
        head, _, path = bytes(ticket.ticket).decode().partition("\n")
        part, _, wanted = head.partition(" ")
        try:
            k, n = (int(x) for x in part.split("/"))
            if not 0 <= k < n <= MAX_STREAMS:
                raise ValueError
        except ValueError:
            raise flight.FlightServerError(f"ticket {head!r}: not one of ours") from None
        query, _, table, commit = self._table(context, path)
        if commit != wanted:
            raise flight.FlightServerError(
                f"dataset {query.dataset!r} changed during the read (now {commit}); read again"
            )
        size = -(-table.num_rows // n)
        piece = table.slice(k * size, size)
        self.service.audit(
            self._who(context),
            query,
            route=f"{query.kind} (flight {k + 1}/{n})",
            commit=commit,
            rows=piece.num_rows,
            size=piece.nbytes,
        )
        # Sent as it is held, uncompressed: compressing would cost the server every reader's
        # bytes in CPU on every call (Flight cannot send an encoding kept from before), and
        # the reader as much again to decompress; bulk readers sit near the data.
        return flight.RecordBatchStream(piece)
