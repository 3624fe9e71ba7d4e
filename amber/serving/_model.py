"""One loaded, verified model version, ready to predict: its schema, methods and batchers.

``load_version`` runs in a worker thread: the source's ``load`` (every entry's BLAKE3 digest
checked, as ``amber.verify`` does, then one ``amber.load(probe="always")``, or the registry's
``load`` for ``models:/`` URIs), so the object that serves is itself proven to reproduce the
stored outputs. It then reads the stored probe input (for examples and for
measuring whether batching pays) and builds the input schema from the signature.
"""

from __future__ import annotations

import functools
import logging
import statistics
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from amber.serving._batcher import ALONE_LIMIT_S, INLINE_LIMIT_S, Batcher
from amber.serving._config import ModelSpec
from amber.serving._frame import FrameSchema
from amber.serving._schema import InputSchema, schema_for
from amber.serving._source import ModelSource, Resolved

__all__ = ["LoadedModel", "class_labels", "load_version"]

_LOAD_LOCK = threading.Lock()


def class_labels(model: Any) -> list[Any] | None:
    """A classifier's ``classes_`` as JSON values: the labels that ``predict_proba``'s (and a
    multi-class ``decision_function``'s) columns stand for, in order; a list per output for a
    multi-output classifier. None for models without them, or with labels JSON cannot carry."""
    try:
        classes = getattr(model, "classes_", None)
    except Exception:  # a property that raises (a pipeline whose last step is no classifier)
        return None
    if classes is None:
        return None
    try:
        if isinstance(classes, list):
            labels: list[Any] = [np.asarray(c).tolist() for c in classes]
        else:
            labels = np.asarray(classes).tolist()
        orjson.dumps(labels)
    except (TypeError, ValueError, orjson.JSONEncodeError):
        return None
    return labels if isinstance(labels, list) else None


@dataclass
class LoadedModel:
    """A model version in memory; requests hold a reference, so a swap never cuts them off."""

    name: str
    version: str
    model: Any
    schema: InputSchema
    methods: dict[str, Callable[[Any], Any]]
    framework: str
    object_type: str
    sample: Any
    outputs: dict[str, Any]
    batching: dict[str, Any]
    spec: ModelSpec
    classes: list[Any] | None = None  # the columns of predict_proba, in order (classifiers)
    loaded_at: float = field(default_factory=time.time)
    _executor: ThreadPoolExecutor | None = None
    _runners: dict[str, Batcher] = field(default_factory=dict)
    inflight: int = 0
    retired: bool = False
    on_closed: Callable[[], None] | None = None  # called once, when closed

    def runner(self, method: str, observe: Callable[[int, int, float], None] | None) -> Batcher:
        """The batcher for ``method`` (``max_batch_size=1`` with batching off), made on first
        use; every version has one thread of its own for predictions."""
        run = self._runners.get(method)
        if run is None:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"amber-{self.name}")
            on = bool(self.batching["enabled"])
            run = Batcher(
                self.methods[method],
                concat=self.schema.concat,
                prepare=self.schema.prepare,
                executor=self._executor,
                max_batch_size=self.spec.max_batch_size if on else 1,
                max_latency_ms=self.spec.max_latency_ms if on else 0,
                observe=observe,
                inline=bool(self.batching.get("inline")),
                inline_alone=bool(self.batching.get("inline_alone")),
                inline_rows=self.batching.get("inline_rows"),
                alone_rows=self.batching.get("alone_rows"),
                on_demote=self._demoted,
            )
            self._runners[method] = run
        return run

    def _demoted(self, seconds: float) -> None:
        from amber.serving._logs import event

        self.batching["inline"] = self.batching["inline_alone"] = False
        event(
            logging.WARNING,
            "moved_to_thread",
            model=self.name,
            version=self.version,
            call_seconds=round(seconds, 3),
        )

    def output_metadata(self, method: str) -> list[dict[str, Any]]:
        """OIP metadata of one method's output, from the signature the probe recorded: one
        tensor, or one per target (``predict_proba[0]``, ...) for an output of several."""
        from amber.serving._tensor import datatype_of

        def tensor(name: str, desc: dict[str, Any]) -> dict[str, Any]:
            try:
                datatype = datatype_of(np.dtype(desc.get("dtype", "object")))
            except TypeError:
                datatype = "BYTES"
            shape = [-1 if d is None else d for d in desc.get("shape") or [None]]
            return {"name": name, "datatype": datatype, "shape": shape}

        desc = self.outputs.get(method) or {}
        if per_output(desc):
            return [tensor(f"{method}[{k}]", d) for k, d in enumerate(desc["items"])]
        return [tensor(method, desc)]

    def release(self) -> None:
        self.inflight -= 1
        if self.retired and self.inflight == 0:
            self.close()

    def retire(self) -> None:
        """No new requests will come; close once those in flight are done."""
        self.retired = True
        if self.inflight == 0:
            self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        if self.on_closed is not None:
            on_closed, self.on_closed = self.on_closed, None
            on_closed()


