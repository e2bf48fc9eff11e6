"""The `quarry data` command-line contract that other tools rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from quarry.data import Store, read_bars
from tests.cli.helpers import parse_json, run


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> str:
    store = str(tmp_path_factory.mktemp("cli") / "store")
    code, _, err = run(
        "data", "generate", "--store", store, "--instruments", "40", "--days", "260", "--seed", "3"
    )
    assert code == 0, err
    return store


def test_read_writes_the_contracted_table(generated: str, tmp_path: Path) -> None:
    out = tmp_path / "bars.parquet"
    code, _, err = run(
        "data",
        "read",
        "--store",
        generated,
        "--fields",
        "close,volume",
        "--start",
        "2015-03-02",
        "--end",
        "2015-06-30",
        "--universe",
        "all",
        "--out",
        str(out),
    )
    assert code == 0, err
    df = pl.read_parquet(out)
    assert df.columns == ["instrument", "date", "close", "volume"]
    assert df.equals(df.sort("instrument", "date"))
    assert str(df["date"].min()) >= "2015-03-02" and str(df["date"].max()) <= "2015-06-30"
    expected = read_bars(
        Store(generated), ["close", "volume"], start="2015-03-02", end="2015-06-30", universe="all"
    )
    assert df.equals(expected)


def test_read_adjusted_and_as_of(generated: str, tmp_path: Path) -> None:
    out = tmp_path / "adj.parquet"
    code, _, err = run(
        "data",
        "read",
        "--store",
        generated,
        "--fields",
        "close,factor",
        "--adjust",
        "adjusted",
        "--as-of",
        "2016-01-01",
        "--out",
        str(out),
    )
    assert code == 0, err
    df = pl.read_parquet(out)
    assert df["date"].max() <= date(2016, 1, 1)  # nothing dated after as_of
    assert df.select((pl.col("factor") >= 1.0).all()).item()


def test_versions_json(generated: str) -> None:
    code, out, _ = run("data", "versions", "--store", generated, "--json")
    assert code == 0
    commits = json.loads(out)
    assert {"id", "knowledge_time", "table", "rows"} <= set(commits[0])
    assert {c["table"] for c in commits} == {
        "bars",
        "instruments",
        "universe",
        "corporate_actions",
        "fundamentals",
    }
    bars = [c for c in commits if c["table"] == "bars"]
    assert [c["id"] for c in bars] == ["bars@0", "bars@1"]
    # The generated history's rows became known day by day: the first after the first
    # day's close (2015-01-02, a Friday), the last after the last day's.
    assert bars[0]["knowledge_time"] == "2015-01-02T21:00:00+00:00"
    assert bars[0]["known_until"] == "2015-12-31T21:00:00+00:00"


def test_check_json(generated: str) -> None:
    code, out, _ = run("data", "check", "--store", generated, "--json", "--strict")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert report["rows"] == read_bars(Store(generated), ["close"]).height


def test_ingest_then_correct_through_the_cli(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    f1 = tmp_path / "b1.csv"
    f1.write_text("instrument,date,open,high,low,close,volume\nA,2020-01-02,1,2,1,1.5,10\n")
    f2 = tmp_path / "b2.csv"
    f2.write_text("instrument,date,open,high,low,close,volume\nA,2020-01-02,1,2,1,1.6,10\n")
    assert (
        run("data", "ingest", "bars", str(f1), "--store", store, "--knowledge-time", "2020-01-03")[
            0
        ]
        == 0
    )
    code, out, _ = run(
        "data",
        "ingest",
        "bars",
        str(f2),
        "--store",
        store,
        "--knowledge-time",
        "2020-01-09",
        "--json",
    )
    assert code == 0
    assert json.loads(out)["corrected"] == 1
    old = tmp_path / "old.parquet"
    assert (
        run(
            "data",
            "read",
            "--store",
            store,
            "--fields",
            "close",
            "--as-of",
            "2020-01-05",
            "--out",
            str(old),
        )[0]
        == 0
    )
    assert pl.read_parquet(old)["close"].to_list() == [1.5]


def test_universe_ingest_needs_a_name(tmp_path: Path) -> None:
    f = tmp_path / "u.csv"
    f.write_text("instrument,start,end\nA,2020-01-01,\n")
    code, _, err = run("data", "ingest", "universe", str(f), "--store", str(tmp_path / "s"))
    assert code == 1 and "--name" in err


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("instrument,date,open,high,low,close,volume\nA,2020-01-02,1,2,1,x,10\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "quarry.cli",
            "data",
            "ingest",
            "bars",
            str(bad),
            "--store",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(f"error: {bad}: line 2, column 'close': not a number: 'x'")
    assert not (tmp_path / "s").exists()  # nothing was written


def test_unknown_field_suggests_the_closest(generated: str, tmp_path: Path) -> None:
    code, _, err = run(
        "data",
        "read",
        "--store",
        generated,
        "--fields",
        "clsoe",
        "--out",
        str(tmp_path / "x.parquet"),
    )
    assert code == 1 and "did you mean 'close'" in err


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = run("data", "versions", "--store", str(tmp_path / "nowhere"))
    assert code == 1 and "no Quarry store" in err


def test_sample_sp500(tmp_path: Path) -> None:
    store = str(tmp_path / "sp")
    code, out, err = run("data", "sample", "sp500", "--store", store)
    assert code == 0, err
    assert "CLOSES ONLY" in out
    df = read_bars(Store(store), ["close", "open"], universe="sp500")
    assert df["instrument"].n_unique() == 20
    assert df["open"].null_count() == df.height
    from skfolio.datasets import load_sp500_dataset

    prices = load_sp500_dataset()
    aapl = df.filter(pl.col("instrument") == "AAPL")["close"].to_numpy()
    assert aapl.tolist() == prices["AAPL"].dropna().tolist()


def test_every_table_ingests_through_the_cli(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    files = {
        "instruments": "instrument,name,exchange,list_date,delist_date,industry\n"
        "A,Alpha,XNYS,2010-01-04,,Tech\nB,Beta,XNAS,2010-01-04,2020-01-03,Energy",
        "bars": "instrument,date,open,high,low,close,volume\n"
        "A,2020-01-02,100,101,99,100,10\nA,2020-01-03,50,51,49,50,20\nB,2020-01-02,5,6,4,5,7",
        "actions": "instrument,ex_date,kind,ratio,amount\nA,2020-01-03,split,2,",
        "fundamentals": "instrument,field,period_end,knowledge_date,value\n"
        "A,eps,2019-12-31,2020-01-03,1.5",
    }
    for kind, text in files.items():
        path = tmp_path / f"{kind}.csv"
        path.write_text(text + "\n")
        code, out, err = run(
            "data", "ingest", kind, str(path), "--store", store, "--knowledge-time", "2020-01-04"
        )
        assert code == 0, err
        assert "committed" in out
    universe = tmp_path / "u.csv"
    universe.write_text("instrument,start,end\nA,2010-01-04,\nB,2010-01-04,2020-01-02\n")
    assert run("data", "ingest", "universe", str(universe), "--name", "u", "--store", store)[0] == 0
    out = tmp_path / "out.parquet"
    code, _, err = run(
        "data",
        "read",
        "--store",
        store,
        "--fields",
        "close,factor,eps",
        "--adjust",
        "adjusted",
        "--universe",
        "u",
        "--out",
        str(out),
    )
    assert code == 0, err
    got = pl.read_parquet(out)
    assert got.rows() == [
        ("A", date(2020, 1, 2), 100.0, 1.0, None),
        ("A", date(2020, 1, 3), 100.0, 2.0, 1.5),
        ("B", date(2020, 1, 2), 5.0, 1.0, None),
    ]


def test_bad_arguments_exit_cleanly(generated: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run("data", "read", "--store", generated, "--out", str(blocker / "o.parquet"))
    assert code == 1 and "cannot write" in err
    code, _, _ = run("data", "generate", "--store", str(tmp_path / "g"), "--seed", "-1")
    assert code == 2  # a usage error from the option's bounds
    code, _, err = run("data", "generate", "--store", str(tmp_path / "g"), "--start", "9999-12-01")
    assert code == 1 and "out of range" in err


def test_replace_reports_retractions(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    head = "instrument,ex_date,kind,ratio,amount\n"
    first, fixed = tmp_path / "a1.csv", tmp_path / "a2.csv"
    first.write_text(head + "A,2020-01-03,split,2,\n")
    fixed.write_text(head + "A,2020-01-06,split,2,\n")
    assert run("data", "ingest", "actions", str(first), "--store", store)[0] == 0
    code, out, err = run("data", "ingest", "actions", str(fixed), "--store", store, "--replace")
    assert code == 0, err
    assert "1 new, 0 corrected, 0 unchanged, 1 retracted" in out


def test_universe_all_on_a_store_of_ingested_files(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    bars = tmp_path / "b.csv"
    bars.write_text(
        "instrument,date,open,high,low,close,volume\n"
        "A,2020-01-02,1,2,1,1.5,10\nB,2020-01-02,5,6,4,5,7\nB,2020-01-03,5,6,4,5.5,7\n"
    )
    code, _, err = run("data", "ingest", "bars", str(bars), "--store", store,
                       "--knowledge-time", "2020-01-03T22:00")  # fmt: skip
    assert code == 0, err
    out = tmp_path / "all.parquet"
    code, _, err = run("data", "read", "--store", store, "--fields", "close", "--universe", "all",
                       "--as-of", "2020-01-03T23:00", "--out", str(out))  # fmt: skip
    assert code == 0, err
    assert pl.read_parquet(out).rows() == [
        ("A", date(2020, 1, 2), 1.5),
        ("B", date(2020, 1, 2), 5.0),
        ("B", date(2020, 1, 3), 5.5),
    ]
    universe = tmp_path / "u.csv"
    universe.write_text("instrument,start,end\nA,2020-01-01,\n")
    code, _, err = run("data", "ingest", "universe", str(universe), "--name", "all", "--store",
                       store)  # fmt: skip
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: {universe}: 'all' is the built-in universe of every instrument in the store "
        "and cannot be replaced; give this universe another --name"
    ]


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"


def test_the_example_vendor_files_go_into_a_generated_store(tmp_path: Path) -> None:
    """The README's data block: examples/data/ after `quarry data generate` with the
    README's arguments, every command clean (nothing on stderr), a past read with rows."""
    store = str(tmp_path / "store")
    steps = [
        ("data", "generate", "--store", store, "--instruments", "300", "--days", "1500",
         "--alpha-ic", "0.05"),
        ("data", "ingest", "bars", str(EXAMPLES / "bars.csv"), "--store", store,
         "--knowledge-time", "2024-03-01T22:00"),
        ("data", "ingest", "universe", str(EXAMPLES / "sp.csv"), "--name", "sp", "--store", store),
        ("data", "ingest", "actions", str(EXAMPLES / "actions_fixed.csv"), "--store", store,
         "--replace"),
        ("data", "read", "--store", store, "--fields", "close,volume,eps", "--universe", "all",
         "--as-of", "2019-06-30", "--adjust", "adjusted", "--out", str(tmp_path / "c.parquet")),
        ("data", "check", "--store", store, "--strict"),
    ]  # fmt: skip
    outs = []
    for args in steps:
        code, out, err = run(*args)
        assert (code, err) == (0, ""), (args, err)
        outs.append(out)
    assert "15 new, 1 corrected, 0 unchanged" in outs[1]  # new days, and a re-sent day fixed
    assert "12 new" in outs[2]
    assert "0 new, 1 corrected, 2 unchanged, 1 retracted" in outs[3]
    past = pl.read_parquet(tmp_path / "c.parquet")
    assert past["date"].max() == date(2019, 6, 28)  # the last trading day before as_of
    assert past["eps"].drop_nulls().len() > 0
    assert "healthy" in outs[5]
    sp = read_bars(Store(store), ["close"], universe="sp")
    assert set(sp["instrument"]) == set(pl.read_csv(EXAMPLES / "sp.csv")["instrument"])


