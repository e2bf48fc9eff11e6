"""The job manifest: one YAML document describing a job, checked with pydantic before it is queued.

In the spirit of FfDL's manifest::

    name: train-lgb                 # letters, digits, - _ . (at most 100)
    description: nightly retrain
    project: research               # fair share is per project
    resources: {cpus: 4, memory: 16Gi, gpus: 0}
    data:
      - {dataset: cn_daily, mode: ro}
    run:
      workflow: examples/workflows/alpha158_lightgbm.yaml
      # or: command: [python, train.py], workdir: /srv/research
    env: {OMP_NUM_THREADS: "4"}
    retries: {max: 3, backoff: 30s, on: [lost, oom], memory_multiplier_on_oom: 1.5}
                                    # (default: 1s, on [lost], 2 after an oom)
    timeout: 2h
    priority: 10                    # -100..100, higher first
    labels: {team: alpha}

Every section is strict: an unknown key is an error naming the key and where it is. A bad
manifest raises ``ManifestError``, whose ``problems`` (one ``{path, message}`` per problem,
``path`` like ``resources.cpus`` or ``data[0].mode``) the REST API returns with a 422, and
whose message is the one line the CLI prints. Memory is stored as whole bytes and durations
as seconds, so ``Manifest.to_json`` is what the job database keeps.

The YAML is read by ``quarry._yaml.load_yaml``, the loader of every file a user writes: YAML
1.2's core schema (only ``true``/``false`` are booleans, so ``on:`` under ``retries`` stays the
key ``"on"`` rather than PyYAML's ``True``, and ``yes`` is text), a key given twice is an error,
and each problem names its line.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from quarry._yaml import StrictModel, load_yaml, read_file
from quarry.exceptions import ManifestError, Problem, UsageError, YamlError

__all__ = [
    "DataMount",
    "Manifest",
    "ManifestError",
    "Problem",
    "Resources",
    "Retries",
    "Run",
    "check_capacity",
    "format_memory",
    "load_manifest",
    "manifest_from_dict",
    "manifest_from_yaml",
    "parse_duration",
    "parse_memory",
    "readable_memory",
    "validation_problems",
]


# -- sizes and durations ---------------------------------------------------------------------

_BINARY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
_UNITS: dict[str, int] = {
    "": 1,
    "B": 1,
    "K": 10**3,
    **_BINARY,
    **_DECIMAL,
    **{f"{u}B": n for u, n in _BINARY.items()},
    **{f"{u}B": n for u, n in _DECIMAL.items()},
    "KB": 10**3,
}
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_SIZE = re.compile(rf"({_NUMBER.pattern})\s*([A-Za-z]*)")
_SIZE_HELP = (
    "write a number of bytes or a number with a unit, e.g. 4Gi, 512Mi, 1.5Gi, 100M "
    "(Ki Mi Gi Ti Pi are powers of 1024; k M G T P powers of 1000)"
)


def parse_memory(value: str | int) -> int:
    """A memory size in whole bytes.

    Parameters
    ----------
    value : str or int
        An int is a number of bytes; text is a number with an optional unit, Kubernetes
        style: ``Ki Mi Gi Ti Pi`` are powers of 1024, ``k M G T P`` powers of 1000 (a trailing
        ``B``, as in ``GiB`` or ``MB``, is allowed). A size with a unit that comes to a
        fraction of a byte rounds up.

    Returns
    -------
    int
        The size in bytes, never negative.

    Raises
    ------
    ValueError
        For a negative size, a bool, an unknown unit or anything that is not a size.

    Examples
    --------
    >>> parse_memory("4Gi"), parse_memory("100M"), parse_memory("1.5Ki"), parse_memory(2048)
    (4294967296, 100000000, 1536, 2048)
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a memory size; {_SIZE_HELP}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; a memory size is at least 0 bytes")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} is not a memory size; {_SIZE_HELP}")
        if not value.is_integer():
            raise ValueError(
                f"{value!r} is not a whole number of bytes; give a unit, e.g. {value:g}Gi"
            )
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a memory size; {_SIZE_HELP}")
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"{value!r} is negative; a memory size is at least 0 bytes")
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{value!r} is not a memory size; {_SIZE_HELP}")
    number, unit = match.groups()
    if unit not in _UNITS:
        base = unit.lower().removesuffix("b").removesuffix("i")
        if base in ("k", "m", "g", "t", "p"):
            # "4gb", "512m" (Docker's MiB, Kubernetes' milli-bytes): say both readings
            close = [f"{base.upper()}i", "k" if base == "k" else base.upper()]
        else:
            close = difflib.get_close_matches(unit, [u for u in _UNITS if u], n=2)
        hint = f" (did you mean {' or '.join(repr(number + c) for c in close)}?)" if close else ""
        raise ValueError(f"{value!r}: unknown unit {unit!r}{hint}; {_SIZE_HELP}")
    size = Fraction(number) * _UNITS[unit]
    if _UNITS[unit] == 1 and size.denominator != 1:
        raise ValueError(f"{value!r} is not a whole number of bytes; give a unit, e.g. {number}Gi")
    return math.ceil(size)


