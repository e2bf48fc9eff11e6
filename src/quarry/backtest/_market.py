"""The market a backtest trades in, as dense panels from the store, and a signal on them."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl

from quarry._jit import njit
from quarry._memory import small_pages
from quarry.backtest._engine import Market, last_bars
from quarry.backtest._signal import check_signal
from quarry.data import Store, read_bars
from quarry.exceptions import UsageError

__all__ = ["DEAL_PRICES", "Aligned", "Coverage", "align", "index_returns", "industry_codes"]

DEAL_PRICES = ("open", "close", "vwap")


@dataclass(frozen=True)
class Coverage:
    """How much of a signal the backtest could use.

    ``rows``: the signal's rows. ``matched``: rows on an instrument of the store's market and
    one of its market days (from the signal's first date on). ``unknown_instrument``: rows
    whose instrument has no bar in the store over those days; ``off_calendar``: rows of a
    known instrument dated on a day without any bar (a weekend, or past the store's last
    day). ``used``: the cells with a score the strategy reads (matched, not missing, and in the
    universe when there is one).
    """

    rows: int
    matched: int
    unknown_instrument: int
    off_calendar: int
    used: int

    def as_dict(self) -> dict[str, int]:
        return {
            "signal_rows": self.rows,
            "signal_rows_matched": self.matched,
            "signal_rows_unknown_instrument": self.unknown_instrument,
            "signal_rows_off_calendar": self.off_calendar,
            "signal_scores_used": self.used,
        }


@dataclass(frozen=True)
class Aligned:
    """A signal and the market on one grid of days x instruments.

    ``dates`` start on the first market day on or after the signal's first date.
    ``past_close``: the adjusted closes of the market days just before it (``history`` of
    them, fewer if the store starts later), for what needs a trailing window on the first
    day (the optimizer's risk model); ``None`` when none was asked for. ``coverage``: how
    much of the signal landed on the grid. ``notes``: what the market lacks and how the
    backtest decides without it (no volume, say).
    """

    dates: list[object]
    instruments: list[str]
    scores: np.ndarray
    market: Market
    past_close: np.ndarray | None = None
    coverage: Coverage | None = None
    notes: tuple[str, ...] = ()


def align(
    store: Store,
    signal: pl.DataFrame,
    *,
    deal_price: str = "close",
    universe: str | None = None,
    as_of: datetime | str | None = None,
    history: int = 0,
    source: str = "the signal",
) -> Aligned:
    """Adjusted bars from the first signal date on, and the signal on their grid; a score
    outside ``universe`` (on a day the instrument was not a member) is dropped.

    ``history``: also read the closes of this many market days before the first signal
    date (``Aligned.past_close``). ``source`` names the signal in errors (its file, say).

    Refuses (``UsageError``, one line) a signal that ``check_signal`` refuses, one of which no
    score falls on an instrument and market day of the store, one with two different scores
    for an instrument on a day, a deal price the store has for no instrument, and a signal
    that leaves no day to trade on.

    Runs with numpy's huge-page advice off: the panels are new arrays of hundreds of MB, and
    faulting them in as huge pages took 12.5 s of this at 16,000 x 2,520 against 8 s."""
    with small_pages():
        return _align(
            store, signal, deal_price=deal_price, universe=universe, as_of=as_of,
            history=history, source=source,
        )  # fmt: skip


def _history_start(store: Store, first: date, days: int, as_of: datetime | str | None) -> date:
    """The ``days``-th market day (a day with any bar) before ``first``, or the earliest one
    there is: a window of calendar days first, then, if it holds too few (a gap in the
    data, a short history), everything before ``first``."""
    window = first - timedelta(days=int(days * 1.5) + 10)
    # the bar before the first: the day before it, or for intraday bars the moment before
    before = first - (timedelta(microseconds=1) if isinstance(first, datetime) else timedelta(1))
    for start in (window, None):
        bars = read_bars(store, ["close"], start=start, end=before, as_of=as_of)
        calendar = bars["date"].unique().sort()
        if calendar.len() >= days:
            out = calendar[-days]
            assert isinstance(out, date)
            return out
    earliest = calendar[0] if calendar.len() else first
    assert isinstance(earliest, date)
    return earliest


def _held_until(
    store: Store, as_of: datetime | str | None, names: pl.Series, close: np.ndarray, end: date
) -> np.ndarray:
    """Per instrument, the last grid day it can be held. An instrument whose bars stop is
    delisted at its last bar, unless the instruments table (as known at ``as_of``) says it
    still lists after the grid's last day: then its missing days are suspensions (a vendor
    file that has not arrived yet is not a delisting). Without an instruments table, or a
    row for the instrument, its last bar decides."""
    last = last_bars(close)
    lf = store.scan("instruments", as_of=as_of)
    if lf is None:
        return last
    last_day = end.date() if isinstance(end, datetime) else end
    listed = (
        lf.group_by("instrument")
        .agg(pl.col("delist_date").max().alias("delisted"))
        .filter(pl.col("delisted").is_null() | (pl.col("delisted") > last_day))
        .select("instrument")
        .collect()["instrument"]
    )
    still = names.is_in(listed).to_numpy() & (last >= 0)
    return np.where(still, close.shape[0] - 1, last).astype(np.int64)


def _store_span(store: Store, as_of: datetime | str | None) -> str:
    dates = read_bars(store, ["close"], as_of=as_of)["date"]
    if dates.len() == 0:
        return "the store has no bars"
    first, last = dates.min(), dates.max()
    return f"the store's bars run from {first!s} to {last!s}"


def _examples(values: pl.Series, k: int = 3) -> str:
    """A few distinct values, for a message (from the head: the whole column can be 40M)."""
    seen = values.head(100_000).unique(maintain_order=True).head(k).to_list()
    return ", ".join(str(v) for v in seen)


def _align(
    store: Store,
    signal: pl.DataFrame,
    *,
    deal_price: str,
    universe: str | None,
    as_of: datetime | str | None,
    history: int,
    source: str,
) -> Aligned:
    if deal_price not in DEAL_PRICES:
        raise UsageError(f"--deal-price {deal_price!r}: choose one of {', '.join(DEAL_PRICES)}")
    signal = check_signal(signal, source)
    first, last = signal["date"].min(), signal["date"].max()
    assert isinstance(first, date) and isinstance(last, date)
    signal = _on_store_frequency(store, signal, source)
    first, last = signal["date"].min(), signal["date"].max()
    assert isinstance(first, date) and isinstance(last, date)
    start = _history_start(store, first, history, as_of) if history > 0 else first
    fields = list(dict.fromkeys([deal_price, "close", "volume"]))
    bars = read_bars(store, fields, start=start, as_of=as_of, adjust="adjusted")
    dates = bars["date"].unique().sort()
    h = int(dates.search_sorted(first))  # the days before the first signal date
    if dates.len() - h < 2:
        when = "on or after" if dates.len() == h else "after"
        raise UsageError(
            f"{source}: its scores run from {first} to {last}, and {store.location} has no "
            f"market day {when} {first} to trade them on (a score dated t trades at t+1; "
            f"{_store_span(store, as_of)}); backtest a signal dated within the store's days"
        )
    instruments = bars["instrument"].unique().sort()
    shape = (dates.len(), instruments.len())

    names = instruments.cast(pl.String)
    enum = pl.Enum(names)
    calendar = _numbers(dates, dates)
    # Day numbers to grid rows by one lookup table over the calendar's span (a binary
    # search per row took seconds at 16,000 instruments); -1 off the calendar.
    row_of = np.full(int(calendar[-1] - calendar[0]) + 1, -1, dtype=np.int64)
    row_of[calendar - calendar[0]] = np.arange(calendar.size)

    def codes_of(frame: pl.DataFrame) -> pl.Series:
        """Each row's instrument as its grid column, null for an instrument not on the grid.
        By an enum cast: comparing 40M names one by one took a minute at 16,000 instruments."""
        return frame["instrument"].cast(pl.String).cast(enum, strict=False).to_physical()

    def positions(frame: pl.DataFrame, codes: pl.Series | None = None) -> tuple[np.ndarray, bool]:
        """Flat grid positions (row x instruments + column) of a long frame's rows, -1 off
        the grid, and whether the rows come instrument by instrument, each by date (as
        ``read_bars`` gives them). Days map by a lookup table, in one compiled pass: numpy's
        temporaries of 40M rows cost more in page faults than the arithmetic."""
        codes = codes_of(frame) if codes is None else codes
        days = pl.Series(_numbers(frame["date"], dates))
        # an unknown instrument is null: past the last column, so off the grid
        return _flat_positions(
            days.to_numpy(), codes.fill_null(shape[1]).to_numpy(), row_of, int(calendar[0]),
            shape[0], shape[1],
        )  # fmt: skip

    def lay(frame: pl.DataFrame, column: str, at: tuple[np.ndarray, bool]) -> np.ndarray:
        flat, by_instrument = at
        values = frame[column].cast(pl.Float64).fill_null(np.nan).to_numpy()
        out = np.empty(shape)
        _scatter(out.reshape(-1), flat, values, shape[1], shape[0], by_instrument)
        return out

    signal_codes = codes_of(signal)
    at_signal = positions(signal, signal_codes)
    scores = lay(signal, "score", at_signal)
    flat = at_signal[0]
    matched = int((flat >= 0).sum())
    unknown = int(signal_codes.null_count())
    if matched == 0:
        raise UsageError(
            f"{source}: none of its {signal.height:,} scores is on an instrument and market day "
            f"of {store.location} (instruments in the signal: {_examples(signal['instrument'])}; "
            f"in the store: {', '.join(names.head(3).to_list())}; the signal's dates run from "
            f"{first} to {last}, the store's market from {dates[h]} to {dates[-1]}); give "
            "the store's instrument ids and dates"
        )
    _refuse_two_scores(signal, scores, flat, source)
    if universe is not None:
        members = read_bars(store, ["close"], start=first, as_of=as_of, universe=universe)
        member = np.isfinite(lay(members, "close", positions(members)))
        scores = np.where(member, scores, np.nan)
    at = positions(bars)
    close = lay(bars, "close", at)
    volume = lay(bars, "volume", at)
    deal = close if deal_price == "close" else lay(bars, deal_price, at)
    priced = np.isfinite(close[h:]).any(axis=0)
    notes: list[str] = []
    # Qlib's data treats a day with no (or zero) volume as a suspension (its collectors
    # blank the bar); a store without any volume has no such days: its prices decide.
    # (over the backtest's days: volume in the risk model's history alone does not count)
    volume_known = np.isfinite(volume[h:]).any(axis=0)
    no_volume = int((priced & ~volume_known).sum())
    if no_volume:
        whose = "the store" if no_volume == int(priced.sum()) else f"{no_volume:,} instruments"
        notes.append(
            f"no volume in {whose} over the backtest's days: a day is tradable when it has a "
            f"{deal_price} price (suspension decided by the price alone); --impact needs volume"
        )
    if deal_price != "close":
        dealt = np.isfinite(deal[h:]).any(axis=0)
        if not (dealt & priced).any():
            raise UsageError(
                f"--deal-price {deal_price}: {store.location} has no {deal_price} prices over "
                f"the backtest's days, only closes; use --deal-price close"
            )
        lacking = priced & ~dealt
        if lacking.any():
            example = ", ".join(np.asarray(names.to_list(), dtype=object)[lacking][:3])
            notes.append(
                f"{int(lacking.sum()):,} instruments have closes but no {deal_price} price "
                f"over the backtest's days (e.g. {example}): they cannot be traded"
            )
    used = int(np.isfinite(scores[h:]).sum())
    coverage = Coverage(signal.height, matched, unknown, signal.height - matched - unknown, used)
    if used == 0:
        raise UsageError(
            f"{source}: {matched:,} of its scores are on the store's market but none is "
            f"{'in --universe ' + universe if universe else 'a number'}; nothing to trade"
        )
    held_until = _held_until(store, as_of, names, close[h:], dates[-1])
    market = Market(
        deal=deal[h:], close=close[h:], volume=volume[h:], volume_known=volume_known,
        held_until=held_until,
    )  # fmt: skip
    return Aligned(
        dates.to_list()[h:],
        instruments.to_list(),
        scores[h:],
        market,
        past_close=close[:h] if history > 0 else None,
        coverage=coverage,
        notes=tuple(notes),
    )


def _numbers(column: pl.Series, dates: pl.Series) -> np.ndarray:
    """Numbers that order a column's days as the grid's calendar ``dates`` does: day numbers
    for daily bars; for intraday bars, each time's row in the calendar (a time not on it, or
    none, gets a number no row has)."""
    off = -(2**31)
    if dates.dtype == pl.Date:
        return column.cast(pl.Date).to_physical().fill_null(off).to_numpy().astype(np.int64)
    at = dates.search_sorted(column.fill_null(dates[0])).to_numpy().astype(np.int64)
    inside = at < dates.len()
    found = np.zeros(at.size, dtype=bool)
    found[inside] = (
        (dates.gather(at[inside]) == column.filter(pl.Series(inside))).fill_null(False).to_numpy()
    )
    return np.where(found, at, off)


def _on_store_frequency(store: Store, signal: pl.DataFrame, source: str) -> pl.DataFrame:
    """The signal dated as the store's bars: times on a store of days are their days (a
    model's predictions stamped at the close, say); days on a store of times are refused, as
    a day is not one of its bars."""
    timed = signal["date"].dtype != pl.Date
    intraday = store.spec("bars").intraday
    if timed and not intraday:
        return signal.with_columns(pl.col("date").dt.date())
    if intraday and not timed:
        raise UsageError(
            f"{source}: its scores are dated by {'time' if timed else 'day'} "
            f"(first {signal['date'].min()!s}) and {store.location} holds "
            f"{'intraday' if intraday else 'daily'} bars; give a signal of the store's "
            "frequency"
        )
    return signal


def _refuse_two_scores(
    signal: pl.DataFrame, scores: np.ndarray, flat: np.ndarray, source: str
) -> None:
    """A one-line error when rows give one instrument on one day two different scores (the
    same score twice is one score)."""
    values = signal["score"].fill_null(np.nan).to_numpy()
    count, row = _overwritten(scores.reshape(-1), flat, values)
    if count:
        instrument, day = signal["instrument"][row], signal["date"][row]
        kept = scores.reshape(-1)[flat[row]]
        raise UsageError(
            f"{source}: {count:,} rows give an instrument a second, different score for a day "
            f"(row {row + 1}: {instrument} on {day}, {values[row]:g} and {kept:g}); keep one "
            "score per instrument and date"
        )


@njit(cache=True)
def _overwritten(cells: np.ndarray, flat: np.ndarray, values: np.ndarray) -> tuple[int, int]:
    """How many rows' scores differ from what their cell holds after the scatter (a later
    row of the same cell overwrote them), and the first such row (-1 for none)."""
    count, first = 0, -1
    for k in range(flat.size):
        if flat[k] < 0:
            continue
        kept, mine = cells[flat[k]], values[k]
        if kept != mine and not (kept != kept and mine != mine):
            count += 1
            if first < 0:
                first = k
    return count, first


@njit(cache=True)
def _flat_positions(
    days: np.ndarray,
    codes: np.ndarray,
    row_of: np.ndarray,
    first_day: int,
    height: int,
    width: int,
) -> tuple[np.ndarray, bool]:
    """Each row's flat position in a height x width grid (-1 off it), and whether the rows
    are sorted by column, then row."""
    out = np.empty(days.size, dtype=np.int64)
    ordered = True
    previous = -1
    for k in range(days.size):
        d = days[k] - first_day
        row = row_of[d] if 0 <= d < row_of.size else -1
        if row >= 0 and codes[k] < width:
            out[k] = row * width + codes[k]
            key = codes[k] * height + row
            ordered &= key >= previous
            previous = key
        else:
            out[k] = -1
    return out, ordered


@njit(cache=True)
def _scatter(
    out: np.ndarray, flat: np.ndarray, values: np.ndarray, width: int, height: int, ordered: bool
) -> None:
    """``out[flat] = values`` where ``flat >= 0``, NaN elsewhere in ``out``.

    Rows ordered by column, then row (instrument by instrument) land a whole grid row apart
    (128 KB at 16,000 instruments), a page and a TLB miss each; so, ordered, they are
    written in tiles of 64 columns x 256 rows, each column's rows followed by a cursor."""
    out[:] = np.nan
    if not ordered:
        for k in range(flat.size):
            if flat[k] >= 0:
                out[flat[k]] = values[k]
        return
    cols, rows = 64, 256
    first = np.full(cols, -1, dtype=np.int64)
    stop = np.zeros(cols, dtype=np.int64)
    k = 0
    for c0 in range(0, width, cols):
        first[:] = -1
        # this tile column's rows: the next ones with a column below c0 + cols
        end = c0 + cols
        while k < flat.size and (flat[k] < 0 or flat[k] - (flat[k] // width) * width < end):
            if flat[k] >= 0:
                c = flat[k] - (flat[k] // width) * width - c0
                if first[c] < 0:
                    first[c] = k
                stop[c] = k + 1
            k += 1
        for r0 in range(rows, height + rows, rows):
            limit = r0 * width  # a flat position below this is in a row below r0
            for c in range(cols):
                j = first[c]
                if j < 0:
                    continue
                while j < stop[c] and flat[j] < limit:
                    if flat[j] >= 0:
                        out[flat[j]] = values[j]
                    j += 1
                first[c] = j if j < stop[c] else -1


def index_returns(
    store: Store, name: str, dates: list[object], *, as_of: datetime | str | None = None
) -> np.ndarray:
    """Daily returns on the grid's dates of an index stored as the bars of instrument
    ``name`` (its close is the index level): close to close, a missing day carrying the last
    level forward, 0 on the first day."""
    calendar = pl.Series("date", dates)  # days, or times for intraday bars
    first, last = calendar.min(), calendar.max()
    assert isinstance(first, date) and isinstance(last, date)
    bars = read_bars(store, ["close"], start=first, end=last, as_of=as_of, adjust="adjusted",
                     instruments=[name])  # fmt: skip
    if bars.height == 0:
        names = (
            read_bars(store, ["close"], start=first, end=last, as_of=as_of)["instrument"]
            .unique()
            .sort()
            .to_list()
        )
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        some = close or names[:3]
        accepted = (
            f"one of its {len(names):,} instruments ({', '.join(some)}"
            f"{', ...' if len(names) > len(some) else ''})"
            if names
            else "an instrument with bars then"
        )
        raise UsageError(
            f"--benchmark {name}: {store.location} has no bars of {name!r} from {first} to "
            f"{last}; give {accepted}, ingest the index's daily closes as bars of an "
            "instrument of that name, or leave --benchmark out for the equal-weighted universe"
        )
    level = (
        calendar.to_frame()
        .join(bars.select("date", "close"), on="date", how="left")
        .sort("date")["close"]
        .fill_null(strategy="forward")
        .to_numpy()
    )
    out = np.zeros(level.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[1:] = np.nan_to_num(level[1:] / level[:-1] - 1.0)
    return out


def industry_codes(
    store: Store, grid: Aligned, *, as_of: datetime | str | None = None
) -> tuple[np.ndarray, list[str]]:
    """Each instrument's industry on each day of the grid, as it was classified then (known
    at ``as_of``): codes days x instruments (-1 where none) and the industries' names."""
    from quarry.data import industries

    table = industries(store, as_of).filter(
        pl.col("instrument").is_in(pl.Series(grid.instruments, dtype=pl.String).implode())
    )
    names = sorted(set(table["industry"].to_list()))
    codes = np.full(grid.scores.shape, -1, dtype=np.int16)
    if table.height == 0:
        return codes, names
    # classifications hold by day, whatever the bars' frequency
    calendar = pl.Series(grid.dates).cast(pl.Date).to_physical().to_numpy()
    position = {name: i for i, name in enumerate(grid.instruments)}
    code = {name: k for k, name in enumerate(names)}
    start = np.searchsorted(calendar, table["valid_from"].to_physical().to_numpy())
    ends = table["valid_to"].to_physical().fill_null(np.iinfo(np.int32).max).to_numpy()
    stop = np.searchsorted(calendar, ends, side="right")  # valid_to is the last day
    for row, (inst, industry) in enumerate(table.select("instrument", "industry").iter_rows()):
        codes[start[row] : stop[row], position[inst]] = code[industry]
    return codes, names
