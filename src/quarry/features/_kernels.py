"""Window kernels over dense panels, compiled with numba.

A window's valid values are its finite ones: pandas' rolling functions (and so Qlib's)
read an infinity as missing.

Each kernel fills ``out``, a panel the caller provides (and may be reusing), NaN wherever
it has no value. A panel is a float64 array of shape (instruments, days) on the market
calendar, NaN where a value is missing. ``start[i]``/``end[i]`` bound instrument i's
history (its first listed day and one past its last): a window never reaches before
``start[i]``, as Qlib's windows start at the first row of an instrument's history, and
cells outside the history stay NaN.

Every kernel runs instruments in parallel (``prange``) and walks each history once, keeping
running state (sums, Welford moments, monotonic queues, a sorted window), so a window of N
rows costs O(1) or O(log N) per row instead of O(N). ``n`` is the window length; callers
pass the whole calendar length for an expanding window (Qlib's N = 0). Semantics follow
pandas' rolling functions with ``min_periods=1``, as Qlib's do (docs/qlib_operators.md).

Running sums and moments gather rounding from every value that ever passed through the
window, so a value would depend, in its last digits, on how much history came before it,
and a live stream (which keeps only a bounded window) could not reproduce research's. The
kernels with running state (``rolling_sum``, ``rolling_var``, ``rolling_corr_cov``,
``rolling_regression``) therefore rebuild it from the window alone at every anchor row,
each N-th calendar row counted from ``phase`` (the calendar index of column 0): a value
depends on its last 2N - 1 rows only, and two panels that share those rows and the
anchors agree to the bit. It costs one more pass over each window every N rows.

The same four kernels also resume: with ``resume`` they compute only the panel's last
column (and write no other), from the running state of the column before it, kept per
instrument in ``state`` (one row each, read before and written after; a row of NaN is an
instrument with no history yet). A live stream keeps that state from bar to bar, so a bar
costs O(1) per instrument instead of a pass over 2N - 1 rows; its values are research's to
the bit, as the arithmetic is this very code. Positions and anchors count in calendar rows
(``phase`` is the calendar row of column 0), so a state carries over to a panel shifted by
one bar.
"""

from __future__ import annotations

import math

import numpy as np

from quarry._jit import njit, prange

__all__ = [
    "NO_STATE",
    "STATE_WIDTH",
    "cs_neutralize",
    "cs_rank",
    "ewm_mean",
    "idx_extreme",
    "newest_extremes",
    "rolling_corr_cov",
    "rolling_extreme",
    "rolling_mad",
    "rolling_quantile",
    "rolling_rank",
    "rolling_regression",
    "rolling_shape",
    "rolling_sum",
    "rolling_var",
    "rolling_wma",
]

_OPTS = {"parallel": True, "cache": True, "nogil": True}

# The running state of a resumable kernel: how many numbers a row holds, and the empty state
# of a kernel run over whole histories.
STATE_WIDTH = {"sum": 2, "var": 5, "corr_cov": 6, "regression": 8}
NO_STATE = np.zeros((0, 8))


@njit(inline="always")
def _clear(out, i, newest):
    """NaN in instrument i's row of ``out``, or (``newest``: a kernel computing the last
    column alone) in its last cell only: a live stream reads no other, and writing a whole
    row a bar for each of thousands of instruments cost more than the update itself."""
    if newest:
        out[i, out.shape[1] - 1] = np.nan
    else:
        out[i, :] = np.nan


@njit(inline="always")
def _columns(start_i, end_i, resume):
    """The columns a kernel computes for one instrument: its whole history, or (``resume``)
    the last column alone, if it is in the history."""
    return (max(start_i, end_i - 1) if resume else start_i), end_i


@njit(inline="always")
def _first_anchor(first, n, phase):
    """The first row at or after ``first`` whose calendar index (row + phase) is a
    multiple of n."""
    return first + (-(first + phase)) % n


