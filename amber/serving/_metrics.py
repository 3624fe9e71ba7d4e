"""Prometheus metrics, in a registry of the app's own (two apps in one process never clash).

What every request updates (request counts, errors, latency, batch histograms, requests in
flight) is counted in plain Python objects and turned into Prometheus families only when
``/metrics`` is read: ``prometheus_client``'s own ``Histogram.observe`` and ``Counter.inc`` take
a lock per bucket and per sum, about 10 us of every request. The rarely changed series (model
versions, readiness, swaps) stay ``prometheus_client`` objects.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["CONTENT_TYPE", "Metrics"]

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class _Series:
    """One labelled histogram series: a count per bucket (``le``, and +Inf last) and a sum."""

    __slots__ = ("bounds", "counts", "lock", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.lock = threading.Lock()  # batch observers run on the models' threads

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)  # the first bound >= value: Prometheus's le
        with self.lock:
            self.counts[i] += 1
            self.sum += value


class _Histogram:
    """A histogram with labels: a series per label values, made on first use."""

    def __init__(
        self, name: str, doc: str, labels: tuple[str, ...], bounds: tuple[float, ...]
    ) -> None:
        self.name, self.doc, self.labels, self.bounds = name, doc, labels, bounds
        self.les = [str(floatToGoString(b)) for b in (*bounds, float("inf"))]
        self.series: dict[tuple[str, ...], _Series] = {}

    def histogram(self, *values: str) -> _Series:
        series = self.series.get(values)
        if series is None:
            series = self.series.setdefault(values, _Series(self.bounds))
        return series

    def family(self) -> Metric:
        out = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for values, series in list(self.series.items()):
            with series.lock:
                counts, total = list(series.counts), series.sum
            buckets = list(zip(self.les, itertools.accumulate(counts), strict=True))
            out.add_metric(values, buckets, total)
        return out


class _Counter:
    """A counter with labels: a count per label values."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.counts: dict[tuple[str, ...], int] = {}
        self.lock = threading.Lock()

    def inc(self, *values: str) -> None:
        with self.lock:
            self.counts[values] = self.counts.get(values, 0) + 1

    def family(self) -> Metric:
        out = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for values, n in list(self.counts.items()):
            out.add_metric(values, n)
        return out


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield m.requests.family()
        yield m.errors.family()
        yield m.latency.family()
        yield m.batch_rows.family()
        yield m.batch_requests.family()
        yield m.predict_seconds.family()
        yield GaugeMetricFamily(
            "amber_requests_in_flight", "Inference requests being served", value=m.in_flight
        )


class Metrics:
    """Requests, latency, batch sizes, model versions, swaps and errors."""

    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: they double the output for nothing
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = _Counter(
            "amber_requests",
            "Inference requests by model, protocol and HTTP status",
            ("model", "protocol", "code"),
        )
        self.errors = _Counter(
            "amber_request_errors",
            "Refused or failed inference requests by reason",
            ("model", "protocol", "reason"),
        )
        self.latency = _Histogram(
            "amber_request_duration_seconds",
            "Inference request latency, body read to response",
            ("model", "protocol"),
            _LATENCY,
        )
        self.batch_rows = _Histogram(
            "amber_batch_rows", "Rows per prediction call", ("model",), _ROWS
        )
        self.batch_requests = _Histogram(
            "amber_batch_requests", "Requests per prediction call", ("model",), _ROWS
        )
        self.predict_seconds = _Histogram(
            "amber_predict_duration_seconds", "Time of one prediction call", ("model",), _LATENCY
        )
        #: inference requests being served: changed only on the event loop's thread
        self.in_flight = 0
        r.register(_Collector(self))
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
        self.resolve_failures = Counter(
            "amber_model_resolve_failures",
            "Checks of a model's source that failed (an alias deleted, the registry unreachable)",
            ["model"],
            registry=r,
        )
        self.signature_changes = Counter(
            "amber_model_signature_changes",
            "Swaps to a version whose inputs differ from the previous version's",
            ["model"],
            registry=r,
        )
        self.swap_failed = Gauge(
            "amber_model_swap_failure_timestamp_seconds",
            "When a version last failed verification and was not swapped in",
            ["model", "version"],
            registry=r,
        )

    def request(self, model: str, protocol: str, code: int, seconds: float | None) -> None:
        self.requests.inc(model, protocol, str(code))
        if seconds is not None:
            self.latency.histogram(model, protocol).observe(seconds)

    def error(self, model: str, protocol: str, reason: str) -> None:
        self.errors.inc(model, protocol, reason)

    def batch_observer(self, model: str) -> Any:
        rows = self.batch_rows.histogram(model)
        reqs = self.batch_requests.histogram(model)
        secs = self.predict_seconds.histogram(model)

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
