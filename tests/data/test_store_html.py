"""A store's rich view: each table's figures against the stored rows themselves, read from
the log and file statistics only (the bars' data files may be gone), and a missing or
broken store said in the view rather than raised."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from quarry.data import TABLES, Store, generate, ingest_frame, table_spec
from quarry.data._event_scores import write_scores
from quarry.data._events import event_versions
from quarry.data._minute_bars import minute_bars
from quarry.data._schemas import KT
from tests.html_parsing import assert_safe

DATES = {"bars": "date", "instruments": "list_date", "universe": "start",
         "fundamentals": "period_end", "corporate_actions": "ex_date",
         "events": "delivered_at", "event_scores": "delivered_at"}  # fmt: skip


def _known(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("view") / "store")
    generate(store, 30, 120, seed=4, text_rate=0.3)
    versions = event_versions(store)
    write_scores(store, versions.select("event_id", "delivered_at", score=pl.lit(0.5)), "t", "1")
    return store


def test_each_table_is_its_stored_rows_and_commits(generated: Store) -> None:
    view = assert_safe(generated._repr_html_())
    assert view.title == f"Store {generated.location.uri}"
    tables = view.table("tables")
    assert [row[0] for row in tables.rows] == list(TABLES)
    for row in tables.rows:
        name = row[0]
        cells = dict(zip(tables.header, row, strict=True))
        stored = generated.scan_raw(name)
        assert stored is not None
        raw = stored.collect()  # every version of every row: what the view counts from stats
        commits = generated.commits(name)
        latest = max(commits, key=lambda c: c.version)
        column = raw[DATES[name]]
        assert cells["rows stored"] == f"{raw.height:,}"
        assert cells["dates"] == f"{DATES[name]}: {column.min()} to {column.max()}"
        assert cells["commits"] == str(len(commits))
        assert cells["corrections"] == f"{sum(c.corrections for c in commits):,}"
        assert cells["latest commit"] == f"{name}@{latest.version}"
        first = raw.filter(pl.col("_version") == latest.version)[KT]
        known = _known(first.min())
        if first.max() != first.min():
            known += f" to {_known(first.max())}"
        assert cells["its rows known (UTC)"] == known
        assert cells["source"] == latest.source
    facts = view.table("facts").pairs()
    assert facts["Location"] == generated.location.uri
    assert facts["Bars"] == "daily"
    assert facts["Instruments"] == "30"
    newest = max(generated.commits(), key=lambda c: c.committed_at)
    assert facts["Newest commit"].startswith(f"{newest.id}, committed ")


def test_the_view_reads_no_bar(generated: Store, tmp_path: Path) -> None:
    copy = Store(shutil.copytree(generated.location.uri, tmp_path / "copy"))
    before = assert_safe(copy._repr_html_()).table("tables").rows
    data = list((tmp_path / "copy" / "bars").glob("*.parquet"))
    assert data
    for path in data:  # the bars' data files: only the log and its statistics are left
        path.unlink()
    after = assert_safe(copy._repr_html_()).table("tables").rows
    assert after == before


def test_a_location_without_a_store_is_said_not_raised(tmp_path: Path) -> None:
    where = tmp_path / "no <store> & here"
    view = assert_safe(Store(where)._repr_html_())
    assert view.title == f"Store {where}"
    (message,) = view.paragraphs["quarry-error"]
    assert message.startswith(f"no Quarry store at {where}: create one with")
    assert not view.tables


def test_a_table_that_cannot_be_opened_is_said_not_raised(tmp_path: Path) -> None:
    log = tmp_path / "broken" / "bars" / "_delta_log"
    log.mkdir(parents=True)
    (log / "00000000000000000000.json").write_text("this is not a Delta log\n")
    view = assert_safe(Store(tmp_path / "broken")._repr_html_())
    (message,) = view.paragraphs["quarry-error"]
    assert message.startswith(f"{tmp_path / 'broken' / 'bars'}: cannot open table")


def test_intraday_bars_and_tables_never_written(tmp_path: Path) -> None:
    store = Store(tmp_path / "intraday")
    bars = minute_bars(3, sessions=2, minutes=10, seed=1).select(
        "instrument", "date", "open", "high", "low", "close", "volume"
    )
    ingest_frame(store, table_spec("bars"), bars, knowledge_time="2024-01-10")
    view = assert_safe(store._repr_html_())
    assert view.table("facts").pairs()["Bars"] == "intraday"
    rows = {row[0]: row for row in view.table("tables").rows}
    first, last = bars["date"].min(), bars["date"].max()
    assert rows["bars"][1] == f"{bars.height:,}"
    assert rows["bars"][3] == f"date: {first} to {last}"
    assert rows["instruments"][1] == "no commit"
    assert "Instruments" not in view.table("facts").pairs()
