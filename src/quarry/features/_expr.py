"""Feature expressions: immutable, hashable, serializable trees in Qlib's notation.

An ``Expr`` is a node: a field (``$close``), a number, or an operator applied to arguments.
Arithmetic on expressions builds new expressions, as in Qlib and polars, so
``Ref(F("close"), 1) / F("close") - 1`` and the parsed text ``Ref($close, 1)/$close - 1``
give equal, equally hashed trees. ``str(expr)`` is the canonical text, which parses back to
an equal tree; ``expr.key`` hashes that text, for caches.

Trees are limited to ``MAX_DEPTH`` levels and ``MAX_NODES`` nodes (``check_limits``): every
pass over a tree (text, hashing, planning) recurses along its depth, and its canonical text
grows with its node count, so a tree beyond either limit is refused before any such pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Union

from quarry.exceptions import ExpressionError

__all__ = ["MAX_DEPTH", "MAX_NODES", "Expr", "F", "Num", "Text", "call", "check_limits"]

# Far beyond any real feature (Alpha158's deepest is a few levels) and well within Python's
# recursion limit for the recursive passes over a tree.
MAX_DEPTH = 100
MAX_NODES = 10_000

Operand = Union["Expr", float, int]

# Infix spellings of the binary operators (Qlib's class names on the left).
INFIX = {
    "Add": "+",
    "Sub": "-",
    "Mul": "*",
    "Div": "/",
    "Gt": ">",
    "Ge": ">=",
    "Lt": "<",
    "Le": "<=",
    "Eq": "==",
    "Ne": "!=",
    "And": "&",
    "Or": "|",
}


def _wrap(value: Operand) -> Expr:
    if isinstance(value, Expr):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"cannot use {value!r} in a feature expression: give a number or Expr")
    return Num(float(value))


@dataclass(frozen=True)
class Expr:
    """A node of a feature expression. Use ``F``, ``Num``, ``call`` or the parser to build."""

    op: str
    args: tuple[Expr, ...] = ()
    name: str = ""  # the field, for op == "$"
    value: float = 0.0  # the number, for op == "#"
    _hash: int = field(default=0, init=False, repr=False, compare=False)
    _depth: int = field(default=1, init=False, repr=False, compare=False)
    _size: int = field(default=1, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # From the children's, so that no pass over a deep tree is needed to know its shape.
        if self.args:
            object.__setattr__(self, "_depth", 1 + max(a._depth for a in self.args))
            object.__setattr__(self, "_size", 1 + sum(a._size for a in self.args))

    @property
    def depth(self) -> int:
        """Levels from this node to its deepest leaf (a field or number is 1)."""
        return self._depth

    @property
    def size(self) -> int:
        """Nodes in the tree, a shared subexpression counted at each use (as in its text)."""
        return self._size

    def __hash__(self) -> int:
        # Computed once: plans look nodes up in dicts all the time, and the generated hash
        # would walk the whole subtree on every lookup.
        if not self._hash:
            object.__setattr__(self, "_hash", hash((self.op, self.args, self.name, self.value)))
        return self._hash

    # -- text -------------------------------------------------------------------------------

    def __str__(self) -> str:
        if self.op == "$":
            return f"${self.name}"
        if self.op == "'":
            return f'"{self.name}"'
        if self.op == "#":
            v = self.value
            return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
        if self.op == "Neg":
            return f"(-{self.args[0]})"
        if self.op in INFIX:
            return f"({self.args[0]} {INFIX[self.op]} {self.args[1]})"
        return f"{self.op}({', '.join(str(a) for a in self.args)})"

    def __repr__(self) -> str:
        return f"Expr({str(self)!r})"

    @property
    def key(self) -> str:
        """A stable hash of the canonical text, for caches keyed by expression."""
        return hashlib.sha256(str(self).encode()).hexdigest()[:24]

    def walk(self) -> list[Expr]:
        """This node and every node below it, each once, children before parents."""
        seen: dict[Expr, None] = {}

        def visit(node: Expr) -> None:
            if node in seen:
                return
            for a in node.args:
                visit(a)
            seen[node] = None

        visit(self)
        return list(seen)

    # -- building ---------------------------------------------------------------------------

    def __bool__(self) -> bool:
        raise TypeError(
            "a feature expression has no truth value: combine conditions with & and |, "
            "and use If(cond, a, b) instead of Python's if/and/or"
        )

    def __add__(self, other: Operand) -> Expr:
        return Expr("Add", (self, _wrap(other)))

    def __radd__(self, other: Operand) -> Expr:
        return Expr("Add", (_wrap(other), self))

    def __sub__(self, other: Operand) -> Expr:
        return Expr("Sub", (self, _wrap(other)))

    def __rsub__(self, other: Operand) -> Expr:
        return Expr("Sub", (_wrap(other), self))

    def __mul__(self, other: Operand) -> Expr:
        return Expr("Mul", (self, _wrap(other)))

    def __rmul__(self, other: Operand) -> Expr:
        return Expr("Mul", (_wrap(other), self))

    def __truediv__(self, other: Operand) -> Expr:
        return Expr("Div", (self, _wrap(other)))

    def __rtruediv__(self, other: Operand) -> Expr:
        return Expr("Div", (_wrap(other), self))

    def __neg__(self) -> Expr:
        return Expr("Neg", (self,))

    def __gt__(self, other: Operand) -> Expr:
        return Expr("Gt", (self, _wrap(other)))

    def __ge__(self, other: Operand) -> Expr:
        return Expr("Ge", (self, _wrap(other)))

    def __lt__(self, other: Operand) -> Expr:
        return Expr("Lt", (self, _wrap(other)))

    def __le__(self, other: Operand) -> Expr:
        return Expr("Le", (self, _wrap(other)))

    def __and__(self, other: Operand) -> Expr:
        return Expr("And", (self, _wrap(other)))

    def __or__(self, other: Operand) -> Expr:
        return Expr("Or", (self, _wrap(other)))

    def eq(self, other: Operand) -> Expr:
        """``==`` (a method, since ``__eq__`` compares trees)."""
        return Expr("Eq", (self, _wrap(other)))

    def ne(self, other: Operand) -> Expr:
        """``!=`` (a method, since ``__ne__`` compares trees)."""
        return Expr("Ne", (self, _wrap(other)))


def check_limits(expr: Expr, what: str) -> None:
    """Refuse a tree deeper than ``MAX_DEPTH`` or larger than ``MAX_NODES``, naming ``what``
    (e.g. "feature 'MA5'"). Takes no pass over the tree, so it is safe on any tree."""
    if expr.depth > MAX_DEPTH:
        raise ExpressionError(
            f"{what}: the expression is {expr.depth:,} levels deep (each operator adds a "
            f"level above its arguments), more than the limit of {MAX_DEPTH} levels{_HOW}"
        )
    if expr.size > MAX_NODES:
        raise ExpressionError(
            f"{what}: the expression has {expr.size:,} nodes, more than the limit of "
            f"{MAX_NODES:,} nodes{_HOW}"
        )


_HOW = "; write it as several shorter features"


def F(name: str) -> Expr:
    """A field of the store: ``F("close")`` is ``$close``."""
    return Expr("$", name=name)


def Text(value: str) -> Expr:
    """A text argument, such as the instrument code of ``Mask($close, "SH000300")``."""
    if '"' in value:
        raise ValueError(f"a text argument cannot hold a double quote: {value!r}")
    return Expr("'", name=value)


def Num(value: float) -> Expr:
    """A number."""
    return Expr("#", value=float(value))


def call(op: str, *args: Operand) -> Expr:
    """An operator applied to arguments: ``call("Mean", F("close"), 5)``."""
    return Expr(op, tuple(_wrap(a) for a in args))
