"""Column types a DataFrame model is served with: nullable integers, integer categories, dates,
odd column names; and integer inputs narrower than the tensor that carries them.

Each case came from a review that found a wrong answer or a 500: a category 3 sent as "3"
(then refused as a number), a null Int64 refused although the schema offers null, a bad date
blamed on the model (422), a column named with braces turning a bad value into a 500, and an
INT64 300 wrapped into a uint8 model's input as 44.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from servetest_helpers import Server, oip, save, stopped_cleanly
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.multioutput import MultiOutputRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier


@contextlib.contextmanager
def _serving(paths: list[Path], tmp: Path) -> Iterator[Server]:
    """``amber serve`` of ``paths``, ready; stopped cleanly at the end."""
    srv = Server([*map(str, paths), "--poll-interval", "0"], tmp)
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert stopped_cleanly(srv)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Any]]:
    tmp = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame(
        {
            "price{usd}": rng.normal(size=n),
            "cnt": pd.array([None if i % 7 == 0 else i % 5 for i in range(n)], dtype="Int64"),
            "grade": pd.Categorical(rng.integers(1, 4, n)),
            "when": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 30, n), "D"),
            "zone": pd.Series([int(v) for v in rng.integers(1, 4, n)], dtype=object),
        }
    )
    y = (frame["grade"].astype(int) == 3).astype(int)
    pre = ColumnTransformer(  # "when" is dropped: it is served (and checked) all the same
        [
            ("num", "passthrough", ["price{usd}"]),
            ("cnt", SimpleImputer(), ["cnt"]),
            ("grade", OneHotEncoder(handle_unknown="ignore"), ["grade"]),
            ("zone", OneHotEncoder(handle_unknown="ignore"), ["zone"]),
        ]
    )
    model = make_pipeline(pre, LogisticRegression(max_iter=1000)).fit(frame, y)
    path = save(model, tmp / "frame2.amber", frame.iloc[:8])
    u8 = DecisionTreeClassifier(random_state=0).fit(
        np.arange(256, dtype=np.uint8).reshape(-1, 1), (np.arange(256) >= 128).astype(int)
    )
    u8_path = save(u8, tmp / "u8.amber", np.arange(8, dtype=np.uint8).reshape(-1, 1))
    X2 = rng.normal(size=(30, 1))
    two = MultiOutputRegressor(LinearRegression()).fit(X2, np.column_stack([X2[:, 0], -X2[:, 0]]))
    two_path = save(two, tmp / "two.amber", X2[:4])
    with _serving([path, u8_path, two_path], tmp) as srv:
        yield srv, model


def _records(**row: Any) -> dict[str, Any]:
    base = {"price{usd}": 0.5, "cnt": 2, "grade": 3, "when": "2024-01-05T00:00:00", "zone": 2}
    return {"dataframe_records": [{**base, **row}]}


def _local(model: Any, **row: Any) -> list[int]:
    base = {"price{usd}": 0.5, "cnt": 2, "grade": 3, "when": "2024-01-05", "zone": 2}
    values = {**base, **row}
    frame = pd.DataFrame({k: [v] for k, v in values.items()})
    frame["cnt"] = frame["cnt"].astype("Int64")
    frame["grade"] = pd.Categorical(frame["grade"], categories=[1, 2, 3])
    frame["when"] = pd.to_datetime(frame["when"])
    frame["zone"] = frame["zone"].astype(object)
    return [int(v) for v in model.predict(frame)]


def test_integer_categories_keep_their_type(served: tuple[Server, Any]) -> None:
    srv, model = served
    r = srv.client.post("/models/frame2/invocations", json=_records(grade=3))
    assert r.status_code == 200 and r.json()["predictions"] == _local(model, grade=3)
    r = srv.client.post("/models/frame2/invocations", json=_records(grade="3"))
    assert r.status_code == 400 and "grade" in r.json()["field"], r.text
    meta = srv.client.get("/v2/models/frame2").json()["inputs"]
    assert {m["name"]: m["datatype"] for m in meta}["grade"] == "INT64"


def test_an_object_column_of_numbers_takes_numbers(served: tuple[Server, Any]) -> None:
    srv, model = served
    for zone in (1, 3):
        r = srv.client.post("/models/frame2/invocations", json=_records(zone=zone))
        assert r.status_code == 200 and r.json()["predictions"] == _local(model, zone=zone)
    r = srv.client.post("/models/frame2/invocations", json=_records(zone="3"))
    assert r.status_code == 400 and r.json()["field"] == "dataframe_records[0].zone", r.text


def test_a_null_in_a_nullable_integer_column_is_missing(served: tuple[Server, Any]) -> None:
    srv, model = served
    r = srv.client.post("/models/frame2/invocations", json=_records(cnt=None))
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == _local(model, cnt=None)
    csv = "price{usd},cnt,grade,when,zone\n0.5,,3,2024-01-05,2\n"
    r = srv.client.post(
        "/models/frame2/invocations", content=csv, headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 200 and r.json()["predictions"] == _local(model, cnt=None), r.text


def test_dates_are_checked_with_the_request(served: tuple[Server, Any]) -> None:
    srv, _ = served
    r = srv.client.post("/models/frame2/invocations", json=_records(when="yesterday"))
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "dataframe_records[0].when"
    r = srv.client.post("/models/frame2/invocations", json=_records(when="2024-01-05T10:00:00Z"))
    assert r.status_code == 200, r.text  # an offset: converted to UTC


def test_a_column_name_with_braces_gets_a_400(served: tuple[Server, Any]) -> None:
    srv, _ = served
    r = srv.client.post("/models/frame2/invocations", json=_records(**{"price{usd}": "x"}))
    assert r.status_code == 400 and r.json()["field"] == "dataframe_records[0].price{usd}"


def test_an_integer_too_large_for_the_input_is_refused_not_wrapped(
    served: tuple[Server, Any],
) -> None:
    srv, _ = served
    for value, want in ((255, 200), (300, 400), (-1, 400)):
        r = srv.client.post("/v2/models/u8/infer", json=oip([value], [1, 1], datatype="INT64"))
        assert r.status_code == want, (value, r.text)
    r = srv.client.post("/v2/models/u8/infer", json=oip([255], [1, 1], datatype="INT64"))
    assert r.json()["outputs"][0]["data"] == [1]


def test_an_unhashable_output_name_gets_a_400(served: tuple[Server, Any]) -> None:
    srv, _ = served
    body = {**oip([5], [1, 1], datatype="UINT8"), "outputs": [{"name": ["predict"]}]}
    r = srv.client.post("/v2/models/u8/infer", json=body)
    assert r.status_code == 400 and r.json()["field"] == "outputs[0].name", r.text


def test_examples_of_the_openapi_document_are_accepted(served: tuple[Server, Any]) -> None:
    srv, _ = served
    spec = srv.client.get("/openapi.json").json()
    body = spec["paths"]["/models/frame2/invocations"]["post"]["requestBody"]["content"]
    example = body["application/json"]["example"]
    assert srv.client.post("/models/frame2/invocations", json=example).status_code == 200


@pytest.fixture(scope="module")
def served3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Any]]:
    """Time-zone-aware dates, a category of booleans, nullable boolean and UInt8 columns."""
    tmp = tmp_path_factory.mktemp("frames3")
    rng = np.random.default_rng(1)
    n = 40
    frame = pd.DataFrame(
        {
            "at": pd.to_datetime("2024-01-01", utc=True) + pd.to_timedelta(np.arange(n), "h"),
            "flag": pd.Categorical(rng.integers(0, 2, n).astype(bool)),
            "ok": pd.array([None if i % 5 == 0 else bool(i % 2) for i in range(n)], "boolean"),
            "u": pd.array([None if i % 6 == 0 else i % 200 for i in range(n)], dtype="UInt8"),
            "kind": pd.Categorical([None if i % 4 == 0 else "ab"[i % 2] for i in range(n)]),
            "zone": pd.Series([None if i % 3 == 0 else i % 3 for i in range(n)], dtype=object),
        }
    )
    y = np.asarray(frame["flag"]).astype(int)
    pre = ColumnTransformer(
        [
            ("flag", OneHotEncoder(handle_unknown="ignore"), ["flag"]),
            ("u", SimpleImputer(), ["u"]),
            ("kind", OneHotEncoder(handle_unknown="ignore"), ["kind", "zone"]),
        ]
    )
    model = make_pipeline(pre, LogisticRegression()).fit(frame, y)
    path = save(model, tmp / "frame3.amber", frame.iloc[:8])
    with _serving([path], tmp) as srv:
        yield srv, model


def _row3(**row: Any) -> dict[str, Any]:
    base = {"at": "2024-01-05T10:00:00Z", "flag": True, "ok": None, "u": 7, "kind": "a", "zone": 1}
    return {**base, **row}


def test_zone_aware_dates_bool_categories_and_nullable_columns(
    served3: tuple[Server, Any],
) -> None:
    srv, model = served3
    url = "/models/frame3/invocations"
    local = pd.DataFrame(
        {
            "at": pd.to_datetime(["2024-01-05T10:00:00Z"], utc=True),
            "flag": pd.Categorical([True], categories=[False, True]),
            "ok": pd.array([None], dtype="boolean"),
            "u": pd.array([None], dtype="UInt8"),
            "kind": pd.Categorical([None], categories=["a", "b"]),
            "zone": pd.Series([None], dtype=object),
        }
    )
    # a missing value in each nullable kind of column: Int, boolean, category, object of ints
    r = srv.client.post(url, json={"dataframe_records": [_row3(u=None, kind=None, zone=None)]})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == [int(v) for v in model.predict(local)]
    csv = "at,flag,ok,u,kind,zone\n2024-01-05T10:00:00+01:00,true,,,,\n"
    r = srv.client.post(url, content=csv, headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == [int(v) for v in model.predict(local)]
    for bad, field in (({"flag": 0}, "flag"), ({"u": 300}, "u"), ({"at": "soon"}, "at")):
        r = srv.client.post(url, json={"dataframe_records": [_row3(**bad)]})
        assert r.status_code == 400 and r.json()["field"].endswith(field), r.text
    rows = [_row3() for _ in range(2000)] + [_row3(at="2024-13-45")]
    r = srv.client.post(url, json={"dataframe_records": rows})
    assert r.status_code == 400 and r.json()["field"] == "dataframe_records[2000].at", r.text


def test_a_category_saved_without_its_type_still_takes_strings() -> None:
    """Files from before signatures recorded category types: strings, as they were served."""
    from amber.serving._schema import schema_for

    schema = schema_for({"kind": "dataframe", "columns": [{"name": "c", "dtype": "category"}]})
    assert schema.oip_metadata() == [{"name": "c", "datatype": "BYTES", "shape": [-1]}]
    assert list(schema.from_mlflow({"dataframe_records": [{"c": "a"}]})["c"]) == ["a"]
    with pytest.raises(Exception, match="expected a string"):
        schema.from_mlflow({"dataframe_records": [{"c": 2}]})


def test_an_fp64_value_a_float32_input_cannot_hold_is_refused() -> None:
    from amber.serving._schema import schema_for

    schema = schema_for({"kind": "ndarray", "dtype": "float32", "shape": [None, 2]})
    ok = schema.from_oip(oip([1.5, 2.5], [1, 2])["inputs"])
    assert ok.dtype == np.float32
    with pytest.raises(Exception, match=r"inputs\[0\]\.data\[1\]"):
        schema.from_oip(oip([1.5, 1e300], [1, 2])["inputs"])


def test_calibration_without_a_measured_batch_still_times_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--batching on/off: the inline row limit comes from a timed batch, not from one row's
    time taken as the cost of each row (which kept batches of nine rows off the loop)."""
    from amber.serving import _model
    from amber.serving._config import ModelSpec

    # a model of fixed cost, 1 ms a call whatever its rows: the clock is the test's, so that
    # a loaded machine cannot change the outcome
    def timed(fn: Any, x: np.ndarray, repeat: int) -> float:
        fn(x)
        return 0.001

    monkeypatch.setattr(_model, "_time", timed)
    limits = _model.calibrate(
        lambda v: v.sum(axis=1), np.zeros((64, 4)), ModelSpec("m.amber", batching="on")
    )
    # 2 ms a call at 1/64 ms a row: 128 rows (one row's 1 ms as the rate gave 2)
    assert limits["inline_rows"] == 2 * 64, limits


