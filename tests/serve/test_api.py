"""The serving API against models trained and registered for real: predictions equal the
registered version's own in-process scores, by table (JSON records, Arrow) and by date
(features computed from the store); the catalog, errors, auth, trailing slashes, metrics,
training through the job service."""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from quarry.data import Store
from quarry.features import materialize
from quarry.serve import ARROW, Catalog, ModelRef, create_app
from quarry.tracking import load_packaged
from tests.serve.conftest import FEATURES, PROJECTS, Api, Trained

MODELS = ["m-lightgbm", "m-linear", "m-mlp"]
DAY = date(2015, 11, 10)  # a Tuesday inside the test segment


def _project(name: str) -> str:
    return PROJECTS.get(name, "default")


def _table(trained: Trained, days: list[date]) -> pl.DataFrame:
    """Raw features of ``days`` as the store gives them, with NOISE missing (null, as JSON
    has it) in every seventh row."""
    frame = trained.raw.filter(pl.col("date").is_in(days)).sort("date", "instrument")
    frame = frame.with_columns(pl.col(list(FEATURES)).cast(pl.Float64).fill_nan(None))
    gap = pl.int_range(pl.len()) % 7 == 3
    return frame.with_columns(NOISE=pl.when(gap).then(None).otherwise(pl.col("NOISE")))


def _records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [dict(r, date=r["date"].isoformat()) for r in frame.to_dicts()]


@pytest.mark.parametrize("name", MODELS)
def test_a_table_scores_as_the_registered_version_does_in_process(
    name: str, api: Api, trained: Trained
) -> None:
    table = _table(trained, [DAY, date(2015, 11, 11)])
    assert table.null_count().sum_horizontal().item() > 0  # missing values travel too
    version = trained.versions[name]
    expected = np.asarray(load_packaged(name, version).score(table), dtype=np.float64)
    assert np.unique(expected).size > 3  # the model tells instruments apart

    r = api.client.post(f"/v2/models/{name}/predict", json={"records": _records(table)},
                        headers=api.auth(_project(name)))  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["X-Quarry-Model"] == name
    assert r.headers["X-Quarry-Model-Version"] == str(version)
    body = r.json()
    assert (body["model"], body["alias"], body["version"]) == (name, "champion", version)
    rows = body["predictions"]
    assert [(p["instrument"], p["date"]) for p in rows] == [
        (i, d.isoformat()) for i, d in table.select("instrument", "date").iter_rows()
    ]
    np.testing.assert_array_equal([p["score"] for p in rows], expected)

    sink = io.BytesIO()
    table.write_ipc_stream(sink)
    r = api.client.post(f"/v2/models/{name}/predict", content=sink.getvalue(),
                        headers={**api.auth(_project(name)), "Content-Type": ARROW,
                                 "Accept": ARROW})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == ARROW
    assert r.headers["X-Quarry-Model-Version"] == str(version)
    got = pl.read_ipc_stream(io.BytesIO(r.content))
    assert got.columns == ["instrument", "date", "score"]
    assert got["date"].to_list() == table["date"].to_list()
    np.testing.assert_array_equal(got["score"].to_numpy(), expected)


