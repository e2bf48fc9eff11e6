"""Validation of vendor files: every problem found, named by file, line, column and value."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from quarry.data._schemas import BAR_TIME, TableSpec
from quarry.data._times import TIME_HINT, parse_times
from quarry.exceptions import BadInputError, DataError

__all__ = ["JSON_LINES", "ROW", "Check", "Checked", "check_frame", "read_input", "unit_of"]

ROW = "_row"
JSON_LINES = (".jsonl", ".ndjson")
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")
_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d")
_MAX_SHOWN = 60  # an offending value is cut to this many characters in a message
_MAX_LINES = 5  # line numbers listed per kind of problem
_UNPARSED = {
    "Boolean": "not true or false",
    "Float64": "not a number",
    "Date": "unparseable date",
    str(BAR_TIME): f"unparseable time (intraday bars need one: {TIME_HINT})",
}


@dataclass(frozen=True)
class Check:
    """One kind of problem: its description, the column it reports, the mask of failing rows,
    what to do about it, and optionally a text expression (evaluated on the first failing row)
    that completes the description (the other value of a comparison, say)."""

    what: str
    column: str
    mask: pl.Expr
    advice: str = ""
    detail: pl.Expr | None = None


@dataclass(frozen=True)
class Checked:
    """The outcome of validating one file.

    ``good``: typed rows that passed. ``rejected``: the offending rows as they were in the
    file, with their line and reasons. ``problems``: one message per kind of problem.
    """

    good: pl.DataFrame
    rejected: pl.DataFrame
    problems: list[str]


def read_input(path: str | Path) -> tuple[pl.DataFrame, int]:
    """Read a CSV (every column as text, so nothing is coerced silently) or Parquet file.

    Returns the frame and the file line (or row) number of its first record.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        if p.suffix.lower() in {".parquet", ".pq"}:
            return pl.read_parquet(p), 1
        if p.suffix.lower() in JSON_LINES:
            # Every record's values as written: strings stay text, lists stay lists (the
            # instruments of an event); its line is its row plus one.
            return pl.read_ndjson(p, infer_schema_length=None), 1
        if p.suffix.lower() in {".csv", ".txt", ".gz"} or p.suffix == "":
            return pl.read_csv(p, infer_schema=False), 2
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{p}: cannot read file: {first}") from exc
    raise DataError(
        f"{p}: unsupported file type {p.suffix!r}; give a .csv, .jsonl or .parquet file"
    )


def unit_of(path: str | Path, first_line: int) -> str:
    """What a file's records are called in messages: lines (CSV, JSON lines) or rows."""
    return "line" if first_line == 2 or Path(path).suffix.lower() in JSON_LINES else "row"


def _parse(name: str, source: pl.DataType, target: type[pl.DataType] | pl.DataType) -> pl.Expr:
    """Parse one column to its target type; values that do not parse become null."""
    col = pl.col(name)
    if target == pl.Boolean:
        if source == pl.Boolean:
            return col
        if source == pl.String:
            word = col.str.strip_chars().str.to_lowercase()
            return pl.when(word.is_in(_TRUE)).then(True).when(word.is_in(_FALSE)).then(False)
        if source.is_integer():
            return pl.when(col == 1).then(True).when(col == 0).then(False)
        return pl.lit(None, pl.Boolean)
    if source == pl.Boolean or source.is_nested():
        return pl.lit(None, target)  # a flag or a list is not a value: reported as unparsed
    if source == pl.String:
        col = col.str.strip_chars()
        col = pl.when(col == "").then(None).otherwise(col)
    if target == BAR_TIME:
        if source == pl.String:
            return parse_times(col)
        if isinstance(source, pl.Datetime):  # a timestamp without a zone is UTC
            zoned = col.dt.replace_time_zone("UTC") if source.time_zone is None else col
            return zoned.dt.convert_time_zone("UTC").cast(BAR_TIME)
        return pl.lit(None, BAR_TIME)  # a date or a number is not a bar's time
    if target == pl.Date:
        if source == pl.String:
            # a day written as its midnight (2024-01-02T00:00:00) is that day
            times = parse_times(col)
            midnight = pl.when(times.dt.time() == pl.time(0)).then(times.dt.date())
            return pl.coalesce([*(col.str.to_date(f, strict=False) for f in _DATE_FORMATS),
                                midnight])  # fmt: skip
        if isinstance(source, pl.Datetime):
            return col.dt.date()
        if source.is_integer():
            return col.cast(pl.String).str.to_date("%Y%m%d", strict=False)
        return col.cast(pl.Date, strict=False)
    return col.cast(target, strict=False)


