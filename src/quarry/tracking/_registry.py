"""The model registry as a team uses it: versions registered with their metadata, aliases
that move by compare-and-set, every move recorded, and what each registered version is.

A version is registered only with its metadata (``quarry.tracking._metadata``: who made it,
for what, from which data and workflow file), checked against the schema first and written
as the version's tag ``quarry.metadata`` in the call that creates the version. A model
belongs to one project, kept as its registered-model tag ``quarry.project``.

MLflow keeps no history of its aliases, so Quarry records one in the registry itself (shared
wherever the tracking store is): a registered-model tag per move,
``quarry.alias_event.000017`` = JSON ``{alias, from, to, by, at, reason, run_id}``, written
in the same locked section as the move, and the alias is put back if its event cannot be
written. ``by`` is a person (the OS user, or ``--by``) or ``gate (run RUN_ID)``; ``reason``
is the gate's decision or the person's words.

MLflow's registry has no compare-and-set either: a lock beside the tracking database
serializes the processes of one machine; machines sharing one tracking server are not
serialized by it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import getpass
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from quarry._json import strict_json
from quarry.exceptions import ConflictError, DataError, UsageError
from quarry.settings import quarry_home
from quarry.tracking._metadata import (
    DEFAULT_PROJECT,
    FILLED,
    METADATA_TAG,
    METADATA_VERSION,
    PROJECT_TAG,
    decode,
    encode,
    validate_metadata,
)
from quarry.tracking._mlflow import alias_version, client, quiet_mlflow, shown_uri, tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel
    from mlflow.exceptions import MlflowException

__all__ = [
    "DEFAULT_ALIAS",
    "KEY_FIGURES",
    "AliasEvent",
    "ModelDetail",
    "ModelSummary",
    "VersionInfo",
    "alias_history",
    "current_user",
    "describe_model",
    "list_models",
    "model_metadata",
    "move_alias",
    "promote",
    "register",
    "rollback",
    "set_alias",
    "sync_metrics",
]

DEFAULT_ALIAS = "champion"
EVENT_PREFIX = "quarry.alias_event."
# The figures a run of `quarry train` or a workflow logs that say most about a model, the
# most telling first.
GATE_PREFIX = "quarry.gate."  # the tags the promotion gate leaves on a run
KEY_FIGURES = (
    "test_rank_ic",
    "backtest_sharpe",
    "test_rank_icir",
    "test_ic",
    "backtest_excess_annualized_return",
    "backtest_max_drawdown",
)
_REASON_LIMIT = 2000
_ALIAS = re.compile(r"^[\w\-]{1,255}$")


def current_user() -> str:
    """Who is moving an alias when no one is named: the OS user."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "unknown"


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias: ``number`` orders the moves of a registered model."""

    number: int
    alias: str
    from_version: int | None
    to_version: int
    by: str
    at: str
    reason: str
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "alias": self.alias,
            "from": self.from_version,
            "to": self.to_version,
            "by": self.by,
            "at": self.at,
            "reason": self.reason,
            "run_id": self.run_id,
        }

    def tag(self) -> tuple[str, str]:
        """The registered-model tag that stores the event."""
        body = {k: v for k, v in self.to_dict().items() if k != "number"}
        return f"{EVENT_PREFIX}{self.number:06d}", json.dumps(body)


@dataclass(frozen=True)
class VersionInfo:
    """A registered version and what its run recorded."""

    version: int
    created: str
    run_id: str | None
    model_type: str | None
    features: int | None
    aliases: list[str]
    metrics: dict[str, float]
    # what it was registered with (``model_metadata``); None for a version registered
    # before Quarry recorded metadata, or outside Quarry
    metadata: dict[str, Any] | None = None
    # the promotion gate's decision in its run (``promoted``, ``reason``), when a gate ran
    gate: dict[str, str] | None = None


@dataclass(frozen=True)
class ModelDetail:
    """A registered model: its project, versions (newest first, each with its metadata),
    aliases and alias history."""

    name: str
    description: str
    aliases: dict[str, int]
    versions: list[VersionInfo]
    history: list[AliasEvent]
    project: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "project": self.project,
            "description": self.description,
            "aliases": self.aliases,
            "versions": [dict(vars(v)) for v in self.versions],
            "history": [e.to_dict() for e in self.history],
        }


@dataclass(frozen=True)
class ModelSummary:
    """A line of ``quarry models list``."""

    name: str
    latest_version: int | None
    versions: int
    aliases: dict[str, int]
    champion: int | None
    figures: dict[str, float] = field(default_factory=dict)
    last_move: AliasEvent | None = None
    project: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dict(vars(self))
        out["last_move"] = self.last_move.to_dict() if self.last_move else None
        return out


# ---------------------------------------------------------------------------- helpers


def _missing(exc: MlflowException) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code)


def _registry_error(exc: Exception) -> UsageError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return UsageError(f"model registry ({shown_uri()}): {first}")


P = ParamSpec("P")
R = TypeVar("R")


def _registry_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """A failure of the registry itself (unreachable server, bad URI) as one line."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from mlflow.exceptions import MlflowException
        from sqlalchemy.exc import OperationalError

        try:
            return fn(*args, **kwargs)
        except (MlflowException, OperationalError) as exc:  # the store away, a bad URI
            raise _registry_error(exc) from exc

    return wrapper


