"""The handler protocol: one module per framework, each saving into and loading from an artifact.

Required: ``name``, ``module_roots``, ``matches``, ``save``, ``load``, ``predict``. Optional, with
defaults applied by the helpers below so older handlers keep working:

- ``formats``: the payload formats ``save(..., format=)`` accepts, the default first.
- ``save`` may take keyword arguments ``format=`` and ``sample=`` (the probe sample, e.g. to trace
  a PyTorch model with ``torch.export``): :func:`call_save` passes them only to handlers whose
  ``save`` declares them.
- ``probe_methods(model)``: the named, numpy-in numpy-out functions the probe records and
  re-runs. Default: the model's own ``predict``, ``predict_proba``, ``decision_function``,
  ``transform``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from amber.artifact._reader import ArtifactReader
from amber.artifact._writer import ArtifactWriter
from amber.security._policy import LoadPolicy

__all__ = [
    "DEFAULT_PROBE_METHODS",
    "FALLBACK_PROBE_METHODS",
    "Handler",
    "SavedPayload",
    "call_save",
    "probe_methods",
]

DEFAULT_PROBE_METHODS = ("predict", "predict_proba", "decision_function", "transform")
# probed only when none of the default four exist, the first of them the model has: a density
# or novelty model's scores (KernelDensity), an unsupervised neighbours index's neighbours
# (NearestNeighbors: the distances and the indices of each sample row's nearest rows), a
# covariance estimate's squared Mahalanobis distances (EmpiricalCovariance, LedoitWolf, ...)
FALLBACK_PROBE_METHODS = ("score_samples", "kneighbors", "mahalanobis")


@dataclass(frozen=True)
class SavedPayload:
    """What a handler reports after writing a model's entries."""

    payload: dict[str, Any]  # goes to the manifest as "payload": how to read the entries back
    framework: str  # e.g. "scikit-learn"
    object_type: str  # dotted type of the saved object
    globals: tuple[str, ...] = ()  # Python globals the payload references ("module.name")
    modules: tuple[str, ...] = ()  # modules whose distributions the environment must record
    untrusted: tuple[str, ...] = field(default=())  # globals outside the allowlist
    # distributions to record besides those of ``modules`` (e.g. "tensorflow-cpu", whose
    # module is "tensorflow")
    distributions: tuple[str, ...] = ()
    # how the probe compares after reload: {"exact": bool, "rtol": float, "atol": float};
    # "exact": False when the reloaded model runs other code than the saved one (a SavedModel
    # graph instead of the Keras layers), so even the same environment needs a tolerance
    parity: dict[str, Any] | None = None
    # sizes beyond the bounds a load applies to files it cannot trust (SizeBounds): the file
    # will load only with allow_arbitrary_code=True, which the save warns about
    over_bounds: tuple[str, ...] = ()
    # fitted state a safe load refuses (amber.security._fitted.refusals): the same warning
    refused_state: tuple[str, ...] = ()


class Handler(Protocol):
    """One framework's way of persisting models.

    ``name`` is recorded in the manifest; ``module_roots`` are the top-level modules whose
    objects the handler claims (checked on the object's type, so detection imports nothing).
    """

    name: str
    module_roots: tuple[str, ...]

    def matches(self, obj: Any) -> bool: ...

    def save(self, obj: Any, writer: ArtifactWriter) -> SavedPayload: ...

    def load(
        self, reader: ArtifactReader, payload: dict[str, Any], *, policy: LoadPolicy
    ) -> Any: ...

    def predict(self, model: Any, inputs: Any) -> Any: ...


def formats(handler: Any) -> tuple[str, ...]:
    """The formats ``handler`` can save (empty: it takes no ``format=``)."""
    return tuple(getattr(handler, "formats", ()))


_TAKES_SAMPLE: dict[type, bool] = {}


def _takes_sample(handler_type: type) -> bool:
    """Whether a handler's ``save`` takes ``sample=`` (asked once per handler class)."""
    known = _TAKES_SAMPLE.get(handler_type)
    if known is None:
        params = inspect.signature(handler_type.save).parameters  # type: ignore[attr-defined]
        known = _TAKES_SAMPLE[handler_type] = "sample" in params
    return known


def call_save(
    handler: Any, obj: Any, writer: ArtifactWriter, *, format: str | None, sample: Any
) -> SavedPayload:
    """``handler.save(obj, writer)``, passing ``format=`` and ``sample=`` where it takes them."""
    kwargs: dict[str, Any] = {}
    if format is not None:
        if format not in formats(handler):
            known = ", ".join(repr(f) for f in formats(handler)) or "none"
            raise ValueError(
                f"format={format!r} is not a format the {handler.name!r} handler saves "
                f"(it saves: {known}); leave format= out for the default"
            )
        kwargs["format"] = format
    if _takes_sample(type(handler)):
        kwargs["sample"] = sample
    saved: SavedPayload = handler.save(obj, writer, **kwargs)
    return saved


def probe_methods(handler: Any, model: Any) -> dict[str, Callable[[Any], Any]]:
    """The functions the probe runs on ``model``: the handler's choice, else the default four."""
    custom = getattr(handler, "probe_methods", None)
    if custom is not None:
        return dict(custom(model))
    found = {}
    for method in DEFAULT_PROBE_METHODS:
        fn = getattr(model, method, None)
        if callable(fn):
            found[method] = fn
    for method in FALLBACK_PROBE_METHODS if not found else ():
        fn = getattr(model, method, None)
        if callable(fn):
            found[method] = fn
            break
    return found