def test_json_records_score_as_the_same_table_in_arrow(api: Api, trained: Trained) -> None:
    # JSON records of a model whose processors are row-wise (this linear one's) are read
    # straight into a matrix; an Arrow table goes through a frame: the same rows must get
    # the same scores, whatever their values' JSON types
    table = _table(trained, [DAY, date(2015, 11, 11)])
    records = _records(table)
    records[1]["MOM20"] = 1  # an integer
    records[2]["REV5"] = None
    records[4]["REV5"] = 1e300
    records[5]["NOISE"] = True  # a boolean is 1 (a flag as a feature)
    sent = table.with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(1.0).otherwise("MOM20").alias("MOM20"),
        pl.when(pl.int_range(pl.len()) == 2).then(None)
        .when(pl.int_range(pl.len()) == 4).then(1e300).otherwise("REV5").alias("REV5"),
        pl.when(pl.int_range(pl.len()) == 5).then(1.0).otherwise("NOISE").alias("NOISE"),
    )  # fmt: skip
    sink = io.BytesIO()
    sent.write_ipc_stream(sink)

    def scores(**body: Any) -> list[float | None]:
        body["headers"] = {**api.auth(), **body.get("headers", {})}
        r = api.client.post("/v2/models/m-linear/predict", **body)
        assert r.status_code == 200, r.text
        return [p["score"] for p in r.json()["predictions"]]

    arrow = scores(content=sink.getvalue(), headers={"Content-Type": ARROW})
    assert len(set(arrow)) > 50  # the model tells rows apart
    assert scores(json={"records": records}) == arrow  # the same matrix: the same bits
    # an absent key is a missing value, as in a frame (the frame route reads that body)
    del records[3]["NOISE"]
    sent = sent.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise("NOISE").alias("NOISE")
    )
    sink = io.BytesIO()
    sent.write_ipc_stream(sink)
    arrow = scores(content=sink.getvalue(), headers={"Content-Type": ARROW})
    assert scores(json={"records": records}) == arrow
    # a few of them alone (float32 BLAS sums in an order that depends on the number of rows)
    assert scores(json={"records": records[1:6]}) == pytest.approx(arrow[1:6], rel=1e-6)
    # NaN as Python's json.dumps writes it by default is a missing value
    text = json.dumps({"records": [{**records[0], "REV5": float("nan")}]})
    assert "NaN" in text
    assert scores(content=text, headers={"Content-Type": "application/json"}) == (
        scores(json={"records": [{**records[0], "REV5": None}]})
    )
    # a value that is not a number, among numbers, is refused naming its row
    for bad in ("0.5", [0.5]):
        body = {"records": [_row(), _row(MOM20=bad)]}
        r = api.client.post("/v2/models/m-linear/predict", json=body, headers=api.auth())
        assert r.status_code == 422 and r.json()["detail"][0]["path"] == "records[1].MOM20", r.text


@pytest.mark.parametrize("name", MODELS)
def test_a_date_is_scored_from_the_models_own_features_computed_from_the_store(
    name: str, api: Api, trained: Trained, tmp_path: Path
) -> None:
    # the reference: every day's features computed in memory (no cache), the day's whole
    # cross-section scored in-process, then the instruments picked
    materialize(Store(trained.store), FEATURES, tmp_path / "all.parquet")
    day = pl.read_parquet(tmp_path / "all.parquet").filter(pl.col("date") == DAY)
    packaged = load_packaged(name, trained.versions[name])
    expected = dict(zip(day["instrument"], packaged.score(day), strict=True))
    names = sorted(expected)
    asked = [names[7], "NOPE", *names[:5][::-1]]

    r = api.client.post(f"/v2/models/{name}/predict",
                        json={"instruments": asked, "date": DAY.isoformat()},
                        headers=api.auth(_project(name)))  # fmt: skip
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    assert [p["instrument"] for p in rows] == asked
    assert {p["date"] for p in rows} == {DAY.isoformat()}
    for p in rows:
        if p["instrument"] == "NOPE":
            assert p["score"] is None  # no bar that day
        else:
            assert p["score"] == pytest.approx(expected[p["instrument"]], rel=1e-9, abs=1e-12)

    # without instruments: the whole cross-section, by name
    r = api.client.post(f"/v2/models/{name}/predict", json={"date": DAY.isoformat()},
                        headers={**api.auth(_project(name)), "Accept": ARROW})  # fmt: skip
    got = pl.read_ipc_stream(io.BytesIO(r.content))
    assert got["instrument"].to_list() == sorted(expected)
    np.testing.assert_allclose(got["score"].to_numpy(),
                               [expected[i] for i in sorted(expected)], rtol=1e-9)  # fmt: skip