def _listed(items: list[str], limit: int = 10) -> str:
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join([*items[:3], "...", *items[-3:]]) + f" ({len(items)} in all)"


def _model_names(registry: MlflowClient) -> list[str]:
    names: list[str] = []
    token = None
    while True:
        page = registry.search_registered_models(max_results=1000, page_token=token)
        names += [m.name for m in page]
        token = page.token
        if not token:
            return sorted(names)


def _model(registry: MlflowClient, name: str) -> RegisteredModel:
    """Registered model ``name``, or a one-line error naming the models there are."""
    from mlflow.exceptions import MlflowException

    try:
        return registry.get_registered_model(name)
    except MlflowException as exc:
        if not _missing(exc):
            raise _registry_error(exc) from exc
    names = _model_names(registry)
    there = (
        f"models: {_listed(names)}"
        if names
        else "no model is registered yet: a workflow with tracking: registered: NAME "
        "registers its model"
    )
    raise UsageError(f"no registered model {name!r} ({there})")


def _versions(registry: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of ``name``, newest first."""
    quote = "'" if "'" not in name else '"'
    found: list[ModelVersion] = []
    token = None
    while True:
        page = registry.search_model_versions(
            f"name={quote}{name}{quote}", max_results=1000, page_token=token
        )
        found += list(page)
        token = page.token
        if not token:
            return sorted(found, key=lambda v: -int(v.version))


def _check_version(registry: MlflowClient, name: str, version: int, what: str = "") -> None:
    from mlflow.exceptions import MlflowException

    try:
        registry.get_model_version(name, str(version))
        return
    except MlflowException as exc:
        if not _missing(exc):
            raise _registry_error(exc) from exc
    numbers = [str(v.version) for v in reversed(_versions(registry, name))]
    there = f"versions: {_listed(numbers)}" if numbers else "it has no versions"
    raise UsageError(f"model {name} has no version {version}{what} ({there})")


def _check_alias(alias: str) -> None:
    """MLflow's rules for alias names, checked before anything is read: MLflow itself would
    answer a read of ``latest`` with the newest version."""
    if not _ALIAS.match(alias):
        raise UsageError(f"alias {alias!r}: use 1 to 255 letters, digits, _ and -, e.g. champion")
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise UsageError(
            f"alias {alias!r} is reserved by MLflow (it names a version): "
            "choose another, e.g. champion"
        )


def _aliases(model: RegisteredModel) -> dict[str, int]:
    return {alias: int(version) for alias, version in sorted(model.aliases.items())}


def _alias_list(aliases: Mapping[str, int]) -> str:
    return f"aliases: {', '.join(aliases)}" if aliases else "it has none"


def _events(name: str, tags: Mapping[str, str]) -> list[AliasEvent]:
    events = []
    for key, value in tags.items():
        number = key.removeprefix(EVENT_PREFIX)
        if number == key or not number.isdigit():
            continue
        try:
            body = json.loads(value)
            events.append(
                AliasEvent(
                    number=int(number),
                    alias=str(body["alias"]),
                    from_version=None if body.get("from") is None else int(body["from"]),
                    to_version=int(body["to"]),
                    by=str(body.get("by") or ""),
                    at=str(body.get("at") or ""),
                    reason=str(body.get("reason") or ""),
                    run_id=body.get("run_id"),
                )
            )
        except (ValueError, KeyError, TypeError):
            raise DataError(
                f"model {name}: registry tag {key} is not an alias event ({value[:80]!r}): "
                "restore it or delete the tag"
            ) from None
    return sorted(events, key=lambda e: e.number)


def _next_number(tags: Mapping[str, str]) -> int:
    numbers = [
        int(k.removeprefix(EVENT_PREFIX))
        for k in tags
        if k.startswith(EVENT_PREFIX) and k.removeprefix(EVENT_PREFIX).isdigit()
    ]
    return max(numbers, default=0) + 1


@contextlib.contextmanager
def _registry_lock() -> Iterator[None]:
    """Held while an alias is read, moved and its event written, so that two processes on
    this machine cannot both move it from the same version, nor number two events alike."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///") + ".lock")
    else:
        name = hashlib.sha256(uri.encode()).hexdigest()[:16]
        path = quarry_home() / "locks" / f"registry-{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _set_and_record(
    registry: MlflowClient,
    name: str,
    alias: str,
    current: int | None,
    version: int,
    *,
    by: str | None,
    reason: str,
    run_id: str | None,
) -> AliasEvent:
    """Under the lock: point ``alias`` at ``version`` and record the move."""
    from mlflow.exceptions import MlflowException

    try:
        tags = registry.get_registered_model(name).tags
        event = AliasEvent(
            number=_next_number(tags),
            alias=alias,
            from_version=current,
            to_version=version,
            by=by or current_user(),
            at=datetime.now(UTC).isoformat(timespec="seconds"),
            reason=reason[:_REASON_LIMIT],
            run_id=run_id,
        )
        registry.set_registered_model_alias(name, alias, str(version))
    except MlflowException as exc:
        raise _registry_error(exc) from exc
    try:
        registry.set_registered_model_tag(name, *event.tag())
    except Exception as exc:
        # no move without its record: put the alias back
        with contextlib.suppress(MlflowException):
            if current is None:
                registry.delete_registered_model_alias(name, alias)
            else:
                registry.set_registered_model_alias(name, alias, str(current))
        if isinstance(exc, MlflowException):
            raise _registry_error(exc) from exc
        raise
    return event


