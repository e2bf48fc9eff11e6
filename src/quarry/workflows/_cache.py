"""The step cache: each step's output stored under a key made of everything it depends on.

A key hashes the step's own configuration, the keys of the steps it reads, and the store's
commits that decide its data, so a changed parameter or a vendor correction gives a new key
and the step runs again, while an unchanged rerun finds every output. An entry is written
in a temporary folder and moved into place with its ``done.json`` last, so a run that dies
leaves no half entry behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quarry._json import digest, dumps

__all__ = ["StepCache", "digest"]


class StepCache:
    """Entries under ``root`` (default ``$QUARRY_HOME/cache/steps``): ``root/step/key/``."""

    def __init__(self, root: Path | None = None) -> None:
        if root is None:
            from quarry.settings import quarry_home

            root = quarry_home() / "cache" / "steps"
        self.root = root

    def get(self, step: str, key: str) -> tuple[Path, dict[str, Any]] | None:
        """The entry's folder and its record, or None when it was never finished."""
        folder = self.root / step / key
        try:
            record = json.loads((folder / "done.json").read_text())
        except (OSError, ValueError):
            return None
        return folder, record

    @contextlib.contextmanager
    def put(
        self, step: str, key: str, record: dict[str, Any], *, replace: bool = False
    ) -> Iterator[Path]:
        """A folder to write the step's output in; on a clean exit it becomes the entry,
        with ``record`` (updated by the caller meanwhile) as its ``done.json``. An entry
        another run finished meanwhile is kept (it holds the same output) unless
        ``replace``; it is never deleted under a reader."""
        parent = self.root / step
        parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=parent))
        try:
            yield work
            (work / "done.json").write_text(dumps(record))
            final = parent / key
            if final.exists():
                if (final / "done.json").exists() and not replace:
                    return  # another run finished the same step first: keep its entry
                shutil.rmtree(final, ignore_errors=True)  # a forced rerun replaces it
            try:
                os.replace(work, final)
            except OSError:  # a concurrent run put its entry there meanwhile
                if not (final / "done.json").exists():
                    raise
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