def _cross_checks(spec: TableSpec, knowledge_time: datetime | None) -> list[Check]:
    """Checks that involve two columns, or a column and the commit's knowledge time."""
    c = pl.col

    def num(col: str) -> pl.Expr:
        return pl.format("{} {}", pl.lit(col), c(col))

    outside = "a price outside the bar's own low-high range cannot have traded: fix the bar"

    # Values that fail their own column's checks (NaN, which orders above every number, or a
    # negative price) are reported there, not compared again.
    def ok(col: str) -> pl.Expr:
        return c(col).is_finite() & (c(col) >= 0)

    finite = ok("high") & ok("low")
    # Open and close are checked against a range that holds (high below low is reported once).
    ranged = finite & (c("high") >= c("low"))
    checks = {
        "bars": [
            Check("high below low", "high", finite & (c("high") < c("low")), outside, num("low")),
            *(
                Check(f"{p} {side}", p, ranged & ok(p) & bad, outside, num(bound))
                for p in ("close", "open")
                for side, bound, bad in (
                    ("above high", "high", c(p) > c("high")),
                    ("below low", "low", c(p) < c("low")),
                )
            ),
        ],
        "instruments": [
            Check("delist_date before list_date", "delist_date", c("delist_date") < c("list_date")),
            Check("valid_to before valid_from", "valid_to", c("valid_to") < c("valid_from")),
        ],
        "universe": [Check("end before start", "end", c("end") < c("start"))],
        "fundamentals": [
            Check(
                "knowledge_date before period_end (published before the period ended)",
                "knowledge_date",
                c("knowledge_date") < c("period_end"),
                "a period's figure cannot be published before the period ends: fix the dates",
                num("period_end"),
            )
        ],
        "events": [
            *(
                Check(
                    "missing value (empty) on a story that is not a retraction",
                    col,
                    ~c("retracted").fill_null(False) & c(col).is_null(),
                    "a story needs its instruments, published_at, kind and title; a "
                    "retraction (retracted true) needs only its event_id",
                )
                for col in ("instruments", "published_at", "kind", "title")
            ),
            Check(
                "delivered_at before published_at (delivered before it was published)",
                "delivered_at",
                c("delivered_at") < c("published_at"),
                "a vendor cannot deliver a story before it exists: fix the times (both are "
                "UTC unless they carry an offset)",
                pl.format("published_at {}", c("published_at")),
            ),
        ],
        "corporate_actions": [
            Check("split without a ratio", "ratio", (c("kind") == "split") & c("ratio").is_null()),
            Check(
                "dividend without an amount",
                "amount",
                (c("kind") == "dividend") & c("amount").is_null(),
            ),
        ],
    }
    out = checks.get(spec.name, [])
    if knowledge_time is not None:
        day = knowledge_time.date()
        when = knowledge_time.isoformat(timespec="seconds")
        if spec.name == "bars":
            out.append(
                Check(
                    f"{'timed' if spec.intraday else 'dated'} after the knowledge time {when}",
                    "date",
                    c("date") > (knowledge_time if spec.intraday else day),
                    f"a bar cannot be known before its {'time' if spec.intraday else 'day'}: "
                    "give the --knowledge-time when the file was delivered, or fix the date",
                )
            )
        if spec.name == "events":
            out.extend(
                Check(
                    f"{col} after the knowledge time {when} (known after the file holding it "
                    "was delivered)",
                    col,
                    c(col) > knowledge_time,
                    "give the --knowledge-time when the file was delivered, or fix the time",
                )
                for col in ("published_at", "delivered_at")
            )
        if spec.name == "fundamentals":
            out.append(
                Check(
                    f"knowledge_date after the knowledge time {when} (known after the file "
                    "holding it was delivered)",
                    "knowledge_date",
                    c("knowledge_date") > day,
                    "give the --knowledge-time when the file was delivered, or fix the "
                    "knowledge_date",
                )
            )
    return out


