"""The root command's subcommands, each imported and built when it is first asked for.

Typer turns every command of an app into a Click command up front, reading each function's
signature, and the modules behind them import what they need at the top: a command that only
prints its help paid for all of them. Here the root group holds a table of where each
subcommand lives, and builds one when Click resolves its name (``quarry backtest ...`` builds
``backtest`` alone; ``quarry --help``, which lists them all, builds them all).

Typer's help option also defaults to None rather than False, which sends its value through
Typer's Pydantic-based coercion and imports Pydantic (60 ms here) on every command, for a
flag nobody gave: ``settle`` gives each built command's help option a False default.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, MutableMapping
from importlib import import_module
from typing import Any, ClassVar

import typer
import typer.main
from typer import core

__all__ = ["LazyGroup", "build", "lazy_group", "reflow", "reflow_help", "settle"]


def reflow(text: str) -> str:
    """Help text with each paragraph on one line, so that the terminal wraps it at its
    width (docstrings are wrapped at 100 columns by hand, which broke them mid-sentence in
    an 80-column terminal). A paragraph's indentation stays (examples are indented); one
    marked with click's \\b keeps its line breaks."""
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        if paragraph.startswith("\b"):
            paragraphs.append(paragraph)
            continue
        indent = paragraph[: len(paragraph) - len(paragraph.lstrip(" "))]
        paragraphs.append(indent + " ".join(line.strip() for line in paragraph.splitlines()))
    return "\n\n".join(paragraphs)


def reflow_help(typer_app: typer.Typer) -> None:
    """Reflow the help of every command and group of ``typer_app``, before Typer reads it."""
    for command in typer_app.registered_commands:
        text = command.help or inspect.getdoc(command.callback)
        if text:
            command.help = reflow(text)
    for group in typer_app.registered_groups:
        if group.typer_instance is None:
            continue
        info = group.typer_instance.info
        if isinstance(info.help, str):
            info.help = reflow(info.help)
        reflow_help(group.typer_instance)


def settle(command: Any) -> Any:
    """``command`` and every command under it with a help option whose default is False."""
    option = command.get_help_option(typer.Context(command))
    if option is not None and option.default is None:
        option.default = False
    children = getattr(command, "commands", {})
    for child in (children.built() if isinstance(children, _Commands) else children).values():
        settle(child)
    return command


def build(name: str, where: str) -> Any:
    """The Click command ``name`` from ``where``, "module:attribute": a Typer app (a group)
    or a function (one command)."""
    module, _, attribute = where.partition(":")
    target = getattr(import_module(module), attribute)
    if isinstance(target, typer.Typer):
        if isinstance(target.info.help, str):
            target.info.help = reflow(target.info.help)
        reflow_help(target)
        group = typer.main.get_group(target)
        group.name = name  # a Typer app knows the name it is added under only from its parent
        return settle(group)
    single = typer.Typer(add_completion=False)
    single.command(name)(target)
    reflow_help(single)
    return settle(typer.main.get_command(single))


class _Commands(MutableMapping[str, Any]):
    """A group's commands: those built already, and those built on first access."""

    def __init__(self, built: Mapping[str, Any], lazy: Mapping[str, str]) -> None:
        self._built = dict(built)
        self._lazy = dict(lazy)
        self._order = [*lazy, *(name for name in built if name not in lazy)]

    def built(self) -> dict[str, Any]:
        """The commands built so far."""
        return dict(self._built)

    def __getitem__(self, name: str) -> Any:
        if name not in self._built and name in self._lazy:
            try:
                self._built[name] = build(name, self._lazy[name])
            except KeyError as exc:  # Click's lookup would take it for "no such command"
                raise RuntimeError(f"command {name!r} could not be built: {exc!r}") from exc
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        if name not in self._order:
            self._order.append(name)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        self._order.remove(name)
        self._built.pop(name, None)
        self._lazy.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._order


class LazyGroup(core.TyperGroup):
    """A Typer group whose class attribute ``LAZY`` (name -> "module:attribute", in the
    order of the help) names subcommands built on first use."""

    LAZY: ClassVar[dict[str, str]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _Commands(self.commands, self.LAZY)
        settle(self)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # the names alone: nothing is built to list them


def lazy_group(table: Mapping[str, str]) -> type[LazyGroup]:
    """A ``LazyGroup`` class for the subcommands in ``table``."""
    return type("QuarryGroup", (LazyGroup,), {"LAZY": dict(table)})