# ---------------------------------------------------------------------- registering versions


def _claim_project(registry: MlflowClient, name: str, project: str, description: str) -> None:
    """Under the lock: registered model ``name`` in ``project`` (made if new, described as
    its first version is), or a refusal if it belongs to another project."""
    from mlflow.exceptions import MlflowException

    try:
        model = registry.get_registered_model(name)
    except MlflowException as exc:
        if not _missing(exc):
            raise
        registry.create_registered_model(name, tags={PROJECT_TAG: project}, description=description)
        return
    held = model.tags.get(PROJECT_TAG)
    if held is None:  # registered before models had projects, or outside Quarry
        registry.set_registered_model_tag(name, PROJECT_TAG, project)
    elif held != project:
        raise UsageError(
            f"model {name} belongs to project {held!r}, not {project!r}: register it in "
            f"project {held} (tracking.project), or give the model another name"
        )


@_registry_errors
def register(run_id: str, name: str, metadata: Mapping[str, Any], artifact: str = "model") -> int:
    """Register the model run ``run_id`` logged as a new version of ``name``, with its
    metadata; returns the version. Prints nothing (MLflow would announce the model and the
    version).

    ``metadata`` holds the fields of the metadata schema (``metadata_schema``,
    docs/reference/model-metadata.md) but those filled in here: ``metadata_version``,
    ``name``, ``version``, ``run_id`` and ``metrics`` (the run's, as MLflow has them);
    ``project`` defaults to ``default``. The metadata is checked before anything is
    registered and stored as the version's tag ``quarry.metadata`` by the call that creates
    the version (``model_metadata`` reads it back).

    Raises
    ------
    UsageError
        With nothing registered: a field missing or breaking the schema (one line naming the
        fields and where to give them), an unknown run, or a model of another project.
    """
    import mlflow

    given = [key for key in FILLED if key in metadata]
    if given:
        raise UsageError(
            f"register: leave {', '.join(given)} out of the metadata: they are filled in from "
            "the run and the registry"
        )
    registry = client()
    run = registry.get_run(run_id)
    # version 1 holds the place of the number the registry gives the new version
    record = validate_metadata(
        {"metadata_version": METADATA_VERSION, "name": name, "version": 1,
         "project": DEFAULT_PROJECT, **metadata, "run_id": run_id,
         "metrics": strict_json(dict(run.data.metrics))},
        subject=f"model metadata of {name}",
    )  # fmt: skip
    tag = encode(record)
    with _registry_lock():
        _claim_project(registry, name, record["project"], record["description"])
        # MLflow 3 keeps a run's model as a logged model and says so at every registration.
        with quiet_mlflow("mlflow.tracking._model_registry.fluent", events=True):
            version = mlflow.register_model(
                f"runs:/{run_id}/{artifact}", name, tags={METADATA_TAG: tag}
            )
    return int(version.version)