def test_generate_read_and_sample_print_json_alone_on_stdout(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    code, out, err = run("data", "generate", "--store", store, "--instruments", "12",
                         "--days", "40", "--json")  # fmt: skip
    assert code == 0, err
    made = parse_json(out)
    bars = read_bars(Store(store), ["close"])
    assert made["bars"] == bars.height and made["instruments"] == 12
    assert made["start"] == str(bars["date"].min()) and made["store"] == store
    code, out, err = run("data", "read", "--store", store, "--fields", "close", "--start",
                         "2015-01-10", "--out", str(tmp_path / "b.parquet"), "--json")  # fmt: skip
    assert code == 0, err
    written = pl.read_parquet(tmp_path / "b.parquet")
    assert parse_json(out) == {
        "out": str(tmp_path / "b.parquet"), "rows": written.height, "instruments": 12,
        "fields": ["close"], "first_date": str(written["date"].min()),
        "last_date": str(written["date"].max()),
    }  # fmt: skip
    sample = str(tmp_path / "sp")
    code, out, err = run("data", "sample", "sp500", "--store", sample, "--json")
    assert code == 0, err
    loaded = parse_json(out)
    assert loaded["rows"] == read_bars(Store(sample), ["close"]).height
    assert loaded["instruments"] == 20 and "CLOSES ONLY" in loaded["note"]
