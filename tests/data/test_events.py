"""The events table: stories ingested from JSON lines, CSV or Parquet with the bars' rules
(one line per kind of problem, nothing written on a bad file), versions kept as history, and
reads as of a time that see each story as it was then, or not at all."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from quarry.data import Store, ingest_file
from quarry.data._events import event_versions, read_events
from quarry.exceptions import BadInputError, UsageError


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


STORY = {
    "event_id": "e1",
    "instruments": ["MSFT", "AAPL"],
    "published_at": "2024-01-02T14:00:00Z",
    "delivered_at": "2024-01-02T14:00:03Z",
    "kind": "news",
    "title": "Apple and Microsoft report strong gains",
    "source": "wire",
}


def test_a_story_from_json_lines_csv_and_parquet_reads_the_same(store: Store, tmp_path: Path):
    _jsonl(tmp_path / "a.jsonl", [STORY])
    ingest_file(store, "events", tmp_path / "a.jsonl", knowledge_time="2024-01-03")
    csv = tmp_path / "b.csv"
    csv.write_text(
        "event_id,instruments,published_at,delivered_at,kind,title,source\n"
        "e2,AAPL; MSFT,2024-01-02T14:00:00Z,2024-01-02T14:00:03Z,news,"
        "Apple and Microsoft report strong gains,wire\n"
    )
    ingest_file(store, "events", csv, knowledge_time="2024-01-03")
    pq = tmp_path / "c.parquet"
    pl.DataFrame(
        {**{k: [v] for k, v in STORY.items()}, "event_id": ["e3"]},
        schema_overrides={"instruments": pl.List(pl.String)},
    ).write_parquet(pq)
    ingest_file(store, "events", pq, knowledge_time="2024-01-03")
    got = read_events(store)
    assert got["event_id"].to_list() == ["e1", "e2", "e3"]
    # the same story, whichever file it came in
    assert got.drop("event_id").unique().height == 1
    assert got["instruments"][0] == "AAPL,MSFT"
    assert got["delivered_at"][0] == _t("2024-01-02T14:00:03")


def test_a_bad_file_is_refused_whole_with_a_line_per_problem(store: Store, tmp_path: Path):
    good = {**STORY, "event_id": "ok"}
    rows = [
        good,
        {**STORY, "event_id": "e2", "kind": "blog"},
        {**STORY, "event_id": "e3", "title": ""},
        {**STORY, "event_id": "e4", "delivered_at": "2024-01-02T13:00:00Z"},
        {**STORY, "event_id": "e5", "published_at": "yesterday"},
        {"event_id": "nope", "delivered_at": "2024-01-02T15:00:00Z", "retracted": True},
    ]
    path = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(BadInputError) as caught:
        ingest_file(store, "events", path, knowledge_time="2024-01-03")
    lines = str(caught.value).splitlines()
    assert any("line 2, column 'kind': not one of news|filing|report|social" in x for x in lines)
    assert any("line 3, column 'title': missing value" in x for x in lines)
    assert any(
        "line 4, column 'delivered_at': delivered_at before published_at" in x for x in lines
    )
    assert any("line 5, column 'published_at': unparseable time" in x for x in lines)
    assert any("line 6, column 'event_id': retraction of a story the store does not know" in x
               for x in lines)  # fmt: skip
    assert all(x.startswith(str(path)) for x in lines)
    assert store.table("events") is None  # nothing written
    # --skip-bad keeps the good one
    ingest_file(store, "events", path, knowledge_time="2024-01-03", skip_bad=True)
    assert read_events(store)["event_id"].to_list() == ["ok"]


def test_a_story_known_after_the_files_knowledge_time_is_refused(store: Store, tmp_path: Path):
    path = _jsonl(tmp_path / "late.jsonl", [STORY])
    with pytest.raises(BadInputError, match="delivered_at after the knowledge time"):
        ingest_file(store, "events", path, knowledge_time="2024-01-02T14:00:00Z")


def test_corrections_and_retractions_are_history(store: Store, tmp_path: Path):
    ingest_file(store, "events", _jsonl(tmp_path / "1.jsonl", [STORY]),
                knowledge_time="2024-01-02T14:00:03Z")  # fmt: skip
    fix = {**STORY, "delivered_at": "2024-01-03T09:00:00Z", "title": "Apple reports gains"}
    fix["instruments"] = ["AAPL"]
    ingest_file(store, "events", _jsonl(tmp_path / "2.jsonl", [fix]),
                knowledge_time="2024-01-03T09:00:00Z")  # fmt: skip
    gone = {"event_id": "e1", "delivered_at": "2024-01-04T09:00:00Z", "retracted": True}
    ingest_file(store, "events", _jsonl(tmp_path / "3.jsonl", [gone]),
                knowledge_time="2024-01-04T09:00:00Z")  # fmt: skip

    assert read_events(store, as_of="2024-01-02T12:00:00Z").height == 0  # not yet delivered
    first = read_events(store, as_of="2024-01-02T20:00:00Z")
    assert first["title"].to_list() == [STORY["title"]]
    assert first["instruments"].to_list() == ["AAPL,MSFT"]
    corrected = read_events(store, as_of="2024-01-03T12:00:00Z")
    assert corrected["title"].to_list() == ["Apple reports gains"]
    assert corrected["first_delivered_at"].to_list() == [_t("2024-01-02T14:00:03")]
    assert corrected["versions"].to_list() == [2]
    assert read_events(store, as_of="2024-01-04T12:00:00Z").height == 0  # retracted
    assert read_events(store).height == 0
    # every version is kept
    assert event_versions(store)["retracted"].to_list() == [False, False, True]


def test_a_version_without_a_delivery_time_was_delivered_at_the_ingest(
    store: Store, tmp_path: Path
):
    row = {k: v for k, v in STORY.items() if k != "delivered_at"}
    ingest_file(store, "events", _jsonl(tmp_path / "a.jsonl", [row]),
                knowledge_time="2024-01-05T10:00:00Z")  # fmt: skip
    assert read_events(store)["delivered_at"].to_list() == [_t("2024-01-05T10:00:00")]


def test_an_ingest_of_the_same_file_again_commits_nothing(store: Store, tmp_path: Path):
    path = _jsonl(tmp_path / "a.jsonl", [STORY])
    ingest_file(store, "events", path, knowledge_time="2024-01-03")
    again = ingest_file(store, "events", path, knowledge_time="2024-01-04")
    assert again.commit is None and again.unchanged == 1


def test_read_events_filters_and_refuses_an_unknown_kind(store: Store, tmp_path: Path):
    rows = [
        STORY,
        {**STORY, "event_id": "e2", "instruments": ["IBM"], "kind": "filing"},
    ]
    ingest_file(store, "events", _jsonl(tmp_path / "a.jsonl", rows), knowledge_time="2024-01-03")
    assert read_events(store, instruments=["IBM"])["event_id"].to_list() == ["e2"]
    assert read_events(store, kinds=["news"])["event_id"].to_list() == ["e1"]
    with pytest.raises(UsageError, match="unknown event kind 'tweet'"):
        read_events(store, kinds=["tweet"])


def test_an_end_date_takes_its_whole_day(store: Store, tmp_path: Path):
    ingest_file(store, "events", _jsonl(tmp_path / "a.jsonl", [STORY]), knowledge_time="2024-01-03")
    assert read_events(store, end="2024-01-02")["event_id"].to_list() == ["e1"]
    assert read_events(store, start="2024-01-03").height == 0
    assert read_events(store, end="2024-01-01").height == 0
