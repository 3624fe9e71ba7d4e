"""Micro-batching: concurrent requests for one model version, predicted in one call.

Requests queue their decoded parts; one worker task per model version takes up to
``max_batch_size`` rows, joins them (``schema.concat``), predicts, and hands each request its
slice of the output. The worker starts after the requests already read from the sockets have
queued, and while a prediction runs new requests queue up, so batches form by themselves under
load and a lone request never waits; the extra wait of up to ``max_latency_ms`` for company
happens only when recent batches were larger than what is queued (the recent peak decays by 10%
a batch). A batch whose prediction fails is retried request by request, so one bad request
cannot fail its neighbours. With batching off the same path runs with ``max_batch_size=1``.

Where predictions run: on the version's own thread, so that the event loop keeps reading
requests (which then batch) and answering health checks, and request timeouts fire, while a
model computes; or, for models measured at load to predict a full batch in under 2 ms
(``inline``), in the event loop itself, since the hand-off to a thread would cost more than the
call. A lone request (nothing queued, no company lately) on a model that predicts a row in under
20 ms (``inline_alone``) is predicted in the loop too: there is nothing else for the loop to do,
and the hand-off would only add latency. A call that blocks the loop for over 0.1 s moves the
model to its thread for good.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

__all__ = ["ALONE_LIMIT_S", "INLINE_LIMIT_S", "Batcher", "PredictionFailed"]

#: A model whose calls take less than this predicts in the event loop itself (no thread hand-off,
#: which costs more than such a call) ...
INLINE_LIMIT_S = 0.002
#: A lone request is predicted in the loop when one row takes less than this.
ALONE_LIMIT_S = 0.02
#: ... until one call blocks the loop longer than this (an input far costlier than the probe's):
#: the model then moves to its thread for good.
DEMOTE_S = 0.1


class PredictionFailed(Exception):
    """The model raised on an input that passed validation; the message is the model's."""


def model_error(exc: Exception) -> str:
    """What a model raised, for the client: its type and message, without the native stack
    trace some libraries append (XGBoost's lists library paths and addresses)."""
    text = f"{type(exc).__name__}: {exc}"
    cut = text.find("Stack trace:")
    if cut >= 0:
        text = text[:cut].rstrip()
    return text[:1000]


@dataclass
class _Item:
    part: Any
    rows: int
    future: asyncio.Future[Any]


def _split(output: Any, offsets: list[int]) -> list[Any] | None:
    """Row slices of ``output`` for each request, or None when it is not row-aligned."""
    try:
        if len(output) != offsets[-1]:
            return None
        return [output[a:b] for a, b in itertools.pairwise(offsets)]
    except TypeError:
        return None