def per_output(desc: Any) -> bool:
    """Whether a recorded output is one array per target (a list of arrays)."""
    items = desc.get("items") if isinstance(desc, dict) else None
    return (
        desc.get("kind") == "sequence"
        and isinstance(items, list)
        and bool(items)
        and all(isinstance(d, dict) and d.get("kind") == "ndarray" for d in items)
    )


def _per_output(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    from amber.serving._tensor import PerOutput

    return lambda x: PerOutput.of(fn(x))


def _checked_finite(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``fn`` without scikit-learn's own NaN/infinity scan when the server has just checked the
    array is finite (the scan would pass; it costs about as much as a small SVC's prediction).
    Inputs with NaN or infinity still go through scikit-learn's check."""
    import sklearn

    def call(x: Any) -> Any:
        if type(x) is np.ndarray and x.dtype.kind == "f" and bool(np.isfinite(x).all()):
            if not sklearn.get_config()["assume_finite"]:
                sklearn.set_config(assume_finite=True)  # thread-local: this server's threads
            return fn(x)
        with sklearn.config_context(assume_finite=False):
            return fn(x)

    return call


ONCE = ("default", None, Warning, None, 0)


def one_filter() -> None:
    """Leave the process one warning filter: every warning shown once per place."""
    if warnings.filters != [ONCE]:
        warnings.resetwarnings()
        warnings.simplefilter("default")


def _probe_input(path: Any, manifest: dict[str, Any]) -> Any:
    """The sample stored in the artifact's probe, or None."""
    from amber._probe import _decode
    from amber.artifact._reader import ArtifactReader

    probe = manifest.get("probe")
    if not probe:
        return None
    with ArtifactReader(path) as reader:
        return _decode(probe["input"], reader)


def _rows(sample: Any, n: int) -> Any:
    """``n`` rows made by repeating ``sample``'s rows (of each input, for several)."""
    import numpy as np

    if isinstance(sample, dict):
        return {k: _rows(v, n) for k, v in sample.items()}
    if isinstance(sample, (list, tuple)) and sample and isinstance(sample[0], np.ndarray):
        return tuple(_rows(v, n) for v in sample)  # several inputs, positional

    if hasattr(sample, "iloc"):
        import pandas as pd

        reps = -(-n // len(sample))
        return pd.concat([sample] * reps, ignore_index=True).iloc[:n]
    if isinstance(sample, (list, tuple)):  # documents, records
        return (list(sample) * (-(-n // len(sample))))[:n]
    if hasattr(sample, "tocsr"):
        import scipy.sparse as sp

        reps = -(-n // sample.shape[0])
        return sp.vstack([sample] * reps).tocsr()[:n]
    arr = np.asarray(sample)
    return np.resize(arr, (n, *arr.shape[1:]))


def _time(fn: Callable[[Any], Any], x: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


#: Rows of the batch that calibration times: as many as the largest concurrency one server
#: usually sees of one-row requests (bigger batches come from multi-row requests).
CALIBRATION_ROWS = 64


def _row_limits(per_row: float, one_row: float) -> dict[str, int]:
    """How many rows an inline call may hold and still fit its limit, by the timed rate (a row
    of a larger call costs no more than one of the calls timed)."""
    return {
        "inline_rows": max(1, int(INLINE_LIMIT_S / max(per_row, 1e-9))),
        "alone_rows": max(1, int(ALONE_LIMIT_S / max(one_row, 1e-9))),
    }


def calibrate(fn: Callable[[Any], Any], sample: Any, spec: ModelSpec) -> dict[str, Any]:
    """Decide how this model predicts, by timing it on its own probe rows.

    ``enabled`` (``auto``): batching is on when predicting ``CALIBRATION_ROWS`` rows at once
    (or ``max_batch_size``, if smaller) costs less than half of predicting them one by one.
    ``inline``: such calls (or one row with batching off) take under ``INLINE_LIMIT_S``, so
    they run in the event loop.
    """
    size = min(spec.max_batch_size, CALIBRATION_ROWS)
    if sample is None:
        return {
            "enabled": spec.batching != "off",
            "mode": spec.batching,
            "inline": False,
            "measured": False,
        }
    one = _rows(sample, 1)
    t1 = _time(fn, one, 1)  # also the warm-up
    if t1 < 0.05:
        t1 = _time(fn, one, 3)
    if spec.batching != "auto" or size <= 1:
        enabled = spec.batching == "on" and size > 1
        # a batch is timed all the same, for the rate that bounds inline calls: one row's
        # time is mostly fixed cost, and taken as the cost per row it kept batches of nine
        # rows of a quick model off the loop
        tn = _time(fn, _rows(sample, size), 1) if size > 1 else t1
        return {
            "enabled": enabled,
            "mode": spec.batching,
            "inline": t1 * (4 if enabled else 1) < INLINE_LIMIT_S,
            "inline_alone": t1 < ALONE_LIMIT_S,
            **_row_limits(min(t1, tn / size), t1),
            "measured": False,
            "one_row_ms": round(t1 * 1000, 3),
        }
    tn = _time(fn, _rows(sample, size), 1 if t1 * size > 0.5 else 3)
    gain = (t1 * size) / tn if tn > 0 else float("inf")
    enabled = gain >= 2.0
    return {
        "enabled": enabled,
        "mode": "auto",
        "inline": (tn if enabled else t1) < INLINE_LIMIT_S,
        "inline_alone": t1 < ALONE_LIMIT_S,
        **_row_limits(tn / size if enabled else t1, t1),
        "measured": True,
        "one_row_ms": round(t1 * 1000, 3),
        "batch_ms": round(tn * 1000, 3),
        "batch_rows": size,
        "gain": round(gain, 2),
    }


def load_version(
    name: str,
    source: ModelSource,
    resolved: Resolved,
    spec: ModelSpec,
    *,
    one_warning_filter: bool = False,
) -> LoadedModel:
    """Verify, load and prepare one version (blocking; raises with a clear message).

    ``one_warning_filter``: see ``ServeConfig.warning_filters``; applied once the model's
    modules are imported (imports add filters) and again after calibration.
    """
    import amber
    from amber.handlers import get_handler
    from amber.handlers._base import probe_methods

    with _LOAD_LOCK:  # imports from several threads at once can see half-imported modules
        model = source.load(
            resolved, list(spec.trusted), allow_arbitrary_code=spec.allow_arbitrary_code
        )
    info = amber.inspect(resolved.path)
    signature = info.signature
    if not signature or "inputs" not in signature:
        raise ValueError(
            f"{str(resolved.path)!r} has no input signature, so requests cannot be checked "
            f"before the model sees them; re-save it with sample= (a few input rows)"
        )
    probe_input = (info.manifest.get("probe") or {}).get("input") or {}
    # a list of arrays is several inputs to Keras, one stacked input to torch (a tuple is
    # several), and rows to anything else: only the first two are several inputs here
    several = info.framework in ("keras", "tensorflow") or probe_input.get("tuple") is True
    schema = schema_for(signature["inputs"], several=several)
    handler = get_handler(info.handler)
    offered = probe_methods(handler, model)
    methods: dict[str, Callable[[Any], Any]] = {}
    for method in signature.get("outputs", {}):
        if method == "predict":
            methods[method] = functools.partial(handler.predict, model)
        elif method in offered:
            methods[method] = offered[method]
    if not methods:
        raise ValueError(f"{str(resolved.path)!r} records no output method that can be served")
    if info.framework == "scikit-learn":
        methods = {name: _checked_finite(fn) for name, fn in methods.items()}
    unservable = []
    for method, desc in signature.get("outputs", {}).items():
        if method not in methods:
            continue
        if per_output(desc):
            methods[method] = _per_output(methods[method])
        elif isinstance(desc, dict) and desc.get("kind") in ("sequence", "mapping"):
            # a dict of named outputs, or containers inside containers (an LSTM's (out, (h, c))):
            # no tensor layout of the protocol carries them; the model's other methods serve
            from amber._info import _describe

            shape = _describe(desc, brief=True)
            unservable.append(f"{method} answers a {desc['kind']} of outputs ({shape})")
            del methods[method]
    if unservable and not methods:
        raise ValueError(
            f"{str(resolved.path)!r}: {'; '.join(unservable)}, which cannot be served over "
            f"HTTP; serve a model that returns one array or a list of arrays (wrap it in a "
            f"module that picks them)"
        )
    sample = _probe_input(resolved.path, info.manifest)
    if isinstance(schema, FrameSchema):
        schema.adopt_categories(sample)
    first = "predict" if "predict" in methods else next(iter(methods))
    if one_warning_filter:
        one_filter()
    batching = calibrate(methods[first], sample, spec)
    if one_warning_filter:
        one_filter()  # anything imported by the first predictions added its own
    return LoadedModel(
        name=name,
        version=resolved.version,
        model=model,
        schema=schema,
        methods=methods,
        framework=info.framework,
        object_type=info.object_type,
        sample=sample,
        outputs=dict(signature.get("outputs", {})),
        batching=batching,
        spec=spec,
        classes=class_labels(model),
    )
