"""Operations: readiness while loading, request timeouts, graceful SIGTERM drain, several
workers, the command line's defaults, and mounting the app in another ASGI app."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import servetest_models
from servetest_helpers import Server, iris_data, oip, save, stopped_cleanly, wait_for

X, Y = iris_data()
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory):
    """A model whose probe takes 0.6 s (so loading takes over a second), timeouts at 1 s."""
    tmp = tmp_path_factory.mktemp("slow")
    path = save(servetest_models.SlowModel(), tmp / "slow.amber", np.full((2, 2), 0.6))
    srv = Server([str(path), "--batching", "on", "--request-timeout", "1"], tmp)
    yield srv
    srv.stop()


def test_readiness_false_until_loaded_and_verified(slow_server: Server) -> None:
    srv = slow_server
    srv.wait_live()
    r = srv.client.get("/v2/health/ready")
    assert r.status_code == 503, r.text
    assert r.json()["models"]["slow"]["state"] == "loading"
    assert srv.client.get("/ping").status_code == 503
    assert srv.client.get("/v2/models/slow/ready").status_code == 503
    r = srv.client.post("/v2/models/slow/infer", json=oip([0.0, 1.0], [1, 2]))
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "loading" in r.json()["error"]
    srv.wait_ready()
    ready = srv.client.get("/v2/health/ready").json()
    assert ready["ready"] is True and ready["models"]["slow"]["state"] == "ready"
    assert srv.client.post("/v2/models/slow/infer", json=oip([0.0, 1.0], [1, 2])).json()["outputs"][
        0
    ]["data"] == [1.0]


def test_request_timeout(slow_server: Server) -> None:
    srv = slow_server
    srv.wait_ready()
    started = time.monotonic()
    r = srv.client.post("/v2/models/slow/infer", json=oip([3.0, 1.0], [1, 2]))
    elapsed = time.monotonic() - started
    assert r.status_code == 504, r.text
    assert "timed out after 1 s" in r.json()["error"]
    assert 0.9 < elapsed < 2.5
    # the event loop stayed free while the model computed
    t0 = time.monotonic()
    assert srv.client.get("/v2/health/live").status_code == 200
    assert time.monotonic() - t0 < 0.5


def test_cheap_model_moves_to_its_thread_after_a_slow_call(tmp_path: Path) -> None:
    """Measured cheap at load (its probe sleeps 0 s), it predicts in the event loop; one slow
    call moves it to its own thread, after which timeouts fire again while it computes."""
    path = save(servetest_models.SlowModel(), tmp_path / "cheap.amber", np.zeros((2, 2)))
    srv = Server([str(path), "--batching", "on", "--request-timeout", "1"], tmp_path)
    try:
        srv.wait_ready()
        assert srv.client.get("/v2/models/cheap").json()["parameters"]["batching"]["inline"]
        r = srv.client.post("/v2/models/cheap/infer", json=oip([0.3, 1.0], [1, 2]))
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [1.3]
        meta = srv.client.get("/v2/models/cheap").json()
        assert meta["parameters"]["batching"]["inline"] is False
        assert '"event":"moved_to_thread"' in srv.log
        r = srv.client.post("/v2/models/cheap/infer", json=oip([2.5, 1.0], [1, 2]))
        assert r.status_code == 504
    finally:
        assert stopped_cleanly(srv)


def test_sigterm_drains_requests_in_flight(tmp_path: Path, artifacts) -> None:
    srv = Server([str(artifacts["slow"]), "--batching", "on", "--max-batch-size", "2"], tmp_path)
    try:
        srv.wait_ready()
        results: list[int] = []

        def client(i: int) -> None:
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                r = c.post("/v2/models/slow/infer", json=oip([0.7, float(i)], [1, 2]))
                results.append(r.status_code)
                assert r.json()["outputs"][0]["data"] == [0.7 + i]

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        wait_for(
            lambda: "amber_requests_in_flight 6.0" in srv.client.get("/metrics").text,
            what="6 requests in flight",
        )
        srv.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        for t in threads:
            t.join(30)
        # 6 requests, 2 per 0.7 s call: about 2 s of work still to do when SIGTERM came
        assert results == [200] * 6
        assert time.monotonic() - started > 1.0
        srv.proc.wait(30)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{srv.url}/v2/health/live", timeout=2)
    finally:
        assert stopped_cleanly(srv)
    assert "Waiting for connections to close" in srv.log or "Shutting down" in srv.log


def test_several_workers(tmp_path: Path, artifacts) -> None:
    srv = Server([str(artifacts["iris"]), "--workers", "2"], tmp_path)
    try:
        srv.wait_ready()

        async def main() -> set[int]:
            async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
                body = oip(X[0].tolist(), [1, 4])
                rs = await asyncio.gather(
                    *(c.post("/v2/models/iris/infer", json=body) for _ in range(40))
                )
                return {r.status_code for r in rs}

        assert asyncio.run(main()) == {200}
        pids = {
            json.loads(line).get("message", "")
            for line in srv.log.splitlines()
            if line.startswith("{") and "Started server process" in line
        }
        assert len(pids) >= 2, srv.log[-2000:]
    finally:
        assert stopped_cleanly(srv)


def test_cli_defaults_and_errors(tmp_path: Path) -> None:
    from amber.cli import build_parser
    from amber.cli.serve import build_config

    args = build_parser().parse_args(
        [
            "serve",
            "a.amber",
            "churn=models:/churn/7",
            "--batching",
            "off",
            "--max-batch-size",
            "churn=8",
            "--max-latency-ms",
            "5",
        ]
    )
    assert args.host == "127.0.0.1" and args.port == 8080 and args.workers == 1
    config = build_config(args)
    a, churn = config.models
    assert (a.source, a.name, a.batching, a.max_batch_size, a.max_latency_ms) == (
        "a.amber",
        None,
        "off",
        1024,
        5.0,
    )
    assert (churn.source, churn.name, churn.max_batch_size) == ("models:/churn/7", "churn", 8)
    assert config.warning_filters == "once"  # the CLI owns its process; create_app keeps them
    assert config.token is None and config.reload_token is None

    run = [sys.executable, "-m", "amber", "serve"]
    out = subprocess.run([*run, str(tmp_path / "missing.amber")], capture_output=True, text=True)
    assert out.returncode == 2 and "no such model file" in out.stderr
    out = subprocess.run([*run, "s3://bucket/x.amber"], capture_output=True, text=True)
    assert out.returncode == 2 and "models:/iris@production" in out.stderr
    help_text = subprocess.run([*run, "--help"], capture_output=True, text=True).stdout
    for flag in ("--port", "--workers", "--host", "--token-file", "--poll-interval"):
        assert flag in help_text


def test_create_app_mounted_in_another_app(artifacts) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    import amber.serving

    inner = amber.serving.create_app([str(artifacts["iris"])], access_log=False)
    outer = Starlette(routes=[Mount("/amber", app=inner)])
    with TestClient(outer) as client:  # the outer lifespan does not reach the mount
        wait_for(
            lambda: client.get("/amber/v2/health/ready").status_code == 200,
            what="lazy start on first request",
        )
        r = client.post("/amber/v2/models/iris/infer", json=oip(X[0].tolist(), [1, 4]))
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [0]


def _load_error(path: Path) -> str:
    """The error of a model the server failed to load (its name: the file's stem)."""
    from starlette.testclient import TestClient

    import amber.serving

    app = amber.serving.create_app([str(path)], access_log=False)
    with TestClient(app) as client:
        state = lambda: client.get("/v2/health/ready").json()["models"][path.stem]  # noqa: E731
        wait_for(lambda: state()["state"] == "failed", what="the load to fail")
        return str(state()["error"])


def test_artifact_without_signature_is_not_served(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from starlette.testclient import TestClient

    import amber
    import amber.serving

    amber.save(LogisticRegression(max_iter=500).fit(X, Y), tmp_path / "nosig.amber")
    app = amber.serving.create_app([str(tmp_path / "nosig.amber")], access_log=False)
    with TestClient(app) as client:
        wait_for(
            lambda: client.get("/v2/health/ready").json()["models"]["nosig"]["state"] == "failed",
            what="the load to fail",
        )
        details = client.get("/v2/health/ready").json()["models"]["nosig"]
        assert "no input signature" in details["error"] and "sample=" in details["error"]
        r = client.post("/v2/models/nosig/infer", json=oip(X[0].tolist(), [1, 4]))
        assert r.status_code == 503 and "no input signature" in r.json()["error"]


def test_a_model_of_several_inputs_is_served(tmp_path: Path) -> None:
    """A model of several inputs was refused at load ("an input of kind 'sequence' cannot be
    served"): each input is a named tensor (input-0, input-1, ...; a dict's own keys), every one
    sent once with the same rows; concurrent requests are joined input by input."""
    torch = pytest.importorskip("torch")
    from starlette.testclient import TestClient

    import amber
    import amber.serving
    from amber.serving._schema import schema_for

    class TwoIn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)

        def forward(self, x: Any, y: Any) -> Any:
            return self.lin(x) + y.sum(-1, keepdim=True)

    torch.manual_seed(0)
    net = TwoIn().eval()
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    z = x[:, :3].copy()
    amber.save(net, tmp_path / "two.amber", sample=(x, z))
    with torch.no_grad():
        want = net(torch.from_numpy(x), torch.from_numpy(z)).numpy()
    app = amber.serving.create_app([str(tmp_path / "two.amber")], access_log=False)
    with TestClient(app) as client:
        wait_for(lambda: client.get("/v2/health/ready").json()["ready"], what="the load")
        meta = client.get("/v2/models/two").json()
        assert [(i["name"], i["shape"]) for i in meta["inputs"]] == [
            ("input-0", [-1, 4]),
            ("input-1", [-1, 3]),
        ]
        body = {
            "inputs": [
                {
                    "name": "input-1",
                    "shape": [6, 3],
                    "datatype": "FP32",
                    "data": z.ravel().tolist(),
                },
                {
                    "name": "input-0",
                    "shape": [6, 4],
                    "datatype": "FP32",
                    "data": x.ravel().tolist(),
                },
            ]
        }
        r = client.post("/v2/models/two/infer", json=body)
        assert r.status_code == 200, r.text
        got = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(6, 2)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        r = client.post(
            "/invocations", json={"inputs": {"input-0": x[:2].tolist(), "input-1": z[:2].tolist()}}
        )
        np.testing.assert_allclose(np.asarray(r.json()["predictions"]), want[:2], rtol=1e-5)
        body["inputs"][0]["shape"] = [2, 3]
        body["inputs"][0]["data"] = z[:2].ravel().tolist()
        r = client.post("/v2/models/two/infer", json=body)
        assert r.status_code == 400 and "same number of rows" in r.json()["error"]
        spec = client.get("/openapi.json").json()["paths"]["/invocations"]["post"]
        assert list(spec["requestBody"]["content"]) == ["application/json"]  # no CSV (a 415)
    # concurrent requests are joined input by input, in order
    schema = schema_for({"kind": "sequence", "items": meta_items(x, z)})
    parts = [(x[:2], z[:2]), (x[2:], z[2:])]
    joined = schema.concat(parts)
    assert isinstance(joined, tuple) and [a.shape for a in joined] == [(6, 4), (6, 3)]
    assert schema.rows(joined) == 6


def test_a_method_answering_a_dict_is_left_out_and_the_others_serve(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    import amber.serving
    from amber.serving import ModelSpec

    path = save(servetest_models.TwoShapes(), tmp_path / "two.amber", np.ones((3, 2)))
    spec = ModelSpec(source=str(path), trusted=("servetest_models.TwoShapes",))
    app = amber.serving.create_app([spec], access_log=False)
    with TestClient(app) as client:
        wait_for(lambda: client.get("/v2/health/ready").json()["ready"], what="the load")
        assert [o["name"] for o in client.get("/v2/models/two").json()["outputs"]] == ["predict"]
        r = client.post("/v2/models/two/infer", json=oip([1.0, 2.0], [1, 2]))
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [3.0]


def test_a_list_of_rows_as_sample_is_not_taken_for_several_inputs(tmp_path: Path) -> None:
    """A list of 1-D arrays is rows to scikit-learn (several inputs to Keras, a tuple to
    torch): such a model is refused at load, as before, not served as four inputs."""
    from sklearn.linear_model import LogisticRegression

    import amber

    model = LogisticRegression(max_iter=500).fit(X, Y)
    amber.save(model, tmp_path / "rows.amber", sample=list(X[:4]))
    error = _load_error(tmp_path / "rows.amber")
    assert "kind 'sequence'" in error and "cannot be served over HTTP" in error


def meta_items(*arrays: np.ndarray) -> list[dict[str, Any]]:
    return [{"kind": "ndarray", "dtype": str(a.dtype), "shape": [None, a.shape[1]]} for a in arrays]


def test_a_model_answering_nested_outputs_is_not_served(tmp_path: Path) -> None:
    """An LSTM answers (output, (h, c)): no tensor layout carries that, and the server answered
    every request with a 500; it now refuses the model at load, saying why."""
    torch = pytest.importorskip("torch")

    import amber

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 3, batch_first=True).eval()
    amber.save(lstm, tmp_path / "lstm.amber", sample=np.zeros((2, 5, 4), dtype=np.float32))
    error = _load_error(tmp_path / "lstm.amber")
    assert "(ndarray, (ndarray, ndarray))" in error and "cannot be served" in error


def test_one_warning_filter_keeps_every_warning_shown_once() -> None:
    """What ``warning_filters="once"`` leaves: one catch-all filter that shows each warning once
    per place, whatever the process had; scikit-learn's forests re-install this list per tree."""
    import warnings

    from amber.serving._model import ONCE, one_filter

    with warnings.catch_warnings(record=True) as seen:
        warnings.filterwarnings("ignore", message="numpy.ndarray size changed")
        warnings.simplefilter("always", UserWarning)
        one_filter()
        assert warnings.filters == [ONCE]
        for _ in range(3):
            warnings.warn("twice from one place", UserWarning, stacklevel=1)
        assert [str(w.message) for w in seen] == ["twice from one place"]


def test_the_heap_is_frozen_after_loading_and_collected_after_a_swap() -> None:
    """``amber serve`` keeps what it loaded out of the collector's passes; a swapped-out
    version's reference cycles are collected once it has finished its last request."""
    import gc
    import weakref

    from amber.serving import _heap

    class Cyclic:  # a model whose objects refer to each other: only the collector frees it
        def __init__(self) -> None:
            self.me = self

    before = gc.get_freeze_count()  # 0, but Python 3.12 starts with a few hundred there
    old = Cyclic()
    gone = weakref.ref(old)
    try:
        _heap.loaded_first()
        assert gc.get_freeze_count() > before
        _heap.after_swap()  # a new version serves; the old one is retired
        assert gc.get_freeze_count() == 0
        del old
        _heap.retired()  # its last request is done (no event loop here: settles at once)
        assert gone() is None
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_an_unexpected_error_in_infer_is_a_json_500_and_counted(artifacts) -> None:
    """A bug behind the infer fast path answers as every other route's would: a JSON 500 with
    no details (they go to the log), and the request counted with its status."""
    from starlette.testclient import TestClient

    import amber.serving

    app = amber.serving.create_app([str(artifacts["iris"])], access_log=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_for(
            lambda: client.get("/v2/health/ready").status_code == 200, what="the model to load"
        )

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a bug")

        app.state.amber._oip = broken
        r = client.post("/v2/models/iris/infer", json=oip(X[0].tolist(), [1, 4]))
        assert r.status_code == 500
        assert r.json() == {"error": "internal error; the server log has the details"}
        metrics = client.get("/metrics").text
        assert 'amber_requests_total{code="500",model="iris",protocol="v2"} 1.0' in metrics
        errors = 'amber_request_errors_total{model="iris",protocol="v2",reason="INTERNAL_ERROR"}'
        assert errors in metrics
        assert "amber_requests_in_flight 0.0" in metrics


def test_a_model_outside_the_allowlist_is_served_only_with_allow_arbitrary_code(
    tmp_path: Path,
) -> None:
    """The opt-in ``amber.load`` has, for a file one made oneself (a class outside the
    allowlist, or an honest model past a size bound): the plain spec refuses the model, the
    spec with ``allow_arbitrary_code`` serves it and says so; ``amber serve`` has the flag."""
    import warnings

    from starlette.testclient import TestClient

    import amber.serving
    from amber.cli import build_parser
    from amber.cli.serve import build_config
    from amber.errors import UnsafeLoadWarning
    from amber.serving import ModelSpec

    path = save(servetest_models.TwoShapes(), tmp_path / "two.amber", np.ones((3, 2)))
    assert "UntrustedTypeError" in _load_error(path)
    spec = ModelSpec(source=str(path), allow_arbitrary_code=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = amber.serving.create_app([spec], access_log=False)
        with TestClient(app) as client:
            wait_for(lambda: client.get("/v2/health/ready").json()["ready"], what="the load")
            r = client.post("/v2/models/two/infer", json=oip([1.0, 2.0], [1, 2]))
            assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [3.0]
    assert any(issubclass(w.category, UnsafeLoadWarning) for w in caught)
    with pytest.raises(TypeError, match="True or False"):
        ModelSpec(source=str(path), allow_arbitrary_code="yes")  # type: ignore[arg-type]
    args = build_parser().parse_args(["serve", "--allow-arbitrary-code", str(path)])
    assert build_config(args).models[0].allow_arbitrary_code is True
    args = build_parser().parse_args(["serve", str(path)])
    assert build_config(args).models[0].allow_arbitrary_code is False