def test_missing_dates_and_csv_rows_that_are_empty(served: tuple[Server, Any]) -> None:
    """null, "" and an empty CSV cell are a missing date (NaT), as before dates were checked
    with the request; a bad one in CSV is named by row and column. An empty line of a
    one-column CSV is a row: dropping it shifted every answer after it."""
    srv, _ = served
    for missing in (None, ""):
        r = srv.client.post("/models/frame2/invocations", json=_records(when=missing))
        assert r.status_code == 200, r.text
    csv = "price{usd},cnt,grade,when,zone\n0.5,2,3,,2\n0.5,2,3,soon,2\n"
    r = srv.client.post(
        "/models/frame2/invocations", content=csv, headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 400 and r.json()["field"] == "row 2, column 'when'", r.text
    r = srv.client.post(
        "/models/two/invocations", content="0.5\n\n1.5\n", headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 400 and r.json()["field"].startswith("row 2"), r.text


def test_a_fortran_ordered_output_is_answered(served: tuple[Server, Any]) -> None:
    """A MultiOutputRegressor's predictions are Fortran-ordered: MLflow answers were a 500."""
    srv, _ = served
    r = srv.client.post("/models/two/invocations", json={"instances": [[0.5], [1.0]]})
    assert r.status_code == 200, r.text
    out = np.array(r.json()["predictions"])
    assert out.shape == (2, 2) and np.allclose(out[:, 0], -out[:, 1])


def test_a_frame_with_integer_labels_is_served_under_them() -> None:
    """A model fitted on pd.DataFrame(array) has columns 0, 1, 2: the server hands it those
    labels (not "0", "1", "2", which sklearn warns about on every call, and which code that
    selects frame[0] cannot find), and takes pandas' to_dict("split") with number names."""
    import warnings

    from amber._probe import describe
    from amber.serving._schema import schema_for

    frame = pd.DataFrame(np.arange(12.0).reshape(4, 3))
    model = make_pipeline(LinearRegression()).fit(frame, frame[0] * 2)
    signature = describe(frame)
    assert [c["label"] for c in signature["columns"]] == [0, 1, 2]
    schema = schema_for(signature)
    split = frame.iloc[:2].to_dict(orient="split", index=False)
    assert split["columns"] == [0, 1, 2]
    for payload in (
        {"dataframe_split": split},
        {"dataframe_records": [{"0": 0.0, "1": 1.0, "2": 2.0}, {"0": 3.0, "1": 4.0, "2": 5.0}]},
    ):
        given = schema.prepare(schema.from_mlflow(payload))
        assert list(given.columns) == [0, 1, 2]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_allclose(model.predict(given), [0.0, 6.0], atol=1e-9)
    assert "label" not in describe(pd.DataFrame({"a": [1.0]}))["columns"][0]


@pytest.mark.parametrize("gap", [None, np.nan], ids=["None", "NaN"])
def test_a_null_in_a_column_of_strings_is_the_missing_value_the_model_knows(
    gap: Any, tmp_path: Path
) -> None:
    """A column of strings with gaps (the commonest categorical input) refused null: "expected
    a string". A null now becomes the missing value the sample held there, None or NaN, which
    an encoder tells apart (fitted on one, it takes the other for an unknown category)."""
    from amber._probe import describe

    city = pd.Series(["paris", "rome", gap, "oslo"] * 10, dtype=object)
    frame = pd.DataFrame({"city": city, "x": np.arange(40.0) % 3})
    y = city.isna().to_numpy().astype(int)  # the gap alone tells the class
    pre = ColumnTransformer(
        [("c", OneHotEncoder(handle_unknown="ignore"), ["city"]), ("x", "passthrough", ["x"])]
    )
    model = make_pipeline(pre, LogisticRegression(max_iter=1000)).fit(frame, y)
    kind = "none" if gap is None else "nan"
    assert describe(frame.iloc[:8])["columns"][0]["missing"] == kind

    def local(value: Any) -> list[int]:
        row = pd.DataFrame({"city": pd.Series([value], dtype=object), "x": [1.0]})
        return [int(v) for v in model.predict(row)]

    other = np.nan if gap is None else None
    assert local(gap) == [1] and local(other) == [0]  # the other kind is an unknown category
    path = save(model, tmp_path / "gaps.amber", frame.iloc[:8])
    with _serving([path], tmp_path) as srv:
        for body in (
            {"dataframe_records": [{"city": None, "x": 1.0}]},
            {"dataframe_split": {"columns": ["city", "x"], "data": [[None, 1.0]]}},
            {"inputs": {"city": [None], "x": [1.0]}},
        ):
            r = srv.client.post("/models/gaps/invocations", json=body)
            assert r.status_code == 200 and r.json()["predictions"] == [1], (body, r.text)
        r = srv.client.post(
            "/models/gaps/invocations",
            content="city,x\n,1.0\nrome,1.0\n",
            headers={"Content-Type": "text/csv"},
        )
        assert r.status_code == 200 and r.json()["predictions"] == [1, 0], r.text
        r = srv.client.post(
            "/models/gaps/invocations", json={"dataframe_records": [{"city": 3, "x": 1.0}]}
        )
        assert r.status_code == 400 and r.json()["field"] == "dataframe_records[0].city", r.text


def test_a_refusal_renamed_for_its_row_says_so_in_str_too() -> None:
    """The message was rewritten to name the row, but str(exc), which logs show, kept the
    placeholder field ("\\x00[0]: ...")."""
    from amber.serving._errors import RequestError
    from amber.serving._frame import FrameSchema

    schema = FrameSchema([("n", "object")], values={"n": "integer"})
    with pytest.raises(RequestError) as info:
        schema.from_mlflow({"dataframe_records": [{"n": "x"}]})
    assert str(info.value) == info.value.message
    assert str(info.value).startswith("dataframe_records[0].n: expected integers")
