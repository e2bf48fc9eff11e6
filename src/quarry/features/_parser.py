"""Parse Qlib's expression notation into ``Expr`` trees.

Precedence follows Python's, since Qlib evaluates its expressions as Python: comparisons
bind loosest, then ``|``, then ``&``, then ``+ -``, then ``* /``, then unary minus. A chained
comparison (``a < b < c``) is refused rather than given Python's surprising meaning.
Errors point at the offending position with a caret. Trees are limited in depth and size
(``MAX_DEPTH``, ``MAX_NODES``), checked while parsing.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from quarry.exceptions import ExpressionError
from quarry.features._expr import MAX_DEPTH, MAX_NODES, Expr, F, Num, Text
from quarry.features._registry import OPERATORS

__all__ = ["parse"]

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<field>\$[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<str>\"[^\"]*\"|'[^']*')"
    r"|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<op>>=|<=|==|!=|[-+*/()<>,&|]))"
)
_COMPARE = {">": "Gt", ">=": "Ge", "<": "Lt", "<=": "Le", "==": "Eq", "!=": "Ne"}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _tokens(text: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            at = len(text) - len(text[pos:].lstrip())
            raise _caret(text, at, f"unexpected character {text[at]!r}")
        kind = m.lastgroup or ""
        out.append(_Tok(kind, m.group(kind), m.start(kind)))
        pos = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


# Binary operators by text: the node and how tightly it binds (comparisons loosest).
_BINARY = {
    **{text: (op, 1) for text, op in _COMPARE.items()},
    "|": ("Or", 2),
    "&": ("And", 3),
    "+": ("Add", 4),
    "-": ("Sub", 4),
    "*": ("Mul", 5),
    "/": ("Div", 5),
}


class _Parser:
    """Operators within one level of parentheses are combined without recursion (operator
    precedence on a stack); only a parenthesis or a call recurses, at most ``MAX_DEPTH``
    deep, so no text can exhaust Python's recursion limit."""

    def __init__(self, text: str, name: str | None) -> None:
        self.text = text
        self.name = name
        self.toks = _tokens(text)
        self.i = 0
        self.nesting = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self, text: str) -> bool:
        if self.tok.kind == "op" and self.tok.text == text:
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.take(text):
            got = self.tok.text or "the end"
            raise self.fail(f"expected {text!r}, found {got!r}")

    def fail(self, message: str, pos: int | None = None) -> ExpressionError:
        where = self.tok.pos if pos is None else pos
        return _caret(self.text, where, message, self.name)

    def too_big(self, problem: str, pos: int) -> ExpressionError:
        """A one-line error for an expression beyond the limits (no caret: the text can be
        long), saying where and what the limit is."""
        what = f"{self.name}: " if self.name else ""
        shown = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return ExpressionError(
            f"{what}the expression {problem} at character {pos + 1:,} of {shown!r}; "
            "write it as several shorter features"
        )

    def node(self, op: str, args: tuple[Expr, ...], pos: int) -> Expr:
        expr = Expr(op, args)
        if expr.depth > MAX_DEPTH:
            raise self.too_big(f"goes deeper than the limit of {MAX_DEPTH} levels", pos)
        if expr.size > MAX_NODES:
            raise self.too_big(f"grows beyond the limit of {MAX_NODES:,} nodes", pos)
        return expr

    def parse(self) -> Expr:
        expr = self.expression()
        if self.tok.kind != "end":
            raise self.fail(f"unexpected {self.tok.text!r}")
        return expr

    def expression(self) -> Expr:
        """Operands joined by binary operators, by precedence, left to right; a chained
        comparison (``a < b < c``) is refused."""
        operands = [self.operand()]
        pending: list[tuple[str, int, int]] = []  # operator, precedence, position
        compared = False

        def reduce() -> None:
            op, _, pos = pending.pop()
            right = operands.pop()
            operands.append(self.node(op, (operands.pop(), right), pos))

        while self.tok.kind == "op" and self.tok.text in _BINARY:
            op, level = _BINARY[self.tok.text]
            if level == 1:
                if compared:
                    raise self.fail("chained comparison: combine two comparisons with &")
                compared = True
            while pending and pending[-1][1] >= level:
                reduce()
            pending.append((op, level, self.tok.pos))
            self.i += 1
            operands.append(self.operand())
        while pending:
            reduce()
        return operands[0]

    def operand(self) -> Expr:
        """Signs, then a field, number, text, call or parenthesized expression."""
        signs: list[int] = []
        while self.tok.kind == "op" and self.tok.text in "+-":
            if self.tok.text == "-":
                signs.append(self.tok.pos)
            self.i += 1
        expr = self.primary()
        for pos in reversed(signs):
            # A negative number is a number, so "Ref($close, -1)" holds Num(-1).
            expr = Num(-expr.value) if expr.op == "#" else self.node("Neg", (expr,), pos)
        return expr

    def primary(self) -> Expr:
        tok = self.tok
        if tok.kind == "num":
            self.i += 1
            return Num(float(tok.text))
        if tok.kind == "field":
            self.i += 1
            return F(tok.text[1:])
        if tok.kind == "str":  # an instrument code, as in Mask($close, "SH000300")
            self.i += 1
            return Text(tok.text[1:-1])
        if tok.kind == "name":
            return self.call()
        if self.take("("):
            self.enter(tok.pos)
            inner = self.expression()
            self.expect(")")
            self.nesting -= 1
            return inner
        got = tok.text or "the end"
        raise self.fail(f"expected a field, number or operator, found {got!r}")

    def enter(self, pos: int) -> None:
        """One more level of parentheses (a group or a call's arguments)."""
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise self.too_big(f"nests deeper than the limit of {MAX_DEPTH} levels", pos)

    def call(self) -> Expr:
        tok = self.tok
        spec = OPERATORS.get(tok.text)
        if spec is None:
            close = difflib.get_close_matches(tok.text, list(OPERATORS), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise self.fail(f"unknown operator {tok.text!r}{hint}")
        self.i += 1
        self.expect("(")
        self.enter(tok.pos)
        args: list[Expr] = []
        if not self.take(")"):
            args.append(self.expression())
            while self.take(","):
                args.append(self.expression())
            self.expect(")")
        self.nesting -= 1
        if not spec.min_args <= len(args) <= spec.max_args:
            want = (
                str(spec.min_args)
                if spec.min_args == spec.max_args
                else f"{spec.min_args}-{spec.max_args}"
            )
            raise self.fail(f"{spec.name} takes {want} arguments, not {len(args)}", tok.pos)
        return self.node(spec.name, tuple(args), tok.pos)


def _caret(text: str, pos: int, message: str, name: str | None = None) -> ExpressionError:
    """A two-line error: the message with the expression, and a caret under the position."""
    head = f"{name}: {message}: " if name else f"{message}: "
    return ExpressionError(f"{head}{text}\n{' ' * (len(head) + pos)}^")


def parse(text: str, *, name: str | None = None) -> Expr:
    """Parse an expression such as ``Mean($close, 5) / $close``.

    Raises ExpressionError naming the position (with a caret) and, for an unknown operator,
    the closest valid one; ``name`` (e.g. "feature 'MA5'") starts the message. An expression
    more than ``MAX_DEPTH`` levels deep or of more than ``MAX_NODES`` nodes is refused in one
    line, before it can exhaust the recursion limit of any later pass.
    """
    return _Parser(text, name).parse()