@njit(**_OPTS)
def rolling_sum(x, n, start, end, what, phase, state, resume, out):
    """Count (0), sum (1) or mean (2) of the valid values in each window. Count counts
    infinities too, as pandas' does (it does not read them as missing)."""
    rows, _cols = x.shape
    for i in prange(rows):
        _clear(out, i, resume)
        k = 0
        total = 0.0
        lo, hi = _columns(start[i], end[i], resume)
        if resume and state[i, 0] == state[i, 0]:  # NaN: no history yet
            k = int(state[i, 0])
            total = state[i, 1]
        anchor = _first_anchor(lo, n, phase)
        for t in range(lo, hi):
            first = t
            if t == anchor:  # rebuild from the window alone (see the module's note)
                anchor += n
                k = 0
                total = 0.0
                first = max(start[i], t - n + 1)
            elif t - n >= start[i]:
                w = x[i, t - n]
                if math.isfinite(w) or (what == 0 and w == w):
                    k -= 1
                    total -= w
            for u in range(first, t + 1):
                v = x[i, u]
                if math.isfinite(v) or (what == 0 and v == v):
                    k += 1
                    total += v
            if what == 0:
                out[i, t] = k
            elif k == 0:
                total = 0.0  # drop the rounding left over from values gone by
            else:
                out[i, t] = total if what == 1 else total / k
        if resume and hi > lo:
            state[i, 0] = k
            state[i, 1] = total
    return out


@njit(**_OPTS)
def rolling_var(x, n, start, end, std, phase, state, resume, out):
    """Variance with ddof=1 (its square root when ``std``) of the valid values in each
    window, at least two. Welford's remove/add updates, as pandas does; exactly 0 when every
    value in the window is the same (pandas' rule for constant windows)."""
    rows, cols = x.shape
    inv = 1.0 / np.arange(1, min(n, cols) + 2)  # 1/k by lookup: divisions are the cost
    for i in prange(rows):
        _clear(out, i, resume)
        k = 0
        mean = 0.0
        ssq = 0.0
        same = 0  # how many of the newest values equal the newest one
        last = np.nan
        lo, hi = _columns(start[i], end[i], resume)
        if resume and state[i, 0] == state[i, 0]:
            k = int(state[i, 0])
            mean = state[i, 1]
            ssq = state[i, 2]
            same = int(state[i, 3])
            last = state[i, 4]
        anchor = _first_anchor(lo, n, phase)
        for t in range(lo, hi):
            first = t
            if t == anchor:  # rebuild from the window alone (see the module's note)
                anchor += n
                k = 0
                mean = 0.0
                ssq = 0.0
                same = 0
                last = np.nan
                first = max(start[i], t - n + 1)
            elif t - n >= start[i]:
                w = x[i, t - n]
                if math.isfinite(w):
                    k -= 1
                    if k > 0:
                        d = w - mean
                        mean -= d * inv[k - 1]
                        ssq -= (k + 1) * d * d * inv[k - 1]
                    else:
                        mean = 0.0
                        ssq = 0.0
            for u in range(first, t + 1):
                v = x[i, u]
                if math.isfinite(v):
                    k += 1
                    d = v - mean
                    mean += d * inv[k - 1]
                    ssq += (k - 1) * d * d * inv[k - 1]
                    same = same + 1 if v == last else 1
                    last = v
            if same > k:
                same = k
            if k >= 2:
                var = 0.0 if same >= k else max(ssq / (k - 1), 0.0)
                out[i, t] = math.sqrt(var) if std else var
        if resume and hi > lo:
            state[i, 0] = k
            state[i, 1] = mean
            state[i, 2] = ssq
            state[i, 3] = same
            state[i, 4] = last
    return out


@njit(inline="always")
def _newest_window(start_i, end_i, n):
    """The first row of the newest column's window, and that column (-1: none)."""
    t = end_i - 1
    return (max(start_i, t - n + 1), t) if t >= start_i else (0, -1)


