"""``quarry backtest`` on the inputs a user gets wrong: each is run, or refused in one line
naming the file or the value, never an internal error."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from quarry.data import Store, generate, ingest_frame, read_bars, table_spec
from tests.cli.helpers import imports_of, parse_json, run


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, pl.DataFrame, Path]:
    root = tmp_path_factory.mktemp("backtest-cli")
    store = Store(root / "store")
    generate(store, 30, 150, seed=11, alpha_ic=0.1)
    bars = read_bars(store, ["close"], adjust="adjusted")
    signal = bars.with_columns(
        score=-(pl.col("close") / pl.col("close").shift(5).over("instrument") - 1)
    ).drop("close")
    return store, signal, root


@pytest.fixture(scope="module")
def signal_file(market: tuple[Store, pl.DataFrame, Path]) -> Path:
    """The market's signal as a Parquet file (written once: no test changes it)."""
    _, signal, root = market
    path = root / "signal.parquet"
    signal.write_parquet(path)
    return path


def _backtest(store: Store, signal: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run("backtest", "--store", str(store.location), "--signal", str(signal), "--topk",
               "5", "--n-drop", "1", "--out", str(out), *extra)  # fmt: skip


def test_a_signal_with_text_dates_or_as_csv_runs(
    market: tuple[Store, pl.DataFrame, Path], tmp_path: Path
) -> None:
    store, signal, _ = market
    dated = tmp_path / "dated.parquet"
    signal.write_parquet(dated)
    text = tmp_path / "text.parquet"
    signal.with_columns(pl.col("date").dt.strftime("%Y-%m-%d")).write_parquet(text)
    csv = tmp_path / "signal.csv"
    signal.write_csv(csv)
    figures = []
    for path in (dated, text, csv):
        out = tmp_path / f"out-{path.stem}-{path.suffix[1:]}"
        code, stdout, err = _backtest(store, path, out)
        assert code == 0, (path.name, stdout, err)
        metrics = json.loads((out / "metrics.json").read_text())
        figures.append((metrics["sharpe"], metrics["orders_filled"]))
    assert figures[0] == figures[1] == figures[2] and figures[0][1] > 0
    # the signal file given as the output folder: refused before anything runs
    code, _, err = _backtest(store, dated, dated)
    assert code == 1 and err.startswith(f"error: --out {dated}: a file, not a folder")


def test_bad_signals_are_refused_in_one_line(
    market: tuple[Store, pl.DataFrame, Path], tmp_path: Path
) -> None:
    store, signal, _ = market
    cases = {
        "words.parquet": (
            signal.with_columns(date=pl.lit("next tuesday")),
            "words.parquet: column date, row 1: 'next tuesday' is not a date",
        ),
        "noscore.parquet": (
            signal.rename({"score": "prediction"}),
            "noscore.parquet: no score column (columns: instrument, date, prediction)",
        ),
        "ids.parquet": (
            signal.with_columns(pl.col("instrument").rank("dense").cast(pl.Int64)),
            "ids.parquet: none of its",
        ),
    }
    for name, (frame, message) in cases.items():
        path = tmp_path / name
        frame.write_parquet(path)
        code, stdout, err = _backtest(store, path, tmp_path / "out")
        assert code == 1, (name, stdout, err)
        assert err.startswith(f"error: {tmp_path / message}") or message in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "in the store: SYN00000, SYN00001, SYN00002" in err


def test_an_unknown_benchmark_names_the_value_and_what_is_accepted(
    market: tuple[Store, pl.DataFrame, Path], tmp_path: Path, signal_file: Path
) -> None:
    store, _, _ = market
    path = signal_file
    code, _, err = _backtest(store, path, tmp_path / "out", "--benchmark", "INDEX")
    assert code == 1
    assert err.startswith("error: --benchmark INDEX: ")
    assert "give one of its 30 instruments (SYN00000, SYN00001, SYN00002, ...)" in err
    assert len(err.strip().splitlines()) == 1


def test_the_command_says_what_the_market_lacked_and_what_never_traded(
    market: tuple[Store, pl.DataFrame, Path], tmp_path: Path, signal_file: Path
) -> None:
    store, _, root = market
    path = signal_file
    bars = read_bars(store, ["close"])
    stores = {}
    for name, volume in (("closes", None), ("halted", 0.0)):
        s = Store(root / name)
        if not s.exists():
            frame = bars.with_columns(open=None, high=pl.col("close"), low=pl.col("close"),
                                      volume=pl.lit(volume, pl.Float64))  # fmt: skip
            ingest_frame(s, table_spec("bars"), frame)
        stores[name] = s
    code, _, err = _backtest(stores["closes"], path, tmp_path / "closes")
    assert code == 0, err
    assert "note: no volume in the store over the backtest's days" in err
    assert "warning" not in err
    code, _, err = _backtest(stores["closes"], path, tmp_path / "x", "--impact", "0.1")
    assert code == 1 and err.startswith("error: --impact 0.1 needs each day's volume")
    code, _, err = _backtest(stores["halted"], path, tmp_path / "halted")
    assert code == 0, err
    assert "warning: no order was filled:" in err
    metrics = json.loads((tmp_path / "halted" / "metrics.json").read_text())
    assert metrics["orders_filled"] == 0 and metrics["traded"] is False


def test_json_holds_the_metrics_with_null_for_undefined_figures(
    market: tuple[Store, pl.DataFrame, Path], tmp_path: Path, signal_file: Path
) -> None:
    store, signal, _ = market
    path = signal_file
    code, stdout, stderr = _backtest(store, path, tmp_path / "bt", "--json")
    assert code == 0, stderr
    printed = parse_json(stdout)
    saved = json.loads((tmp_path / "bt" / "metrics.json").read_text())
    assert printed["metrics"] == saved and printed["out"] == str(tmp_path / "bt")
    assert printed["metrics"]["annualized_return"] == saved["annualized_return"] != 0
    # one signal day only: no daily IC series, so its t-statistic is null, not NaN
    one_day = signal.filter(pl.col("date") == signal["date"].unique().sort()[-3])
    one_day.write_parquet(path)
    code, stdout, stderr = _backtest(store, path, tmp_path / "bt1", "--json")
    assert code == 0, stderr
    metrics = parse_json(stdout)["metrics"]
    assert [
        v["rank_ic_t"] for v in metrics.values() if isinstance(v, dict) and "rank_ic_t" in v
    ] == [None]


def test_optimizer_options_not_given_are_the_optimizers_own_defaults() -> None:
    """One place for each default: the command passes only what it was given (its
    --rebalance-every used to default to 5 where the optimizer's is 1)."""
    import dataclasses
    import inspect

    from quarry.cli._backtest import backtest_cmd
    from quarry.portfolio import OptimizerConfig

    engine = {f.name: f.default for f in dataclasses.fields(OptimizerConfig)}
    options = inspect.signature(backtest_cmd).parameters
    for name in ("industry_bound", "turnover_limit"):  # None means "no limit" there
        assert options[name].default == engine[name], name
    for name in ("risk_aversion", "max_weight", "gross_leverage", "risk_model", "lookback",
                 "rebalance_every", "solver"):  # fmt: skip
        assert options[name].default is None, name
        assert name in engine


@pytest.mark.parametrize(
    ("flags", "files", "imported"),
    [
        # batch runs: the data files and the figures, no chart library at all
        (["--no-report"], set(), []),
        # the report: one chart library (plotly); PNGs (matplotlib) only on request
        ([], {"report.html"}, ["plotly"]),
        (["--png"], {"report.html", "cumulative.png", "drawdown.png"}, ["matplotlib", "plotly"]),
        # the optimizer imports cvxpy (and with it SciPy's linear algebra); TopK-Dropout never
        # does, nor numba's loading of its kernels (quarry._jit)
        (
            ["--no-report", "--strategy", "optimizer", "--lookback", "20"],
            set(),
            ["cvxpy", "scipy.linalg"],
        ),
    ],
)
def test_a_backtest_writes_and_imports_only_what_it_was_asked_for(
    market: tuple[Store, pl.DataFrame, Path],
    tmp_path: Path,
    flags: list[str],
    files: set[str],
    imported: list[str],
    signal_file: Path,
) -> None:
    store, _, _ = market
    path = signal_file
    out = tmp_path / "out"
    watch = (
        "cvxpy",
        "matplotlib",
        "plotly",
        "mlflow",
        "lightgbm",
        "torch",
        "sqlalchemy",
        "scipy.linalg",
    )
    code, modules, stdout = imports_of(
        "backtest", "--store", str(store.location), "--signal", str(path), "--topk", "5",
        "--n-drop", "1", "--out", str(out), "--json", *flags, watch=watch,
    )  # fmt: skip
    assert (code, modules) == (0, imported)
    written = {p.name for p in out.iterdir()}
    data = {"metrics.json", "returns.parquet", "positions.parquet", "orders.parquet"}
    assert data | files <= written
    assert ("report.html" in written) == bool(files)
    assert any(name.endswith(".png") for name in written) == ("--png" in flags)
    assert parse_json(stdout)["report"] == (str(out / "report.html") if files else None)


def test_a_run_without_a_report_leaves_no_earlier_report_behind(
    market: tuple[Store, pl.DataFrame, Path], tmp_path: Path, signal_file: Path
) -> None:
    store, _, _ = market
    path = signal_file
    out = tmp_path / "out"
    assert _backtest(store, path, out, "--png")[0] == 0
    assert (out / "report.html").exists() and (out / "cumulative.png").exists()
    assert _backtest(store, path, out)[0] == 0  # the report again, its charts not
    assert (out / "report.html").exists() and not list(out.glob("*.png"))
    assert _backtest(store, path, out, "--no-report")[0] == 0
    assert not (out / "report.html").exists() and (out / "metrics.json").exists()
    code, _, err = _backtest(store, path, out, "--no-report", "--png")
    assert code == 1 and err.startswith("error: --png draws the report's charts"), err