def test_the_catalog_shows_each_model_of_the_callers_projects(api: Api, trained: Trained) -> None:
    listed = api.client.get("/v2/models", headers=api.auth()).json()["models"]
    assert [(m["name"], m["alias"], m["version"], m["project"]) for m in listed] == [
        (name, "champion", trained.versions[name], "default")
        for name in ("m-legacy", "m-lightgbm", "m-linear")
    ]
    lightgbm = listed[1]
    assert lightgbm["model_type"] == "lightgbm" and lightgbm["features"] == 3
    assert "test_rank_ic" in lightgbm["figures"]
    meta = lightgbm["metadata"]
    assert (meta["name"], meta["version"], meta["project"]) == ("m-lightgbm", 1, "default")
    assert meta["workflow"]["path"] == "/srv/research/lightgbm.yaml"
    assert [f["name"] for f in meta["features"]] == list(FEATURES)
    assert listed[0]["metadata"] is None  # registered outside Quarry
    theirs = api.client.get("/v2/models", headers=api.auth("beta")).json()["models"]
    assert [(m["name"], m["project"], m["metadata"]["description"]) for m in theirs] == [
        ("m-mlp", "beta", "A mlp model for the serving tests.")]  # fmt: skip
    one = api.client.get("/v2/models/m-linear", headers=api.auth()).json()
    assert one["package"]["columns"] == ["REV5", "MOM20", "NOISE"]
    assert one["package"]["features"] == FEATURES


def test_auth_and_projects(api: Api) -> None:
    assert api.client.get("/v2/models").status_code == 401
    assert api.client.get("/v2/models", headers={"Authorization": "Bearer qt_x"}).status_code == 401
    body = {"date": DAY.isoformat()}
    assert api.client.post("/v2/models/m-linear/predict", json=body).status_code == 401
    # another project's model answers exactly as a model that is not served
    theirs = api.client.post("/v2/models/m-mlp/predict", json=body, headers=api.auth())
    missing = api.client.post("/v2/models/m-none/predict", json=body, headers=api.auth())
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == {"detail": "no model 'm-mlp' is served in your projects"}
    assert missing.json() == {"detail": "no model 'm-none' is served in your projects"}
    assert api.client.get("/v2/models/m-mlp", headers=api.auth()).status_code == 404
    assert api.client.post("/v2/models/m-mlp/predict", json=body,
                           headers=api.auth("beta")).status_code == 200  # fmt: skip


def _row(without: str | None = None, **changes: Any) -> dict[str, Any]:
    """A record of the table form, with ``changes``, without the field ``without``."""
    row = {"instrument": "S0001", "date": "2015-11-10", "REV5": 0.1, "MOM20": 0.2, "NOISE": 1.0}
    return {k: v for k, v in (row | changes).items() if k != without}


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        ({"date": "2015-13-01"}, "date", "valid date"),
        ({"date": DAY.isoformat(), "instrument": ["S0001"]}, "instrument", "Extra inputs"),
        ({"date": "2015-11-14"}, "date", "no bars in the store on that day"),  # a Saturday
        ({"date": "2030-01-02"}, "date", "no bars"),
        ({"date": DAY.isoformat(), "instruments": ["NOPE"]}, "instruments", "none of them"),
        ({"records": []}, "records", "at least 1"),
        ({"records": [_row(without="NOISE")]}, "records.NOISE", "no column 'NOISE'"),
        ({"records": [_row(), _row(date="10/11/2015")]}, "records[1].date", "not a day"),
        ({"records": [_row(REV5="high")]}, "records[0].REV5", "not a number"),
        ([1, 2], "body", "send an object"),
    ],
)
def test_a_bad_body_is_a_422_naming_the_field(api: Api, body: Any, path: str, words: str) -> None:
    r = api.client.post("/v2/models/m-linear/predict", json=body, headers=api.auth())
    assert r.status_code == 422, r.text
    (problem,) = r.json()["detail"]
    assert problem["path"] == path and words in problem["message"], problem


