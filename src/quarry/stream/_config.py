"""The stream's config file: one strict YAML document, checked whole before anything connects.

::

    broker: nats://127.0.0.1:4222     # or redis://127.0.0.1:6379/0, memory://NAME
    durable: live                     # the consumer's name: a restart resumes after its acks
    subjects:
      bars: md.bars                   # in: snapshots (Arrow IPC) or single bars (JSON)
      scores: live.scores             # out, each message one bar's rows (Arrow IPC)
      positions: live.positions
      orders: live.orders
      features: live.features         # optional: every feature of every bar
      dead_letter: live.dead          # malformed or late messages, with the reason
    model: alpha@champion             # follows the alias, as serving does; or leave it out and
    features: alpha158                #   give features (a set's name or NAME: EXPR)
    universe: [AAPL, MSFT]            # optional: only these instruments
    instruments: 16000                # optional: room for the state made at start (default:
                                      #   the universe's size, or grown as instruments come)
    schedule: bar                     # score every bar, every N seconds ("30s", "5m"), or at
                                      #   bars of given times of day ("close 15:59")
    strategy: {topk: 50, n_drop: 5}   # the workflow's TopK-Dropout: target positions, orders
    outputs: stream-out               # SQLite of outputs, the bars the state needs, metrics

An unknown key, a missing one or a bad value is one line naming its place and line.
"""

from __future__ import annotations

import re
from datetime import time as clock
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator

from quarry._yaml import StrictModel, load_yaml, read_file
from quarry.exceptions import UsageError

__all__ = ["Schedule", "Strategy", "StreamConfig", "Subjects", "load_stream_config"]

_SUBJECT = r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"


class Subjects(StrictModel):
    bars: str = Field(default="quarry.bars", pattern=_SUBJECT)
    scores: str = Field(default="quarry.scores", pattern=_SUBJECT)
    positions: str = Field(default="quarry.positions", pattern=_SUBJECT)
    orders: str = Field(default="quarry.orders", pattern=_SUBJECT)
    features: str | None = Field(default=None, pattern=_SUBJECT)
    dead_letter: str = Field(default="quarry.dead", pattern=_SUBJECT)


class Strategy(StrictModel):
    topk: int = Field(default=50, ge=1)
    n_drop: int = Field(default=5, ge=0)


class Schedule:
    """When to score: every bar, every ``seconds`` of bar time, or at bars whose time of day
    (UTC) is one of ``at``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.seconds: float | None = None
        self.at: tuple[clock, ...] = ()
        t = text.strip().lower()
        if t == "bar":
            return
        every = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|h)", t)
        if every:
            self.seconds = float(every.group(1)) * {"s": 1, "m": 60, "h": 3600}[every.group(2)]
            return
        close = re.fullmatch(r"close((?:\s+\d{1,2}:\d{2})+)", t)
        if close:
            self.at = tuple(clock.fromisoformat(f"{p:0>5}") for p in close.group(1).split())
            return
        raise ValueError(
            f"schedule {text!r}: write bar, an interval such as 30s or 5m, or close HH:MM"
        )


class StreamConfig(StrictModel):
    broker: str = "memory://default"
    durable: str = Field(default="quarry-stream", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    subjects: Subjects = Field(default_factory=Subjects)
    model: str | None = None
    features: str | dict[str, str] | None = None
    universe: list[str] | None = None
    # Room made at start for this many instruments' state (default: the universe's size, or
    # grown as instruments come). A market's first bar otherwise waits while the memory is
    # first touched: about a second for 16,000 instruments of Alpha158 on a small machine,
    # and the bars queued behind it wait too.
    instruments: int | None = Field(default=None, gt=0)
    schedule: str = "bar"
    strategy: Strategy = Field(default_factory=Strategy)
    outputs: str = "stream-out"
    # single bars of a time are gathered until a later time arrives, or none came for this long
    gather_seconds: float = Field(default=1.0, gt=0)

    @field_validator("features", mode="before")
    @classmethod
    def _features(cls, v: object) -> object:
        ok = isinstance(v, str) or (
            isinstance(v, dict) and all(isinstance(e, str) for e in v.values())
        )
        if v is not None and not ok:
            raise ValueError(
                "give a feature set's name (alpha158) or NAME: EXPR pairs; in a {...} "
                "mapping, quote an expression that holds a comma"
            )
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        Schedule(v)
        return v

    @field_validator("broker")
    @classmethod
    def _broker(cls, v: str) -> str:
        if not re.match(r"^(nats|redis|memory)://", v):
            raise ValueError(f"{v!r}: start it with nats://, redis:// or memory://")
        return v

    @model_validator(mode="after")
    def _something_to_compute(self) -> StreamConfig:
        if self.model is None and self.features is None:
            raise ValueError("give a model (NAME@ALIAS) or features (a set's name or NAME: EXPR)")
        return self

    @property
    def when(self) -> Schedule:
        return Schedule(self.schedule)


def load_stream_config(path: str | Path) -> StreamConfig:
    """Read and check a stream's config; a relative ``outputs`` is read from the file's
    folder. Raises UsageError with every problem, one line each, naming its place and line."""
    text = read_file(path, "stream config")
    document = load_yaml(text, str(path))
    if not isinstance(document.data, dict):
        raise UsageError(f"{path}: a stream config is a mapping (broker, subjects, model, ...)")
    try:
        config = StreamConfig.model_validate(document.data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            where = ".".join(str(p) for p in loc) or "the file"
            msg = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                msg = "unknown key"
            line = document.line(loc)
            problems.append(f"{path}: {where}: {msg}" + (f" (line {line})" if line else ""))
        raise UsageError("\n".join(problems)) from None
    if not Path(config.outputs).is_absolute():
        config = config.model_copy(update={"outputs": str(Path(path).parent / config.outputs)})
    return config
