"""Every class of bad input gets a 4xx JSON body naming the field, what was expected and what
came; none reaches the model, none gets a 500 or a stack trace."""

from __future__ import annotations

import gzip
import json
import socket
from typing import Any

import httpx
import pytest
from servetest_helpers import TOKEN, Server, oip

IRIS = "/v2/models/iris/infer"
FRAME = "/v2/models/frame/infer"
GOOD_FRAME = [
    {"name": "age", "shape": [1], "datatype": "INT64", "data": [30]},
    {"name": "income", "shape": [1], "datatype": "FP64", "data": [40000.0]},
    {"name": "city", "shape": [1], "datatype": "BYTES", "data": ["paris"]},
]


def _frame(**changes: Any) -> dict[str, Any]:
    tensors = [dict(t) for t in GOOD_FRAME]
    for t in tensors:
        t.update(changes.get(t["name"], {}))
    return {"inputs": tensors}


def _check(r: httpx.Response, status: int, field: str | None = None, *, mlflow: bool = False):
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    message = body["message"] if mlflow else body["error"]
    assert message and "Traceback" not in r.text and 'File "' not in r.text
    if field is not None:
        assert body["field"] == field, body
        assert body["expected"] and body["got"], body
    return body


# (path, body, field that must be named, words the "got" must contain)
JSON_CASES = [
    # wrong column names
    (
        "/models/frame/invocations",
        {"dataframe_split": {"columns": ["agee", "income", "city"], "data": [[30, 1.0, "paris"]]}},
        "dataframe_split.columns",
        "agee",
    ),
    (FRAME, {"inputs": [{**GOOD_FRAME[0], "name": "AGE"}, *GOOD_FRAME[1:]]}, "inputs", "AGE"),
    (
        "/models/frame/invocations",
        {"dataframe_records": [{"age": 30, "income": 1.0, "town": "paris"}]},
        "dataframe_records[0]",
        "town",
    ),
    # wrong column count
    (
        "/models/frame/invocations",
        {"dataframe_split": {"columns": ["age", "income"], "data": [[30, 1.0]]}},
        "dataframe_split.columns",
        "2 columns",
    ),
    (IRIS, oip([1.0, 2.0, 3.0], [1, 3]), "inputs[0].shape", "[1, 3]"),
    ("/invocations", {"instances": [[1.0, 2.0, 3.0]]}, "instances", "[1, 3]"),
    # wrong dtypes
    (IRIS, oip(["1", "2", "3", "4"], [1, 4], datatype="BYTES"), "inputs[0].datatype", "BYTES"),
    (FRAME, _frame(age={"data": [30.5], "datatype": "FP64"}), "inputs[0].datatype", "FP64"),
    (FRAME, _frame(age={"data": [30.5]}), "inputs[0].data[0]", "30.5"),
    (FRAME, _frame(city={"data": [7]}), "inputs[2].data[0]", "7"),
    (
        "/models/frame/invocations",
        {"dataframe_records": [{"age": True, "income": 1.0, "city": "x"}]},
        "dataframe_records[0].age",
        "boolean",
    ),
    # strings where numbers belong
    (IRIS, oip([5.1, "abc", 1.4, 0.2], [1, 4]), "inputs[0].data[1]", "abc"),
    ("/invocations", {"instances": [[5.1, 3.5, 1.4, "0.2"]]}, "instances[0][3]", "0.2"),
    (FRAME, _frame(income={"data": ["lots"]}), "inputs[1].data[0]", "lots"),
    # nulls and objects where numbers belong
    (IRIS, oip([5.1, None, 1.4, 0.2], [1, 4]), "inputs[0].data[1]", "null"),
    ("/invocations", {"instances": [[5.1, {"x": 1}, 1.4, 0.2]]}, "instances[0][1]", "object"),
    # ragged rows
    ("/invocations", {"instances": [[1, 2, 3, 4], [1, 2, 3]]}, "instances[1]", "3 values"),
    (IRIS, oip([[1, 2, 3, 4], [1, 2]], [2, 4]), "inputs[0].data[1]", "2 values"),
    (
        "/models/frame/invocations",
        {"dataframe_split": {"columns": ["age", "income", "city"], "data": [[1, 2.0, "a"], [1]]}},
        "dataframe_split.data[1]",
        "1 values",
    ),
    (
        "/models/frame/invocations",
        {"inputs": {"age": [1, 2], "income": [1.0], "city": ["a", "b"]}},
        "inputs: column 'income'",
        "1 rows",
    ),
    # shape and data disagree; no rows
    (IRIS, oip([1.0] * 8, [1, 4]), "inputs[0].data", "8 values"),
    (IRIS, oip([], [0, 4]), "inputs[0].shape", "0 rows"),
    ("/invocations", {"instances": []}, "instances", "shape"),
    # envelope problems
    (IRIS, {"nothing": []}, "inputs", "nothing"),
    (IRIS, [1, 2, 3], "(body)", "array"),
    (
        IRIS,
        {"inputs": [{"name": "input-0", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
        "inputs[0].datatype",
        "nothing",
    ),
    (
        IRIS,
        {"inputs": [{"name": "x", "shape": [-1, 4], "datatype": "FP64", "data": [1]}]},
        "inputs[0].shape",
        "array",
    ),
    (IRIS, {"inputs": "abc"}, "inputs", "string"),
    # true/false among numbers (numpy would take them for 1 and 0)
    (IRIS, oip([5.1, True, 1.4, 0.2], [1, 4]), "inputs[0].data[1]", "boolean true"),
    (
        "/invocations",
        {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3, False, 2.3]]},
        "instances[1][2]",
        "boolean false",
    ),
    (
        "/models/frame/invocations",
        {
            "dataframe_split": {
                "columns": ["age", "income", "city"],
                "data": [[30, 1.0, "paris"], [60, False, "nice"]],
            }
        },
        "dataframe_split.data[1][1] ('income')",
        "boolean false",
    ),
    # the one input of an array or text model is named as its metadata says
    (IRIS, oip([1, 2, 3, 4], [1, 4], name="features"), "inputs[0].name", "features"),
    ("/v2/models/text/infer", oip(["a"], [1], datatype="BYTES", name="x"), "inputs[0].name", "x"),
    (IRIS, {"inputs": oip([1, 2, 3, 4], [1, 4])["inputs"] * 2}, "inputs", "2 tensors"),
    (
        IRIS,
        {**oip([1, 2, 3, 4], [1, 4]), "outputs": [{"name": "__class__"}]},
        "outputs[0].name",
        "__class__",
    ),
    (
        "/invocations",
        {"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]},
        "(body)",
        "instances, inputs",
    ),
    ("/invocations", {"dataframe_split": [[1, 2, 3, 4]]}, "dataframe_split", "array"),
    ("/models/text/invocations", {"instances": ["ok", 5]}, "instances[1]", "number 5"),
    ("/v2/models/text/infer", oip(["a", "b"], [3], datatype="BYTES"), "inputs[0].data", "2 values"),
    # deep nesting
    (IRIS, oip([[[[[[1.0]]]]]], [1, 4]), "inputs[0].data", None),
]


@pytest.mark.parametrize("path,body,field,got", JSON_CASES)
def test_bad_json_input(server: Server, path: str, body: Any, field: str, got: str | None) -> None:
    r = server.client.post(path, json=body)
    mlflow = "invocations" in path
    out = _check(r, 400, field, mlflow=mlflow)
    if got is not None:
        assert got in out["got"], out


@pytest.mark.parametrize(
    "path,raw",
    [
        (IRIS, b'{"inputs": [1, 2'),
        (IRIS, b"{'inputs': []}"),
        ("/invocations", b"[1, 2,]"),
        (IRIS, b"NaN"),
        (IRIS, b'{"inputs": [{"data": [1e999]}]}'),
        (IRIS, b"\xff\xfe\x00"),
    ],
    ids=["truncated", "single-quotes", "trailing-comma", "nan", "infinity", "binary"],
)
def test_malformed_json(server: Server, path: str, raw: bytes) -> None:
    r = server.client.post(path, content=raw, headers={"Content-Type": "application/json"})
    body = _check(r, 400, "(body)", mlflow="invocations" in path)
    assert "malformed JSON" in body["got"]


@pytest.mark.parametrize("path", [IRIS, "/invocations"])
@pytest.mark.parametrize("raw", [b"", b"   \n"], ids=["empty", "blank"])
def test_empty_body(server: Server, path: str, raw: bytes) -> None:
    r = server.client.post(path, content=raw, headers={"Content-Type": "application/json"})
    body = _check(r, 400, "(body)", mlflow="invocations" in path)
    assert body["got"] == "nothing"


def test_body_over_the_limit(server: Server) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2]] * 80_000  # about 1.4 MB, over the 1 MB limit
    r = server.client.post("/invocations", json={"instances": rows})
    body = _check(r, 413, "(body)", mlflow=True)
    assert body["expected"] == f"at most {1024 * 1024} bytes"
    # a huge declared Content-Length is refused before any of the body is read
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"POST {IRIS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n{{}}".encode()
        )
        head = sock.recv(65536).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head[:200]