@_registry_errors
def model_metadata(name: str, version: int) -> dict[str, Any]:
    """The metadata of version ``version`` of registered model ``name``, as the schema
    describes it (``metadata_schema``): name, version, project, description, authors,
    licence, features, training window, data, metrics, workflow file. One registry request.

    Raises
    ------
    UsageError
        An unknown model or version (naming those there are), or a version without metadata
        (registered before Quarry recorded it, or outside Quarry).
    DataError
        Its record was edited into something the schema refuses.
    """
    from mlflow.exceptions import MlflowException

    registry = client()
    try:
        found = registry.get_model_version(name, str(version))
    except MlflowException as exc:
        if not _missing(exc):
            raise
        _model(registry, name)
        _check_version(registry, name, version)
        raise
    text = found.tags.get(METADATA_TAG)
    if text is None:
        raise UsageError(
            f"model {name} version {version} has no metadata (registered before Quarry "
            "recorded it, or outside Quarry): train and register it again with quarry run"
        )
    return decode(name, int(version), text)


@_registry_errors
def sync_metrics(name: str, version: int) -> bool:
    """Make the metrics in the metadata of version ``version`` of ``name`` its run's again,
    after more were logged to the run (a workflow's backtest and gate figures); True when
    they changed. A version without metadata, or whose run is gone, is left as it is."""
    registry = client()
    found = registry.get_model_version(name, str(version))
    text = found.tags.get(METADATA_TAG)
    run = _run(registry, found.run_id)
    if text is None or run is None:
        return False
    record = decode(name, int(version), text)
    metrics = strict_json(dict(run.data.metrics))
    if record["metrics"] == metrics:
        return False
    record = validate_metadata({**record, "metrics": metrics}, subject=f"model metadata of {name}")
    registry.set_model_version_tag(name, str(version), METADATA_TAG, encode(record))
    return True


