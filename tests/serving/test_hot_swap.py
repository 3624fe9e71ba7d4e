"""Hot swap under concurrent load: a file replaced in place, and a registry alias moved.

Zero failed requests; responses switch from the old version to the new one; requests in
flight finish on the old version; a version that fails verification (its probe cannot be
reproduced) is not swapped in and is reported in the log, /metrics and readiness details.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import servetest_models
from servetest_helpers import Load, Server, iris_data, oip, save, stopped_cleanly, wait_for

X, Y = iris_data()
BODY = oip(X[:3].ravel().tolist(), [3, 4])


def _model(c: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=1000).fit(X, Y)


def _check_switch(load: Load, old: str, new: str) -> None:
    statuses = [r[2] for r in load.results]
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    versions = load.versions()
    assert set(versions) == {old, new}, set(versions)
    first_new = min(r[1] for r in load.results if r[3] == new)
    # once a response came from the new version, only requests already in flight used the old
    late_old = [r for r in load.results if r[3] == old and r[0] > first_new]
    assert not late_old, late_old[:3]
    assert versions[-1] == new


def _check_rejected(srv: Server, model: str, serving: str, bad: str) -> None:
    ready = srv.client.get("/v2/health/ready")
    assert ready.status_code == 200
    details = ready.json()["models"][model]
    assert details["version"] == serving
    assert details["last_failure"]["version"] == bad
    assert "ParityError" in details["last_failure"]["error"]
    metrics = srv.client.get("/metrics").text
    assert f'amber_model_swaps_total{{model="{model}",result="failed"}} 1.0' in metrics
    assert (
        f'amber_model_swap_failure_timestamp_seconds{{model="{model}",version="{bad}"}}' in metrics
    )
    assert f'amber_model_version_info{{model="{model}",version="{serving}"}} 1.0' in metrics
    events = [json.loads(line) for line in srv.log.splitlines() if line.startswith("{")]
    rejected = [e for e in events if e.get("event") == "version_rejected"]
    assert rejected and rejected[-1]["version"] == bad and rejected[-1]["serving"] == serving


def _failures(srv: Server, model: str) -> int:
    text = srv.client.get("/metrics").text
    return text.count(f'amber_model_swap_failure_timestamp_seconds{{model="{model}"')


def test_file_replaced_under_load(tmp_path: Path) -> None:
    path = save(_model(1.0), tmp_path / "swap.amber", X[:16], version="1")
    srv = Server([str(path), "--poll-interval", "0.2"], tmp_path)
    try:
        srv.wait_ready()
        with Load(srv, "/v2/models/swap/infer", BODY, clients=8) as load:
            wait_for(lambda: len(load.results) > 50, what="load to start")
            save(_model(0.01), path, X[:16], version="2")
            wait_for(lambda: "2" in load.versions(), what="version 2 to serve")
            save(servetest_models.NoisyModel(), path, X[:16], version="3")
            wait_for(lambda: _failures(srv, "swap") == 1, what="version 3 to be rejected")
            n = len(load.results)
            wait_for(lambda: len(load.results) > n + 50, what="more requests after rejection")
        _check_switch(load, "1", "2")
        _check_rejected(srv, "swap", "2", "3")
    finally:
        assert stopped_cleanly(srv)


def test_registry_alias_moved_under_load(tmp_path: Path) -> None:
    amber = pytest.importorskip("amber")
    registry = tmp_path / "registry"
    reg = amber.Registry(registry)
    reg.push("iris", _model(1.0), sample=X[:16], alias="production")
    srv = Server(
        ["models:/iris@production", "--registry", str(registry), "--poll-interval", "0.2"], tmp_path
    )
    try:
        srv.wait_ready()
        assert srv.client.get("/v2/models/iris").json()["versions"] == ["1"]
        with Load(srv, "/v2/models/iris/infer", BODY, clients=8) as load:
            wait_for(lambda: len(load.results) > 50, what="load to start")
            v2 = reg.push("iris", _model(0.01), sample=X[:16])
            assert v2.version == 2 and "1" in load.versions()
            n = len(load.results)
            wait_for(lambda: len(load.results) > n + 30, what="v2 pushed without alias")
            assert set(load.versions()) == {"1"}  # pushing alone moves nothing
            reg.set_alias("iris", "production", 2)
            wait_for(lambda: "2" in load.versions(), what="the alias move to be served")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a test class, not allowlisted
                reg.push("iris", servetest_models.NoisyModel(), sample=X[:16], alias="production")
            wait_for(lambda: _failures(srv, "iris") == 1, what="version 3 to be rejected")
            n = len(load.results)
            wait_for(lambda: len(load.results) > n + 50, what="more requests after rejection")
        _check_switch(load, "1", "2")
        _check_rejected(srv, "iris", "2", "3")
        # moving the alias back to a good version swaps again
        reg.set_alias("iris", "production", 1)
        wait_for(
            lambda: srv.client.get("/v2/models/iris").json()["versions"] == ["1"],
            what="the alias moved back",
        )
        r = srv.client.post("/v2/models/iris/infer", json=BODY)
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        assert np.array(r.json()["outputs"][0]["data"]).shape == (3,)
    finally:
        reg.close()
        assert stopped_cleanly(srv)


def test_reload_endpoint_swaps_without_polling(tmp_path: Path) -> None:
    path = save(_model(1.0), tmp_path / "swap.amber", X[:16], version="1")
    srv = Server(
        [str(path), "--poll-interval", "0"], tmp_path, env={"AMBER_RELOAD_TOKEN": "let-me-reload"}
    )
    try:
        srv.wait_ready()
        save(_model(0.01), path, X[:16], version="2")
        assert srv.client.get("/v2/models/swap").json()["versions"] == ["1"]  # no polling
        auth = {"Authorization": "Bearer let-me-reload"}
        r = srv.client.post("/admin/reload?wait=true", headers=auth)
        assert r.status_code == 200
        assert r.json()["models"] == [
            {"model": "swap", "status": "swapped", "version": "2", "previous": "1"}
        ]
        assert srv.client.post("/v2/models/swap/infer", json=BODY).json()["model_version"] == "2"
    finally:
        assert stopped_cleanly(srv)


def _events(srv: Server, name: str) -> list[dict]:
    events = [json.loads(line) for line in srv.log.splitlines() if line.startswith("{")]
    return [e for e in events if e.get("event") == name]


def test_a_swap_that_changes_the_inputs_is_flagged(tmp_path: Path) -> None:
    """The new version serves (the operator moved it there), but the change of inputs is logged
    as a warning, counted, returned by the reload and shown in readiness."""
    from sklearn.linear_model import LogisticRegression

    path = save(_model(1.0), tmp_path / "swap.amber", X[:16], version="1")
    srv = Server(
        [str(path), "--poll-interval", "0"], tmp_path, env={"AMBER_RELOAD_TOKEN": "let-me-reload"}
    )
    auth = {"Authorization": "Bearer let-me-reload"}
    try:
        srv.wait_ready()
        save(_model(0.01), path, X[:16], version="2")  # the same inputs: no flag
        swapped = srv.client.post("/admin/reload?wait=true", headers=auth).json()["models"][0]
        assert swapped["status"] == "swapped" and "signature_changed" not in swapped
        assert "signature_change" not in srv.client.get("/v2/health/ready").json()["models"]["swap"]
        three = LogisticRegression(max_iter=1000).fit(X[:, :3], Y)
        save(three, path, X[:16, :3], version="3")
        swapped = srv.client.post("/admin/reload?wait=true", headers=auth).json()["models"][0]
        assert swapped["status"] == "swapped" and swapped["signature_changed"] is True
        change = srv.client.get("/v2/health/ready").json()["models"]["swap"]["signature_change"]
        assert (change["version"], change["previous"]) == ("3", "2")
        assert change["previous_inputs"][0]["shape"] == [-1, 4]
        assert change["inputs"][0]["shape"] == [-1, 3]
        (warned,) = _events(srv, "signature_changed")
        assert warned["level"] == "warning" and warned["previous"] == "2", warned
        assert (
            'amber_model_signature_changes_total{model="swap"} 1.0'
            in srv.client.get("/metrics").text
        )
        # requests shaped for the old inputs now get a 400 that says what the model wants
        r = srv.client.post("/v2/models/swap/infer", json=BODY)
        assert r.status_code == 400 and "[n, 3]" in r.json()["expected"], r.text
    finally:
        assert stopped_cleanly(srv)


def test_an_alias_that_cannot_be_resolved_is_shown_while_the_old_version_serves(
    tmp_path: Path,
) -> None:
    amber = pytest.importorskip("amber")
    registry = tmp_path / "registry"
    reg = amber.Registry(registry)
    reg.push("iris", _model(1.0), sample=X[:16], alias="production")
    srv = Server(
        ["models:/iris@production", "--registry", str(registry), "--poll-interval", "0"],
        tmp_path,
        env={"AMBER_RELOAD_TOKEN": "let-me-reload"},
    )
    auth = {"Authorization": "Bearer let-me-reload"}
    try:
        srv.wait_ready()
        reg.remove_alias("iris", "production")
        out = srv.client.post("/admin/reload?wait=true", headers=auth).json()["models"][0]
        assert out["status"] == "unresolved" and out["version"] == "1"
        ready = srv.client.get("/v2/health/ready")
        assert ready.status_code == 200  # version 1 still serves
        details = ready.json()["models"]["iris"]
        assert details["version"] == "1"
        assert "production" in details["resolve_failure"]["error"], details
        assert details["resolve_failure"]["serving"] == "1"
        assert srv.client.post("/v2/models/iris/infer", json=BODY).status_code == 200
        assert (
            'amber_model_resolve_failures_total{model="iris"} 1.0'
            in srv.client.get("/metrics").text
        )
        assert _events(srv, "resolve_failed")
        # once the alias is back, the next check clears it
        reg.set_alias("iris", "production", 1)
        out = srv.client.post("/admin/reload?wait=true", headers=auth).json()["models"][0]
        assert out["status"] == "unchanged"
        assert "resolve_failure" not in srv.client.get("/v2/health/ready").json()["models"]["iris"]
    finally:
        reg.close()
        assert stopped_cleanly(srv)