def test_chunked_body_over_the_limit(server: Server) -> None:
    def chunks():
        for _ in range(200):
            yield b" " * 8192

    r = server.client.post(IRIS, content=chunks(), headers={"Content-Type": "application/json"})
    _check(r, 413, "(body)")


@pytest.mark.parametrize(
    "path,text,field",
    [
        ("/invocations", "a,b,c,d\n5.1,x,1.4,0.2\n", "row 1, column 2"),
        # a first row with a bad cell is data, not a header to drop (rows and answers must pair)
        ("/invocations", "5.1,3.5,1.4,x\n6.7,3.0,5.2,2.3\n", "row 1, column 4"),
        ("/invocations", "5.1,3.5,1.4\n", "row 1"),
        ("/invocations", "a,b,c\n1,2,3\n", "(header)"),
        ("/invocations", "a,b,c,d\n", "(body)"),
        ("/models/frame/invocations", "age,income,town\n30,1.0,paris\n", "(header)"),
        ("/models/frame/invocations", "age,income,city\n30.5,1.0,paris\n", "row 1, column 'age'"),
        ("/models/frame/invocations", "age,income,city\n30,1.0\n", "row 1"),
    ],
    ids=[
        "string-cell",
        "bad-cell-in-first-row",
        "ragged",
        "short-header",
        "no-rows",
        "wrong-name",
        "float-for-int",
        "ragged-frame",
    ],
)
def test_bad_csv(server: Server, path: str, text: str, field: str) -> None:
    r = server.client.post(path, content=text, headers={"Content-Type": "text/csv"})
    _check(r, 400, field, mlflow=True)


