"""A large request body is parsed, converted and checked off the event loop, so health probes
and small requests are answered meanwhile; a small body is converted in the loop.

The server runs in this process (uvicorn on loopback, its event loop in a thread of its own) so
that the test can watch the real conversion: the schema's ``from_oip`` is wrapped to record the
thread it runs on and, for the large body, to wait until the test has had its answers. Were the
conversion in the loop, the loop could answer nothing while it waits: the wait would run out and
the test fail, with no timing to tune.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from servetest_helpers import free_port, iris_data, oip, wait_for

from amber.serving._app import THREAD_BODY_BYTES

X, Y = iris_data()
HELD_S = 15.0  # how long the large conversion waits for the test's answers, at most


class InThread:
    """``app`` served by uvicorn on a loopback port, its event loop in ``thread``."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="event-loop", daemon=True)

    def __enter__(self) -> InThread:
        self.thread.start()
        wait_for(lambda: self.server.started, what="uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def served(artifacts: dict[str, Any]) -> Iterator[InThread]:
    import amber.serving

    app = amber.serving.create_app([str(artifacts["iris"])], poll_interval_s=None, access_log=False)
    with InThread(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        wait_for(lambda: client.get("/v2/health/ready").status_code == 200, what="iris to load")
        yield srv


def _watch(
    srv: InThread, hold_over: int
) -> tuple[list[tuple[int, int, bool]], threading.Event, threading.Event, Callable[[], None]]:
    """Wrap iris's real ``from_oip``: each call records (thread, values, released in time);
    a call of more than ``hold_over`` values sets ``started`` and waits for ``release``."""
    schema = srv.app.state.amber.slots["iris"].current.schema
    real = schema.from_oip
    calls: list[tuple[int, int, bool]] = []
    started, release = threading.Event(), threading.Event()

    def watched(inputs: Any) -> Any:
        values = len(inputs[0]["data"])
        in_time = True
        if values > hold_over:
            started.set()
            in_time = release.wait(HELD_S)
        calls.append((threading.get_ident(), values, in_time))
        return real(inputs)

    schema.from_oip = watched
    return calls, started, release, lambda: delattr(schema, "from_oip")


def test_a_large_body_is_converted_off_the_event_loop(served: InThread) -> None:
    rows = np.tile(X, (1000, 1))  # 150,000 rows: 2.4 MB of JSON
    large = oip(rows.ravel().tolist(), list(rows.shape))
    body_size = len(httpx.Request("POST", "/", json=large).content)
    assert body_size > 32 * THREAD_BODY_BYTES
    calls, started, release, restore = _watch(served, hold_over=1000)
    answers: dict[str, httpx.Response] = {}
    try:
        with httpx.Client(base_url=served.url, timeout=60) as client:

            def send_large() -> None:
                answers["large"] = client.post("/v2/models/iris/infer", json=large)

            sender = threading.Thread(target=send_large)
            sender.start()
            assert started.wait(30), "the large request's conversion never started"
            # the large conversion is now held: the loop must answer these meanwhile
            answers["live"] = client.get("/v2/health/live")
            answers["small"] = client.post("/v2/models/iris/infer", json=oip(X[0].tolist(), [1, 4]))
            release.set()
            sender.join(60)
    finally:
        release.set()
        restore()
    assert answers["live"].status_code == 200
    small = answers["small"]
    assert small.status_code == 200 and small.json()["outputs"][0]["data"] == [0]
    large_answer = answers["large"]
    assert large_answer.status_code == 200, large_answer.text[:300]
    assert large_answer.json()["outputs"][0]["shape"] == [len(rows)]
    loop = served.thread.ident
    by_size = {values: (thread, in_time) for thread, values, in_time in calls}
    thread, in_time = by_size[rows.size]
    assert in_time, "the event loop answered nothing while the large body was converted"
    assert thread != loop, "the large body was converted in the event loop's thread"
    assert by_size[4] == (loop, True), "a small body is converted in the loop (no hand-off)"


def test_errors_of_a_large_body_are_answered_as_in_the_loop(served: InThread) -> None:
    rows = np.tile(X, (40, 1)).ravel().tolist()
    with httpx.Client(base_url=served.url, timeout=60) as client:
        for bad, got in ((True, "boolean true"), ("x", "string 'x'")):
            data = [*rows[:-1], bad]
            r = client.post("/v2/models/iris/infer", json=oip(data, [len(rows) // 4, 4]))
            assert len(r.request.content) > THREAD_BODY_BYTES
            assert r.status_code == 400, r.text[:300]
            body = r.json()
            assert body["field"] == f"inputs[0].data[{len(rows) - 1}]" and body["got"] == got
        csv = "\n".join(",".join(map(str, row)) for row in np.tile(X, (60, 1)))
        assert len(csv) > THREAD_BODY_BYTES
        r = client.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
        assert r.status_code == 200, r.text[:300]
        want = served.app.state.amber.slots["iris"].current.model.predict(X).tolist()
        assert r.json()["predictions"] == want * 60
