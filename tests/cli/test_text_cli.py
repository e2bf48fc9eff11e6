"""`quarry data ingest events`, `quarry data events` and `quarry data score`: the path from
a news file to a feature, as a user types it."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tests.cli.helpers import parse_json, run


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("text") / "store")
    code, _, err = run("data", "generate", "--store", path, "--instruments", "30", "--days",
                       "120", "--seed", "2")  # fmt: skip
    assert code == 0, err
    return path


def test_a_news_file_becomes_a_feature(store: str, tmp_path: Path) -> None:
    from quarry.data import Store, read_bars

    on = read_bars(Store(store), ["close"], start="2015-03-02", end="2015-03-03")
    both = on.group_by("instrument").len().filter(pl.col("len") == 2)["instrument"].sort()
    one, two = both[0], both[1]
    news = tmp_path / "news.jsonl"
    rows = [
        {"event_id": "n1", "instruments": [one], "kind": "news",
         "published_at": "2015-03-02T15:00:00Z", "delivered_at": "2015-03-02T15:00:02Z",
         "title": f"{one} posts strong gains"},
        {"event_id": "n2", "instruments": [one, two], "kind": "news",
         "published_at": "2015-03-02T22:00:00Z", "delivered_at": "2015-03-02T22:00:02Z",
         "title": f"Lawsuit and losses hit {two}"},
    ]  # fmt: skip
    news.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = run("data", "ingest", "events", str(news), "--store", store,
                         "--knowledge-time", "2015-06-01", "--json")  # fmt: skip
    assert code == 0, err
    assert parse_json(out)["new"] == 2

    code, out, err = run("data", "events", "--store", store, "--instrument", two, "--json")
    assert code == 0, err
    listed = parse_json(out)
    assert listed["stories"] == 1 and listed["rows"][0]["event_id"] == "n2"

    code, out, err = run("data", "score", "--store", store, "--scorer", "lm", "--json")
    assert code == 0, err
    scored = parse_json(out)
    assert (scored["stories"], scored["written"]) == (2, 2)
    code, out, err = run("data", "score", "--store", store, "--scorer", "lm", "--json")
    assert parse_json(out)["unchanged"] == 2  # kept: nothing written twice

    read = tmp_path / "news.parquet"
    window = ["--start", "2015-03-02", "--end", "2015-03-03"]
    code, _, err = run("data", "read", "--store", store, "--fields", "news_count,news_sent",
                       *window, "--out", str(read))  # fmt: skip
    assert code == 0, err
    got = pl.read_parquet(read).filter(pl.col("news_count") > 0).sort("instrument", "date")
    # n1 before the close counts on 03-02; n2 after it, on 03-03, for both instruments
    assert got.select("instrument", pl.col("date").cast(pl.String), "news_count").rows() == [
        (one, "2015-03-02", 1.0),
        (one, "2015-03-03", 1.0),
        (two, "2015-03-03", 1.0),
    ]
    assert got["news_sent"].to_list() == pytest.approx([1.0, -1.0, -1.0], abs=1e-5)


def test_errors_are_one_line(store: str, tmp_path: Path) -> None:
    code, _, err = run("data", "score", "--store", store, "--scorer", "vadr")
    assert code == 1
    assert err.strip().splitlines() == [
        "error: no text scorer named 'vadr' (did you mean 'vader'?); known: lm, vader"
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("event_id,instruments,published_at,kind,title\nx,A,soon,news,Hi\n")
    code, _, err = run("data", "ingest", "events", str(bad), "--store", store)
    assert code == 1
    assert "line 2, column 'published_at': unparseable time" in err
    assert "Traceback" not in err
