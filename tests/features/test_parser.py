"""The expression parser: Qlib's notation, Python's precedence, errors with a caret."""

from __future__ import annotations

import pytest

from quarry.exceptions import ExpressionError
from quarry.features import F, Num, call, parse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$close", F("close")),
        ("Ref($close, 1)/$close - 1", call("Ref", F("close"), 1) / F("close") - 1),
        ("($close-$open)/$open", (F("close") - F("open")) / F("open")),
        ("-$close * 2", -F("close") * 2),
        ("Ref($close, -2)", call("Ref", F("close"), Num(-2))),
        ("$high-Greater($open, $close)", F("high") - call("Greater", F("open"), F("close"))),
        (
            "Mean($close>Ref($close, 1), 5)",
            call("Mean", F("close") > call("Ref", F("close"), 1), 5),
        ),
        # Python's precedence, as in Qlib: & binds tighter than a comparison.
        ("$a > $b & $c", F("a") > (F("b") & F("c"))),
        ("($a > $b) & ($c < 1e-3)", (F("a") > F("b")) & (F("c") < 0.001)),
        ("$a + $b * $c - $d / 2", F("a") + F("b") * F("c") - F("d") / 2),
        (
            "Corr($close, Log($volume+1), 10)",
            call("Corr", F("close"), call("Log", F("volume") + 1), 10),
        ),
    ],
)
def test_parses_like_the_python_expression(text: str, expected: object) -> None:
    assert parse(text) == expected


def test_canonical_text_round_trips_and_hashes_stably() -> None:
    for text in [
        "Std($close, 20)/$close",
        "If($close > $open, 1, -1)",
        "-(Ref($close, 1) - $close)",
        "$close / Mask($close, 'SH000300')",
    ]:
        expr = parse(text)
        assert parse(str(expr)) == expr
        assert parse(str(expr)).key == expr.key
        assert hash(parse(text)) == hash(expr)
    assert parse("Mean($close, 5)").key != parse("Mean($close, 10)").key


def test_shared_subexpressions_are_one_node() -> None:
    expr = parse("(Ref($close, 1) - $close) / Ref($close, 1)")
    refs = [n for n in expr.walk() if n.op == "Ref"]
    assert len(refs) == 1  # walk() visits each distinct node once


@pytest.mark.parametrize(
    ("text", "message", "caret_at"),
    [
        ("Mean($close, 5", "expected ')'", 14),
        ("Maen($close, 5)", "unknown operator 'Maen'; did you mean Mean?", 0),
        ("Mean($close)", "Mean takes 2 arguments, not 1", 0),
        ("$close + * 2", "expected a field, number or operator, found '*'", 9),
        ("$close ? 2", "unexpected character '?'", 7),
        ("$a < $b < $c", "chained comparison", 8),
    ],
)
def test_errors_point_at_the_position(text: str, message: str, caret_at: int) -> None:
    with pytest.raises(ExpressionError) as err:
        parse(text)
    first, caret = str(err.value).split("\n")
    assert first.startswith(message)
    assert first.endswith(text)
    assert caret.index("^") == first.index(text) + caret_at


def test_expressions_refuse_truthiness() -> None:
    with pytest.raises(TypeError, match="no truth value"):
        bool(F("close") > 1)


def _nested(depth: int, call: str = "Abs") -> str:
    return f"{call}(" * depth + "$close" + ")" * depth


def _balanced(terms: int) -> str:
    """A sum of ``terms`` fields grouped in halves: shallow, but ``2 * terms - 1`` nodes."""
    if terms == 1:
        return "$close"
    half = terms // 2
    return f"({_balanced(half)} + {_balanced(terms - half)})"


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        (_nested(10_000), "100 levels"),
        ("(" * 10_000 + "$close" + ")" * 10_000, "100 levels"),
        ("+".join(["$close"] * 5_000), "100 levels"),
        ("-" * 10_000 + "$close", "100 levels"),
        ("$a<$b|$c&$d+$e*Abs(" * 2_000 + "$f" + ")" * 2_000, "100 levels"),
        (_balanced(6_000), "10,000 nodes"),  # 11,999 nodes, 14 deep
    ],
)
def test_an_expression_too_deep_or_too_long_is_one_line_naming_the_limit(
    text: str, limit: str
) -> None:
    with pytest.raises(ExpressionError) as err:
        parse(text, name="BIG")
    message = str(err.value)
    assert "\n" not in message and len(message) < 400
    assert message.startswith("BIG: ") and limit in message


def test_an_expression_at_the_limits_parses_and_round_trips() -> None:
    deepest = parse(_nested(99))  # 99 calls over a field: 100 levels
    assert deepest.depth == 100 and deepest.size == 100
    assert parse(str(deepest)) == deepest
    with pytest.raises(ExpressionError, match="100 levels"):
        parse(_nested(100))
    largest = parse(_balanced(5_000))  # 9,999 nodes
    assert largest.size == 9_999 and largest.depth == 14
    assert parse(str(largest)) == largest
