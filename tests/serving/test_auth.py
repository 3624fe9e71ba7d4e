"""With a bearer token, nothing that names the models is open: inference and metadata, and also
``/metrics`` (its labels), ``/openapi.json`` and ``/docs`` (every model's name and inputs), unless
``--public-metrics`` or ``--public-docs`` open them. Liveness and the readiness verdict stay open.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from servetest_helpers import TOKEN, Server, stopped_cleanly

# what the token-guarded endpoints answer, and which option opens them
GUARDED = {
    "/metrics": "--public-metrics",
    "/openapi.json": "--public-docs",
    "/docs": "--public-docs",
}
OPEN = ("/v2/health/live", "/v2/health/ready", "/ping", "/health", "/v2", "/version")


def _refused(r: httpx.Response, path: str) -> None:
    """A 401 in the shape every token-guarded endpoint answers, naming nothing served."""
    assert r.status_code == 401, (path, r.status_code, r.text[:300])
    assert r.headers["content-type"] == "application/json"
    assert r.headers["www-authenticate"] == "Bearer"
    body = r.json()
    assert body["field"] == "Authorization" and body["expected"] == "Bearer <token>", body
    assert body["got"] in ("nothing", "a wrong token"), body
    assert "iris" not in r.text and "frame" not in r.text, r.text


def test_with_a_token_metrics_and_the_api_description_need_it(server: Server) -> None:
    anon = httpx.Client(base_url=server.url)
    try:
        metadata = anon.get("/v2/models/iris")  # the shape the other guarded endpoints answer
        _refused(metadata, "/v2/models/iris")
        for path, option in GUARDED.items():
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                r = anon.get(path, headers=headers)
                _refused(r, path)
                assert r.json().keys() == metadata.json().keys()
                assert option in r.json()["error"], r.json()  # what to do about it
        assert "credentials_file" in anon.get("/metrics").json()["error"]
        assert "/openapi.json" in anon.get("/docs").json()["error"]
        for path in OPEN:
            r = anon.get(path)
            assert r.status_code == 200, (path, r.text)
            assert "iris" not in r.text, (path, r.text)  # the readiness verdict: no names
    finally:
        anon.close()
    # with the token, all of them answer
    assert 'model="iris"' in server.client.get("/metrics").text
    assert "/v2/models/iris/infer" in server.client.get("/openapi.json").json()["paths"]
    assert "openapi.json" in server.client.get("/docs").text


def test_the_openapi_document_says_which_operations_need_the_token(server: Server) -> None:
    paths = server.client.get("/openapi.json").json()["paths"]
    for path in ("/v2/models/iris", "/v2/models/iris/ready"):
        op = paths[path]["get"]
        assert op["security"] == [{"bearer": []}] and "401" in op["responses"], path
    assert "security" not in paths["/v2/health/ready"]["get"]


def test_public_metrics_opens_metrics_alone(artifacts: dict[str, Path], tmp_path: Path) -> None:
    srv = Server(
        [str(artifacts["iris"]), "--public-metrics", "--poll-interval", "0"],
        tmp_path,
        env={"AMBER_SERVE_TOKEN": TOKEN},
    )
    try:
        srv.wait_ready()
        r = srv.client.get("/metrics")
        assert r.status_code == 200 and 'amber_model_ready{model="iris"} 1.0' in r.text
        for path in ("/openapi.json", "/docs", "/v2/models/iris"):
            _refused(srv.client.get(path), path)
    finally:
        assert stopped_cleanly(srv)


def test_public_docs_opens_the_api_description_alone(artifacts: dict[str, Path]) -> None:
    from starlette.testclient import TestClient

    import amber.serving

    app = amber.serving.create_app(
        [str(artifacts["iris"])], token=TOKEN, public_docs=True, access_log=False
    )
    with TestClient(app) as client:
        spec = client.get("/openapi.json")
        assert spec.status_code == 200, spec.text
        op = spec.json()["paths"]["/v2/models/iris/infer"]["post"]
        assert op["security"] == [{"bearer": []}]  # the inference itself still needs it
        assert client.get("/docs").status_code == 200
        for path in ("/metrics", "/v2/models/iris"):
            _refused(client.get(path), path)


def test_the_options_reach_the_config() -> None:
    from amber.cli import build_parser
    from amber.cli.serve import build_config

    args = build_parser().parse_args(["serve", "a.amber", "--public-metrics", "--public-docs"])
    config = build_config(args)
    assert config.public_metrics and config.public_docs
    config = build_config(build_parser().parse_args(["serve", "a.amber"]))
    assert not config.public_metrics and not config.public_docs
