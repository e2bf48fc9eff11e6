"""The backup bucket: ``s3://BUCKET/PREFIX`` through ``pyarrow.fs.S3FileSystem``.

The endpoint and keys are the ``AWS_*`` variables a store on S3 reads: ``quarry.data``'s
``parse_location`` reads them for the whole platform, and a ``Remote`` is made from its
storage options. Every failure of a call becomes one line that names the endpoint or the
bucket and what to do (``DataError``); a file is hashed (SHA-256) as it goes up or comes down.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quarry.exceptions import DataError, QuarryError, UsageError

__all__ = ["FileEntry", "Remote", "copy_stream", "filesystem", "open_remote"]

_CHUNK = 1 << 20
# pyarrow's S3 errors: "... AWS Error NO_SUCH_BUCKET during HeadBucket operation: <text>"
_AWS_ERROR = re.compile(r"AWS Error (?P<code>[A-Z_]+)")
_UNREACHABLE = ("NETWORK_CONNECTION", "REQUEST_TIMEOUT", "SERVICE_UNAVAILABLE")
_REFUSED = (
    "ACCESS_DENIED",
    "INVALID_ACCESS_KEY_ID",
    "SIGNATURE_DOES_NOT_MATCH",
    "MISSING_AUTHENTICATION_TOKEN",
    "UNRECOGNIZED_CLIENT",
    "EXPIRED_TOKEN",
    "INVALID_CLIENT_TOKEN_ID",
    "INCOMPLETE_SIGNATURE",
    "REQUEST_EXPIRED",
)


@dataclass(frozen=True)
class FileEntry:
    """One copied file: its path inside the backup, its size and its SHA-256 (hex)."""

    path: str
    bytes: int
    sha256: str


def filesystem(options: Mapping[str, str]) -> Any:
    """A ``pyarrow.fs.S3FileSystem`` from a store location's storage options (the ``aws_*``
    keys ``quarry.data.parse_location`` reads from the environment)."""
    from pyarrow import fs

    key, secret = options.get("aws_access_key_id"), options.get("aws_secret_access_key")
    if bool(key) != bool(secret):
        given, missing = (
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            if key
            else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
        )
        raise UsageError(
            f"{given} is set but {missing} is not: set both, or neither to use "
            "the machine's own role"
        )
    settings: dict[str, Any] = {
        "region": options.get("aws_region") or "us-east-1",
        # an endpoint that does not answer is an error in seconds, not minutes of retries
        "connect_timeout": 5.0,
        "request_timeout": 60.0,
        "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=3),
    }
    if key:
        settings.update(
            access_key=key, secret_key=secret, session_token=options.get("aws_session_token")
        )
    endpoint = options.get("aws_endpoint_url")
    if endpoint:
        scheme, sep, host = endpoint.rstrip("/").partition("://")
        settings["endpoint_override"] = host if sep else scheme
        settings["scheme"] = scheme if sep else "https"
    return fs.S3FileSystem(**settings)


def _explain(exc: BaseException, *, doing: str, endpoint: str, bucket: str) -> str:
    """One line for a failed S3 call: what failed, where, and what to do."""
    text = " ".join(str(exc).split())
    found = _AWS_ERROR.search(text)
    code = found["code"] if found else ""
    detail = text.split(" operation: ", 1)[-1].split(" (Request ID", 1)[0]
    detail = detail.split("; Details:", 1)[0].strip() or type(exc).__name__
    if code in _UNREACHABLE or "curlCode" in text or "Could not connect" in text:
        return (
            f"cannot reach S3 at {endpoint} to {doing} ({detail}): check AWS_ENDPOINT_URL "
            "and that the server is up"
        )
    if code == "NO_SUCH_BUCKET":
        return (
            f"bucket {bucket!r} does not exist at {endpoint}: create it (aws s3 mb "
            f"s3://{bucket}) or give another bucket"
        )
    if code in _REFUSED or "HTTP status 403" in text or "credentials" in text.lower():
        return (
            f"S3 at {endpoint} refused to {doing} ({code or detail}): check "
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) and what "
            "they may do in the bucket"
        )
    return f"cannot {doing} on S3 at {endpoint}: {detail}"


@dataclass(frozen=True)
class Remote:
    """A folder of a bucket: ``s3://bucket/prefix``, and the filesystem that reaches it."""

    bucket: str
    prefix: str
    fs: Any
    endpoint: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def child(self, *parts: str) -> Remote:
        """The folder ``parts`` below this one."""
        prefix = "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))
        return Remote(self.bucket, prefix, self.fs, self.endpoint)

    def _path(self, rel: str = "") -> str:
        return "/".join(p.strip("/") for p in (self.bucket, self.prefix, rel) if p.strip("/"))

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn a failed S3 call into a one-line ``DataError`` saying what was being done."""
        import pyarrow as pa

        try:
            yield
        except QuarryError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise DataError(
                _explain(exc, doing=doing, endpoint=self.endpoint, bucket=self.bucket)
            ) from None

    def check(self) -> None:
        """Raise ``DataError`` unless the bucket exists and answers."""
        from pyarrow import fs

        with self.errors(f"look at bucket {self.bucket}"):
            kind = self.fs.get_file_info(self.bucket).type
        if kind != fs.FileType.Directory:
            raise DataError(
                f"bucket {self.bucket!r} does not exist at {self.endpoint}: create "
                f"it (aws s3 mb s3://{self.bucket}) or give another bucket"
            )

    def size(self, rel: str) -> int | None:
        """The size of file ``rel`` (below this folder), or None if there is none."""
        from pyarrow import fs

        with self.errors(f"look at {self.uri}/{rel}"):
            info = self.fs.get_file_info(self._path(rel))
        return int(info.size) if info.type == fs.FileType.File else None

    def names(self, rel: str = "") -> list[str]:
        """The names of the files and folders just below ``rel`` (empty if there is none)."""
        from pyarrow import fs

        selector = fs.FileSelector(self._path(rel), recursive=False, allow_not_found=True)
        with self.errors(f"list {self.uri}/{rel}".rstrip("/")):
            infos = self.fs.get_file_info(selector)
        return sorted(info.base_name for info in infos)

    def files(self, rel: str = "") -> list[tuple[str, int]]:
        """Every file below ``rel`` (recursively), as paths relative to this folder, with
        their sizes; empty when there is nothing there."""
        from pyarrow import fs

        base = self._path()
        selector = fs.FileSelector(self._path(rel), recursive=True, allow_not_found=True)
        with self.errors(f"list {self.uri}/{rel}".rstrip("/")):
            infos = self.fs.get_file_info(selector)
        return sorted(
            (info.path[len(base) + 1 :], int(info.size))
            for info in infos
            if info.type == fs.FileType.File
        )

    def read_bytes(self, rel: str) -> bytes:
        with self.errors(f"read {self.uri}/{rel}"), self.fs.open_input_stream(self._path(rel)) as f:
            return bytes(f.read())

    def write_bytes(self, rel: str, data: bytes) -> FileEntry:
        with self.errors(f"write {self.uri}/{rel}"):
            with self.fs.open_output_stream(self._path(rel)) as out:
                out.write(data)
        return FileEntry(rel, len(data), hashlib.sha256(data).hexdigest())

    def upload(self, source_fs: Any, source: str, rel: str) -> FileEntry:
        """Copy file ``source`` of ``source_fs`` (a pyarrow filesystem: local or S3) to ``rel``
        below this folder, hashing it on the way."""
        with self.errors(f"copy {source} to {self.uri}/{rel}"):
            with (
                source_fs.open_input_stream(source) as src,
                self.fs.open_output_stream(self._path(rel)) as out,
            ):
                size, digest = copy_stream(src, out)
        return FileEntry(rel, size, digest)

    def download(self, entry: FileEntry, dest: Path) -> None:
        """Copy ``entry`` (below this folder) to the local file ``dest``, and raise
        ``DataError`` unless its size and SHA-256 are the ones the manifest recorded."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        with (
            self.errors(f"read {self.uri}/{entry.path}"),
            self.fs.open_input_stream(self._path(entry.path)) as src,
            open(dest, "wb") as out,
        ):
            size, digest = copy_stream(src, out)
        if (size, digest) != (entry.bytes, entry.sha256):
            raise DataError(
                f"{self.uri}/{entry.path}: its SHA-256 {digest[:12]}... ({size} bytes) is not "
                f"the manifest's {entry.sha256[:12]}... ({entry.bytes} bytes): the backup was "
                "changed or damaged after it was made; nothing was restored; restore another "
                "backup (quarry admin backups --from ...)"
            )


def copy_stream(src: Any, out: Any) -> tuple[int, str]:
    """Copy a readable stream into a writable one; the bytes copied and their SHA-256."""
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def open_remote(uri: str, flag: str) -> Remote:
    """The folder ``s3://BUCKET/PREFIX`` given as ``flag`` (``--to``, ``--from``), with the
    endpoint and keys of the ``AWS_*`` variables."""
    from quarry.data import parse_location

    text = uri.strip()
    if text.startswith("s3a://"):
        text = "s3://" + text.removeprefix("s3a://")
    if not text.startswith("s3://") or not text.removeprefix("s3://").split("/", 1)[0]:
        raise UsageError(f"{flag} {uri}: give an S3 folder, s3://BUCKET/PREFIX")
    bucket, _, prefix = text.removeprefix("s3://").partition("/")
    options = parse_location(text).storage_options
    endpoint = options.get("aws_endpoint_url") or f"s3.{options.get('aws_region')}.amazonaws.com"
    return Remote(bucket, prefix.strip("/"), filesystem(options), endpoint)
