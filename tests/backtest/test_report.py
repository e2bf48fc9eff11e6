"""The backtest report: the HTML, the PNGs beside it, and the numbers behind its charts."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from datetime import date
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import polars as pl
import pytest

from quarry.backtest import BacktestResult
from quarry.backtest._report import exposure_grid, monthly_table, write_report
from quarry.signals import SignalReport, analyze

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALWAYS = ["cumulative.png", "drawdown.png", "monthly_returns.png", "turnover.png"]
OPTIONAL = ["industry_exposure.png", "ic.png", "quantile_returns.png"]


def _dates(n: int) -> pl.Series:
    """n business days from Monday 2021-01-04 (Jan to about May for n = 90)."""
    days = pl.date_range(date(2021, 1, 4), date(2023, 12, 31), "1d", eager=True)
    return days.filter(days.dt.weekday() <= 5).head(n).alias("date")


def _returns(n: int = 90, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    net = rng.normal(0.001, 0.01, n)
    net[0] = 0.0  # no trade on the first day, as in a backtest
    value = 1e6 * np.cumprod(1 + net)
    return pl.DataFrame(
        {
            "date": _dates(n),
            "return_gross": net + 0.0005,
            "return_net": net,
            "benchmark": rng.normal(0.0005, 0.01, n),
            "turnover": rng.uniform(0.0, 0.3, n),
            "value": value,
            "cash": 0.05 * value,
            "costs": np.full(n, 50.0),
        }
    )


def _exposure(dates: pl.Series) -> pl.DataFrame:
    # tech overweight by 10%, banks underweight by 10%, energy neutral, every day
    rows = [
        (d, industry, bench + active, bench, active)
        for d in dates.to_list()
        for industry, bench, active in (
            ("tech", 0.3, 0.1),
            ("banks", 0.4, -0.1),
            ("energy", 0.3, 0.0),
        )
    ]
    return pl.DataFrame(
        rows, schema=["date", "industry", "portfolio", "benchmark", "active"], orient="row"
    )


def _signal(dates: pl.Series, seed: int = 5) -> SignalReport:
    rng = np.random.default_rng(seed)
    names = [f"S{i}" for i in range(10)]
    n = dates.len()
    score = rng.normal(size=(n, len(names)))
    label = 0.01 * score + rng.normal(0.0, 0.02, size=score.shape)
    frame = pl.DataFrame(
        {
            "instrument": names * n,
            "date": np.repeat(dates.to_numpy(), len(names)),
            "score": score.ravel(),
            "LABEL0": label.ravel(),
        }
    )
    return analyze(frame)


def _decisions(dates: pl.Series) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "date": [dates[5], dates[10], dates[15], dates[20]],
            "status": ["optimal", "relaxed-turnover", "optimal", "held"],
            "detail": ["", "turnover cap 0.10 infeasible, relaxed to 0.25", "", "solver <failed>"],
        }
    )


@pytest.fixture(scope="module")
def full() -> BacktestResult:
    returns = _returns()
    dates = returns["date"]
    metrics = {"sharpe": 1.5, "annualized_return": 0.12, "gross": {"sharpe": 1.7}}
    return BacktestResult(
        metrics,
        returns,
        pl.DataFrame(),
        pl.DataFrame(),
        exposure=_exposure(dates),
        signal=_signal(dates),
        decisions=_decisions(dates),
    )


@pytest.fixture(scope="module")
def written(full: BacktestResult, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_report(full, tmp_path_factory.mktemp("report") / "report.html", png=True)


def _plain(result: BacktestResult) -> BacktestResult:
    return replace(result, exposure=None, signal=None, decisions=None)


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_the_html_and_every_png_are_written_and_returned(written: list[Path]) -> None:
    html_path, *pngs = written
    assert html_path.name == "report.html" and html_path.exists()
    assert [p.name for p in pngs] == ALWAYS + OPTIONAL
    assert all(p.parent == html_path.parent for p in pngs)
    for path in pngs:
        assert path.read_bytes()[:8] == PNG_MAGIC, path.name
        image = matplotlib.image.imread(path)
        width, height = _png_size(path)
        assert image.shape[:2] == (height, width), path.name
        assert width >= 600 and height >= 200, path.name
        # a chart, not a blank canvas
        pixels = np.ascontiguousarray((image[..., :4] * 255).astype(np.uint8)).view(np.uint32)
        assert np.unique(pixels).size > 10, path.name


def test_the_html_is_self_contained_with_plotly_once(written: list[Path]) -> None:
    page = written[0].read_text(encoding="utf-8")
    assert re.search(r"<script[^>]*\bsrc\s*=", page, flags=re.IGNORECASE) is None
    assert re.search(r"<link[^>]*href\s*=\s*['\"]?https?:", page, flags=re.IGNORECASE) is None
    assert page.count("plotly.js v") == 1  # the library's banner: embedded exactly once
    # performance, monthly, exposure, IC, quantiles
    assert page.count('class="plotly-graph-div"') == 5


def _heatmap_z(page: str) -> np.ndarray:
    """The z values of the page's only heatmap, as plotly serialized them."""
    script = page[page.index("Plotly.newPlot", page.index("Monthly returns</h2>")) :]
    match = re.search(r'"z":(\{[^}]*\}|\[\[.*?\]\])', script)
    assert match is not None
    z = json.loads(match.group(1))
    if isinstance(z, list):
        return np.array(z, dtype=np.float64)
    shape = tuple(int(n) for n in str(z["shape"]).split(","))
    raw = np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"]))
    return raw.reshape(shape).astype(np.float64)


def _pandas_monthly(returns: pl.DataFrame) -> pd.Series:
    daily = pd.Series(returns["return_net"].to_numpy(), index=pd.to_datetime(returns["date"]))
    return daily.resample("ME").apply(lambda r: (1 + r).prod() - 1)


