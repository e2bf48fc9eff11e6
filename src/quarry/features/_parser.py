"""Parse Qlib's expression notation into ``Expr`` trees.

Precedence follows Python's, since Qlib evaluates its expressions as Python: comparisons
bind loosest, then ``|``, then ``&``, then ``+ -``, then ``* /``, then unary minus. A chained
comparison (``a < b < c``) is refused rather than given Python's surprising meaning.
Errors point at the offending position with a caret.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from quarry.exceptions import ExpressionError
from quarry.features._expr import Expr, F, Num, Text
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


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

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
        return _caret(self.text, self.tok.pos if pos is None else pos, message)

    def parse(self) -> Expr:
        expr = self.comparison()
        if self.tok.kind != "end":
            raise self.fail(f"unexpected {self.tok.text!r}")
        return expr

    def comparison(self) -> Expr:
        left = self.either()
        if self.tok.kind == "op" and self.tok.text in _COMPARE:
            op = _COMPARE[self.tok.text]
            self.i += 1
            left = Expr(op, (left, self.either()))
            if self.tok.kind == "op" and self.tok.text in _COMPARE:
                raise self.fail("chained comparison: combine two comparisons with &")
        return left

    def either(self) -> Expr:
        left = self.both()
        while self.take("|"):
            left = Expr("Or", (left, self.both()))
        return left

    def both(self) -> Expr:
        left = self.arith()
        while self.take("&"):
            left = Expr("And", (left, self.arith()))
        return left

    def arith(self) -> Expr:
        left = self.term()
        while self.tok.kind == "op" and self.tok.text in "+-":
            op = "Add" if self.tok.text == "+" else "Sub"
            self.i += 1
            left = Expr(op, (left, self.term()))
        return left

    def term(self) -> Expr:
        left = self.unary()
        while self.tok.kind == "op" and self.tok.text in "*/":
            op = "Mul" if self.tok.text == "*" else "Div"
            self.i += 1
            left = Expr(op, (left, self.unary()))
        return left

    def unary(self) -> Expr:
        if self.take("-"):
            inner = self.unary()
            # A negative number is a number, so "Ref($close, -1)" holds Num(-1).
            return Num(-inner.value) if inner.op == "#" else Expr("Neg", (inner,))
        if self.take("+"):
            return self.unary()
        return self.primary()

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
            inner = self.comparison()
            self.expect(")")
            return inner
        got = tok.text or "the end"
        raise self.fail(f"expected a field, number or operator, found {got!r}")

    def call(self) -> Expr:
        tok = self.tok
        spec = OPERATORS.get(tok.text)
        if spec is None:
            close = difflib.get_close_matches(tok.text, list(OPERATORS), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise self.fail(f"unknown operator {tok.text!r}{hint}")
        self.i += 1
        self.expect("(")
        args: list[Expr] = []
        if not self.take(")"):
            args.append(self.comparison())
            while self.take(","):
                args.append(self.comparison())
            self.expect(")")
        if not spec.min_args <= len(args) <= spec.max_args:
            want = (
                str(spec.min_args)
                if spec.min_args == spec.max_args
                else f"{spec.min_args}-{spec.max_args}"
            )
            raise self.fail(f"{spec.name} takes {want} arguments, not {len(args)}", tok.pos)
        return Expr(spec.name, tuple(args))


def _caret(text: str, pos: int, message: str) -> ExpressionError:
    """A two-line error: the message with the expression, and a caret under the position."""
    head = f"{message}: "
    return ExpressionError(f"{head}{text}\n{' ' * (len(head) + pos)}^")


def parse(text: str) -> Expr:
    """Parse an expression such as ``Mean($close, 5) / $close``.

    Raises ExpressionError naming the position (with a caret) and, for an unknown operator,
    the closest valid one.
    """
    return _Parser(text).parse()