@njit(**_OPTS)
def rolling_extreme(x, n, start, end, largest, out):
    """Max (or min) of the valid values in each window, with a monotonic queue (the newest
    of equals kept, which tells -0.0 from 0.0). A stream's newest column alone:
    ``newest_extremes``."""
    rows, _cols = x.shape
    for i in prange(rows):
        out[i, :] = np.nan
        queue = np.empty(end[i] - start[i] + 1, dtype=np.int64)
        head = 0
        tail = 0
        for t in range(start[i], end[i]):
            v = x[i, t]
            if math.isfinite(v):
                while tail > head and (
                    x[i, queue[tail - 1]] <= v if largest else x[i, queue[tail - 1]] >= v
                ):
                    tail -= 1
                queue[tail] = t
                tail += 1
            while tail > head and queue[head] <= t - n:
                head += 1
            if tail > head:
                out[i, t] = x[i, queue[head]]
    return out


@njit(**_OPTS)
def idx_extreme(x, n, start, end, largest, out):
    """Qlib's IdxMax/IdxMin: the 1-based position, from the oldest row of the window, of
    its largest (smallest) value, the oldest on ties. A window holding a missing value gives
    the position of its oldest missing value, as numpy's argmax does inside Qlib. NaN when
    the window has no valid value. A stream's newest column alone: ``newest_extremes``."""
    rows, _cols = x.shape
    for i in prange(rows):
        out[i, :] = np.nan
        size = end[i] - start[i] + 1
        queue = np.empty(size, dtype=np.int64)
        nans = np.empty(size, dtype=np.int64)
        head = 0
        tail = 0
        nan_head = 0
        nan_tail = 0
        for t in range(start[i], end[i]):
            v = x[i, t]
            if math.isfinite(v):
                # Strict comparison keeps an older equal value ahead: ties go to the oldest.
                while tail > head and (
                    x[i, queue[tail - 1]] < v if largest else x[i, queue[tail - 1]] > v
                ):
                    tail -= 1
                queue[tail] = t
                tail += 1
            else:
                nans[nan_tail] = t
                nan_tail += 1
            first = max(start[i], t - n + 1)
            while tail > head and queue[head] < first:
                head += 1
            while nan_tail > nan_head and nans[nan_head] < first:
                nan_head += 1
            if tail == head:
                continue
            at = nans[nan_head] if nan_tail > nan_head else queue[head]
            out[i, t] = at - first + 1
    return out


@njit(**_OPTS)
def newest_extremes(x, windows, start, end, largest, values, positions):
    """The newest column of Max (or Min) and of IdxMax (IdxMin) over each of ``windows``
    (ascending) of one series, by one backward scan of the largest window: the last column
    of ``rolling_extreme`` and ``idx_extreme``, value for value.
    ``values[i, k]``/``positions[i, k]``: instrument i's over ``windows[k]`` (NaN: none).

    A live stream's Alpha158 reads Max and IdxMax of $high (Min and IdxMin of $low) over
    five windows: scanned once here instead of ten times. Scanning from the newest row
    back, an older value replaces the best only when strictly better (Max: the newest of
    equals, as the queue keeps it), and the position only when at least as good (IdxMax:
    the oldest of equals); the oldest missing value is the last one met."""
    rows = x.shape[0]
    count = windows.shape[0]
    for i in prange(rows):
        for k in range(count):
            values[i, k] = np.nan
            positions[i, k] = np.nan
        t = end[i] - 1
        if t < start[i]:
            continue
        best = np.nan
        at = -1
        missing = -1
        k = 0
        u = t
        while k < count:
            v = x[i, u]
            if not math.isfinite(v):
                missing = u
            else:
                if best != best or (v > best if largest else v < best):
                    best = v
                if at < 0 or (v >= x[i, at] if largest else v <= x[i, at]):
                    at = u
            # every window whose oldest row this is ends here (several, for a short history)
            while k < count and u == max(start[i], t - windows[k] + 1):
                if at >= 0:
                    values[i, k] = best
                    positions[i, k] = (missing if missing >= 0 else at) - u + 1
                k += 1
            u -= 1


