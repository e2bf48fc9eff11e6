"""A client of the job service's REST API, for the CLI, tests, scripts and other services.

    >>> from quarry.jobs import Client
    >>> client = Client("http://127.0.0.1:8765", token="qt_...")  # doctest: +SKIP
    >>> job = client.submit(load_manifest("job.yaml"))              # doctest: +SKIP
    >>> client.job(job["id"])["status"]                             # doctest: +SKIP
    'queued'

Every failure is a ``JobServiceError`` (a ``QuarryError``: one line, fit for the CLI), one
subclass per kind of answer (unreachable, 401, 403, 404, 409, 422): the tree is drawn in
``quarry.exceptions``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from quarry.exceptions import (
    AuthenticationError,
    InvalidRequest,
    JobConflict,
    JobNotFound,
    JobServiceError,
    PermissionDenied,
    ServerUnreachable,
    UsageError,
)
from quarry.jobs._manifest import Manifest

__all__ = [
    "DEFAULT_SERVER",
    "AuthenticationError",
    "Client",
    "InvalidRequest",
    "JobConflict",
    "JobNotFound",
    "JobServiceError",
    "PermissionDenied",
    "ServerUnreachable",
]

DEFAULT_SERVER = "http://127.0.0.1:8765"


_BY_STATUS: dict[int, type[JobServiceError]] = {
    401: AuthenticationError, 403: PermissionDenied, 404: JobNotFound, 409: JobConflict,
    422: InvalidRequest,
}  # fmt: skip


def _message(detail: Any) -> str:
    """The server's own words: a text detail as it is, problems by their messages."""
    if isinstance(detail, list):
        parts = []
        for p in detail:
            if isinstance(p, Mapping):
                parts.append(str(p.get("message") or p.get("msg") or json.dumps(p)))
            else:
                parts.append(str(p))
        return "; ".join(parts)
    return str(detail)


class Client:
    """The job service at ``url`` (default ``$QUARRY_SERVER``, else http://127.0.0.1:8765)
    with ``token`` (default ``$QUARRY_TOKEN``)."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float = 30.0) -> None:  # fmt: skip
        self.url = (url or os.environ.get("QUARRY_SERVER") or DEFAULT_SERVER).rstrip("/")
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise UsageError(f"server {self.url!r}: give an http:// or https:// URL")
        self.token = token if token is not None else os.environ.get("QUARRY_TOKEN", "")
        self.timeout = timeout

    def _open(self, method: str, path: str, body: Any = None, *, timeout: float | None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (the URL was checked: http(s) only)
            self.url + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http(s) only)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            exc.close()
            try:
                detail: Any = json.loads(text)["detail"]
            except (ValueError, KeyError, TypeError):
                detail = text.strip() or exc.reason
            kind = _BY_STATUS.get(exc.code, JobServiceError)
            hint = " (set QUARRY_TOKEN, or make one with quarry tokens create)" if (
                exc.code == 401) else ""  # fmt: skip
            message = f"{self.url}{path}: {exc.code} {_message(detail)}{hint}"
            raise kind(message, url=self.url + path, status=exc.code, detail=detail) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerUnreachable(
                f"{self.url}: cannot reach the server ({reason}); start one with quarry server "
                "start, or set QUARRY_SERVER", url=self.url,
            ) from None  # fmt: skip

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        with self._open(method, path, body, timeout=self.timeout) as response:
            return json.loads(response.read())

    # -- the API ---------------------------------------------------------------------------

    def submit(self, manifest: Manifest | Mapping[str, Any]) -> dict[str, Any]:
        """Queue a job; the new job (``id``, ``status`` ...)."""
        body = manifest.model_dump(mode="json") if isinstance(manifest, Manifest) else manifest
        result: dict[str, Any] = self._json("POST", "/v1/jobs", dict(body))
        return result

    def jobs(self, *, status: str | None = None, project: str | None = None, limit: int = 50,
             offset: int = 0) -> dict[str, Any]:  # fmt: skip
        """A page of the caller's projects' jobs, newest first: ``jobs``, ``total``."""
        query = {"limit": limit, "offset": offset, "status": status, "project": project}
        text = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        result: dict[str, Any] = self._json("GET", f"/v1/jobs?{text}")
        return result

    def job(self, job_id: int) -> dict[str, Any]:
        """A job with its attempts, manifest, output folder and (queued) why it waits."""
        result: dict[str, Any] = self._json("GET", f"/v1/jobs/{job_id}")
        return result

    def cancel(self, job_id: int) -> dict[str, Any]:
        """Cancel a queued or running job; ``JobConflict`` when it has already ended."""
        result: dict[str, Any] = self._json("POST", f"/v1/jobs/{job_id}/cancel")
        return result

    def logs(self, job_id: int) -> str:
        """The output of the job's latest attempt so far."""
        with self._open("GET", f"/v1/jobs/{job_id}/logs", timeout=self.timeout) as response:
            return str(response.read().decode(errors="replace"))

    def follow_logs(self, job_id: int) -> Iterator[str]:
        """The job's output as it is written, until the job ends."""
        with self._open("GET", f"/v1/jobs/{job_id}/logs?follow=true", timeout=None) as response:
            while chunk := response.read1(65536):
                yield chunk.decode(errors="replace")

    def health(self) -> dict[str, Any]:
        """/healthz: the server's status and its background loops."""
        result: dict[str, Any] = self._json("GET", "/healthz")
        return result

    def wait_until_up(self, seconds: float = 30.0) -> None:
        """Until the server answers /healthz; ``ServerUnreachable`` after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.health()
                return
            except ServerUnreachable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
