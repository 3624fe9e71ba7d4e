"""Micro-batching: concurrent requests are predicted together and each gets its own rows back."""

from __future__ import annotations

import asyncio
import re

import httpx
from servetest_helpers import Server, iris_data, oip

import amber

X, Y = iris_data()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_concurrent_requests_are_batched_and_split_back(server: Server, artifacts) -> None:
    model = amber.load(artifacts["iris"])
    before = server.client.get("/metrics").text
    calls0 = _metric(before, 'amber_batch_requests_count{model="iris"}')
    reqs0 = _metric(before, 'amber_batch_requests_sum{model="iris"}')

    async def one(client: httpx.AsyncClient, i: int) -> None:
        n = 1 + i % 3  # requests of 1, 2 and 3 rows mixed in the same batches
        rows = X[[(i * 7 + k) % len(X) for k in range(n)]]
        r = await client.post("/v2/models/iris/infer", json=oip(rows.ravel().tolist(), [n, 4]))
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == model.predict(rows).tolist(), i

    async def main() -> None:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(
            base_url=server.url, headers=dict(server.client.headers), limits=limits, timeout=30
        ) as client:
            sem = asyncio.Semaphore(32)

            async def bounded(i: int) -> None:
                async with sem:
                    await one(client, i)

            await asyncio.gather(*(bounded(i) for i in range(400)))

    asyncio.run(main())
    after = server.client.get("/metrics").text
    calls = _metric(after, 'amber_batch_requests_count{model="iris"}') - calls0
    requests = _metric(after, 'amber_batch_requests_sum{model="iris"}') - reqs0
    assert requests == 400 and 0 < calls <= requests
    assert server.client.get("/v2/models/iris").json()["parameters"]["batching"]["enabled"]


def test_requests_gather_while_the_model_computes(server: Server) -> None:
    """The slow model sleeps X[0, 0] s per call: requests arriving meanwhile share the next call."""
    before = server.client.get("/metrics").text
    calls0 = _metric(before, 'amber_batch_requests_count{model="slow"}')

    async def main() -> list[float]:
        async with httpx.AsyncClient(
            base_url=server.url, headers=dict(server.client.headers), timeout=30
        ) as client:

            async def one(i: int) -> float:
                r = await client.post("/v2/models/slow/infer", json=oip([0.2, float(i)], [1, 2]))
                assert r.status_code == 200, r.text
                return float(r.json()["outputs"][0]["data"][0])

            return await asyncio.gather(*(one(i) for i in range(40)))

    sums = asyncio.run(main())
    assert sums == [0.2 + i for i in range(40)]  # each request got its own row back
    calls = (
        _metric(server.client.get("/metrics").text, 'amber_batch_requests_count{model="slow"}')
        - calls0
    )
    assert calls <= 8, calls  # 40 requests in a handful of 0.2 s calls, not 40 (8 s)


def test_batching_off_predicts_one_request_per_call(tmp_path, artifacts) -> None:
    from servetest_helpers import stopped_cleanly

    srv = Server([f"plain={artifacts['iris']}", "--batching", "plain=off"], tmp_path)
    try:
        srv.wait_ready()
        meta = srv.client.get("/v2/models/plain").json()
        assert meta["parameters"]["batching"]["enabled"] is False

        async def main() -> None:
            async with httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
                body = oip(X[:2].ravel().tolist(), [2, 4])
                rs = await asyncio.gather(
                    *(client.post("/v2/models/plain/infer", json=body) for _ in range(40))
                )
                assert {r.status_code for r in rs} == {200}

        asyncio.run(main())
        text = srv.client.get("/metrics").text
        assert _metric(text, 'amber_batch_requests_count{model="plain"}') == 40
        assert _metric(text, 'amber_batch_rows_sum{model="plain"}') == 80
    finally:
        assert stopped_cleanly(srv)