@njit(inline="always")
def _insert(buf, k, v):
    """Insert v into the sorted buf[:k], shifting the larger values right. A zero is kept
    as +0.0: the order of -0.0 and 0.0, which compare equal, would depend on the order they
    came in, and a window read whole and one walked would differ in the sign of a zero."""
    v = v + 0.0
    j = k
    while j > 0 and buf[j - 1] > v:
        buf[j] = buf[j - 1]
        j -= 1
    buf[j] = v


@njit(inline="always")
def _remove(buf, k, v):
    """Remove one copy of v from the sorted buf[:k]."""
    j = np.searchsorted(buf[:k], v)
    while j < k - 1:
        buf[j] = buf[j + 1]
        j += 1


@njit(inline="always")
def _replace(buf, k, old, new):
    """Swap one copy of old for new in the sorted buf[:k], shifting only the values
    between the two positions."""
    new = new + 0.0  # as ``_insert``
    j = np.searchsorted(buf[:k], old)
    while j > 0 and buf[j - 1] > new:
        buf[j] = buf[j - 1]
        j -= 1
    while j < k - 1 and buf[j + 1] < new:
        buf[j] = buf[j + 1]
        j += 1
    buf[j] = new


@njit(inline="always")
def _slide(buf, k, old, new):
    """Move a sorted window of k valid values one day on: ``old`` leaves and ``new`` enters
    (either may be missing). Returns the new count."""
    if math.isfinite(old) and math.isfinite(new):
        _replace(buf, k, old, new)
        return k
    if math.isfinite(old):
        _remove(buf, k, old)
        return k - 1
    if math.isfinite(new):
        _insert(buf, k, new)
        return k + 1
    return k


@njit(**_OPTS)
def rolling_quantile(x, n, start, end, qs, last, state, resume):
    """Quantiles ``qs`` (one output panel each) of each window's valid values, with
    linear interpolation as pandas; the median is q = 0.5. Kept in a sorted copy of the
    window, updated by one shift per day; with ``last``, the newest column's window alone,
    sorted as it is read, and the panels hold that column alone: (qs, rows, 1).

    ``resume`` is ``last`` from a sorted window kept per instrument in ``state`` (``k``,
    then the k sorted values; NaN: none yet): the window moves one column on, as the walk
    moves it, instead of being sorted again. A sorted window holds no rounding, so it is the
    same however long it has been kept."""
    rows, cols = x.shape
    out = np.full((qs.size, rows, 1 if last or resume else cols), np.nan)
    for i in prange(rows):
        if resume:
            lo, hi = _columns(start[i], end[i], True)
            if hi <= lo:
                continue
            t = hi - 1
            buf = state[i, 1:]
            if state[i, 0] == state[i, 0]:  # the window of the column before
                old = t - n
                k = _slide(buf, int(state[i, 0]), x[i, old] if old >= start[i] else np.nan, x[i, t])
            else:
                k = 0
                for u in range(max(start[i], t - n + 1), t + 1):
                    if math.isfinite(x[i, u]):
                        _insert(buf, k, x[i, u])
                        k += 1
            state[i, 0] = k
            if k > 0:
                _quantiles_at(buf, k, qs, out, i, 0)
            continue
        buf = np.empty(min(n, end[i] - start[i]) + 1)
        k = 0
        lo = start[i]
        if last:
            first, t = _newest_window(start[i], end[i], n)
            for u in range(first, t + 1):
                if math.isfinite(x[i, u]):
                    _insert(buf, k, x[i, u])
                    k += 1
            if t >= 0 and k > 0:
                _quantiles_at(buf, k, qs, out, i, 0)
            continue  # no column to walk
        for t in range(lo, end[i]):
            v = x[i, t]
            old = t - n
            k = _slide(buf, k, x[i, old] if old >= start[i] else np.nan, v)
            if k == 0:
                continue
            _quantiles_at(buf, k, qs, out, i, t)
    return out


@njit(inline="always")
def _quantiles_at(buf, k, qs, out, i, t):
    """The quantiles of the sorted buf[:k], interpolated as pandas does, into out[:, i, t]."""
    for m in range(qs.size):
        pos = qs[m] * (k - 1)
        lo = int(pos)
        if pos == lo:
            out[m, i, t] = buf[lo]
        else:
            out[m, i, t] = buf[lo] + (buf[lo + 1] - buf[lo]) * (pos - lo)