def _quotient_text(n: int, unit: int) -> str | None:
    """``n / unit`` with at most two decimals, or None where it needs more."""
    hundredths, rest = divmod(n * 100, unit)
    if rest:
        return None
    whole, frac = divmod(hundredths, 100)
    return f"{whole}.{frac:02d}".rstrip("0").rstrip(".")


def format_memory(n: int) -> str:
    """The shortest text ``parse_memory`` reads back as exactly ``n`` bytes.

    Binary units win ties, and a unit is used only with at most two decimals.

    Examples
    --------
    >>> format_memory(4 * 1024**3), format_memory(1536 * 1024**2), format_memory(10**9)
    ('4Gi', '1.5Gi', '1G')
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{n!r} is not a number of bytes")
    best = str(n)
    for suffix, unit in [*_BINARY.items(), *_DECIMAL.items()]:
        text = _quotient_text(n, unit) if n >= unit else None
        if text is not None and len(text) + len(suffix) < len(best):
            best = text + suffix
    return best


def readable_memory(n: int) -> str:
    """A size for people: binary units with a space and at most one decimal.

    Examples
    --------
    >>> readable_memory(4 * 1024**3), readable_memory(1536 * 1024**2), readable_memory(1000)
    ('4 GiB', '1.5 GiB', '1000 B')
    """
    for suffix in ("Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if n >= unit:
            return f"{n / unit:.1f}".removesuffix(".0") + f" {suffix}B"
    return f"{n} B"


_DURATION_PART = re.compile(rf"({_NUMBER.pattern})\s*(ms|s|m|h|d)\s*")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_HELP = "write seconds or a duration such as 90s, 30m, 1h, 1h30m (units ms s m h d)"


def parse_duration(value: str | float) -> float:
    """A duration in seconds.

    Parameters
    ----------
    value : str, int or float
        A number is seconds; text is seconds (``"90"``) or one or more number-unit parts with
        the units ``ms s m h d``, largest first or not: ``"30s"``, ``"1.5h"``, ``"1h30m"``.

    Raises
    ------
    ValueError
        For a negative duration, a bool, or text that is not a duration.

    Examples
    --------
    >>> parse_duration("1h30m"), parse_duration("2m"), parse_duration(45)
    (5400.0, 120.0, 45.0)
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; {_DURATION_HELP}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ValueError(f"{value!r} is negative; a duration is at least 0 seconds")
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif re.fullmatch(f"(?:{_DURATION_PART.pattern})+", text):
            seconds = sum(float(n) * _SECONDS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise ValueError(f"{value!r} is not a duration; {_DURATION_HELP}")
    else:
        raise ValueError(f"{value!r} is not a duration; {_DURATION_HELP}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration of at least 0 seconds; {_DURATION_HELP}")
    return seconds


# -- the models ------------------------------------------------------------------------------


def _no_bool(value: Any) -> Any:
    # pydantic's lax mode reads True as 1; in a manifest that is a typo, not a count.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return value


_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}")


def _slug(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name: use letters, digits, '-', '_' and '.', starting "
            "with a letter or digit, at most 100 characters"
        )
    return value