# ------------------------------------------------------------------------- moving aliases


@_registry_errors
def move_alias(
    name: str,
    alias: str,
    version: int,
    *,
    expected: int | None,
    by: str,
    reason: str,
    run_id: str | None = None,
) -> int | None:
    """Compare-and-set: point ``alias`` of ``name`` at ``version`` only if it still points at
    ``expected`` (None: not set), the version that was evaluated against; the move is
    recorded with who made it (``by``), why, and the run that decided it.

    Returns None when the alias points at ``version`` (moved, or already there), else the
    version it points at now (it moved since it was read; -1 when it was removed)."""
    _check_alias(alias)
    with _registry_lock():
        current = alias_version(name, alias)
        if current != expected:
            return -1 if current is None else current
        if current != version:
            _set_and_record(
                client(), name, alias, current, version, by=by, reason=reason, run_id=run_id
            )
        return None


@_registry_errors
def set_alias(
    name: str,
    alias: str,
    version: int,
    *,
    by: str | None = None,
    reason: str = "set through quarry.tracking.set_alias",
) -> None:
    """Point ``alias`` of registered model ``name`` at ``version`` whatever it points at now
    (recorded like every move; ``by`` defaults to the OS user)."""
    _check_alias(alias)
    with _registry_lock():
        current = alias_version(name, alias)
        if current != version:
            _set_and_record(
                client(), name, alias, current, version, by=by, reason=reason, run_id=None
            )


@_registry_errors
def promote(
    name: str,
    version: int,
    *,
    alias: str = DEFAULT_ALIAS,
    by: str | None = None,
    reason: str = "",
    expected: int | Literal["any"] | None = "any",
) -> AliasEvent | None:
    """A person's promotion: point ``alias`` of ``name`` at ``version``.

    ``expected``: the version the person saw the alias point at (None: not set); if it
    moved since, nothing changes and ``ConflictError`` says where it points now. "any"
    moves it from wherever it is. Returns the recorded move, or None when the alias already
    pointed at ``version``.

    Raises UsageError for an unknown model, version or a reserved alias name.
    """
    _check_alias(alias)
    registry = client()
    _model(registry, name)
    _check_version(registry, name, version)
    with _registry_lock():
        current = alias_version(name, alias)
        if expected != "any" and current != expected:
            now = "is not set" if current is None else f"now points at version {current}"
            was = "it to be unset" if expected is None else f"version {expected}"
            raise ConflictError(
                f"the {alias} of {name} {now} (expected {was}): it moved since it was read; "
                f"nothing changed: check quarry models show {name} and decide again"
            )
        if current == version:
            return None
        return _set_and_record(
            registry, name, alias, current, version, by=by, reason=reason, run_id=None
        )


@_registry_errors
def rollback(
    name: str, *, alias: str = DEFAULT_ALIAS, by: str | None = None, reason: str = ""
) -> AliasEvent:
    """Move ``alias`` back to the version it pointed at before its last recorded move; the
    rollback is a move too (a second rollback undoes the first).

    Raises UsageError when the model or alias does not exist, the alias was never moved
    from an earlier version, was moved outside Quarry since its last recorded move, or that
    earlier version was deleted.
    """
    registry = client()
    with _registry_lock():
        model = _model(registry, name)
        aliases = _aliases(model)
        if alias not in aliases:
            raise UsageError(f"model {name} has no alias {alias!r} ({_alias_list(aliases)})")
        current = aliases[alias]
        moves = [e for e in _events(name, model.tags) if e.alias == alias]
        if not moves:
            raise UsageError(
                f"the {alias} of {name} (version {current}) has no recorded move to roll back "
                f"(it was set outside Quarry): promote the version you want with "
                f"quarry models promote {name} VERSION"
            )
        last = moves[-1]
        if last.to_version != current:
            raise UsageError(
                f"the {alias} of {name} points at version {current} but its last recorded "
                f"move went to version {last.to_version} (it was moved outside Quarry): "
                f"promote the version you want with quarry models promote {name} VERSION"
            )
        if last.from_version is None:
            raise UsageError(
                f"the last move of the {alias} of {name} (#{last.number}, to version "
                f"{current}) was its first: no earlier version to return to"
            )
        _check_version(
            registry,
            name,
            last.from_version,
            f", where the {alias} pointed before move #{last.number}",
        )
        why = reason or f"rollback of move #{last.number}"
        return _set_and_record(
            registry, name, alias, current, last.from_version, by=by, reason=why, run_id=None
        )