@njit(**_OPTS)
def rolling_rank(x, n, start, end, last, out):
    """The percentile rank of the current value among the window's valid values, ties
    averaged (pandas' ``rank(pct=True)``); NaN when the current value is missing. Two
    binary searches in a sorted copy of the window, kept as for the quantiles; with
    ``last``, the newest column alone, by counting its window's smaller and equal values."""
    rows, _cols = x.shape
    for i in prange(rows):
        _clear(out, i, last)
        if last:
            first, t = _newest_window(start[i], end[i], n)
            if t < 0 or not math.isfinite(x[i, t]):
                continue
            v = x[i, t]
            k = less = upto = 0
            for u in range(first, t + 1):
                w = x[i, u]
                if math.isfinite(w):
                    k += 1
                    less += w < v
                    upto += w <= v
            out[i, t] = (less + (upto - less + 1) / 2.0) / k
            continue
        buf = np.empty(min(n, end[i] - start[i]) + 1)
        k = 0
        for t in range(start[i], end[i]):
            v = x[i, t]
            old = t - n
            k = _slide(buf, k, x[i, old] if old >= start[i] else np.nan, v)
            if k == 0 or not math.isfinite(v):
                continue
            less = np.searchsorted(buf[:k], v, side="left")
            upto = np.searchsorted(buf[:k], v, side="right")
            out[i, t] = (less + (upto - less + 1) / 2.0) / k
    return out


@njit(inline="always")
def _window_mean(x, i, first, last):
    """The count and mean of row i's valid values from ``first`` to ``last``."""
    k = 0
    s = 0.0
    for j in range(first, last + 1):
        if math.isfinite(x[i, j]):
            k += 1
            s += x[i, j]
    return k, (s / k if k else 0.0)


@njit(**_OPTS)
def rolling_shape(x, n, start, end, what, out):
    """Skewness (what 0, at least 3 values) or excess kurtosis (what 1, at least 4), both
    bias-corrected as pandas computes them; NaN for a window whose variance is at most
    1e-14 (pandas 3). Two passes over each window: these are rarely used, short windows."""
    rows, _cols = x.shape
    for i in prange(rows):
        out[i, :] = np.nan
        for t in range(start[i], end[i]):
            first = max(start[i], t - n + 1)
            k, mean = _window_mean(x, i, first, t)
            if k < 3 + what:
                continue
            m2 = 0.0
            m3 = 0.0
            m4 = 0.0
            for j in range(first, t + 1):
                v = x[i, j]
                if math.isfinite(v):
                    d = v - mean
                    m2 += d * d
                    m3 += d * d * d
                    m4 += d * d * d * d
            m2 /= k
            m3 /= k
            m4 /= k
            if m2 <= 1e-14:
                continue
            if what == 0:
                out[i, t] = math.sqrt(k * (k - 1.0)) / (k - 2.0) * m3 / m2**1.5
            else:
                g2 = m4 / (m2 * m2) - 3.0
                out[i, t] = (k - 1.0) / ((k - 2.0) * (k - 3.0)) * ((k + 1.0) * g2 + 6.0)
    return out


@njit(**_OPTS)
def rolling_mad(x, n, start, end, out):
    """Mean absolute deviation of the window's valid values around their mean."""
    rows, _cols = x.shape
    for i in prange(rows):
        out[i, :] = np.nan
        for t in range(start[i], end[i]):
            first = max(start[i], t - n + 1)
            k, mean = _window_mean(x, i, first, t)
            if k == 0:
                continue
            dev = 0.0
            for j in range(first, t + 1):
                if math.isfinite(x[i, j]):
                    dev += abs(x[i, j] - mean)
            out[i, t] = dev / k
    return out