def _duplicates(spec: TableSpec, first_line: int, unit: str) -> list[Check]:
    """Rows sharing a key: exact copies keep their first (later copies are the problem);
    rows of one key with different values are all refused, as nothing says which holds."""
    key = list(spec.key)
    key_ok = pl.all_horizontal([pl.col(k).is_not_null() for k in key])
    dup = key_ok & pl.struct(key).is_duplicated()
    whole = pl.struct(spec.names)
    variants = whole.n_unique().over(key)
    first = pl.format(f"of {unit} {{}}", (pl.col(ROW).min().over(key) + first_line))
    names = ", ".join(key)
    return [
        Check(
            f"duplicate ({names}) with different values (conflicting rows)",
            spec.key[-1],
            dup & (variants > 1),
            "keep the right row and delete the others (--skip-bad drops them all)",
            pl.format(f"also on {unit} {{}}", (pl.col(ROW).max().over(key) + first_line)),
        ),
        Check(
            f"duplicate ({names}) row, an exact copy",
            spec.key[-1],
            dup & (variants == 1) & ~whole.is_first_distinct(),
            "delete the repeated lines (--skip-bad keeps the first copy)",
            first,
        ),
    ]


def check_frame(
    path: str,
    spec: TableSpec,
    raw: pl.DataFrame,
    first_line: int,
    fixed: dict[str, object],
    *,
    knowledge_time: datetime | None = None,
    lookups: Callable[[pl.DataFrame], list[Check]] | None = None,
    unit: str | None = None,
) -> Checked:
    """Validate a raw frame against a table spec.

    Structural problems (missing or unknown columns) raise BadInputError at once, since no row
    can be trusted; value problems are collected per kind so a user sees all of them.
    ``fixed`` gives columns set by the command rather than the file (a universe's name).
    ``knowledge_time`` is when the file's contents became known: nothing in it may be dated
    later. ``lookups`` adds checks against what the store knows: it is given the typed rows
    (with their index in the file as ``ROW``) and returns checks whose masks and details are
    literal series aligned with those rows.
    """
    unit = unit or unit_of(path, first_line)
    allowed = [n for n in spec.names if n not in fixed]
    missing = [
        c.name
        for c in spec.columns
        if c.required and c.name not in raw.columns and c.name in allowed
    ]
    unknown = [c for c in raw.columns if c not in allowed]
    structural = (
        [
            f"{path}: missing column {m!r} (required columns: {', '.join(_required(spec, fixed))})"
            for m in missing
        ]
        + [
            f"{path}: unknown column {u!r} (allowed: {', '.join(allowed)}); rename or drop it"
            for u in unknown
        ]
        + [
            f"{path}: column {c!r} holds {raw.schema[c]} values, not plain values; flatten it"
            for c in raw.columns
            if c in allowed and raw.schema[c].is_nested()
        ]
    )
    if structural:
        raise BadInputError(path, structural)

    frame = raw.with_row_index(ROW)
    typed = frame.select(
        pl.col(ROW),
        *[
            _parse(c.name, raw.schema[c.name], c.dtype).alias(c.name)
            for c in spec.columns
            if c.name in raw.columns
        ],
    )
    for name, value in fixed.items():
        typed = typed.with_columns(pl.lit(value, spec.column(name).dtype).alias(name))
    for col in spec.columns:
        if col.name not in typed.columns:
            typed = typed.with_columns(pl.lit(None, col.dtype).alias(col.name))
    typed = typed.with_columns(pl.coalesce(c, other).alias(c) for c, other in spec.defaults)

    # The file's text beside the parsed values, so that every check is an expression and
    # all of them run in one pass.
    work = typed.with_columns(
        frame[c].cast(pl.String).str.strip_chars().alias(f"__text_{c}") for c in raw.columns
    )
    checks: list[Check] = []
    for col in spec.columns:
        if col.name not in raw.columns:
            continue
        parsed, text = pl.col(col.name), pl.col(f"__text_{col.name}")
        given = text.is_not_null() & (text != "")
        what = _UNPARSED.get(str(col.dtype), "bad value")
        checks.append(Check(what, col.name, given & parsed.is_null()))
        empty = ~given
        if col.dtype == pl.Float64:
            empty = empty | parsed.is_nan().fill_null(False)
            checks.append(Check("not a finite number", col.name, parsed.is_infinite()))
        if not col.nullable:
            checks.append(Check("missing value (empty or NaN)", col.name, empty))
        if col.non_negative:
            checks.append(Check("negative value", col.name, parsed < 0))
        if col.positive:
            checks.append(Check("value not above zero", col.name, parsed <= 0))
        if col.choices:
            bad = parsed.is_not_null() & ~parsed.is_in(list(col.choices))
            checks.append(Check(f"not one of {'|'.join(col.choices)}", col.name, bad))
    checks.extend(_cross_checks(spec, knowledge_time))
    checks.extend(_duplicates(spec, first_line, unit))
    if lookups is not None:
        checks.extend(lookups(typed))

    masks = work.select(c.mask.fill_null(False).alias(f"m{i}") for i, c in enumerate(checks))
    problems: list[str] = []
    reasons: list[pl.Expr] = []
    bad_any = pl.repeat(False, typed.height, eager=True)
    for i, check in enumerate(checks):
        mask = masks[f"m{i}"]
        count = int(mask.sum())
        if count == 0:
            continue
        rows = mask.arg_true()
        first = int(rows[0])
        column = check.column
        value = frame[column][first] if column in frame.columns else typed[column][first]
        text_value = "" if value is None else str(value).strip()
        shown = repr(text_value[:_MAX_SHOWN]) if text_value else "(empty)"
        if check.detail is not None:
            # Over the whole frame: a detail may be a window (the other line of a key).
            detail = work.select(check.detail.cast(pl.String)).to_series()[first]
            shown += f" ({detail})" if detail else ""
        lines = ", ".join(str(int(r) + first_line) for r in rows[:_MAX_LINES])
        more = f" and {count - _MAX_LINES} more" if count > _MAX_LINES else ""
        where = f": {unit}s {lines}{more}" if count > 1 else ""
        advice = f"; {check.advice}" if check.advice else ""
        problems.append(
            f"{path}: {unit} {first + first_line}, column {column!r}: {check.what}: {shown} "
            f"({count} row{'s' if count != 1 else ''} affected{where}){advice}"
        )
        bad_any = bad_any | mask
        reasons.append(pl.when(pl.lit(mask)).then(pl.lit(f"{column}: {check.what}")))
    # NaN is an empty value: in an optional column it is stored as null.
    good = (
        typed.filter(~bad_any)
        .select(spec.names)
        .with_columns(
            pl.col(c.name).fill_nan(None)
            for c in spec.columns
            if c.dtype == pl.Float64 and c.nullable
        )
    )
    if reasons:
        reason = pl.concat_str(reasons, separator="; ", ignore_nulls=True)
        rejected = (
            frame.with_columns((pl.col(ROW) + first_line).alias(unit), reason.alias("reason"))
            .filter(bad_any)
            .select(unit, "reason", *raw.columns)
        )
    else:
        rejected = pl.DataFrame()
    return Checked(good, rejected, problems)


def _required(spec: TableSpec, fixed: dict[str, object]) -> list[str]:
    return [c.name for c in spec.columns if c.required and c.name not in fixed]
