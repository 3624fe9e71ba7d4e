"""Every endpoint of a real server, over HTTP: both protocols, metadata, health, metrics, docs."""

from __future__ import annotations

import json

import pytest
from servetest_helpers import RELOAD_TOKEN, Server, iris_data, oip

X, Y = iris_data()


def test_oip_infer_matches_the_model(server: Server, artifacts) -> None:
    import amber

    model = amber.load(artifacts["iris"])
    rows = X[[0, 60, 120]]
    r = server.client.post("/v2/models/iris/infer", json=oip(rows.ravel().tolist(), [3, 4]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "iris"
    assert body["model_version"] == r.headers["x-amber-model-version"]
    assert r.headers["x-amber-model"] == "iris"
    (out,) = body["outputs"]
    assert out["name"] == "predict" and out["shape"] == [3] and out["datatype"] == "INT64"
    assert out["data"] == model.predict(rows).tolist()


def test_oip_nested_data_requested_outputs_and_id(server: Server) -> None:
    payload = oip(X[:2].tolist(), [2, 4])
    payload["id"] = "req-1"
    payload["outputs"] = [{"name": "predict"}, {"name": "decision_function"}]
    r = server.client.post("/v2/models/iris/infer", json=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "req-1"
    names = [o["name"] for o in body["outputs"]]
    assert names == ["predict", "decision_function"]
    assert body["outputs"][1]["shape"] == [2, 3] and body["outputs"][1]["datatype"] == "FP64"


def test_versioned_paths(server: Server) -> None:
    version = server.client.get("/v2/models/iris").json()["versions"][0]
    r = server.client.post(
        f"/v2/models/iris/versions/{version}/infer", json=oip(X[0].tolist(), [1, 4])
    )
    assert r.status_code == 200 and r.json()["model_version"] == version
    assert server.client.get(f"/v2/models/iris/versions/{version}").status_code == 200
    assert server.client.get(f"/v2/models/iris/versions/{version}/ready").json()["ready"] is True
    r = server.client.post("/v2/models/iris/versions/nope/infer", json=oip(X[0].tolist(), [1, 4]))
    assert r.status_code == 404
    assert r.json()["field"] == "version" and r.json()["expected"] == version


def test_frame_model_over_oip(server: Server) -> None:
    payload = {
        "inputs": [
            {"name": "age", "shape": [2], "datatype": "INT64", "data": [30, 60]},
            {"name": "income", "shape": [2], "datatype": "FP64", "data": [40000.0, 70000.0]},
            {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["paris", "nice"]},
        ]
    }
    r = server.client.post("/v2/models/frame/infer", json=payload)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [0, 1]


def test_text_model_over_oip(server: Server) -> None:
    r = server.client.post(
        "/v2/models/text/infer",
        json=oip(["good movie", "bad plot"], [2], datatype="BYTES"),
    )
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["data"] == ["pos", "neg"] and out["datatype"] == "BYTES" and out["shape"] == [2]
    meta = server.client.get("/v2/models/text").json()
    assert meta["inputs"] == [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}]


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
        {"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
        {
            "dataframe_split": {
                "columns": ["a", "b", "c", "d"],
                "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
            }
        },
        {
            "dataframe_records": [
                {"a": 5.1, "b": 3.5, "c": 1.4, "d": 0.2},
                {"a": 6.7, "b": 3.0, "c": 5.2, "d": 2.3},
            ]
        },
    ],
    ids=["instances", "inputs", "dataframe_split", "dataframe_records"],
)
def test_invocations_json_forms(server: Server, body: dict) -> None:
    r = server.client.post("/invocations", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [0, 2]}
    assert r.headers["x-amber-model"] == "iris"


def test_invocations_csv_with_and_without_header(server: Server) -> None:
    headers = {"Content-Type": "text/csv"}
    for text in ("a,b,c,d\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n", "5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3"):
        r = server.client.post("/invocations", content=text, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [0, 2]}


def test_invocations_per_model_frame_forms(server: Server) -> None:
    split = {
        "dataframe_split": {
            "columns": ["city", "age", "income"],
            "data": [["paris", 30, 40000.0], ["nice", 60, 70000.0]],
        }
    }
    records = {
        "dataframe_records": [
            {"age": 30, "income": 40000.0, "city": "paris"},
            {"age": 60, "income": 70000.0, "city": "nice"},
        ]
    }
    columns = {"inputs": {"age": [30, 60], "income": [40000.0, 70000.0], "city": ["paris", "nice"]}}
    for body in (split, records, columns):
        r = server.client.post("/models/frame/invocations", json=body)
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [0, 1]}
    csv = "age,income,city\n30,40000,paris\n60,70000,nice\n"
    r = server.client.post(
        "/models/frame/invocations", content=csv, headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 200 and r.json() == {"predictions": [0, 1]}


def test_invocations_text_model(server: Server) -> None:
    r = server.client.post("/models/text/invocations", json={"instances": ["good plot", "awful"]})
    assert r.status_code == 200 and r.json() == {"predictions": ["pos", "neg"]}


def test_health_and_server_metadata(server: Server) -> None:
    c = server.client
    assert c.get("/v2/health/live").json() == {"live": True}
    ready = c.get("/v2/health/ready")
    assert ready.status_code == 200
    details = ready.json()
    assert details["ready"] is True
    assert set(details["models"]) == {"iris", "frame", "text", "slow"}
    assert details["models"]["iris"]["state"] == "ready"
    assert c.get("/v2").json()["name"] == "amber"
    assert c.get("/ping").status_code == 200 and c.get("/health").status_code == 200
    assert "amber" in c.get("/version").json()
    assert c.get("/v2/models/iris/ready").json()["ready"] is True


def test_model_metadata(server: Server) -> None:
    meta = server.client.get("/v2/models/frame").json()
    assert meta["name"] == "frame" and meta["platform"] == "amber/scikit-learn"
    assert [i["name"] for i in meta["inputs"]] == ["age", "income", "city"]
    assert [i["datatype"] for i in meta["inputs"]] == ["INT64", "FP64", "BYTES"]
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["predict"]["datatype"] == "INT64"
    assert "predict_proba" in outputs
    iris = server.client.get("/v2/models/iris").json()
    assert iris["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert iris["parameters"]["batching"]["mode"] == "on"  # the fixture's --batching iris=on
    assert meta["parameters"]["batching"]["mode"] == "auto"  # the default
    # which label each predict_proba / decision_function column stands for
    assert iris["parameters"]["classes"] == [0, 1, 2]
    assert meta["parameters"]["classes"] == [0, 1]
    text = server.client.get("/v2/models/text").json()
    assert text["parameters"]["classes"] == ["neg", "pos"]


def test_metrics(server: Server) -> None:
    server.client.post("/v2/models/iris/infer", json=oip(X[0].tolist(), [1, 4]))
    server.client.post("/v2/models/iris/infer", json=oip(["x", 1, 2, 3], [1, 4]))
    r = server.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'amber_requests_total{code="200",model="iris",protocol="v2"}' in text
    assert 'amber_request_errors_total{model="iris",protocol="v2",reason="BAD_REQUEST"}' in text
    assert "amber_request_duration_seconds_bucket" in text
    assert 'amber_batch_rows_count{model="iris"}' in text
    version = server.client.get("/v2/models/iris").json()["versions"][0]
    assert f'amber_model_version_info{{model="iris",version="{version}"}} 1.0' in text
    assert 'amber_model_ready{model="frame"} 1.0' in text


def test_openapi_has_per_model_schemas(server: Server) -> None:
    spec = server.client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    op = spec["paths"]["/v2/models/iris/infer"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    tensor = schema["properties"]["inputs"]["items"]
    assert "FP64" in tensor["properties"]["datatype"]["enum"]
    assert "BYTES" not in tensor["properties"]["datatype"]["enum"]
    assert tensor["properties"]["shape"]["maxItems"] == 2
    example = op["requestBody"]["content"]["application/json"]["example"]
    assert example["inputs"][0]["data"] == X[0].tolist()  # the probe's first row
    frame = spec["paths"]["/models/frame/invocations"]["post"]["requestBody"]["content"]
    record = frame["application/json"]["schema"]["properties"]["dataframe_records"]["items"]
    assert record["required"] == ["age", "income", "city"]
    assert record["properties"]["city"] == {"type": ["string", "null"]}  # null: a missing value
    assert "text/csv" in frame
    assert op["security"] == [{"bearer": []}]
    assert "/admin/reload" in spec["paths"]
    docs = server.client.get("/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text


def test_reload_endpoint(server: Server) -> None:
    c = server.client
    assert c.post("/admin/reload").status_code == 401  # the inference token is not the reload one
    auth = {"Authorization": f"Bearer {RELOAD_TOKEN}"}
    # a request cannot make the server load anything: the body is ignored
    r = c.post("/admin/reload?wait=true", headers=auth, json={"source": "/etc/passwd"})
    assert r.status_code == 200, r.text
    statuses = {m["model"]: m["status"] for m in r.json()["models"]}
    assert set(statuses) == {"iris", "frame", "text", "slow"}
    assert set(statuses.values()) == {"unchanged"}
    r = c.post("/admin/reload/iris", headers=auth)
    assert r.status_code == 202 and r.json()["models"] == ["iris"]
    assert c.post("/admin/reload/nope?wait=1", headers=auth).status_code == 404


def test_no_endpoint_loads_from_a_request(server: Server) -> None:
    for path in ("/v2/repository/models/x/load", "/v2/repository/index", "/load", "/models"):
        r = server.client.post(path, json={"uri": "/etc/passwd"})
        assert r.status_code in (404, 405), (path, r.status_code)
        assert r.headers["content-type"] == "application/json"


def test_access_log_is_structured(server: Server) -> None:
    server.client.post(
        "/v2/models/iris/infer",
        json=oip(X[0].tolist(), [1, 4]),
        headers={"x-request-id": "trace-me"},
    )
    lines = [json.loads(line) for line in server.log.splitlines() if line.startswith("{")]
    access = [r for r in lines if r.get("logger") == "amber.serving.access"]
    infer = [r for r in access if r["path"] == "/v2/models/iris/infer" and r["status"] == 200]
    assert infer, access[-5:]
    record = infer[-1]
    assert record["model"] == "iris" and record["version"] and record["rows"] == 1
    assert record["method"] == "POST" and record["ms"] >= 0
    loaded = [r for r in lines if r.get("event") == "serving"]
    assert {r["model"] for r in loaded} == {"iris", "frame", "text", "slow"}


@pytest.mark.parametrize(
    ("method", "path", "root", "expected"),
    [
        ("POST", "/v2/models/iris/infer", "", ("iris", None)),
        ("POST", "/v2/models/iris/versions/3a9f/infer", "", ("iris", "3a9f")),
        ("POST", "/amber/v2/models/iris/infer", "/amber", ("iris", None)),
        ("GET", "/v2/models/iris/infer", "", None),
        ("POST", "/v2/models//infer", "", None),
        ("POST", "/v2/models/iris/infer/", "", None),
        ("POST", "/v2/models/a/b/infer", "", None),
        ("POST", "/v2/models/iris/versions//infer", "", None),
        ("POST", "/v2/models/iris/other/3/infer", "", None),
        ("POST", "/elsewhere/v2/models/iris/infer", "/amber", None),
        ("POST", "/amberx/v2/models/iris/infer", "/amber", None),
        ("POST", "/v2/models/iris/infer", "/amber", ("iris", None)),
        ("POST", "/v2/models/ir%20is/infer", "", ("ir%20is", None)),
    ],
)
def test_the_infer_fast_path_takes_exactly_the_infer_routes(
    method: str, path: str, root: str, expected: tuple[str, str | None] | None
) -> None:
    """The middleware answers infer requests without the router: it must take the paths the
    two infer routes match, with the same name and version, and leave every other to them."""
    from starlette.routing import Match, Route

    from amber.serving._asgi import _infer_target

    scope = {"type": "http", "method": method, "path": path, "root_path": root}
    routes = [
        Route("/v2/models/{name}/infer", lambda r: None, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", lambda r: None, methods=["POST"]),
    ]
    starlette = None  # what Starlette's own routes make of the same request
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            params = child["path_params"]
            starlette = (params["name"], params.get("version"))
            break
    assert _infer_target(scope) == starlette == expected


def test_a_version_path_is_served_through_the_fast_path(server: Server) -> None:
    version = server.client.get("/v2/models/iris").json()["versions"][0]
    r = server.client.post(
        f"/v2/models/iris/versions/{version}/infer", json=oip(X[0].tolist(), [1, 4])
    )
    assert r.status_code == 200 and r.headers["x-amber-model-version"] == version
    r = server.client.post("/v2/models/iris/versions/nope/infer", json=oip(X[0].tolist(), [1, 4]))
    assert r.status_code == 404 and "not 'nope'" in r.json()["error"]


def test_class_labels_of_models_that_have_them_and_of_those_that_do_not() -> None:
    from sklearn.linear_model import LinearRegression
    from sklearn.multioutput import MultiOutputClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    from amber.serving._model import class_labels

    two = MultiOutputClassifier(DecisionTreeClassifier()).fit(X, [[y, y % 2] for y in Y])
    assert class_labels(two) == [[0, 1, 2], [0, 1]]
    assert class_labels(DecisionTreeClassifier().fit(X, Y == 1)) == [False, True]
    assert class_labels(LinearRegression().fit(X, Y)) is None
    assert class_labels(make_pipeline(StandardScaler()).fit(X)) is None  # the property raises
