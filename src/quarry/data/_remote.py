"""Reading a store through the data service: ``quarry.connect(url, token)``.

Over HTTP (``http://`` or ``https://``, the job service's address) answers come as Arrow IPC
streams, kept in the machine's read-through cache (``ReadCache``) under the commit they
read: each read asks the service with ``If-None-Match`` naming the cached commit, and a 304
is answered from local disk. Over Arrow Flight (``grpc://HOST:PORT``, the server's
``--flight-port``) a read is several record-batch streams fetched in parallel, with no cache
(bulk readers that want every byte at wire speed). Both give the same Polars frames as
``read_bars`` on the store itself.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polars as pl
import pyarrow as pa

from quarry.data._query import DataQuery
from quarry.data._readcache import ReadCache
from quarry.exceptions import (
    AuthenticationError,
    DataError,
    JobServiceError,
    PermissionDenied,
    ServerUnreachable,
    UsageError,
)

__all__ = ["DataClient", "connect"]

TOKEN_VARIABLES = ("QUARRY_DATA_TOKEN", "QUARRY_TOKEN")


def _default_token() -> str:
    return next((os.environ[v] for v in TOKEN_VARIABLES if os.environ.get(v)), "")


def connect(url: str, token: str | None = None, *, cache: ReadCache | bool = True) -> DataClient:
    """The data service at ``url`` with ``token`` (default ``$QUARRY_DATA_TOKEN``, a job's own,
    else ``$QUARRY_TOKEN``).

    Examples
    --------
    >>> data = quarry.connect("http://127.0.0.1:8765", token)  # doctest: +SKIP
    >>> data.bars("us_equities", ["close"], as_of="2020-06-30")  # doctest: +SKIP
    """
    return DataClient(url, token, cache=cache)


class DataClient:
    """The data service at ``url``; ``cache``: the read-through cache (True: the machine's,
    under ``$QUARRY_HOME``; False: none). Flight URLs (``grpc://``) are never cached."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        cache: ReadCache | bool = True,
        timeout: float = 600.0,
        streams: int = 4,
    ) -> None:
        self.url = url.rstrip("/")
        scheme = urllib.parse.urlsplit(self.url).scheme
        if scheme not in ("http", "https", "grpc", "grpc+tcp"):
            raise UsageError(
                f"data service {url!r}: give http(s)://HOST:PORT, or "
                "grpc://HOST:PORT for Arrow Flight"
            )
        self.flight = scheme.startswith("grpc")
        self.token = token if token is not None else _default_token()
        self.timeout, self.streams = timeout, streams
        self.cache: ReadCache | None = None
        if not self.flight and cache is not False:
            self.cache = cache if isinstance(cache, ReadCache) else ReadCache()
        self._flight: Any = None

    # -- the API ---------------------------------------------------------------------------

    def datasets(self) -> list[dict[str, Any]]:
        """The datasets this token may read, with their commit and coverage."""
        out: list[dict[str, Any]] = self._json("/v1/datasets")["datasets"]
        return out

    def dataset(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self._json(f"/v1/datasets/{_quote(name)}")
        return out

    def audit(self, name: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """The dataset's reads, newest first (for its owner)."""
        out: list[dict[str, Any]] = self._json(f"/v1/datasets/{_quote(name)}/audit?limit={limit}")[
            "reads"
        ]
        return out

    def bars(
        self,
        dataset: str,
        fields: Sequence[str] = (),
        *,
        start: str | None = None,
        end: str | None = None,
        universe: str | None = None,
        as_of: str | None = None,
        adjust: str = "raw",
        instruments: Sequence[str] = (),
    ) -> pl.DataFrame:
        """Bars as ``read_bars`` gives them (default fields open, high, low, close, volume)."""
        return self.read(
            DataQuery(
                "bars",
                dataset,
                tuple(fields),
                start=start,
                end=end,
                universe=universe,
                as_of=as_of,
                adjust=adjust,
                instruments=tuple(instruments),
            )
        )

    def features(
        self,
        dataset: str,
        *,
        feature_set: str | None = None,
        exprs: Sequence[str] = (),
        start: str | None = None,
        end: str | None = None,
        universe: str | None = None,
        as_of: str | None = None,
        instruments: Sequence[str] = (),
    ) -> pl.DataFrame:
        """Features of a set (alpha158, alpha360) or of expressions, from the service's engine
        and feature cache."""
        return self.read(
            DataQuery(
                "features",
                dataset,
                feature_set=feature_set,
                exprs=tuple(exprs),
                start=start,
                end=end,
                universe=universe,
                as_of=as_of,
                instruments=tuple(instruments),
            )
        )

    def fundamentals(
        self,
        dataset: str,
        fields: Sequence[str],
        *,
        start: str | None = None,
        end: str | None = None,
        as_of: str | None = None,
        instruments: Sequence[str] = (),
    ) -> pl.DataFrame:
        """Each fundamental field's latest value published by each bar's date, as of
        ``as_of``."""
        return self.read(
            DataQuery(
                "fundamentals",
                dataset,
                tuple(fields),
                start=start,
                end=end,
                as_of=as_of,
                instruments=tuple(instruments),
            )
        )

    def read(self, query: DataQuery) -> pl.DataFrame:
        """Any ``DataQuery``, checked here first."""
        query.check()
        table = self._flight_read(query) if self.flight else self._http_read(query)
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame

    # -- HTTP ------------------------------------------------------------------------------

    def _http_read(self, query: DataQuery) -> pa.Table:
        headers = {"Accept": "application/vnd.apache.arrow.stream"}
        entry = key = None
        if self.cache is not None:
            key = self.cache.key(self.url, query.dataset, f"{query.kind}?{query.text}")
            entry = self.cache.lookup(key)
            if entry is not None:
                headers["If-None-Match"] = f'"{entry.commit}"'
                headers["X-Quarry-Cached-Rows"] = str(entry.rows)
        status, answer, data = self._get(query.path, headers)
        if status == 304 and entry is not None and self.cache is not None and key is not None:
            try:
                table = entry.read()
            except FileNotFoundError:  # evicted by another reader meanwhile: fetch it
                headers.pop("If-None-Match")
                status, answer, data = self._get(query.path, headers)
            else:
                self.cache.hit(key, entry.path.stat().st_size)
                return table
        table = pa.ipc.open_stream(data).read_all()
        if self.cache is not None and key is not None:
            tag = answer.get("ETag", "").strip('"')
            self.cache.miss(key, query.dataset, tag, table)
        return table

    def _get(self, path: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        request = urllib.request.Request(  # noqa: S310 (http(s) only, checked above)
            self.url + path, headers={"Authorization": f"Bearer {self.token}", **headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                exc.close()
                return 304, exc.headers, b""
            text = exc.read().decode(errors="replace")
            exc.close()
            try:
                detail = json.loads(text)["detail"]
            except (ValueError, KeyError, TypeError):
                detail = text.strip() or exc.reason
            if isinstance(detail, list):
                detail = "; ".join(
                    str(d.get("message", d)) if isinstance(d, dict) else str(d) for d in detail
                )
            raise _error(
                exc.code, f"{self.url}{path.split('?')[0]}: {exc.code} {detail}", self.url + path
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerUnreachable(
                f"{self.url}: cannot reach the data service ({reason}); "
                "start one with quarry server start",
                url=self.url,
            ) from None

    def _json(self, path: str) -> Any:
        if self.flight:
            raise UsageError(
                f"{self.url}: listing datasets is over HTTP; connect to the "
                "server's http:// address"
            )
        _, _, data = self._get(path, {"Accept": "application/json"})
        return json.loads(data)

    # -- Flight ----------------------------------------------------------------------------

    def _flight_read(self, query: DataQuery) -> pa.Table:
        import pyarrow.flight as flight

        client = self._flight_client()
        options = flight.FlightCallOptions(
            headers=[(b"authorization", f"Bearer {self.token}".encode())], timeout=self.timeout
        )
        try:
            info = client.get_flight_info(
                flight.FlightDescriptor.for_command(query.path.encode()), options
            )
            tickets = [endpoint.ticket for endpoint in info.endpoints]

            def fetch(ticket: Any) -> pa.Table:
                return client.do_get(ticket, options).read_all()

            if len(tickets) == 1:
                parts = [fetch(tickets[0])]
            else:
                with ThreadPoolExecutor(min(len(tickets), self.streams)) as pool:
                    parts = list(pool.map(fetch, tickets))
        except flight.FlightUnauthenticatedError as exc:
            raise _error(401, f"{self.url}: 401 {_flight_message(exc)}", self.url) from None
        except flight.FlightUnauthorizedError as exc:
            raise _error(403, f"{self.url}: 403 {_flight_message(exc)}", self.url) from None
        except flight.FlightUnavailableError as exc:
            raise ServerUnreachable(
                f"{self.url}: cannot reach the Flight service ({_flight_message(exc)})",
                url=self.url,
            ) from None
        except flight.FlightServerError as exc:
            message = _flight_message(exc)
            code = 404 if message.startswith("no dataset") else 422
            raise _error(code, f"{self.url}: {message}", self.url) from None
        return pa.concat_tables(parts) if parts else info.schema.empty_table()

    def _flight_client(self) -> Any:
        if self._flight is None:
            import pyarrow.flight as flight

            location = self.url.replace("grpc://", "grpc+tcp://", 1)
            self._flight = flight.FlightClient(location)
        return self._flight


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _flight_message(exc: Exception) -> str:
    text = str(exc).strip()
    # gRPC adds its own context after the server's words
    return text.split(". Detail:")[0].split("\n")[0]


def _error(code: int, message: str, url: str) -> Exception:
    hint = " (set QUARRY_TOKEN, or make one with quarry tokens create)" if code == 401 else ""
    if code == 401:
        return AuthenticationError(message + hint, url=url, status=code)
    if code == 403:
        return PermissionDenied(message, url=url, status=code)
    if code == 404:
        return DataError(message)
    if code == 422:
        return UsageError(message)
    return JobServiceError(message, url=url, status=code)
