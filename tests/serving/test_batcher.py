"""The batcher's own paths, in one event loop (no HTTP): where a lone request is predicted."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from amber.serving._batcher import Batcher


def _batcher(*, inline: bool, inline_alone: bool, threads: list[str]) -> Batcher:
    def predict(x: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return x.sum(axis=1)

    return Batcher(
        predict,
        concat=np.concatenate,
        prepare=lambda x: x,
        executor=ThreadPoolExecutor(1, thread_name_prefix="model"),
        max_batch_size=64,
        max_latency_ms=2,
        observe=None,
        inline=inline,
        inline_alone=inline_alone,
    )


def test_a_lone_request_is_predicted_in_the_loop_without_a_worker_task() -> None:
    """A model too slow to predict a batch in the loop but quick on one row (a forest): a lone
    request goes straight to the model in its own coroutine, not through the queue's worker."""
    threads: list[str] = []
    batcher = _batcher(inline=False, inline_alone=True, threads=threads)

    async def main() -> list[float]:
        out = []
        for i in range(3):  # one after another: each alone
            out.append(float((await batcher.submit(np.array([[1.0, float(i)]]), 1))[0]))
        return out

    assert asyncio.run(main()) == [1.0, 2.0, 3.0]
    assert threads == ["MainThread"] * 3
    assert batcher._worker is None  # never needed


def test_concurrent_requests_still_batch_on_the_models_thread() -> None:
    threads: list[str] = []
    batcher = _batcher(inline=False, inline_alone=True, threads=threads)

    async def main() -> list[float]:
        parts = [np.array([[1.0, float(i)]]) for i in range(8)]
        outs = await asyncio.gather(*(batcher.submit(p, 1) for p in parts))
        return [float(o[0]) for o in outs]

    assert asyncio.run(main()) == [1.0 + i for i in range(8)]
    assert len(threads) < 8 and all(t.startswith("model") for t in threads)


def test_a_model_that_is_never_inline_predicts_on_its_thread() -> None:
    threads: list[str] = []
    batcher = _batcher(inline=False, inline_alone=False, threads=threads)
    out = asyncio.run(batcher.submit(np.array([[2.0, 3.0]]), 1))
    assert float(out[0]) == 5.0 and threads[0].startswith("model")


def test_a_request_larger_than_calibration_allows_goes_to_the_models_thread() -> None:
    """A model quick on the rows it was timed on may take seconds on 100,000: such a request
    is predicted on the model's thread, so the loop keeps answering health checks and the
    request timeout still applies."""
    for inline, inline_alone in ((True, True), (False, True)):
        threads: list[str] = []
        batcher = _batcher(inline=inline, inline_alone=inline_alone, threads=threads)
        batcher.inline_rows = batcher.alone_rows = 10

        async def main(b: Batcher = batcher) -> None:
            await b.submit(np.ones((10, 2)), 10)
            await b.submit(np.ones((11, 2)), 11)

        asyncio.run(main())
        assert threads[0] == "MainThread" and threads[1].startswith("model"), threads