def test_an_arrow_column_of_text_is_refused_naming_it_even_when_empty(api: Api) -> None:
    for values in (["high"], [None]):
        noise = pl.Series(values, dtype=pl.String)
        row = pl.DataFrame({"instrument": ["S0001"], "date": [DAY], "REV5": [0.1],
                            "MOM20": [0.2], "NOISE": noise})  # fmt: skip
        sink = io.BytesIO()
        row.write_ipc_stream(sink)
        r = api.client.post("/v2/models/m-linear/predict", content=sink.getvalue(),
                            headers={**api.auth(), "Content-Type": ARROW})  # fmt: skip
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["path"] == "row 0.NOISE", r.text


def test_a_body_that_is_not_json_nor_arrow(api: Api) -> None:
    r = api.client.post("/v2/models/m-linear/predict", content=b"\x00garbage",
                        headers={**api.auth(), "Content-Type": ARROW})  # fmt: skip
    assert r.status_code == 422 and "not an Arrow IPC stream" in r.text
    r = api.client.post("/v2/models/m-linear/predict", content=b"{nope",
                        headers={**api.auth(), "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 422 and "not JSON" in r.text


def test_paths_with_a_trailing_slash_are_answered_without_a_redirect(api: Api) -> None:
    plain = api.client.get("/v2/models", headers=api.auth()).json()
    slashed = api.client.get("/v2/models/", headers=api.auth(), follow_redirects=False)
    assert slashed.status_code == 200 and slashed.json() == plain
    r = api.client.post("/v2/models/m-linear/predict/", json={"date": DAY.isoformat()},
                        headers=api.auth(), follow_redirects=False)  # fmt: skip
    assert r.status_code == 200 and r.json()["model"] == "m-linear"
    assert api.client.get("/healthz/", follow_redirects=False).json()["status"] == "ok"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def test_metrics_have_latency_and_errors_per_model_and_version(api: Api, trained: Trained) -> None:
    version = str(trained.versions["m-lightgbm"])
    labels = (("model", "m-lightgbm"), ("version", version))
    before = _samples(api.client.get("/metrics").text)
    count = ("quarry_serve_predict_seconds_count", labels)
    bad = ("quarry_serve_predict_errors_total", tuple(sorted((*labels, ("status", "422")))))
    table = _records(_table(trained, [DAY]))
    for _ in range(3):
        r = api.client.post("/v2/models/m-lightgbm/predict", json={"records": table},
                            headers=api.auth())  # fmt: skip
        assert r.status_code == 200
    api.client.post("/v2/models/m-lightgbm/predict", json={"date": "x"}, headers=api.auth())
    after = _samples(api.client.get("/metrics").text)
    assert after[count] - before.get(count, 0) == 3
    assert after[bad] - before.get(bad, 0) == 1
    inf = ("quarry_serve_predict_seconds_bucket", (("le", "+Inf"), *labels))
    assert after[inf] == after[count]
    served = ("quarry_serve_model_version", (("alias", "champion"), ("model", "m-lightgbm")))
    assert after[served] == int(version)
    assert after[("quarry_serve_loaded_versions", ())] == 4


def test_healthz(api: Api, trained: Trained) -> None:
    health = api.client.get("/healthz").json()
    assert health["status"] == "ok"
    assert health["models"]["m-linear"] == {"alias": "champion", "problem": None,
                                            "version": trained.versions["m-linear"]}  # fmt: skip
    assert sorted(health["loaded"]) == sorted(f"{n}@{v}" for n, v in trained.versions.items())


def test_training_goes_to_the_job_service_as_a_job_of_the_models_project(api: Api) -> None:
    r = api.client.post("/v2/models/m-mlp/train", json={"resources": {"cpus": 2}},
                        headers=api.auth("beta"))  # fmt: skip
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    job = api.jobs.job(job_id)
    assert job is not None and job.project == "beta" and job.cpus == 2 and job.owner == "bob"
    manifest = json.loads(job.manifest)
    assert manifest["run"]["workflow"] == "/srv/research/mlp.yaml"
    assert manifest["labels"] == {"quarry.model": "m-mlp"}
    shown = api.client.get(f"/v2/models/m-mlp/train/{job_id}", headers=api.auth("beta"))
    assert shown.json()["status"] == "queued" and shown.json()["id"] == job_id
    gone = api.client.delete(f"/v2/models/m-mlp/train/{job_id}/", headers=api.auth("beta"))
    assert gone.status_code == 200 and gone.json()["status"] == "cancelled"
    again = api.client.delete(f"/v2/models/m-mlp/train/{job_id}", headers=api.auth("beta"))
    assert again.status_code == 409 and "already cancelled" in again.text
    # the job is not another model's, nor another project's
    assert api.client.get(f"/v2/models/m-linear/train/{job_id}",
                          headers=api.auth()).status_code == 404  # fmt: skip
    # a version without metadata names no workflow file: nothing to train it again with
    r = api.client.post("/v2/models/m-legacy/train", headers=api.auth())
    assert r.status_code == 409 and "no workflow file in its metadata" in r.text
    r = api.client.post("/v2/models/m-mlp/train", json={"resources": {"cpus": -1}},
                        headers=api.auth("beta"))  # fmt: skip
    assert r.status_code == 422 and r.json()["detail"][0]["path"] == "resources.cpus"
    r = api.client.post("/v2/models/m-mlp/train", json={"run": {"command": ["sh"]}},
                        headers=api.auth("beta"))  # fmt: skip
    assert r.status_code == 422 and r.json()["detail"][0]["path"] == "run"


def test_at_most_n_versions_stay_loaded_and_others_load_again_on_demand(
    api: Api, trained: Trained
) -> None:
    from fastapi.testclient import TestClient

    catalog = Catalog([ModelRef("m-lightgbm"), ModelRef("m-linear")], max_loaded=1)
    catalog.start()
    assert len(catalog.loaded()) == 1 and catalog.loads == 2
    table = _table(trained, [DAY])
    expected = {n: load_packaged(n, trained.versions[n]).score(table)
                for n in ("m-lightgbm", "m-linear")}  # fmt: skip
    with TestClient(create_app(catalog, jobs=api.jobs)) as client:
        for k, name in enumerate(["m-lightgbm", "m-linear", "m-lightgbm", "m-linear"]):
            r = client.post(f"/v2/models/{name}/predict", json={"records": _records(table)},
                            headers=api.auth())  # fmt: skip
            assert r.status_code == 200
            np.testing.assert_array_equal([p["score"] for p in r.json()["predictions"]],
                                          expected[name])  # fmt: skip
            assert catalog.loaded() == [(name, trained.versions[name])]
            assert catalog.loads == 3 + k  # each switch of model loaded it again
        # no data store: a prediction by date says so
        r = client.post("/v2/models/m-linear/predict", json={"date": DAY.isoformat()},
                        headers=api.auth())  # fmt: skip
        assert r.status_code == 422 and "no data store" in r.text


def test_a_memory_bound_unloads_the_least_recently_used(trained: Trained) -> None:
    catalog = Catalog([ModelRef(n) for n in MODELS], memory=1)
    catalog.start()
    # each version is bigger than one byte: only the newest stays
    assert catalog.loaded() == [("m-mlp", trained.versions["m-mlp"])]
    assert catalog.loaded_bytes() > 1


def test_the_openapi_document_describes_both_bodies_and_answers(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    predict = spec["paths"]["/v2/models/{name}/predict"]["post"]
    body = predict["requestBody"]["content"]
    assert set(body) == {"application/json", ARROW}
    forms = body["application/json"]["schema"]["oneOf"]
    assert [sorted(f["properties"]) for f in forms] == [
        ["as_of", "date", "instruments", "universe"], ["records"]]  # fmt: skip
    assert set(predict["responses"]["200"]["content"]) == {"application/json", ARROW}
    assert "/v2/models/{name}/train/{job_id}" in spec["paths"]
