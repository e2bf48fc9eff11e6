"""The running kernels resumed column by column, as a live stream runs them, give the values
of one pass over the whole panel, to the bit: the reference is the batch kernel itself, on
histories with gaps, infinities, late listings and a calendar that does not start at row 0."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from quarry.features import _kernels as k

ROWS, COLS = 7, 100
Kernel = Callable[[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray, int, np.ndarray, bool,
                   np.ndarray], np.ndarray]  # fmt: skip


def _panel(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 500 + np.cumsum(rng.normal(0, 0.3, (ROWS, COLS)), axis=1)
    x[rng.random((ROWS, COLS)) < 0.08] = np.nan  # missing bars
    x[rng.random((ROWS, COLS)) < 0.01] = np.inf  # read as missing
    x[3, 40:60] = np.nan  # a suspension
    x[5, 10:30] = 7.25  # a flat stretch (variance exactly 0)
    x[6, 82:96] = [0.0, -0.0, -0.0, 0.0, -0.0, 0.0, 0.0, -0.0, -0.0, -0.0, 0.0, -0.0, 0.0, 0.0]
    return x


# each running kernel as f(a, b, n, start, end, phase, state, resume, out), b unused by most
KERNELS: dict[str, tuple[str, Kernel]] = {
    "count": ("sum", lambda a, b, n, s, e, p, st, r, o: k.rolling_sum(a, n, s, e, 0, p, st, r, o)),
    "mean": ("sum", lambda a, b, n, s, e, p, st, r, o: k.rolling_sum(a, n, s, e, 2, p, st, r, o)),
    "std": ("var", lambda a, b, n, s, e, p, st, r, o: k.rolling_var(a, n, s, e, True, p, st, r, o)),
    "corr": (
        "corr_cov",
        lambda a, b, n, s, e, p, st, r, o: k.rolling_corr_cov(a, b, n, s, e, 1, p, st, r, o),
    ),
    "cov": (
        "corr_cov",
        lambda a, b, n, s, e, p, st, r, o: k.rolling_corr_cov(a, b, n, s, e, 0, p, st, r, o),
    ),
    "slope": (
        "regression",
        lambda a, b, n, s, e, p, st, r, o: k.rolling_regression(a, n, s, e, 0, p, st, r, o),
    ),
    "rsquare": (
        "regression",
        lambda a, b, n, s, e, p, st, r, o: k.rolling_regression(a, n, s, e, 1, p, st, r, o),
    ),
    "resi": (
        "regression",
        lambda a, b, n, s, e, p, st, r, o: k.rolling_regression(a, n, s, e, 2, p, st, r, o),
    ),
}


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("n", [2, 13])
@pytest.mark.parametrize("phase", [0, 3])
def test_resumed_column_by_column_equals_one_pass(name: str, n: int, phase: int) -> None:
    kind, kernel = KERNELS[name]
    a, b = _panel(1), _panel(2)
    start = np.array([0, 0, 17, 0, 55, 0, 80], dtype=np.int64)  # late listings
    end = np.full(ROWS, COLS, dtype=np.int64)
    whole = kernel(a, b, n, start, end, phase, k.NO_STATE, False, np.empty((ROWS, COLS)))

    # a stream: each bar, a panel of the newest n + 1 columns, whose first column is
    # calendar row t - n (so ``phase`` moves with it), and the state of the bar before
    state = np.full((ROWS, k.STATE_WIDTH[kind]), np.nan)
    width = n + 1
    got = np.full((ROWS, COLS), np.nan)
    for t in range(COLS):
        lo = t - width + 1
        cols = np.arange(lo, t + 1)
        inside = cols >= 0
        pa = np.full((ROWS, width), np.nan)
        pb = np.full((ROWS, width), np.nan)
        pa[:, inside], pb[:, inside] = a[:, cols[inside]], b[:, cols[inside]]
        s = np.clip(start - lo, 0, width).astype(np.int64)
        s[start > t] = width  # not listed yet: no history in this panel
        e = np.full(ROWS, width, dtype=np.int64)
        out = kernel(pa, pb, n, s, e, phase + lo, state, True, np.empty((ROWS, width)))
        got[:, t] = out[:, -1]
    listed = np.arange(COLS)[None, :] >= start[:, None]
    np.testing.assert_array_equal(np.where(listed, got, np.nan), whole)


QS = np.array([0.2, 0.5, 0.8])

# each window kernel as f(x, n, start, end, last) -> the output panel
WINDOWS: dict[str, Callable[..., np.ndarray]] = {
    "rank": lambda x, n, s, e, last: k.rolling_rank(x, n, s, e, last, np.empty(x.shape)),
    "quantiles": lambda x, n, s, e, last: np.concatenate(
        k.rolling_quantile(x, n, s, e, QS, last, k.NO_STATE, False)
    ),
}


@pytest.mark.parametrize("name", list(WINDOWS))
@pytest.mark.parametrize("n", [1, 4, 13])
def test_the_newest_column_alone_equals_one_pass(name: str, n: int) -> None:
    x = _panel(3)
    x[1, 60:66] = x[1, 59]  # ties: the oldest counts for IdxMax, ranks are averaged
    start = np.array([0, 0, 17, 0, 55, 0, 80], dtype=np.int64)
    end = np.full(ROWS, COLS, dtype=np.int64)
    whole = WINDOWS[name](x, n, start, end, False)
    for t in range(COLS):
        cut = np.minimum(end, t + 1)
        newest = WINDOWS[name](x[:, : t + 1], n, np.minimum(start, t + 1), cut, True)
        # one output panel a quantile, stacked: the newest column of each; zeros to the sign
        np.testing.assert_array_equal(newest[:, -1], whole[:, t], err_msg=f"column {t}")
        np.testing.assert_array_equal(np.signbit(newest[:, -1]), np.signbit(whole[:, t]))


@pytest.mark.parametrize("largest", [True, False])
def test_extremes_of_several_windows_in_one_scan_equal_one_pass_each(largest: bool) -> None:
    # Max and IdxMax (Min and IdxMin) over windows of one series, the newest column alone,
    # as a stream scans them: each equals its own kernel's pass over the whole panel, with
    # ties (the newest for Max, which tells -0.0 from 0.0; the oldest for IdxMax), missing
    # values and histories shorter than the windows.
    x = _panel(5)
    x[1, 60:66] = x[1, 59]
    start = np.array([0, 0, 17, 0, 55, 0, 80], dtype=np.int64)
    end = np.full(ROWS, COLS, dtype=np.int64)
    windows = np.array([1, 3, 5, 13, 30], dtype=np.int64)
    values = {n: k.rolling_extreme(x, n, start, end, largest, np.empty(x.shape)) for n in windows}
    places = {n: k.idx_extreme(x, n, start, end, largest, np.empty(x.shape)) for n in windows}
    for t in range(COLS):
        got = np.empty((ROWS, len(windows))), np.empty((ROWS, len(windows)))
        k.newest_extremes(x[:, : t + 1], windows, np.minimum(start, t + 1),
                          np.full(ROWS, t + 1, dtype=np.int64), largest, *got)  # fmt: skip
        for j, n in enumerate(windows):
            np.testing.assert_array_equal(got[0][:, j], values[n][:, t], err_msg=f"{n} at {t}")
            np.testing.assert_array_equal(np.signbit(got[0][:, j]), np.signbit(values[n][:, t]))
            np.testing.assert_array_equal(got[1][:, j], places[n][:, t], err_msg=f"{n} at {t}")


@pytest.mark.parametrize("n", [1, 4, 13])
def test_quantiles_resumed_from_a_kept_sorted_window_equal_one_pass(n: int) -> None:
    # A stream keeps each instrument's sorted window and moves it one column a bar, reading
    # the column that leaves it: panels of n + 1 columns, as for the running kernels.
    x = _panel(4)
    x[1, 60:66] = x[1, 59]  # ties
    start = np.array([0, 0, 17, 0, 55, 0, 80], dtype=np.int64)
    end = np.full(ROWS, COLS, dtype=np.int64)
    whole = k.rolling_quantile(x, n, start, end, QS, False, k.NO_STATE, False)
    state = np.full((ROWS, n + 1), np.nan)
    width = n + 1
    for t in range(COLS):
        lo = t - width + 1
        cols = np.arange(lo, t + 1)
        inside = cols >= 0
        panel = np.full((ROWS, width), np.nan)
        panel[:, inside] = x[:, cols[inside]]
        s = np.clip(start - lo, 0, width).astype(np.int64)
        s[start > t] = width  # not listed yet
        e = np.full(ROWS, width, dtype=np.int64)
        newest = k.rolling_quantile(panel, n, s, e, QS, True, state, True)
        assert newest.shape == (QS.size, ROWS, 1)
        np.testing.assert_array_equal(newest[:, :, 0], whole[:, :, t], err_msg=f"column {t}")
        np.testing.assert_array_equal(np.signbit(newest[:, :, 0]), np.signbit(whole[:, :, t]))