@_registry_errors
def alias_history(name: str, alias: str | None = None) -> list[AliasEvent]:
    """Every recorded move of ``name``'s aliases (or of ``alias`` only), oldest first."""
    events = _events(name, _model(client(), name).tags)
    return [e for e in events if alias is None or e.alias == alias]


# --------------------------------------------------------------------- describing models


def _run(registry: MlflowClient, run_id: str | None) -> Run | None:
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return registry.get_run(run_id)
    except MlflowException:  # the run was deleted: the version stays
        return None


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _gate(tags: Mapping[str, str]) -> dict[str, str] | None:
    found = {k.removeprefix(GATE_PREFIX): v for k, v in tags.items() if k.startswith(GATE_PREFIX)}
    return found or None


def _version_info(
    registry: MlflowClient, version: ModelVersion, aliases: Mapping[str, int]
) -> VersionInfo:
    run = _run(registry, version.run_id)
    tags = run.data.tags if run else {}
    params = run.data.params if run else {}
    created = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC)
    text = (version.tags or {}).get(METADATA_TAG)
    return VersionInfo(
        version=int(version.version),
        created=created.isoformat(timespec="seconds"),
        run_id=version.run_id or None,
        model_type=tags.get("quarry.model_type"),
        features=_int(tags.get("quarry.columns")) or _int(params.get("features")),
        aliases=[a for a, v in aliases.items() if v == int(version.version)],
        metrics=dict(run.data.metrics) if run else {},
        metadata=decode(version.name, int(version.version), text) if text else None,
        gate=_gate(tags),
    )


@_registry_errors
def describe_model(name: str) -> ModelDetail:
    """Registered model ``name``: every version with its run's model type, feature count,
    metrics and its metadata, its aliases and their history."""
    registry = client()
    model = _model(registry, name)
    aliases = _aliases(model)  # (a search of versions leaves their aliases out)
    return ModelDetail(
        name=name,
        description=model.description or "",
        aliases=aliases,
        versions=[_version_info(registry, v, aliases) for v in _versions(registry, name)],
        history=_events(name, model.tags),
        project=model.tags.get(PROJECT_TAG),
    )


@_registry_errors
def list_models(alias: str = DEFAULT_ALIAS) -> list[ModelSummary]:
    """Every registered model: its latest version, aliases, and the key figures
    (``KEY_FIGURES``) of the run of the version ``alias`` points at, when it has them."""
    registry = client()
    out = []
    for name in _model_names(registry):
        model = registry.get_registered_model(name)
        aliases = _aliases(model)
        versions = _versions(registry, name)
        champion = aliases.get(alias)
        figures: dict[str, float] = {}
        if champion is not None:
            held = next((v for v in versions if int(v.version) == champion), None)
            run = _run(registry, held.run_id if held else None)
            metrics = run.data.metrics if run else {}
            figures = {k: metrics[k] for k in KEY_FIGURES if k in metrics}
        events = _events(name, model.tags)
        out.append(
            ModelSummary(
                name=name,
                latest_version=int(versions[0].version) if versions else None,
                versions=len(versions),
                aliases=aliases,
                champion=champion,
                figures=figures,
                last_move=events[-1] if events else None,
                project=model.tags.get(PROJECT_TAG),
            )
        )
    return out