def _command(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError(
            f"command is a list of arguments, e.g. [python, train.py], not the text {value!r}"
        )
    return value


Slug = Annotated[str, AfterValidator(_slug)]
Memory = Annotated[int, BeforeValidator(parse_memory), Field(gt=0)]
Seconds = Annotated[float, BeforeValidator(parse_duration)]
Number = Annotated[float, BeforeValidator(_no_bool), Field(allow_inf_nan=False)]
Count = Annotated[int, BeforeValidator(_no_bool)]
NonEmpty = Annotated[str, Field(min_length=1)]


class Resources(StrictModel):
    """What one attempt of the job needs: ``memory`` in bytes (written ``"4Gi"`` and so on)."""

    cpus: Annotated[Number, Field(gt=0, description="CPUs, fractions allowed.")] = 1.0
    memory: Memory = Field(
        default=1 << 30,
        description="Memory: bytes, or a size such as `4Gi` or `512Mi` (Ki Mi Gi Ti Pi are "
        "powers of 1024, k M G T P powers of 1000).",
    )
    gpus: Annotated[Count, Field(ge=0, description="GPUs.")] = 0


class DataMount(StrictModel):
    """A dataset the job reads (``ro``) or writes (``rw``)."""

    dataset: NonEmpty = Field(description="The dataset's name, listed once per job.")
    mode: Literal["ro", "rw"] = Field(default="ro", description="Read only, or read and write.")


class Run(StrictModel):
    """What to run: a workflow file, or a command (a list of arguments) in ``workdir``."""

    workflow: NonEmpty | None = Field(
        default=None,
        description="A workflow file, run as `quarry run FILE` into the job's own folder.",
    )
    command: Annotated[list[NonEmpty], BeforeValidator(_command), Field(min_length=1)] | None = (
        Field(default=None, description="A command as a list of arguments, e.g. `[python, x.py]`.")
    )
    workdir: NonEmpty | None = Field(
        default=None,
        description="The folder `command` runs in; default the server's working directory.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> Run:
        if self.workflow is None and self.command is None:
            raise ValueError("give either workflow or command")
        if self.workflow is not None and self.command is not None:
            raise ValueError("give either workflow or command, not both")
        if self.workflow is not None and self.workdir is not None:
            raise ValueError("workdir goes with command, not with workflow")
        return self


RetryOn = Literal["failed", "oom", "lost"]


def _only_lost() -> list[RetryOn]:
    return ["lost"]


class Retries(StrictModel):
    """How often, after what, and how to retry: ``backoff`` seconds, doubling each attempt."""

    max: Annotated[Count, Field(ge=0, description="Retries after the first attempt.")] = 0
    backoff: Annotated[
        Seconds,
        Field(
            ge=0,
            description="Wait before the first retry, doubling each time: seconds or a "
            "duration such as `30s`, `5m`, `1h30m`.",
        ),
    ] = 1.0
    on: list[RetryOn] = Field(
        default_factory=_only_lost,
        description="The endings retried, each listed once: `failed` (non-zero exit), `oom` "
        "(out of memory), `lost` (a dead process or worker).",
    )
    # A retry after an OOM with the same memory fails the same way: twice as much by default,
    # never more than the largest worker has (the store caps it).
    memory_multiplier_on_oom: Annotated[
        Number,
        Field(
            ge=1,
            description="Memory of a retry after an OOM, times the last attempt's, at most the "
            "largest worker's; only with `oom` in `on`.",
        ),
    ] = 2.0

    @field_validator("on")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        twice = sorted({v for v in value if value.count(v) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed more than once")
        return value

    @field_validator("memory_multiplier_on_oom")
    @classmethod
    def _needs_oom(cls, value: float, info: ValidationInfo) -> float:
        on = info.data.get("on")
        default = cls.model_fields["memory_multiplier_on_oom"].default  # a stored manifest's
        if value != default and on is not None and "oom" not in on:
            raise ValueError(
                f"{value:g} has no effect unless retries.on includes oom (e.g. on: [lost, oom])"
            )
        return value


class Manifest(StrictModel):
    """A job as its owner described it; see the module docstring for the YAML.

    Examples
    --------
    >>> m = manifest_from_dict({"name": "nightly", "run": {"command": ["python", "x.py"]},
    ...                         "resources": {"memory": "4Gi"}, "timeout": "1h"})
    >>> m.resources.memory, m.timeout, Manifest.from_json(m.to_json()) == m
    (4294967296, 3600.0, True)
    """

    name: Slug = Field(
        description="The job's name: letters, digits, `-`, `_` and `.`, starting with a letter "
        "or digit, at most 100 characters."
    )
    description: str = Field(default="", description="Free text for people.")
    project: Slug = Field(
        default="default",
        description="The project the job belongs to (fair share and permissions are per "
        "project); a name like `name`.",
    )
    resources: Resources = Field(
        default_factory=Resources, description="What one attempt needs to be admitted."
    )
    data: list[DataMount] = Field(default_factory=list, description="Datasets the job uses.")
    run: Run = Field(description="What to run: a workflow or a command.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables added to the attempt's (names: letters, digits and "
        "`_`, not starting with a digit; values quoted text). The attempt also gets an "
        "allow-list of the server's environment and its project's variables (`quarry projects "
        "env`), which a manifest cannot override.",
    )
    retries: Retries = Field(default_factory=Retries, description="When and how to retry.")
    timeout: Annotated[Seconds, Field(gt=0)] | None = Field(
        default=None,
        description="An attempt running longer is stopped: seconds or a duration such as "
        "`2h`; default no timeout.",
    )
    priority: Annotated[Count, Field(ge=-100, le=100, description="Higher runs first.")] = 0
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Free key-value tags (keys: letters, digits, `-`, `_`, `.`, `/`, at most "
        "63 characters).",
    )

    @field_validator("data")
    @classmethod
    def _each_dataset_once(cls, value: list[DataMount]) -> list[DataMount]:
        names = [d.dataset for d in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"dataset {', '.join(map(repr, twice))} is listed more than once")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not _ENV_NAME.fullmatch(k)]
        if bad:
            raise ValueError(
                f"{', '.join(map(repr, bad))}: an environment variable name is letters, digits "
                "and _, not starting with a digit"
            )
        nul = [k for k, v in value.items() if "\0" in v]
        if nul:
            raise ValueError(f"{', '.join(nul)}: a value holds a NUL character, which no "
                             "process can receive; remove it")  # fmt: skip
        return value

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not _LABEL_KEY.fullmatch(k)]
        if bad:
            raise ValueError(
                f"{', '.join(map(repr, bad))}: a label key is letters, digits, '-', '_', '.' "
                "and '/', starting with a letter or digit, at most 63 characters"
            )
        return value

    def to_json(self) -> str:
        """The manifest as JSON, as the job database stores it (memory in bytes, durations in
        seconds); ``from_json`` reads it back equal."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "stored manifest") -> Manifest:
        """Read back what ``to_json`` wrote; a problem raises ``ManifestError``."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ManifestError([_problem("", f"not valid JSON ({exc})")], source) from exc
        return manifest_from_dict(data, source)


# -- errors ----------------------------------------------------------------------------------


def _problem(path: str, message: str) -> Problem:
    return {"path": path, "message": message}


def _path(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model whose keys are valid where ``loc`` points (list indexes are stepped over)."""

    def inner(annotation: Any) -> type[BaseModel] | None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        return next((m for m in map(inner, get_args(annotation)) if m is not None), None)

    model: type[BaseModel] | None = Manifest
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model is not None else None
        model = inner(field.annotation) if field is not None else None
    return model


_SHOULD = re.compile(r"(?:Input|List|String|Value|Dictionary|Tuple|Object) should")


def validation_problems(error: ValidationError) -> list[Problem]:
    """pydantic's errors for a manifest as ``{path, message}`` items, each message naming its
    place and, where it helps, the offending value and what to write instead."""
    problems = []
    for e in error.errors():
        loc = tuple(e["loc"])
        path, msg, value = _path(loc), e["msg"], e.get("input")
        if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            key, where = str(loc[-1]), _path(loc[:-1])
            model = _model_at(loc[:-1])
            known = list(model.model_fields) if model is not None else []
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            place = f"in {where}" if where else "at the top level"
            text = f"unknown key {key!r} {place}{hint}; valid keys there: {', '.join(known)}"
        elif e["type"] == "missing":
            text = f"{path} is required"
            if path == "run":
                text += " (run: {workflow: FILE} or run: {command: [ARG, ...]})"
        elif e["type"] in ("value_error", "assertion_error"):
            msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
            text = f"{path}: {msg}" if path else msg
        elif e["type"] == "string_type" and isinstance(value, int | float | bool):
            text = f"{path} should be text, got {value!r}; quote it in YAML: '{value}'"
        else:
            msg = msg.replace(" after validation", "")
            if _SHOULD.match(msg):
                text = f"{path} should{msg.split(' should', 1)[1]}"
            else:
                text = f"{path}: {msg[:1].lower()}{msg[1:]}"
            shown = repr(value)
            if not isinstance(value, Mapping) and len(shown) <= 60:
                text += f" (got {shown})"
        problems.append(_problem(path, text))
    return problems


# -- reading ---------------------------------------------------------------------------------


def manifest_from_dict(data: object, source: str = "manifest") -> Manifest:
    """Check a manifest given as plain data (parsed YAML or JSON).

    Raises
    ------
    ManifestError
        Naming ``source`` and listing every problem found.
    """
    if not isinstance(data, Mapping):
        kind = "nothing" if data is None else f"a {type(data).__name__}"
        raise ManifestError(
            [_problem("", f"a manifest is a mapping (name, resources, run, ...), got {kind}")],
            source,
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(validation_problems(exc), source) from exc


def manifest_from_yaml(text: str, source: str = "manifest") -> Manifest:
    """Parse and check a manifest's YAML text (read by ``quarry._yaml.load_yaml``: YAML 1.2's
    booleans, no key twice); a YAML problem names the line and column, and every validation
    problem ends with the line it is on."""
    try:
        document = load_yaml(text, source)
    except YamlError as exc:
        where = f"line {exc.line}, column {exc.column}: " if exc.line is not None else ""
        raise ManifestError([_problem("", where + exc.problem)], source) from exc
    try:
        return manifest_from_dict(document.data, source)
    except ManifestError as exc:
        problems = []
        for p in exc.problems:
            line = document.line(_loc(p["path"])) if p["path"] else None
            problems.append(_problem(p["path"], p["message"] + (f" (line {line})" if line else "")))
        raise ManifestError(problems, source) from exc


def _loc(path: str) -> tuple[str | int, ...]:
    """``data[0].mode`` as pydantic's location, ``("data", 0, "mode")``."""
    return tuple(
        int(index) if index else key for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path)
    )


def load_manifest(path: str | Path) -> Manifest:
    """Read and check a manifest file.

    Raises
    ------
    ManifestError
        Whose message starts with the file, e.g. ``job.yaml: unknown key 'cpu' in resources
        (did you mean 'cpus'?); valid keys there: cpus, memory, gpus``.
    """
    try:
        text = read_file(path, "manifest")
    except UsageError as exc:
        raise ManifestError([_problem("", str(exc).split(": ", 1)[1])], str(path)) from None
    return manifest_from_yaml(text, str(path))


def check_capacity(manifest: Manifest, capacity: Resources) -> None:
    """Reject a job no worker could ever run.

    Parameters
    ----------
    manifest : Manifest
        The job.
    capacity : Resources
        The largest worker's resources.

    Raises
    ------
    ManifestError
        With one problem per resource asked beyond ``capacity``, e.g. ``resources.memory 64Gi
        exceeds the largest worker's 16Gi``.
    """
    asked = manifest.resources
    requests = [
        ("cpus", asked.cpus, capacity.cpus, f"{asked.cpus:g}", f"{capacity.cpus:g}"),
        ("memory", asked.memory, capacity.memory,
         format_memory(asked.memory), format_memory(capacity.memory)),
        ("gpus", asked.gpus, capacity.gpus, str(asked.gpus), str(capacity.gpus)),
    ]  # fmt: skip
    problems = []
    for key, want, have, want_text, have_text in requests:
        if want > have:
            path = f"resources.{key}"
            text = (
                f"{path} {want_text}: no worker has any {key}"
                if have == 0
                else f"{path} {want_text} exceeds the largest worker's {have_text}"
            )
            problems.append(_problem(path, text))
    if problems:
        raise ManifestError(problems, f"job {manifest.name!r}")