@njit(**_OPTS)
def rolling_wma(x, n, start, end, out):
    """Qlib's WMA: weights 1..L over the window's L slots (newest heaviest), normalized to
    sum to 1, and then the mean of weight x value over the valid values, that is, divided by
    their count once more (a quirk of Qlib's, kept to match its output)."""
    rows, _cols = x.shape
    for i in prange(rows):
        out[i, :] = np.nan
        for t in range(start[i], end[i]):
            first = max(start[i], t - n + 1)
            length = t - first + 1
            k = 0
            s = 0.0
            for j in range(first, t + 1):
                if math.isfinite(x[i, j]):
                    k += 1
                    s += (j - first + 1) * x[i, j]
            if k > 0:
                out[i, t] = s / (length * (length + 1) / 2.0) / k
    return out


@njit(**_OPTS)
def ewm_mean(x, alpha, start, end, out):
    """pandas' ``ewm(alpha=..., adjust=True).mean()``: a missing row keeps its weight slot
    and repeats the last average."""
    rows, _cols = x.shape
    decay = 1.0 - alpha
    for i in prange(rows):
        out[i, :] = np.nan
        avg = np.nan
        weight = 1.0
        for t in range(start[i], end[i]):
            v = x[i, t]
            if avg == avg:
                weight *= decay
                if math.isfinite(v):
                    if avg != v:
                        avg = (weight * avg + v) / (weight + 1.0)
                    weight += 1.0
            elif math.isfinite(v):
                avg = v
            out[i, t] = avg
    return out


@njit(**_OPTS)
def rolling_corr_cov(a, b, n, start, end, what, phase, state, resume, out):
    """Covariance ddof=1 (what 0) or Pearson correlation (what 1) over the rows of each
    window where both values are present, from Welford co-moments; NaN with fewer than two
    such rows."""
    rows, _cols = a.shape
    for i in prange(rows):
        _clear(out, i, resume)
        k = 0
        ma = 0.0
        mb = 0.0
        saa = 0.0
        sbb = 0.0
        sab = 0.0
        lo, hi = _columns(start[i], end[i], resume)
        if resume and state[i, 0] == state[i, 0]:
            k = int(state[i, 0])
            ma = state[i, 1]
            mb = state[i, 2]
            saa = state[i, 3]
            sbb = state[i, 4]
            sab = state[i, 5]
        anchor = _first_anchor(lo, n, phase)
        for t in range(lo, hi):
            first = t
            if t == anchor:  # rebuild from the window alone (see the module's note)
                anchor += n
                k = 0
                ma = mb = saa = sbb = sab = 0.0
                first = max(start[i], t - n + 1)
            elif t - n >= start[i]:
                u = a[i, t - n]
                v = b[i, t - n]
                if math.isfinite(u) and math.isfinite(v):
                    k -= 1
                    if k > 0:
                        da = u - ma
                        db = v - mb
                        ma -= da / k
                        mb -= db / k
                        saa -= da * (u - ma)
                        sbb -= db * (v - mb)
                        sab -= da * (v - mb)
                    else:
                        ma = mb = saa = sbb = sab = 0.0
            for r in range(first, t + 1):
                u = a[i, r]
                v = b[i, r]
                if math.isfinite(u) and math.isfinite(v):
                    k += 1
                    da = u - ma
                    db = v - mb
                    ma += da / k
                    mb += db / k
                    saa += da * (u - ma)
                    sbb += db * (v - mb)
                    sab += da * (v - mb)
            if k < 2:
                continue
            if what == 0:
                out[i, t] = sab / (k - 1)
            else:
                den = math.sqrt(max(saa, 0.0) * max(sbb, 0.0))
                if den > 0:
                    out[i, t] = sab / den
        if resume and hi > lo:
            state[i, 0] = k
            state[i, 1] = ma
            state[i, 2] = mb
            state[i, 3] = saa
            state[i, 4] = sbb
            state[i, 5] = sab
    return out


