"""Prometheus metrics, in a registry of the app's own (two apps in one process never clash)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "Metrics"]

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    """Requests, latency, batch sizes, model versions, swaps and errors."""

    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: they double the output for nothing
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "amber_requests",
            "Inference requests by model, protocol and HTTP status",
            ["model", "protocol", "code"],
            registry=r,
        )
        self.errors = Counter(
            "amber_request_errors",
            "Refused or failed inference requests by reason",
            ["model", "protocol", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "amber_request_duration_seconds",
            "Inference request latency, body read to response",
            ["model", "protocol"],
            buckets=_LATENCY,
            registry=r,
        )
        self.batch_rows = Histogram(
            "amber_batch_rows", "Rows per prediction call", ["model"], buckets=_ROWS, registry=r
        )
        self.batch_requests = Histogram(
            "amber_batch_requests",
            "Requests per prediction call",
            ["model"],
            buckets=_ROWS,
            registry=r,
        )
        self.predict_seconds = Histogram(
            "amber_predict_duration_seconds",
            "Time of one prediction call",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.in_flight = Gauge(
            "amber_requests_in_flight", "Inference requests being served", registry=r
        )
        self.version = Gauge(
            "amber_model_version_info",
            "1 for the version each model serves now",
            ["model", "version"],
            registry=r,
        )
        self.ready = Gauge("amber_model_ready", "1 once a model serves", ["model"], registry=r)
        self.swaps = Counter(
            "amber_model_swaps",
            "Version changes tried, by result (ok, failed)",
            ["model", "result"],
            registry=r,
        )
        self.swap_failed = Gauge(
            "amber_model_swap_failure_timestamp_seconds",
            "When a version last failed verification and was not swapped in",
            ["model", "version"],
            registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, model: str, protocol: str, code: int, seconds: float | None) -> None:
        self._child(self.requests, model, protocol, str(code)).inc()
        if seconds is not None:
            self._child(self.latency, model, protocol).observe(seconds)

    def error(self, model: str, protocol: str, reason: str) -> None:
        self._child(self.errors, model, protocol, reason).inc()

    def batch_observer(self, model: str) -> Any:
        rows = self._child(self.batch_rows, model)
        reqs = self._child(self.batch_requests, model)
        secs = self._child(self.predict_seconds, model)

        def observe(n_rows: int, n_requests: int, seconds: float) -> None:
            rows.observe(n_rows)
            reqs.observe(n_requests)
            secs.observe(seconds)

        return observe

    def serving(self, model: str, version: str, previous: str | None) -> None:
        if previous is not None:
            self.version.remove(model, previous)
        self.version.labels(model, version).set(1)
        self.ready.labels(model).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