def test_monthly_returns_compound_as_pandas_does(full: BacktestResult) -> None:
    years, table = monthly_table(full.returns)
    expected = _pandas_monthly(full.returns)
    assert years == [2021]
    assert expected.size >= 4  # January to at least April
    for stamp, value in expected.items():
        assert table[years.index(stamp.year), stamp.month - 1] == pytest.approx(value, abs=1e-14)
    # months with no day are blank, not zero
    assert np.isnan(table[0, expected.size :]).all()


def test_the_html_heatmap_carries_those_numbers(full: BacktestResult, tmp_path: Path) -> None:
    # two calendar years, so rows matter as well as columns
    returns = _returns(300, seed=11)
    paths = write_report(replace(_plain(full), returns=returns), tmp_path / "r.html", png=True)
    z = _heatmap_z(paths[0].read_text(encoding="utf-8"))
    expected = _pandas_monthly(returns)
    years = sorted({stamp.year for stamp in expected.index})
    assert z.shape == (len(years), 12)
    for stamp, value in expected.items():
        assert z[years.index(stamp.year), stamp.month - 1] == pytest.approx(value, abs=1e-14)
    assert np.isfinite(z).sum() == expected.size


def test_optional_sections_only_with_their_inputs(full: BacktestResult, tmp_path: Path) -> None:
    paths = write_report(_plain(full), tmp_path / "report.html", png=True)
    assert [p.name for p in paths[1:]] == ALWAYS
    for name in OPTIONAL:
        assert not (tmp_path / name).exists()
    page = paths[0].read_text(encoding="utf-8")
    for heading in ("Industry exposure", "Signal: information coefficient",
                    "Signal: quantile returns", "Optimizer decisions"):  # fmt: skip
        assert heading not in page
    assert page.count('class="plotly-graph-div"') == 2
    assert page.count("plotly.js v") == 1


def test_exposure_and_signal_sections_with_their_inputs(
    full: BacktestResult, written: list[Path]
) -> None:
    page = written[0].read_text(encoding="utf-8")
    assert "<h2>Industry exposure</h2>" in page
    assert "Active weight = portfolio less benchmark" in page
    assert "<h2>Signal: information coefficient</h2>" in page
    assert "<h2>Signal: quantile returns</h2>" in page
    assert full.signal is not None
    summary = full.signal.summary
    for label, key in (("Mean IC", "ic"), ("ICIR", "icir"), ("Mean Rank IC", "rank_ic"),
                       ("Rank ICIR", "rank_icir")):  # fmt: skip
        assert f"<td>{label}</td><td>{summary[key]:.3f}</td>" in page


def test_only_a_signal_adds_only_its_charts(full: BacktestResult, tmp_path: Path) -> None:
    paths = write_report(replace(_plain(full), signal=full.signal), tmp_path / "r.html", png=True)
    assert [p.name for p in paths[1:]] == [*ALWAYS, "ic.png", "quantile_returns.png"]
    page = paths[0].read_text(encoding="utf-8")
    assert "Industry exposure" not in page and "Signal: quantile returns" in page


def test_fallback_decisions_are_listed_with_date_and_reason(
    full: BacktestResult, written: list[Path]
) -> None:
    page = written[0].read_text(encoding="utf-8")
    dates = full.returns["date"]
    listed = page[page.index("Rebalances not solved as posed (2)") :]
    assert (
        f"<tr><td>{dates[10]}</td><td>relaxed-turnover</td>"
        "<td>turnover cap 0.10 infeasible, relaxed to 0.25</td></tr>"
    ) in listed
    assert f"<tr><td>{dates[20]}</td><td>held</td><td>solver &lt;failed&gt;</td></tr>" in listed
    assert str(dates[5]) not in listed  # an optimal rebalance is counted, not listed
    counts = page[page.index("<h2>Optimizer decisions</h2>") : page.index("Rebalances not solved")]
    for status, n, share in (("optimal", 2, "50.0%"), ("relaxed-turnover", 1, "25.0%"),
                             ("held", 1, "25.0%")):  # fmt: skip
        assert f"<tr><td>{status}</td><td>{n}</td><td>{share}</td></tr>" in counts
    # and a warning at the top, before any chart
    warning = page.index("2 of 4 optimizer rebalances did not solve as posed")
    assert warning < page.index("plotly-graph-div")


def test_all_optimal_decisions_say_so(full: BacktestResult, tmp_path: Path) -> None:
    assert full.decisions is not None
    decisions = full.decisions.with_columns(status=pl.lit("optimal"))
    paths = write_report(replace(_plain(full), decisions=decisions), tmp_path / "r.html", png=True)
    page = paths[0].read_text(encoding="utf-8")
    assert "All 4 rebalances were solved as posed." in page
    assert "did not solve as posed" not in page


def test_exposure_grid_orders_industries_by_mean_active_weight() -> None:
    dates = _dates(3)
    exposure = _exposure(dates).with_columns(
        # energy: +5% on the last day only, so a mean of 5%/3 between tech and banks
        active=pl.when((pl.col("industry") == "energy") & (pl.col("date") == dates[2]))
        .then(0.05)
        .otherwise(pl.col("active"))
    )
    industries, wide = exposure_grid(exposure.sample(fraction=1.0, shuffle=True, seed=1))
    assert industries == ["tech", "energy", "banks"]
    assert wide.columns == ["date", *industries]
    assert wide["date"].to_list() == dates.to_list()
    np.testing.assert_allclose(
        wide.select(industries).to_numpy(),
        [[0.1, 0.0, -0.1], [0.1, 0.0, -0.1], [0.1, 0.05, -0.1]],
    )
