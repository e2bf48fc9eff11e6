"""The served models: which registered models, at which alias, and their loaded versions.

Each served model follows an alias of the registry (``champion`` by default). What a request
holds is a ``Version``: an immutable object with the version's number and its package, taken
once when the request starts and used to its end, so a promotion in the middle of a request
changes nothing in it, and its answer is that one version's from first row to last.

A promotion is followed by ``refresh`` (the alias watcher calls it every second or so): the
new version is loaded first, with the old one still answering, and only then does the model's
entry point at it, in one assignment of a reference, so no request waits for a load and none
fails during the switch. A version that cannot be loaded is left aside (the old one goes on
serving, and /healthz says why) until the alias moves again.

Loaded versions are kept least recently used first and unloaded past ``max_loaded`` of them
or past ``memory`` bytes (each measured by the size of its pickle, the estimator with its
processors); an unloaded version is loaded again when a request needs it. A request that
holds an unloaded version still finishes with it.
"""

from __future__ import annotations

import logging
import pickle
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from quarry.exceptions import UsageError
from quarry.serve._inputs import RowScorer
from quarry.tracking import DEFAULT_ALIAS, KEY_FIGURES
from quarry.tracking._metadata import DEFAULT_PROJECT
from quarry.tracking._packaged import Packaged

__all__ = ["Catalog", "ModelRef", "Served", "Version", "describe", "model_project"]

_log = logging.getLogger("quarry.serve")

_REF = re.compile(r"^([^@\s]+)(?:@([\w\-]{1,255}))?$")


@dataclass(frozen=True)
class ModelRef:
    """A served model as ``--models`` names it: ``NAME`` or ``NAME@ALIAS``."""

    name: str
    alias: str = DEFAULT_ALIAS

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        found = _REF.match(text.strip())
        if not found:
            raise UsageError(
                f"--models {text!r}: write NAME or NAME@ALIAS, e.g. alpha@champion "
                "(an alias is letters, digits, _ and -)"
            )
        return cls(found.group(1), found.group(2) or DEFAULT_ALIAS)

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}"


@dataclass(frozen=True)
class Version:
    """One loaded version of a model: what a request holds from its start to its end."""

    name: str
    version: int
    packaged: Packaged
    size: int  # bytes, the pickle's size: what the memory bound counts
    # its scorer of rows as a matrix, prepared at load (``_inputs.RowScorer``; None: the model's
    # processors read whole dates)
    rows: RowScorer | None = None


@dataclass(frozen=True)
class Served:
    """A served model as it is now: the version its alias points at, and what the catalog
    shows of it. Replaced whole (never changed) when the alias moves."""

    ref: ModelRef
    version: int
    project: str
    info: dict[str, Any] = field(default_factory=dict)
    since: str = ""  # when this version started answering (UTC, ISO)

    def view(self) -> dict[str, Any]:
        return {"name": self.ref.name, "alias": self.ref.alias, "version": self.version,
                "project": self.project, "serving_since": self.since, **self.info}  # fmt: skip


def model_project(metadata: dict[str, Any] | None) -> str:
    """The project a model belongs to: its metadata's, else (a version registered before
    Quarry recorded metadata) the default project, as the job service's."""
    project = (metadata or {}).get("project")
    return str(project) if project else DEFAULT_PROJECT


def describe(name: str, version: int) -> dict[str, Any]:
    """What the catalog shows of a version: its run's model type, feature count and key
    figures, and its metadata (``quarry.tracking.model_metadata``; None for a version
    registered before Quarry recorded metadata)."""
    from quarry.tracking import describe_model

    detail = describe_model(name)
    held = next((v for v in detail.versions if v.version == version), None)
    metrics = held.metrics if held is not None else {}
    return {
        "description": detail.description,
        "model_type": held.model_type if held else None,
        "features": held.features if held else None,
        "run_id": held.run_id if held else None,
        "created": held.created if held else None,
        "figures": {k: metrics[k] for k in KEY_FIGURES if k in metrics},
        "metadata": held.metadata if held else None,
    }


