"""Request timeouts for every request in flight with one timer, not one timer per request.

``asyncio.timeout`` arms and cancels a loop timer per request (about 5 us each, a tenth of what
the server itself spends on a cheap model's request). All requests here have the same time
limit, so the request that entered first is always due first: one timer, set for the oldest
request in flight, finds the expired ones at the front of an insertion-ordered dict, cancels
their tasks and re-arms for the next oldest. A request that ends in time costs a dict insert
and delete. The expired request's task is cancelled exactly as ``asyncio.timeout`` would, at
the point where it waits, and leaves ``with deadlines:`` as ``TimeoutError`` (a 504).
"""

from __future__ import annotations

import asyncio

__all__ = ["Deadlines"]


class Deadlines:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._due: dict[asyncio.Task[object], float] = {}  # oldest first
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> None:
        """Start the current task's time limit (``with deadlines:`` around what it bounds)."""
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no event loop
            task = None
        if task is None:
            raise RuntimeError("a request's time limit needs a running task of an event loop")
        loop = task.get_loop()
        due = loop.time() + self.seconds
        self._due[task] = due
        if self._timer is None:
            self._timer = loop.call_at(due, self._check, loop)

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """End it; a cancellation that came from the limit leaves as ``TimeoutError`` (as
        ``asyncio.timeout`` does), any other one as it came."""
        task = asyncio.current_task()
        assert task is not None
        self._due.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            if kind is asyncio.CancelledError:
                task.uncancel()
                raise TimeoutError

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        while self._due:
            task, due = next(iter(self._due.items()))
            if due > now:
                self._timer = loop.call_at(due, self._check, loop)
                return
            del self._due[task]
            if not task.done():
                self._expired.add(task)
                task.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