@njit(**_OPTS)
def rolling_regression(y, n, start, end, what, phase, state, resume, out):
    """Least squares of each window's valid values on their slot positions (today last):
    slope (what 0), R squared (1), or the residual of today's value (2, NaN when today's
    value is missing). At least two points. Running sums as in Qlib's Cython; positions
    count from the window's start at the last rebuild (the fit does not depend on where
    they start), small whole numbers whose sums stay exact; values are summed less the
    first one since the rebuild (nor does the fit depend on a shift), so that prices far
    from zero that move by small steps do not cancel away the digits of their variance."""
    rows, _cols = y.shape
    for i in prange(rows):
        _clear(out, i, resume)
        k = 0
        sp = spp = sy = spy = syy = 0.0
        base = start[i]
        c = np.nan  # the shift: the first value added since the last rebuild
        lo, hi = _columns(start[i], end[i], resume)
        if resume and state[i, 0] == state[i, 0]:
            k = int(state[i, 0])
            sp = state[i, 1]
            spp = state[i, 2]
            sy = state[i, 3]
            spy = state[i, 4]
            syy = state[i, 5]
            base = int(state[i, 6]) - phase  # kept as a calendar row (see the module's note)
            c = state[i, 7]
        anchor = _first_anchor(lo, n, phase)
        for t in range(lo, hi):
            first = t
            if t == anchor:  # rebuild from the window alone (see the module's note)
                anchor += n
                k = 0
                sp = spp = sy = spy = syy = 0.0
                c = np.nan
                first = base = max(start[i], t - n + 1)
            elif t - n >= start[i]:
                w = y[i, t - n]
                if math.isfinite(w):
                    w -= c
                    p = t - n - base
                    k -= 1
                    sp -= p
                    spp -= p * p
                    sy -= w
                    spy -= p * w
                    syy -= w * w
            for u in range(first, t + 1):
                v = y[i, u]
                if math.isfinite(v):
                    if c != c:
                        c = v
                    v -= c
                    p = u - base
                    k += 1
                    sp += p
                    spp += p * p
                    sy += v
                    spy += p * v
                    syy += v * v
            if k < 2:
                continue
            vx = k * spp - sp * sp
            cxy = k * spy - sp * sy
            if vx <= 0:
                continue
            slope = cxy / vx
            if what == 0:
                out[i, t] = slope
            elif what == 1:
                vy = k * syy - sy * sy
                if vy > 0:
                    out[i, t] = cxy * cxy / (vx * vy)
            elif math.isfinite(y[i, t]):
                intercept = (sy - slope * sp) / k
                out[i, t] = (y[i, t] - c) - (slope * (t - base) + intercept)
        if resume and hi > lo:
            state[i, 0] = k
            state[i, 1] = sp
            state[i, 2] = spp
            state[i, 3] = sy
            state[i, 4] = spy
            state[i, 5] = syy
            state[i, 6] = base + phase
            state[i, 7] = c
    return out


@njit(**_OPTS)
def cs_rank(x, out):
    """Per day (column), each valid value's average-tie rank over the day's valid values,
    divided by their count."""
    _rows, cols = x.shape
    for t in prange(cols):
        out[:, t] = np.nan
        col = x[:, t].copy()
        valid = np.flatnonzero(col == col)
        k = valid.size
        if k == 0:
            continue
        vals = col[valid]
        order = np.argsort(vals, kind="mergesort")
        j = 0
        while j < k:
            m = j
            while m + 1 < k and vals[order[m + 1]] == vals[order[j]]:
                m += 1
            rank = (j + m) / 2.0 + 1.0
            for r in range(j, m + 1):
                out[valid[order[r]], t] = rank / k
            j = m + 1
    return out


@njit(**_OPTS)
def cs_neutralize(x, group, groups, out):
    """Per day, each value less the mean of its group's valid values that day (the
    residual of a regression on group dummies). A missing group gives NaN."""
    rows, cols = x.shape
    for t in prange(cols):
        out[:, t] = np.nan
        sums = np.zeros(groups)
        counts = np.zeros(groups)
        for i in range(rows):
            g = group[i, t]
            v = x[i, t]
            if g >= 0 and v == v:
                sums[g] += v
                counts[g] += 1.0
        for i in range(rows):
            g = group[i, t]
            if g >= 0 and x[i, t] == x[i, t]:
                out[i, t] = x[i, t] - sums[g] / counts[g]
    return out