def _size(packaged: Packaged) -> int:
    try:
        return len(pickle.dumps(packaged, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # an estimator that does not pickle here: counted as nothing
        return 0


def _load_packaged(name: str, version: int) -> Packaged:
    from quarry.tracking import load_packaged

    return load_packaged(name, version)


def _alias_version(name: str, alias: str) -> int | None:
    from quarry.tracking import alias_version

    return alias_version(name, alias)


def _models_at(alias: str) -> dict[str, int]:
    from quarry.tracking import models_at

    return models_at(alias)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Catalog:
    """The models served, at their aliases, with their loaded versions (see the module's
    docstring).

    ``refs``: the models and aliases to serve (None: every registered model that has a
    ``champion``, now and as others get one: ``refresh`` adds them); ``max_loaded`` and
    ``memory`` (bytes) bound the loaded versions; ``loader``, ``resolve`` and ``discover``
    read the registry (a version's package, an alias's version, the models with an alias).
    """

    def __init__(
        self,
        refs: Iterable[ModelRef] | None = None,
        *,
        max_loaded: int | None = None,
        memory: int | None = None,
        loader: Callable[[str, int], Packaged] = _load_packaged,
        resolve: Callable[[str, str], int | None] = _alias_version,
        discover: Callable[[str], dict[str, int]] = _models_at,
    ) -> None:
        if max_loaded is not None and max_loaded < 1:
            raise UsageError(f"--max-loaded {max_loaded}: give 1 or more")
        if memory is not None and memory <= 0:
            raise UsageError("--memory: give a size above 0, e.g. 2Gi")
        self.refs = list(refs) if refs is not None else None
        self.max_loaded, self.memory = max_loaded, memory
        self._loader, self._resolve, self._discover = loader, resolve, discover
        self._served: dict[str, Served] = {}
        self._loaded: OrderedDict[tuple[str, int], Version] = OrderedDict()
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self._lock = threading.Lock()
        self._infos: dict[tuple[str, int], dict[str, Any]] = {}
        # why a model does not serve what its alias points at (a version that failed to load,
        # an alias removed): shown by /healthz, cleared when it serves the alias's version
        self.problems: dict[str, str] = {}
        self._failed: dict[str, int] = {}
        self.loads = 0  # versions loaded from the registry (a reload after an unload too)

    # -------------------------------------------------------------------- starting

    def start(self) -> None:
        """Find each model's version and load it once (a version that cannot score is
        refused now, not at its first request).

        Raises UsageError naming the model when the registry has none, a named model is not
        registered or lacks its alias, or a version cannot be loaded."""
        from quarry.tracking import list_models

        models = {m.name: m for m in list_models()}
        if not models:
            raise UsageError(
                "no model is registered: a workflow with tracking: register: NAME registers "
                "its model; then run quarry serve again"
            )
        refs = self.refs
        if refs is None:
            refs = [ModelRef(n) for n, m in sorted(models.items()) if DEFAULT_ALIAS in m.aliases]
            if not refs:
                raise UsageError(
                    f"no registered model has a {DEFAULT_ALIAS} alias (models: "
                    f"{', '.join(sorted(models))}): promote one with quarry models promote "
                    "NAME VERSION, or name models and aliases with --models NAME@ALIAS"
                )
        names = [r.name for r in refs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UsageError(f"--models: {twice[0]} is named twice; serve one alias per model")
        for ref in refs:
            found = models.get(ref.name)
            if found is None:
                raise UsageError(
                    f"--models {ref.name}: no registered model {ref.name!r} (models: "
                    f"{', '.join(sorted(models))})"
                )
            if ref.alias not in found.aliases:
                have = ", ".join(found.aliases) or "it has none"
                raise UsageError(
                    f"--models {ref}: model {ref.name} has no alias {ref.alias!r} (aliases: "
                    f"{have}); promote a version with quarry models promote {ref.name} VERSION "
                    f"--alias {ref.alias}"
                )
        for ref in refs:
            version = self._resolve(ref.name, ref.alias)
            if version is None:  # removed since the list was read
                raise UsageError(f"--models {ref}: the alias {ref.alias!r} was just removed")
            self._load(ref.name, version)
            self._served[ref.name] = self._entry(ref, version)

    def _entry(self, ref: ModelRef, version: int) -> Served:
        key = (ref.name, version)
        if key not in self._infos:
            self._infos[key] = describe(ref.name, version)
        info = self._infos[key]
        return Served(ref, version, model_project(info.get("metadata")), info, _now())

    # -------------------------------------------------------------------- serving

    def names(self) -> list[str]:
        return sorted(self._served)

    def served(self, name: str) -> Served | None:
        """Model ``name`` as it is served now (None: not served)."""
        return self._served.get(name)

    def version(self, served: Served) -> Version:
        """The loaded version ``served`` points at, loaded again if it was unloaded."""
        return self._load(served.ref.name, served.version)

    def peek(self, served: Served) -> Version | None:
        """The loaded version ``served`` points at if it is loaded now (never loads it)."""
        key = (served.ref.name, served.version)
        with self._lock:
            hit = self._loaded.get(key)
            if hit is not None:
                self._loaded.move_to_end(key)
            return hit

    def loaded(self) -> list[tuple[str, int]]:
        """The loaded versions, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def loaded_bytes(self) -> int:
        with self._lock:
            return sum(v.size for v in self._loaded.values())

    def _load(self, name: str, version: int) -> Version:
        key = (name, version)
        with self._lock:
            hit = self._loaded.get(key)
            if hit is not None:
                self._loaded.move_to_end(key)
                return hit
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one load per version however many requests want it
            with self._lock:
                hit = self._loaded.get(key)
                if hit is not None:
                    self._loaded.move_to_end(key)
                    return hit
            try:
                packaged = self._loader(name, version)
                loaded = Version(name, version, packaged, _size(packaged),
                                 RowScorer.of(packaged))  # fmt: skip
                with self._lock:
                    self.loads += 1
                    self._loaded[key] = loaded
                    self._evict()
            finally:
                with self._lock:
                    self._loading.pop(key, None)
        return loaded

    def _evict(self) -> None:
        """Unload the least recently used versions past the bounds (under the lock); the
        newest always stays, even alone past the memory bound: it is the one asked for."""

        def over() -> bool:
            if self.max_loaded is not None and len(self._loaded) > self.max_loaded:
                return True
            total = sum(v.size for v in self._loaded.values())
            return self.memory is not None and total > self.memory

        while len(self._loaded) > 1 and over():
            (name, version), _ = self._loaded.popitem(last=False)
            _log.info("unloaded %s version %d (least recently used)", name, version)

    # -------------------------------------------------------------------- following aliases

    def _arrivals(self) -> list[tuple[str, int, int]]:
        """Models that have a ``champion`` now and are not served yet, loaded and added (a
        model is never dropped: one whose alias is removed serves on, as /healthz says)."""
        added = []
        found = self._discover(DEFAULT_ALIAS)
        for name in [n for n in self.problems if n not in self._served and n not in found]:
            self.problems.pop(name)  # a newcomer that failed, whose champion is gone
            self._failed.pop(name, None)
        for name, version in sorted(found.items()):
            if name in self._served or self._failed.get(name) == version:
                continue
            try:
                self._load(name, version)
                entry = self._entry(ModelRef(name), version)
            except Exception as exc:  # a broken version must not stop the others serving
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                self._failed[name] = version
                self.problems[name] = (f"got a {DEFAULT_ALIAS}, version {version}, which "
                                       f"cannot be loaded ({first}): not served")  # fmt: skip
                _log.error("model %s: %s", name, self.problems[name])
                continue
            self._served[name] = entry
            self.problems.pop(name, None)
            self._failed.pop(name, None)
            added.append((name, 0, version))
            _log.info("model %s: registered with a %s, version %d; now serving it", name,
                      DEFAULT_ALIAS, version)  # fmt: skip
        return added

    def refresh(self) -> list[tuple[str, int, int]]:
        """One look at every served model's alias: a moved one is loaded, then switched to;
        serving every model at ``champion`` (no ``refs``), a model that has got one since is
        loaded and served too. Returns the switches made, as (name, from version, to
        version); a model newly served is (name, 0, its version)."""
        moves: list[tuple[str, int, int]] = []
        for name, served in list(self._served.items()):
            ref = served.ref
            now = self._resolve(ref.name, ref.alias)
            if now is None:
                self.problems[name] = (
                    f"the alias {ref.alias!r} was removed: version {served.version} serves on"
                )
                continue
            if now == served.version:
                self.problems.pop(name, None)
                self._failed.pop(name, None)
                continue
            if self._failed.get(name) == now:
                continue  # tried already: until the alias moves again
            began = time.perf_counter()
            try:
                self._load(name, now)
                entry = self._entry(ref, now)
            except Exception as exc:  # a broken version must not stop the old one serving
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                self._failed[name] = now
                self.problems[name] = (
                    f"the {ref.alias} moved to version {now}, which cannot be loaded "
                    f"({first}): version {served.version} goes on serving"
                )
                _log.error("model %s: %s", name, self.problems[name])
                continue
            self._served[name] = entry  # the switch: one reference replaced
            self.problems.pop(name, None)
            self._failed.pop(name, None)
            moves.append((name, served.version, now))
            _log.info("model %s: the %s moved from version %d to %d; now serving version %d "
                      "(loaded in %.1f s)", name, ref.alias, served.version, now, now,
                      time.perf_counter() - began)  # fmt: skip
        if self.refs is None:  # after the moves: a large newcomer never delays a promotion
            moves += self._arrivals()
        return moves
