"""The `quarry features compute` command-line contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quarry.data import Store, read_bars
from quarry.features import alpha158
from tests.cli.helpers import parse_json, run


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("feat") / "store")
    assert run("data", "generate", "--store", path, "--instruments", "12", "--days", "150")[0] == 0
    return path


def test_alpha158_with_label_from_a_store(store: str, tmp_path: Path) -> None:
    out = tmp_path / "f.parquet"
    label = "Ref($close, -2)/Ref($close, -1) - 1"
    args = ["--store", store, "--set", "alpha158", "--label", label, "--start", "2015-03-02"]
    code, stdout, stderr = run("features", "compute", *args, "--out", str(out))
    assert code == 0, stderr
    df = pl.read_parquet(out)
    assert df.columns == ["instrument", "date", *alpha158(), "LABEL0"]
    assert str(df["date"].min()) >= "2015-03-02"
    # MA5 uses history before --start: on the first written day it is a full 5-day mean.
    bars = read_bars(Store(store), ["close"], adjust="adjusted").filter(
        pl.col("instrument") == "SYN00001"
    )
    c = bars["close"].to_numpy()
    first = df.filter(pl.col("instrument") == "SYN00001").row(0, named=True)
    i = bars["date"].to_list().index(first["date"])
    assert first["MA5"] == pytest.approx(c[i - 4 : i + 1].mean() / c[i])
    assert "wrote" in stdout


def test_expressions_from_a_bars_file(tmp_path: Path) -> None:
    bars = tmp_path / "bars.csv"
    bars.write_text(
        "instrument,date,open,high,low,close,volume\n"
        + "".join(f"A,2020-01-{d:02d},1,2,1,{d},10\n" for d in range(1, 8))
    )
    out = tmp_path / "f.parquet"
    code, _, err = run(
        "features",
        "compute",
        "--bars",
        str(bars),
        "--expr",
        "M3=Mean($close, 3)",
        "--out",
        str(out),
    )
    assert code == 0, err
    np.testing.assert_allclose(pl.read_parquet(out)["M3"].to_numpy(), [1, 1.5, 2, 3, 4, 5, 6])


def test_lookahead_is_refused_before_reading(tmp_path: Path) -> None:
    code, _, err = run(
        "features",
        "compute",
        "--store",
        str(tmp_path / "none"),
        "--expr",
        "X=Ref($close, -1)",
        "--out",
        str(tmp_path / "o.parquet"),
    )
    assert code == 1 and "into the future" in err


def test_parse_error_shows_a_caret(tmp_path: Path) -> None:
    code, _, err = run(
        "features",
        "compute",
        "--bars",
        "x.csv",
        "--expr",
        "X=Mean($close, 5",
        "--out",
        str(tmp_path / "o.parquet"),
    )
    assert code == 1
    first, caret = err.rstrip("\n").split("\n")[-2:]
    assert first.startswith("error: feature 'X': expected ')'")
    assert caret.index("^") == first.index("Mean($close, 5") + len("Mean($close, 5")


def test_a_directory_output_in_chunks_matches_one_file(store: str, tmp_path: Path) -> None:
    args = ["features", "compute", "--store", store, "--expr", "R=CSRank(Mean($close, 5))"]
    args.append("--no-cache")
    code, _, err = run(*args, "--out", str(tmp_path / "one.parquet"))
    assert code == 0, err
    # The fixed part (interpreter and libraries) is reckoned at 400MB; 50KB beyond it holds
    # a few of these instruments' panels (150 days each), so the run takes several chunks.
    code, stdout, err = run(*args, "--out", str(tmp_path / "parts"), "--memory", "400.05MB")
    assert code == 0, err
    assert "chunks of up to" in stdout and " 1 chunk " not in stdout
    one = pl.read_parquet(tmp_path / "one.parquet")
    parts = pl.read_parquet(tmp_path / "parts" / "*.parquet").sort("instrument", "date")
    assert len(list((tmp_path / "parts").iterdir())) > 1
    assert parts.equals(one)


def test_universe_keeps_member_rows(store: str, tmp_path: Path) -> None:
    out = tmp_path / "u.parquet"
    code, _, err = run(
        "features", "compute", "--store", store, "--universe", "all",
        "--expr", "M=Mean($close, 3)", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    members = read_bars(Store(store), ["close"], universe="all").select("instrument", "date")
    got = pl.read_parquet(out).select("instrument", "date")
    assert got.equals(members.sort("instrument", "date"))


def test_bad_memory_setting_is_one_line(tmp_path: Path) -> None:
    code, _, err = run(
        "features", "compute", "--bars", "x.csv", "--expr", "M=$close",
        "--memory", "lots", "--out", str(tmp_path / "o.parquet"),
    )  # fmt: skip
    assert code == 1 and "write it like 4GB" in err and "Traceback" not in err


def _one_line_error(code: int, err: str) -> str:
    assert code == 1, err
    assert "Traceback" not in err and "internal error" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_name_given_twice_is_refused(tmp_path: Path) -> None:
    code, _, err = run(
        "features", "compute", "--bars", "x.csv", "--expr", "X=$close", "--expr", "X=$open",
        "--out", str(tmp_path / "o.parquet"),
    )  # fmt: skip
    line = _one_line_error(code, err)
    assert "--expr 'X=$open': X is already defined by --expr 'X=$close'" in line
    assert not (tmp_path / "o.parquet").exists()


def test_an_expr_redefining_a_feature_of_the_set_is_refused(tmp_path: Path) -> None:
    code, _, err = run(
        "features", "compute", "--bars", "x.csv", "--set", "alpha158",
        "--expr", "KMID=$close", "--out", str(tmp_path / "o.parquet"),
    )  # fmt: skip
    line = _one_line_error(code, err)
    assert "KMID is already a feature of --set alpha158" in line


@pytest.mark.parametrize("name", ["LABEL0", "LABEL1", "date", "instrument"])
def test_a_feature_named_like_the_label_or_a_key_is_refused(tmp_path: Path, name: str) -> None:
    code, _, err = run(
        "features", "compute", "--bars", "x.csv", "--expr", f"{name}=$close",
        "--label", "Ref($close, -1)/$close - 1", "--out", str(tmp_path / "o.parquet"),
    )  # fmt: skip
    line = _one_line_error(code, err)
    assert f"feature name '{name}' is reserved" in line


@pytest.mark.parametrize(
    "text",
    [
        "+".join(["$close"] * 5_000),
        "Abs(" * 10_000 + "$close" + ")" * 10_000,
        "(" * 10_000 + "$close" + ")" * 10_000,
    ],
)
def test_a_huge_expression_is_one_line_naming_the_limit(tmp_path: Path, text: str) -> None:
    code, _, err = run(
        "features", "compute", "--bars", "x.csv", "--expr", f"BIG={text}",
        "--out", str(tmp_path / "o.parquet"),
    )  # fmt: skip
    line = _one_line_error(code, err)
    assert line.startswith("error: feature 'BIG': the expression") and "100 levels" in line
    assert len(line) < 400


def test_json_says_what_was_written(store: str, tmp_path: Path) -> None:
    out = tmp_path / "f.parquet"
    code, stdout, stderr = run("features", "compute", "--store", store, "--no-cache",
                               "--expr", "MA5=Mean($close, 5)", "--expr", "R=$close/$open",
                               "--label", "Ref($close, -2)/Ref($close, -1) - 1",
                               "--out", str(out), "--json")  # fmt: skip
    assert code == 0, stderr
    result = parse_json(stdout)
    bars = read_bars(Store(store), ["close"]).height  # a row per bar
    assert result["rows"] == pl.read_parquet(out).height == bars
    assert result["features"] == 2 and result["out"] == str(out)
    assert result["cached"] == [] and result["computed"] == ["MA5", "R", "LABEL0"]
    assert result["label"] == "Ref($close, -2)/Ref($close, -1) - 1"