def test_unsupported_content_types(server: Server) -> None:
    r = server.client.post("/invocations", content=b"<x/>", headers={"Content-Type": "text/xml"})
    _check(r, 415, "Content-Type", mlflow=True)
    r = server.client.post(IRIS, content=b"1,2,3,4", headers={"Content-Type": "text/csv"})
    _check(r, 415, "Content-Type")
    # a compressed body is said to be one (it was a 400 'malformed JSON: not valid UTF-8')
    body = gzip.compress(json.dumps(oip([5.1, 3.5, 1.4, 0.2], [1, 4])).encode())
    r = server.client.post(
        IRIS,
        content=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert _check(r, 415, "Content-Encoding")["got"] == "gzip"


def test_unknown_model_and_route(server: Server) -> None:
    r = server.client.post("/v2/models/nope/infer", json=oip([1, 2, 3, 4], [1, 4]))
    body = _check(r, 404, "model")
    assert "iris" in body["error"] and "nope" in body["got"]
    _check(server.client.get("/v2/models/nope"), 404, "model")
    _check(server.client.get("/no/such/route"), 404)
    _check(server.client.get(IRIS), 405)


def test_bearer_token_guards_inference(server: Server) -> None:
    anon = httpx.Client(base_url=server.url)
    try:
        r = anon.post(IRIS, json=oip([5.1, 3.5, 1.4, 0.2], [1, 4]))
        body = _check(r, 401, "Authorization")
        assert r.headers["www-authenticate"] == "Bearer" and body["got"] == "nothing"
        r = anon.post(
            "/invocations",
            json={"instances": [[1, 2, 3, 4]]},
            headers={"Authorization": "Bearer wrong"},
        )
        assert _check(r, 401, mlflow=True)["got"] == "a wrong token"
        # an unknown model is a 401 too: a 404 would list the models to a stranger
        r = anon.post("/v2/models/nope/infer", json=oip([5.1, 3.5, 1.4, 0.2], [1, 4]))
        assert r.status_code == 401 and "iris" not in r.text
        assert anon.get("/v2/health/ready").status_code == 200  # more in test_auth.py
    finally:
        anon.close()


def test_model_errors_are_422_not_500(server: Server) -> None:
    # passes validation (a float column may be null: NaN) but the model refuses NaN
    body = {"dataframe_records": [{"age": 30, "income": None, "city": "paris"}]}
    r = server.client.post("/models/frame/invocations", json=body)
    out = _check(r, 422, "inputs", mlflow=True)
    assert "NaN" in out["message"]