class Batcher:
    """Gathers requests for one prediction function (one model version and method)."""

    def __init__(
        self,
        predict: Callable[[Any], Any],
        *,
        concat: Callable[[list[Any]], Any],
        prepare: Callable[[Any], Any],
        executor: ThreadPoolExecutor,
        max_batch_size: int,
        max_latency_ms: float,
        observe: Callable[[int, int, float], None] | None = None,
        inline: bool = False,
        inline_alone: bool = False,
        inline_rows: int | None = None,
        alone_rows: int | None = None,
        on_demote: Callable[[float], None] | None = None,
    ) -> None:
        self.predict = predict
        self.inline = inline
        self.inline_alone = inline_alone
        # calls of more rows than calibration says fit the limits go to the model's thread: a
        # model quick on a few rows can take seconds on 100,000, which would stall the loop
        self.inline_rows = inline_rows if inline_rows is not None else 1 << 62
        self.alone_rows = alone_rows if alone_rows is not None else 1 << 62
        self.on_demote = on_demote
        self.concat = concat
        self.prepare = prepare
        self.executor = executor
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_latency_s = max(0.0, float(max_latency_ms)) / 1000.0
        self.observe = observe
        self._queue: deque[_Item] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._recent = 1.0  # decaying peak of requests per batch
        self._deciding = 0  # requests checking whether they are alone

    async def submit(self, part: Any, rows: int) -> Any:
        """Queue one request's decoded part; return its slice of the model's output."""
        alone_ok = (self.inline and rows <= self.inline_rows) or (
            self.inline_alone and rows <= self.alone_rows
        )
        if alone_ok and not self._queue and self._recent < 1.5 and self._idle():
            self._deciding += 1
            try:
                await asyncio.sleep(0)  # requests read in the same pass show up meanwhile
                alone = self._deciding == 1 and not self._queue and self._idle()
            finally:
                self._deciding -= 1
            if alone:
                return self._alone(part, rows)
        loop = asyncio.get_running_loop()
        item = _Item(part, rows, loop.create_future())
        self._queue.append(item)
        if self._arrived is not None:
            self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run())
        return await item.future

    def _idle(self) -> bool:
        return self._worker is None or self._worker.done()

    def _alone(self, part: Any, rows: int) -> Any:
        """Predict one request right in its own coroutine: no future, no worker task."""
        self._recent = max(1.0, self._recent * 0.9)
        started = time.perf_counter()
        try:
            return self._timed(part)
        except Exception as exc:
            raise PredictionFailed(model_error(exc)) from None
        finally:
            if self.observe is not None:
                asyncio.get_running_loop().call_soon(
                    self.observe, rows, 1, time.perf_counter() - started
                )

    def _call(self, part: Any) -> Any:
        return self.predict(self.prepare(part))

    def _timed(self, part: Any) -> Any:
        """An inline call; one that took too long moves this model to its thread for good."""
        started = time.perf_counter()
        try:
            return self._call(part)
        finally:
            took = time.perf_counter() - started
            if took > DEMOTE_S:
                self.inline = self.inline_alone = False
                if self.on_demote is not None:
                    self.on_demote(took)

    async def _gather(self) -> None:
        """Wait (bounded by max_latency) for as many requests as recent batches had."""
        target = min(int(self._recent), self.max_batch_size)
        if self.max_latency_s <= 0 or len(self._queue) >= target:
            return
        deadline = time.perf_counter() + self.max_latency_s
        self._arrived = asyncio.Event()
        try:
            while len(self._queue) < target and sum(i.rows for i in self._queue) < (
                self.max_batch_size
            ):
                left = deadline - time.perf_counter()
                if left <= 0:
                    return
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    return
        finally:
            self._arrived = None

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        rows = 0
        while self._queue:
            item = self._queue[0]
            if item.future.done():  # cancelled (timed out) while queued
                self._queue.popleft()
                continue
            if batch and rows + item.rows > self.max_batch_size:
                break
            batch.append(self._queue.popleft())
            rows += item.rows
        return batch

    async def _run(self) -> None:
        while self._queue:
            await self._gather()
            batch = self._take()
            if not batch:
                continue
            self._recent = max(float(len(batch)), self._recent * 0.9)
            rows = sum(i.rows for i in batch)
            started = time.perf_counter()
            try:
                outputs = await self._predict(batch)
            except Exception as exc:
                if len(batch) == 1:
                    _fail(batch[0], exc)
                else:
                    await self._one_by_one(batch)
                outputs = None
            for item, out in zip(batch, outputs or (), strict=False):
                if not item.future.done():
                    item.future.set_result(out)
            if self.observe is not None:  # after the requests it answered are on their way
                asyncio.get_running_loop().call_soon(
                    self.observe, rows, len(batch), time.perf_counter() - started
                )

    async def _exec(self, part: Any, rows: int, alone: bool = False) -> Any:
        if (self.inline and rows <= self.inline_rows) or (
            alone and self.inline_alone and rows <= self.alone_rows
        ):
            return self._timed(part)
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._call, part)

    async def _predict(self, batch: list[_Item]) -> list[Any]:
        # alone: one request, nothing queued behind it, no company lately (c=1)
        alone = len(batch) == 1 and not self._queue and self._recent < 1.5
        part = batch[0].part if len(batch) == 1 else self.concat([i.part for i in batch])
        rows = sum(i.rows for i in batch)
        outputs = _split(await self._exec(part, rows, alone), _offsets(batch))
        if outputs is None:  # not one output row per input row: one call each
            outputs = [await self._exec(i.part, i.rows) for i in batch]
        return outputs

    async def _one_by_one(self, batch: list[_Item]) -> None:
        for item in batch:
            try:
                out = await self._exec(item.part, item.rows)
            except Exception as exc:
                _fail(item, exc)
            else:
                if not item.future.done():
                    item.future.set_result(out)


def _offsets(batch: list[_Item]) -> list[int]:
    out = [0]
    for item in batch:
        out.append(out[-1] + item.rows)
    return out


def _fail(item: _Item, exc: Exception) -> None:
    if not item.future.done():
        item.future.set_exception(PredictionFailed(model_error(exc)))
