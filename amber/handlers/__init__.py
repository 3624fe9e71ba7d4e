"""Handlers, found lazily by name: ``import amber`` imports no framework.

Like fsspec's ``known_implementations``, each name maps to the module that implements it and to
an install hint shown when that module (or its framework) cannot be imported.
"""

from __future__ import annotations

import importlib
import weakref
from typing import Any

from amber.errors import FormatError, HandlerNotAvailable
from amber.handlers._base import Handler, SavedPayload, formats

__all__ = [
    "Handler",
    "SavedPayload",
    "get_handler",
    "handler_for",
    "known_handlers",
    "predict",
    "register_handler",
]

# name -> ("module:OBJECT", install hint, top-level modules whose objects it claims).
# Order matters: the first handler that claims an object (and saves the format asked for) wins,
# so Keras models go to "keras" (native .keras) unless format="savedmodel" is asked for.
_KNOWN: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "sklearn": ("amber.handlers.sklearn:HANDLER", 'pip install "amber[sklearn]"', ()),
    "keras": ("amber.handlers.keras:HANDLER", 'pip install "amber[tensorflow]"', ("keras",)),
    "tensorflow": (
        "amber.handlers.tensorflow:HANDLER",
        'pip install "amber[tensorflow]"',
        ("tensorflow", "keras"),
    ),
    "torch": ("amber.handlers.torch:HANDLER", 'pip install "amber[torch]"', ("torch",)),
    "xgboost": ("amber.handlers.xgboost:HANDLER", 'pip install "amber[xgboost]"', ("xgboost",)),
    "lightgbm": (
        "amber.handlers.lightgbm:HANDLER",
        'pip install "amber[lightgbm]"',
        ("lightgbm",),
    ),
}
_FALLBACK = "sklearn"  # scikit-learn and any other picklable Python object
_LOADED: dict[str, Handler] = {}


def register_handler(
    name: str, target: str, hint: str, roots: tuple[str, ...] = (), *, clobber: bool = False
) -> None:
    """Register ``"pkg.module:OBJECT"`` as the handler called ``name``.

    ``roots`` are the top-level modules whose objects it claims; the handler module is imported
    only when an object from one of them is saved (or an artifact names it).
    """
    if name in _KNOWN and not clobber:
        raise ValueError(
            f"a handler named {name!r} is already registered ({_KNOWN[name][0]}); "
            f"pass clobber=True to replace it"
        )
    _KNOWN[name] = (target, hint, roots)
    _LOADED.pop(name, None)


def get_handler(name: str) -> Handler:
    """The handler called ``name``, imported on first use."""
    if name in _LOADED:
        return _LOADED[name]
    if name not in _KNOWN:
        raise FormatError(
            f"the artifact needs the handler {name!r}, which this Amber does not know "
            f"(known: {', '.join(sorted(_KNOWN))}); upgrade Amber"
        )
    target, hint, _ = _KNOWN[name]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerNotAvailable(
            f"the {name!r} handler cannot be imported ({exc}); install it with: {hint}"
        ) from exc
    handler: Handler = getattr(module, attr)
    _LOADED[name] = handler
    return handler


def known_handlers() -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """Every registered handler: name -> (``"module:OBJECT"``, install hint, module roots)."""
    return dict(_KNOWN)


_ROOTS: weakref.WeakKeyDictionary[type, frozenset[str]] = weakref.WeakKeyDictionary()


def _roots(cls: type) -> frozenset[str]:
    """The top-level packages of ``cls`` and its bases (remembered while the class lives)."""
    roots = _ROOTS.get(cls)
    if roots is None:
        roots = _ROOTS[cls] = frozenset(c.__module__.split(".")[0] for c in cls.__mro__)
    return roots


def handler_for(obj: Any, name: str | None = None, *, format: str | None = None) -> Handler:
    """The handler for ``obj``: the one named, else the first whose module roots claim its type.

    With ``format``, the first claiming handler that saves that format (``"savedmodel"`` moves a
    Keras model from the ``keras`` handler to the ``tensorflow`` one).
    """
    if name is not None:
        if name not in _KNOWN:
            raise ValueError(
                f"handler={name!r} is not a handler this Amber knows (known: "
                f"{', '.join(sorted(_KNOWN))}); leave handler= out to choose by the model's type"
            )
        cannot = TypeError(
            f"the {name!r} handler cannot save a {type(obj).__module__}."
            f"{type(obj).__qualname__}; leave handler= out to choose by the model's type"
        )
        try:
            handler = get_handler(name)
        except HandlerNotAvailable:
            # a model of another framework: installing this one would not help
            if _roots(type(obj)).isdisjoint(_KNOWN[name][2]):
                raise cannot from None
            raise
        if not handler.matches(obj):
            raise cannot
        return handler
    roots = _roots(type(obj))
    if isinstance(obj, dict) and obj and all(type(k) is str for k in obj):
        # a dict of one framework's tensors (a PyTorch state_dict) is that framework's to save:
        # pickled, its tensors would need torch's own unpickler
        values = frozenset().union(*(_roots(type(v)) for v in obj.values())) - {"builtins"}
        if len(values) == 1 and values <= frozenset().union(*(c for _, _, c in _KNOWN.values())):
            roots = values
    first: Handler | None = None
    for candidate, (_, _, claimed) in _KNOWN.items():
        if roots.intersection(claimed):
            handler = get_handler(candidate)
            if handler.matches(obj):
                if format is None or format in formats(handler):
                    return handler
                first = first or handler
    return first or get_handler(_FALLBACK)


def predict(model: Any, inputs: Any) -> Any:
    """Numpy in, numpy out, for a model of any handler: ``handler.predict(model, inputs)``.

    Examples
    --------
    >>> y = amber.predict(amber.load("net.amber"), x)  # doctest: +SKIP
    """
    return handler_for(model).predict(model, inputs)
