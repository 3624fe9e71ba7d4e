"""A served model name and the version behind it; hot swap happens here.

``refresh`` asks the source which version it points at; when that differs from the one served,
the new version is loaded and verified in a worker thread (digests, safe load, probe parity),
and only then does ``current`` change, in one assignment. Requests hold the ``LoadedModel`` they
started with, so those in flight finish on the old version, which is closed once they are done.
A version that fails is not swapped in, is reported (log, ``/metrics``, readiness details), and
is not retried until the source moves away from it or a reload is forced. A source that cannot
be resolved (an alias deleted, the registry unreachable) leaves the served version in place and
is reported the same way until a check succeeds. A swap to a version whose inputs differ from the
previous version's goes ahead (moving an alias is the operator's decision) but is logged as a
warning and shown in readiness: clients written for the old inputs now get 400s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from amber.serving import _heap
from amber.serving._config import ModelSpec
from amber.serving._logs import event
from amber.serving._metrics import Metrics
from amber.serving._model import LoadedModel, load_version
from amber.serving._source import ModelSource

__all__ = ["ModelSlot"]


def _inputs(loaded: LoadedModel) -> list[dict[str, Any]]:
    """A version's inputs as its metadata endpoint describes them (names, datatypes, shapes)."""
    return loaded.schema.oip_metadata()


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


