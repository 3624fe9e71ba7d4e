"""A model of records (a list of dicts, DictVectorizer's input) behind a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from servetest_helpers import Server, save

ROWS = [
    {"age": 30, "income": 41000.5, "city": "paris"},
    {"age": 61, "income": 72000.0, "city": "nice", "vip": True},
    {"age": 45, "city": "lyon"},
    {"age": 52, "income": 58000.25, "city": "paris"},
] * 10


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Any]]:
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    tmp = tmp_path_factory.mktemp("records")
    y = np.array([r["age"] > 50 for r in ROWS])
    model = make_pipeline(DictVectorizer(), LogisticRegression(max_iter=1000)).fit(ROWS, y)
    path = save(model, Path(tmp) / "dv.amber", ROWS[:4])
    srv = Server([str(path)], tmp)
    try:
        srv.wait_ready()
        yield srv, model
    finally:
        srv.stop()


def _expect_400(r: Any, field: str, got: str) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["field"] == field and got in body["got"], body
    assert "Traceback" not in r.text


def test_records_over_mlflow_oip_and_csv_match_the_model(records: tuple[Server, Any]) -> None:
    srv, model = records
    rows = [{"age": 70, "income": 90000.0, "city": "nice"}, {"age": 20, "city": "lyon"}]
    want = model.predict(rows).tolist()
    for form in ("dataframe_records", "instances", "inputs"):
        r = srv.client.post("/invocations", json={form: rows})
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": want}
    # a null cell of the split form is a key the row lacks
    split = {
        "columns": ["age", "income", "city"],
        "data": [[70, 90000.0, "nice"], [20, None, "lyon"]],
    }
    assert srv.client.post("/invocations", json={"dataframe_split": split}).json() == {
        "predictions": want
    }
    tensor = {"name": "records", "shape": [2], "datatype": "BYTES"}
    tensor["data"] = [json.dumps(row) for row in rows]
    r = srv.client.post("/v2/models/dv/infer", json={"inputs": [tensor]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == want
    csv = "age,income,city\n70,90000.0,nice\n20,,lyon\n"
    r = srv.client.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    assert r.status_code == 200 and r.json() == {"predictions": want}, r.text
    proba = srv.client.post(
        "/v2/models/dv/infer", json={"inputs": [tensor], "outputs": [{"name": "predict_proba"}]}
    ).json()["outputs"][0]
    np.testing.assert_array_equal(
        np.array(proba["data"]).reshape(proba["shape"]), model.predict_proba(rows)
    )


def test_a_value_of_another_type_than_the_samples_is_refused(records: tuple[Server, Any]) -> None:
    """A string age would be DictVectorizer's feature "age=70", unseen and ignored: refused."""
    srv, _ = records
    post = srv.client.post
    _expect_400(
        post("/invocations", json={"instances": [{"age": "70"}]}), "instances[0].age", "'70'"
    )
    _expect_400(
        post("/invocations", json={"inputs": [{"age": 1}, {"city": 3}]}), "inputs[1].city", "3"
    )
    _expect_400(
        post("/invocations", json={"instances": [{"age": 1, "tags": ["a"]}]}),
        "instances[0].tags",
        "array",
    )
    _expect_400(post("/invocations", json={"instances": [[30, 1.0]]}), "instances[0]", "array")
    _expect_400(post("/invocations", json={"instances": []}), "instances", "array of 0")
    bad_json = {"name": "records", "shape": [1], "datatype": "BYTES", "data": ["{age: 3"]}
    _expect_400(
        post("/v2/models/dv/infer", json={"inputs": [bad_json]}), "inputs[0].data[0]", "age"
    )
    csv = "age,city\nold,paris\n"
    _expect_400(
        post("/invocations", content=csv, headers={"Content-Type": "text/csv"}),
        "row 1.age",
        "'old'",
    )
    # keys the sample did not hold pass through (a sample rarely shows every feature)
    assert post("/invocations", json={"instances": [{"age": 40, "new": "x"}]}).status_code == 200


def test_records_metadata_and_docs(records: tuple[Server, Any]) -> None:
    srv, _ = records
    meta = srv.client.get("/v2/models/dv").json()
    assert meta["inputs"] == [{"name": "records", "datatype": "BYTES", "shape": [-1]}]
    spec = srv.client.get("/openapi.json")
    assert spec.status_code == 200 and "dataframe_records" in spec.text


def test_what_json_bodies_cannot_carry_is_a_400_not_a_500(
    records: tuple[Server, Any], tmp_path: Path
) -> None:
    """Lone surrogates ("\\ud800" in JSON) and integers past 64 bits are refused with the field
    named; the error body itself stays valid UTF-8."""
    srv, _ = records
    post = srv.client.post
    # a body holding them is refused as JSON by the server's parser; an OIP string is JSON
    # read by the schema, which accepts them, so they reach the checks
    for row, field in [
        ('{"\\ud800": 1}', "inputs[0].data[0]"),
        ('{"city": "\\udfff"}', "inputs[0].data[0].city"),
        ('{"age": {"\\ud800": 1}}', "inputs[0].data[0].age"),
    ]:
        tensor = {"name": "records", "shape": [1], "datatype": "BYTES", "data": [row]}
        r = post("/v2/models/dv/infer", json={"inputs": [tensor]})
        assert r.status_code == 400, (row, r.status_code, r.text[:200])
        assert r.json()["field"] == field
    # an integer past 64 bits: the server's JSON parser refuses it in a body; in CSV it reaches
    # the schema, which names the field instead of letting the model overflow
    csv = "age,city\n%s,paris\n" % ("9" * 400)
    r = post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    assert r.status_code == 400 and r.json()["field"] == "(rows)[0].age", r.text[:200]
    assert "1329-bit integer" in r.json()["got"]
    # booleans in CSV: true/false under a key the sample held as booleans
    csv = "age,vip\n61,true\n30,False\n"
    r = post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    _expect_400(
        post("/invocations", content="age,vip\n61,yes\n", headers={"Content-Type": "text/csv"}),
        "(rows)[0].vip",
        "'yes'",
    )


def test_a_sample_json_cannot_carry_still_gives_an_api_document(tmp_path: Path) -> None:
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rows = [{"age": 30, "note": "caf\u00e9 \ud800"}, {"age": 61, "note": "ok"}] * 5
    y = np.array([r["age"] > 50 for r in rows])
    model = make_pipeline(DictVectorizer(), LogisticRegression()).fit(rows, y)
    path = save(model, tmp_path / "odd.amber", rows[:2])
    srv = Server([str(path)], tmp_path)
    try:
        srv.wait_ready()
        spec = srv.client.get("/openapi.json")
        assert spec.status_code == 200 and "dataframe_records" in spec.text
    finally:
        srv.stop()
