"""A dataset of the data service opened as a local store: ``--store quarry+http://HOST:PORT/NAME``.

The service lists the dataset's files (its Delta logs and data files) and this machine
fetches those it lacks into ``$QUARRY_HOME/cache/data/mirrors/HOST_PORT/NAME``, data files
first and log entries last, in order, so that the mirror's log never names a file it does not
have. Delta never rewrites a file, so a file once fetched stays right: a vendor correction is
a new log entry and new files, fetched at the next open, and reads as of any time are the
library's own on the mirror. Each listing is checked against the caller's rights and written
to the dataset's audit log. The mirror is for reading: a commit to it is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from quarry.exceptions import DataError, ServerUnreachable, UsageError

__all__ = ["SCHEMES", "mirror", "mirrored", "split_url"]

SCHEMES = ("quarry+http://", "quarry+https://")
# a dataset's name, as the registry allows it (no "." or ".." reaching outside the mirrors)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def split_url(url: str) -> tuple[str, str]:
    """``quarry+http://HOST:PORT/NAME`` -> (``http://HOST:PORT``, ``NAME``)."""
    parts = urllib.parse.urlsplit(url.removeprefix("quarry+"))
    name = parts.path.strip("/").removeprefix("v1/datasets/").strip("/")
    if not parts.netloc or not _NAME.fullmatch(name):
        raise UsageError(f"store {url!r}: write quarry+http://HOST:PORT/DATASET, e.g. "
                         "quarry+http://127.0.0.1:8765/us_equities")  # fmt: skip
    return f"{parts.scheme}://{parts.netloc}", name


_FRESH = 10.0  # seconds a process trusts a mirror it brought up to date
_synced: dict[str, tuple[float, Path]] = {}
_lock = threading.Lock()


def mirrored(url: str) -> Path:
    """``mirror(url)``, at most once every few seconds per process: a workflow opens its
    store many times, and one listing serves them all."""
    with _lock:
        hit = _synced.get(url)
        if hit is not None and time.monotonic() - hit[0] < _FRESH:
            return hit[1]
        folder = mirror(url)
        _synced[url] = (time.monotonic(), folder)
        return folder


def mirror(url: str, token: str | None = None, root: Path | None = None) -> Path:
    """Bring the local mirror of the dataset at ``url`` up to its latest commit; its folder.
    ``token``: default ``$QUARRY_DATA_TOKEN`` (a job's own), else ``$QUARRY_TOKEN``."""
    from quarry.data._remote import DataClient
    from quarry.settings import quarry_home

    server, name = split_url(url)
    client = DataClient(server, token, cache=False)
    listing = client._json(f"/v1/datasets/{urllib.parse.quote(name, safe='')}/files")
    base = root or quarry_home() / "cache" / "data" / "mirrors"
    host = urllib.parse.urlsplit(server).netloc.replace(":", "_")
    folder = base / host / name
    folder.mkdir(parents=True, exist_ok=True)

    def missing(entry: dict[str, object]) -> bool:
        local = folder / str(entry["path"])
        mutable = local.name == "_last_checkpoint"
        return mutable or not local.exists() or local.stat().st_size != entry["size"]

    wanted = [f for f in listing["files"] if missing(f)]
    data = [f for f in wanted if "/_delta_log/" not in f"/{f['path']}"]
    logs = sorted((f for f in wanted if f not in data), key=lambda f: str(f["path"]))

    root_dir = folder.resolve()
    for entry in listing["files"]:  # the server's paths stay inside the mirror
        if not (root_dir / str(entry["path"])).resolve().is_relative_to(root_dir):
            raise DataError(f"{server}: dataset {name!r} lists a file outside its store "
                            f"({entry['path']!r}); nothing was fetched")  # fmt: skip

    def fetch(entry: dict[str, object]) -> None:
        relative = str(entry["path"])
        quoted = urllib.parse.quote(relative)
        request = urllib.request.Request(  # noqa: S310 (http(s) only: checked by DataClient)
            f"{server}/v1/datasets/{name}/files/{quoted}",
            headers={"Authorization": f"Bearer {client.token}"},
        )
        local = folder / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own: two processes may bring the same mirror up to date at once
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                with urllib.request.urlopen(request, timeout=client.timeout) as response:  # noqa: S310
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
            os.replace(tmp, local)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise DataError(f"{server}: dataset {name!r}: fetching {relative} answered "
                            f"{exc.code} {exc.reason}; open the store again") from None  # fmt: skip
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerUnreachable(f"{server}: cannot fetch {relative} of dataset {name!r} "
                                    f"({reason})", url=server) from None  # fmt: skip
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(fetch, data))
    for entry in logs:  # in version order, after the files they name
        fetch(entry)
    (folder / ".quarry-mirror.json").write_text(
        json.dumps({"server": server, "dataset": name, "commit": listing["commit"]})
    )
    return folder
