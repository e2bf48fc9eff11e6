"""Where a store lives: a local directory or an ``s3://bucket/prefix`` URI."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Location", "parse_location"]


@dataclass(frozen=True)
class Location:
    """A store's root URI and the storage options the Delta and Parquet readers need."""

    uri: str
    storage_options: dict[str, str] = field(default_factory=dict)
    # a local mirror of a data service's dataset (``quarry+http://...``): read only
    origin: str | None = None

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri

    def child(self, name: str) -> str:
        return f"{self.uri.rstrip('/')}/{name}"

    def __str__(self) -> str:
        return self.uri


def _s3_options() -> dict[str, str]:
    """S3 settings from the usual AWS environment variables."""
    env = os.environ
    opts: dict[str, str] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["aws_endpoint_url"] = endpoint
        if endpoint.startswith("http://"):
            opts["aws_allow_http"] = "true"
    for var, key in (
        ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        ("AWS_SESSION_TOKEN", "aws_session_token"),
    ):
        if env.get(var):
            opts[key] = env[var]
    opts["aws_region"] = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    # Two writers must never both win a commit: S3's conditional PUT (If-None-Match) gives
    # delta-rs the atomic "create if absent" it needs for its log, with no lock service.
    opts.setdefault("conditional_put", "etag")
    return opts


def parse_location(store: str | os.PathLike[str]) -> Location:
    """Parse ``--store``: a directory (created on first write), ``s3://bucket/prefix``, or a
    data service's dataset, ``quarry+http://HOST:PORT/NAME``, mirrored here to read."""
    text = os.fspath(store)
    if text.startswith(("quarry+http://", "quarry+https://")):
        from quarry.data._mirror import mirrored

        return Location(str(mirrored(text)), origin=text)
    if text.startswith("s3://") or text.startswith("s3a://"):
        return Location(text.replace("s3a://", "s3://", 1).rstrip("/"), _s3_options())
    if "://" in text:
        from quarry.exceptions import UsageError

        raise UsageError(
            f"unsupported store {text!r}: give a directory, an "
            "s3://bucket/prefix or quarry+http://HOST:PORT/DATASET"
        )
    return Location(str(Path(text).expanduser().resolve()))