class ModelSlot:
    """One model name: its source, the version it serves, and what went wrong last."""

    def __init__(
        self,
        name: str,
        spec: ModelSpec,
        source: ModelSource,
        metrics: Metrics,
        *,
        one_warning_filter: bool = False,
        freeze_heap: bool = False,
    ) -> None:
        self.one_warning_filter = one_warning_filter
        self.freeze_heap = freeze_heap
        self.name = name
        self.spec = spec
        self.source = source
        self.metrics = metrics
        self.current: LoadedModel | None = None
        self.error: str | None = None  # why nothing serves yet
        self.last_failure: dict[str, Any] | None = None
        self.resolve_failure: dict[str, Any] | None = None  # the last check's, until one passes
        self.signature_change: dict[str, Any] | None = None  # the last swap that changed inputs
        self.last_check: float | None = None
        self._failed: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self.observe = metrics.batch_observer(name)

    @property
    def ready(self) -> bool:
        return self.current is not None

    def status(self) -> dict[str, Any]:
        """Readiness details for this model."""
        out: dict[str, Any] = {
            "ready": self.ready,
            "state": "ready" if self.current else ("failed" if self.error else "loading"),
            "source": self.source.uri,
            "version": self.current.version if self.current else None,
        }
        if self.current:
            out["batching"] = self.current.batching
        if self.error and not self.current:
            out["error"] = self.error
        if self.last_failure:
            out["last_failure"] = self.last_failure
        if self.resolve_failure and self.current:
            out["resolve_failure"] = self.resolve_failure
        if self.signature_change:
            out["signature_change"] = self.signature_change
        return out

    async def refresh(self, *, force: bool = False) -> dict[str, Any]:
        """Serve the version the source points at, if it is new and passes verification."""
        async with self._lock:
            return await self._refresh(force)

    async def _refresh(self, force: bool) -> dict[str, Any]:
        self.last_check = time.time()
        current = self.current.version if self.current else None
        try:
            resolved = await asyncio.to_thread(self.source.resolve)
        except Exception as exc:
            reason = _reason(exc)
            if self.current is None:
                self.error = reason
            else:
                self.resolve_failure = {"error": reason, "at": time.time(), "serving": current}
            self.metrics.resolve_failures.labels(self.name).inc()
            event(
                logging.ERROR,
                "resolve_failed",
                model=self.name,
                source=self.source.uri,
                error=reason,
            )
            return {"model": self.name, "status": "unresolved", "version": current, "error": reason}
        self.resolve_failure = None
        if resolved.version == current:
            return {"model": self.name, "status": "unchanged", "version": current}
        if resolved.version in self._failed and not force and self.current is not None:
            return {
                "model": self.name,
                "status": "failed-before",
                "version": current,
                "candidate": resolved.version,
                "error": self._failed[resolved.version],
            }
        event(
            logging.INFO,
            "loading",
            model=self.name,
            version=resolved.version,
            previous=current,
            source=self.source.uri,
        )
        started = time.perf_counter()
        try:
            loaded = await asyncio.to_thread(
                load_version,
                self.name,
                self.source,
                resolved,
                self.spec,
                one_warning_filter=self.one_warning_filter,
            )
            moved = not await asyncio.to_thread(self.source.still, resolved)
        except Exception as exc:
            return self._failed_version(resolved.version, _reason(exc), current)
        if moved:
            loaded.close()
            event(logging.INFO, "moved_while_loading", model=self.name, version=resolved.version)
            return {
                "model": self.name,
                "status": "moved",
                "version": current,
                "candidate": resolved.version,
            }
        old, self.current = self.current, loaded
        self.error = None
        self._failed.pop(resolved.version, None)
        self.metrics.serving(self.name, loaded.version, old.version if old else None)
        self.metrics.swaps.labels(self.name, "ok").inc()
        event(
            logging.INFO,
            "serving" if old is None else "swapped",
            model=self.name,
            version=loaded.version,
            previous=current,
            batching=loaded.batching,
            load_seconds=round(time.perf_counter() - started, 3),
        )
        changed = old is not None and _inputs(old) != _inputs(loaded)
        if old is not None and changed:
            self._signature_changed(old, loaded)
        if self.freeze_heap:
            if old is None:
                _heap.loaded_first()
            else:
                _heap.after_swap()
                old.on_closed = _heap.retired
        if old is not None:
            old.retire()
        result: dict[str, Any] = {
            "model": self.name,
            "status": "swapped" if old else "loaded",
            "version": loaded.version,
            "previous": current,
        }
        if changed:
            result["signature_changed"] = True
        return result

    def _signature_changed(self, old: LoadedModel, new: LoadedModel) -> None:
        before, after = _inputs(old), _inputs(new)
        self.signature_change = {
            "version": new.version,
            "previous": old.version,
            "at": time.time(),
            "inputs": after,
            "previous_inputs": before,
        }
        self.metrics.signature_changes.labels(self.name).inc()
        event(
            logging.WARNING,
            "signature_changed",
            model=self.name,
            version=new.version,
            previous=old.version,
            inputs=after,
            previous_inputs=before,
            hint="requests shaped for the previous inputs are now refused (400); move the "
            "alias back, or update the clients",
        )

    def _failed_version(self, version: str, reason: str, current: str | None) -> dict[str, Any]:
        self._failed[version] = reason
        self.last_failure = {"version": version, "error": reason, "at": time.time()}
        if self.current is None:
            self.error = reason
        self.metrics.swaps.labels(self.name, "failed").inc()
        self.metrics.swap_failed.labels(self.name, version).set(time.time())
        event(
            logging.ERROR,
            "version_rejected",
            model=self.name,
            version=version,
            serving=current,
            error=reason,
        )
        return {
            "model": self.name,
            "status": "failed",
            "version": current,
            "candidate": version,
            "error": reason,
        }

    async def watch(self, interval: float | None) -> None:
        """Load now (unless already loaded), then poll movable sources every ``interval``
        seconds. Until a first version serves, retry with a growing pause (2 s doubling up to
        60 s, or ``interval``)."""
        if self.current is None:
            await self.refresh()
        backoff = 2.0
        while self.current is None:
            await asyncio.sleep(min(backoff, interval) if interval else backoff)
            backoff = min(backoff * 2, 60.0)
            await self.refresh()
        while interval and self.source.movable:
            await asyncio.sleep(interval)
            await self.refresh()

    def close(self) -> None:
        if self.current is not None:
            self.current.retire()
