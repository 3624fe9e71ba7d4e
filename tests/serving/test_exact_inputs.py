"""Inputs reach the model as the client sent them, or are refused; outputs reach the client whole.

Each case came from an adversarial review of the server (schemathesis and hand-made requests):
an int64 past its range beside other numbers wrapped to -2**63 and the model answered 200 for a
row the client never sent; integers past 2**53 were rounded; a CSV quote left open swallowed the
rest of the body (one answer for three rows); 1e39 in a float32 column became infinity; "now"
was taken for a date; a non-string ``datatype`` and a multi-output classifier's
``predict_proba`` were 500s; an infinite prediction came back as ``null``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from servetest_helpers import Server, oip, save, stopped_cleanly
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.multioutput import MultiOutputClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from amber.serving import _tensor as T
from amber.serving._app import _request_id
from amber.serving._batcher import model_error
from amber.serving._errors import RequestError

TOKEN = "exact-inputs-token"
I64 = np.dtype(np.int64)


# -- conversions, in process ------------------------------------------------------------------
@pytest.mark.parametrize(
    "values",
    [
        [2**63, 1],  # numpy reads these as float64: 2**63 compared equal to the int64 maximum
        [2**63, 1.0],
        [[0, 2**63], [1, 2]],
        [2**70, 1],  # past 64 bits: numpy keeps Python objects
        [-(2**63) - 1, 1.0],
    ],
)
def test_integers_out_of_range_are_refused_never_wrapped(values: list[Any]) -> None:
    with pytest.raises(RequestError, match=r"from -9223372036854775808 to 9223372036854775807"):
        T.to_numbers(values, I64, "x")


def test_integers_past_2_53_arrive_exactly() -> None:
    assert T.to_numbers([2**53 + 1, 1.0], I64, "x").tolist() == [2**53 + 1, 1]
    assert T.to_numbers([[2**63 - 1], [-(2**63)]], I64, "x").tolist() == [[2**63 - 1], [-(2**63)]]
    top = T.to_numbers([2**64 - 1, 1, 2], np.dtype(np.uint64), "x")
    assert top.dtype == np.uint64 and top.tolist() == [2**64 - 1, 1, 2]
    with pytest.raises(RequestError, match=r"x\[1\]: expected integers \(int64\)"):
        T.to_numbers([2**60, 1.5], I64, "x")


def test_a_float_too_large_for_a_small_float_type_is_refused() -> None:
    with pytest.raises(RequestError, match=r"x\[0\]: expected numbers \(float32\) within"):
        T.to_numbers([1e39, 1.0], np.dtype(np.float32), "x")
    with pytest.raises(RequestError, match=r"float16"):
        T.to_numbers([70000, 1], np.dtype(np.float16), "x")
    assert T.to_numbers([3e38, 1.0], np.dtype(np.float32), "x").dtype == np.float32
    with pytest.raises(RequestError, match=r"within \+-1.8e\+308"):
        T.to_numbers([10**400, 1], np.dtype(np.float64), "x")


def test_csv_with_a_quote_left_open_is_refused() -> None:
    with pytest.raises(RequestError, match=r"line 3 .*a quote is left open"):
        T.csv_rows('f,i,cat\n0.5,3,"red\n-1.2,80,blue\n')
    assert T.csv_rows("\ufefff,i\n1,2\n") == [["f", "i"], ["1", "2"]]  # Excel's byte order mark


def test_a_model_error_loses_its_native_stack_trace() -> None:
    exc = ValueError("[12:00:00] src/data.cc:12: Check failed: x\nStack trace:\n  [bt] (0) /a/b.so")
    assert model_error(exc) == "ValueError: [12:00:00] src/data.cc:12: Check failed: x"


def test_a_request_id_is_printable_ascii_of_at_most_128_characters() -> None:
    assert _request_id("abc-123") == "abc-123"
    assert _request_id("x" * 5000) == "x" * 128
    assert (
        _request_id("caf\u00e9") is None and _request_id("a\nb") is None and _request_id("") is None
    )


# -- over HTTP --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("exact")
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame(
        {
            "f": rng.normal(size=n),
            "i": rng.integers(0, 100, n).astype("int64"),
            "small": rng.normal(size=n).astype("float32"),
            "cat": rng.choice(["red", "green", "blue"], n),
            "when": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 90, n), "D"),
        }
    )
    y = ((frame["f"] > 0) ^ (frame["i"] > 50)).astype(int)
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), ["f", "i", "small"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["cat"]),
        ]
    )  # "when" is dropped by the model, served and checked all the same
    frame_model = make_pipeline(pre, LogisticRegression()).fit(frame, y)
    X = rng.normal(size=(80, 5))
    reg = Ridge().fit(X, X @ np.arange(1.0, 6.0))
    Y = np.column_stack([X[:, 0] > 0, (X[:, 1] > 0).astype(int) + (X[:, 2] > 0)])
    multi = MultiOutputClassifier(DecisionTreeClassifier(max_depth=3, random_state=0)).fit(X, Y)
    import xgboost as xgb

    cats = pd.DataFrame(
        {"x": rng.normal(size=n), "c": pd.Categorical(rng.choice(["a", "b", "c"], n))}
    )
    xgbcat = xgb.XGBClassifier(n_estimators=5, enable_categorical=True, n_jobs=1)
    xgbcat.fit(cats, (cats["c"] == "c").astype(int))
    paths = [
        save(xgbcat, tmp / "xgbcat.amber", cats.iloc[:8]),
        save(frame_model, tmp / "frame.amber", frame.iloc[:8]),
        save(reg, tmp / "reg.amber", X[:8]),
        save(multi, tmp / "multi.amber", X[:8]),
    ]
    srv = Server([*map(str, paths), "--poll-interval", "0"], tmp, env={"AMBER_SERVE_TOKEN": TOKEN})
    try:
        srv.wait_live()
        srv.client.headers["Authorization"] = f"Bearer {TOKEN}"
        srv.wait_ready()
        yield srv, {"frame": frame_model, "reg": reg, "multi": multi, "X": X, "xgbcat": xgbcat}
    finally:
        assert stopped_cleanly(srv)


def _split(*rows: list[Any]) -> dict[str, Any]:
    return {
        "dataframe_split": {
            "columns": ["f", "i", "small", "cat", "when"],
            "data": [list(r) for r in rows],
        }
    }


ROW = [0.1, 1, 0.5, "red", "2024-01-05"]


def test_an_int64_past_its_range_beside_other_rows_is_a_400(served: tuple[Server, Any]) -> None:
    srv, _ = served
    r = srv.client.post(
        "/models/frame/invocations", json=_split([0.1, 2**63, 0.5, "red", "2024-01-05"], ROW)
    )
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "dataframe_split.data[0][1] ('i')", r.text
    csv = (
        "f,i,small,cat,when\n0.1,9223372036854775808,0.5,red,2024-01-05\n0.1,1,0.5,red,2024-01-05\n"
    )
    r = srv.client.post(
        "/models/frame/invocations", content=csv, headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 400 and "row 1" in r.json()["message"], r.text


def test_float32_overflow_and_relative_dates_are_400s(served: tuple[Server, Any]) -> None:
    srv, _ = served
    r = srv.client.post(
        "/models/frame/invocations", json=_split([0.1, 1, 1e39, "red", "2024-01-05"])
    )
    assert r.status_code == 400 and "float32" in r.json()["message"], r.text
    for word in ("now", " Today "):
        r = srv.client.post("/models/frame/invocations", json=_split([0.1, 1, 0.5, "red", word]))
        assert r.status_code == 400 and "ISO 8601" in r.json()["message"], r.text


def test_a_csv_quote_left_open_is_a_400_not_fewer_answers(served: tuple[Server, Any]) -> None:
    srv, model = served
    csv = 'f,i,small,cat,when\n0.5,3,0.5,"red\n-1.2,80,0.5,blue,2024-01-05\n'
    r = srv.client.post(
        "/models/frame/invocations", content=csv, headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 400 and "quote" in r.json()["message"], r.text
    ok = csv.replace('"red', "red,2024-01-05")
    r = srv.client.post(
        "/models/frame/invocations", content=ok, headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    local = pd.DataFrame(
        {
            "f": [0.5, -1.2],
            "i": np.array([3, 80], dtype=np.int64),
            "small": np.array([0.5, 0.5], dtype=np.float32),
            "cat": ["red", "blue"],
            "when": pd.to_datetime(["2024-01-05", "2024-01-05"]),
        }
    )
    assert r.json()["predictions"] == model["frame"].predict(local).tolist()


def test_a_uint64_tensor_reaches_a_float_model_unwrapped(served: tuple[Server, Any]) -> None:
    srv, models = served
    data = [2**64 - 1, 1, 2, 3, 4]
    r = srv.client.post("/v2/models/reg/infer", json=oip(data, [1, 5], "UINT64"))
    assert r.status_code == 200, r.text
    want = models["reg"].predict(np.array([data], dtype=np.float64))
    assert r.json()["outputs"][0]["data"] == want.tolist()


def test_a_datatype_that_is_not_a_string_is_a_400(served: tuple[Server, Any]) -> None:
    srv, _ = served
    for datatype in ({}, ["FP64"], 3):
        body = oip([1.0, 2, 3, 4, 5], [1, 5])
        body["inputs"][0]["datatype"] = datatype
        r = srv.client.post("/v2/models/reg/infer", json=body)
        assert r.status_code == 400 and r.json()["error"].startswith("inputs[0].datatype"), r.text


def test_an_infinite_prediction_is_an_error_not_null(served: tuple[Server, Any]) -> None:
    srv, _ = served
    r = srv.client.post("/v2/models/reg/infer", json=oip([1e308] * 5, [1, 5]))
    assert r.status_code == 422 and "infinite" in r.json()["error"], r.text
    r = srv.client.post("/v2/models/reg/infer", json={**oip([1.0] * 5, [1, 5]), "outputs": []})
    assert r.status_code == 200 and r.json()["outputs"][0]["name"] == "predict", r.text


def test_predict_proba_of_a_multi_output_classifier_is_one_tensor_per_target(
    served: tuple[Server, Any],
) -> None:
    srv, models = served
    X = models["X"][:3]
    want = models["multi"].predict_proba(X)
    body = {**oip(X.ravel().tolist(), [3, 5]), "outputs": [{"name": "predict_proba"}]}
    r = srv.client.post("/v2/models/multi/infer", json=body)
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    assert [o["name"] for o in outputs] == ["predict_proba[0]", "predict_proba[1]"]
    for out, expected in zip(outputs, want, strict=True):
        assert out["shape"] == list(expected.shape)
        assert out["data"] == expected.ravel().tolist()
    meta = srv.client.get("/v2/models/multi").json()["outputs"]
    shapes = {m["name"]: m["shape"] for m in meta}
    assert shapes["predict_proba[0]"] == [-1, 2] and shapes["predict_proba[1]"] == [-1, 3]


def test_with_a_token_model_names_and_sources_need_it(served: tuple[Server, Any]) -> None:
    srv, _ = served
    bare = {"Authorization": ""}
    for path in ("/v2/models/frame", "/v2/models/frame/ready", "/v2/models/nope"):
        r = srv.client.get(path, headers=bare)
        assert r.status_code == 401 and "frame" not in r.text, (path, r.text)
    r = srv.client.get("/v2/health/ready", headers=bare)
    assert r.status_code == 200 and r.json() == {"ready": True}
    r = srv.client.get("/v2/health/ready")
    assert r.status_code == 200 and set(r.json()["models"]) == {"frame", "reg", "multi", "xgbcat"}


def test_the_request_id_is_the_same_in_the_header_and_the_body(
    served: tuple[Server, Any],
) -> None:
    srv, _ = served
    for given in ("y" * 300, "caf\u00e9"):
        r = srv.client.post(
            "/v2/models/reg/infer",
            json=oip([1.0] * 5, [1, 5]),
            headers={"X-Request-Id": given.encode("utf-8")},
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-request-id"] == r.json()["id"]
        answered = r.json()["id"]
        if given.isascii():
            assert answered == "y" * 128
        else:  # the server's own id, not the client's bytes read as Latin-1
            assert answered.isascii() and answered.isprintable() and "caf" not in answered


def test_a_binary_tensor_body_is_told_to_send_json(served: tuple[Server, Any]) -> None:
    srv, _ = served
    header = b'{"inputs":[{"name":"input-0","shape":[1,5],"datatype":"FP64"}]}'
    r = srv.client.post(
        "/v2/models/reg/infer",
        content=header + np.ones(5).tobytes(),
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )
    assert r.status_code == 415 and "binary tensor extension" in r.json()["error"], r.text


def test_a_category_column_keeps_the_categories_it_was_fitted_with(
    served: tuple[Server, Any],
) -> None:
    """Built from the request's values alone, a column of nulls had no categories and XGBoost
    answered 422; the fitted ones come from the artifact's sample."""
    srv, models = served
    for values in ([None], ["c"], ["b", None], ["zzz"]):
        body = {"dataframe_split": {"columns": ["x", "c"], "data": [[0.0, v] for v in values]}}
        r = srv.client.post("/models/xgbcat/invocations", json=body)
        if values == ["zzz"]:  # a value it never saw: XGBoost's own refusal, not a 500
            assert r.status_code == 422, r.text
            continue
        assert r.status_code == 200, (values, r.text)
        local = pd.DataFrame(
            {"x": [0.0] * len(values), "c": pd.Categorical(values, categories=["a", "b", "c"])}
        )
        assert r.json()["predictions"] == models["xgbcat"].predict(local).tolist()
