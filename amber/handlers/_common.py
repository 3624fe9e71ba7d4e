"""Helpers shared by the framework handlers; standard library and numpy only."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import math
import os
import sys
import types
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from amber.errors import FormatError, UnsafeLoadWarning, UntrustedTypeError
from amber.security._policy import LoadPolicy, parse_global_name, trust_name

__all__ = [
    "SizeBounds",
    "caller_level",
    "check_trusted",
    "decode_params",
    "encode_params",
    "import_trusted",
    "installed",
    "type_name",
]


def type_name(obj_or_cls: Any) -> str:
    """``pkg.mod.Class``, or ``pkg.mod:Outer.Inner`` for a nested class (the form trusted= and
    the importer split correctly)."""
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return trust_name(cls.__module__, cls.__qualname__)


@functools.cache
def installed(*distributions: str) -> tuple[str, ...]:
    """Those of ``distributions`` that are installed (``xgboost`` or ``xgboost-cpu``, ...)."""
    found = []
    for dist in distributions:
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(dist)
    return tuple(found)


# -- constructor parameters as JSON -------------------------------------------------------------
# JSON has no NaN or infinity; they are written as {"$float": "nan"}. Tuples become lists.
def _encode(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else {"$float": repr(f)}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _encode_array(value, where)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        if _RESERVED & set(value):
            raise TypeError(f"{where}: the keys {', '.join(sorted(_RESERVED))} are reserved")
        return {k: _encode(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, dict) and all(_scalar_key(k) for k in value):
        # keys JSON cannot hold as keys (class_weight={0: 1.0, 1: 2.0}): a list of pairs
        return {
            "$items": [[_encode(k, where), _encode(v, f"{where}[{k!r}]")] for k, v in value.items()]
        }
    if isinstance(value, dict):
        bad = next(k for k in value if not _scalar_key(k))
        raise TypeError(
            f"{where} is a dict with a key of type {type_name(bad)} ({bad!r:.40}); keys must be "
            f"strings, finite numbers or booleans"
        )
    raise TypeError(
        f"{where} is a {type_name(value)} ({value!r:.80}), which cannot be stored as JSON"
    )


_RESERVED = frozenset({"$float", "$items", "$array"})
# A parameter array is data a constructor takes (XGBoost's quantile_alpha=np.array([0.1, 0.9])),
# not a weight: small, and of plain numbers.
_MAX_PARAM_ELEMENTS = 1 << 16


def _encode_array(value: np.ndarray, where: str) -> dict[str, Any]:
    if value.dtype.kind not in "biuf" or value.size > _MAX_PARAM_ELEMENTS:
        raise TypeError(
            f"{where} is a numpy array of {value.size} {value.dtype} values; only arrays of up "
            f"to {_MAX_PARAM_ELEMENTS} booleans, integers or floats are stored as parameters"
        )
    flat = [_encode(v, where) for v in value.ravel().tolist()]
    return {"$array": {"dtype": value.dtype.str, "shape": list(value.shape), "data": flat}}


def _decode_array(spec: Any) -> np.ndarray:
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data"}:
        raise FormatError(f"malformed parameter array {spec!r:.80}")
    dtype, shape, data = spec["dtype"], spec["shape"], spec["data"]
    if (
        not isinstance(dtype, str)
        or not isinstance(shape, list)
        or not all(type(n) is int and 0 <= n <= _MAX_PARAM_ELEMENTS for n in shape)
        or not isinstance(data, list)
        or len(data) > _MAX_PARAM_ELEMENTS
        or math.prod(shape) != len(data)
    ):
        raise FormatError(f"malformed parameter array {spec!r:.80}")
    try:
        kind = np.dtype(dtype) if len(dtype) <= 8 else None
    except (TypeError, ValueError, SyntaxError):
        kind = None
    if kind is None:
        raise FormatError(f"malformed parameter array dtype {dtype!r:.40}")
    values = [_decode(v) for v in data]
    if kind.kind not in "biuf" or not all(type(v) in (bool, int, float) for v in values):
        raise FormatError(f"malformed parameter array {spec!r:.80}")
    try:
        return np.array(values, dtype=kind).reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise FormatError(f"malformed parameter array: {exc}") from None


def _scalar_key(key: Any) -> bool:
    if isinstance(key, (float, np.floating)):
        return math.isfinite(key)  # NaN is not even equal to itself: no key to look up
    return isinstance(key, (str, bool, int, np.integer, np.bool_))


def encode_params(params: dict[str, Any], owner: str) -> dict[str, Any]:
    """Constructor parameters as JSON values; raises TypeError naming the first that is not."""
    try:
        return {str(k): _encode(v, k) for k, v in params.items()}
    except TypeError as exc:
        raise TypeError(
            f"cannot save {owner}: parameter {exc}. Amber stores parameters as data, never "
            f"pickled code; set that parameter to a plain value (a string, number, list or "
            f"dict) before saving"
        ) from None


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"$float"}:
            text = value["$float"]
            if text not in ("nan", "inf", "-inf"):
                raise FormatError(f"malformed parameter value {value!r}")
            return float(text)
        if set(value) == {"$array"}:
            return _decode_array(value["$array"])
        if set(value) == {"$items"}:
            pairs = value["$items"]
            if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and not isinstance(p[0], (list, dict))
                for p in pairs
            ):
                raise FormatError(f"malformed parameter value {value!r:.80}")
            return {_decode(k): _decode(v) for k, v in pairs}
        return {k: _decode(v) for k, v in value.items()}
    return value


def decode_params(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise FormatError(f"malformed manifest: parameters are not an object: {params!r:.80}")
    return {str(k): _decode(v) for k, v in params.items()}


# -- trust ----------------------------------------------------------------------------------------
def _split(name: str) -> tuple[str, str]:
    try:
        return parse_global_name(name)
    except ValueError:
        raise FormatError(f"malformed class name {name!r:.80}") from None


def check_trusted(
    names: Iterable[str], allowed: Iterable[str], policy: LoadPolicy, *, source: str
) -> None:
    """Raise UntrustedTypeError unless every name is built in, trusted, or code is allowed."""
    if policy.allow_arbitrary_code:
        return
    ok = set(allowed)
    refused = [n for n in names if n not in ok and _split(n) not in policy.trusted]
    if refused:
        raise UntrustedTypeError(refused, source=source)


def import_trusted(name: str, allowed: Iterable[str], policy: LoadPolicy, *, source: str) -> Any:
    """The object named ``pkg.module.Name``, imported only once it is known to be trusted."""
    check_trusted([name], allowed, policy, source=source)
    module, qualname = _split(name)
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        if module == "__main__":
            raise FormatError(
                f"{source} needs {name}, a class the saving script or notebook defined itself "
                f"({exc}); define it in this script before loading, or better, move it into a "
                f"module both can import and save the model again"
            ) from exc
        raise FormatError(
            f"{source} needs {name}, which cannot be imported here ({exc}); install the "
            f"package that defines it"
        ) from exc
    return obj


# -- size bounds ----------------------------------------------------------------------------------
class SizeBounds:
    """Where a handler's size checks report a size beyond one of Amber's bounds.

    The bounds keep a forged file from taking gigabytes or hours at load or predict (a torch
    program asking for a 50,000 x 50,000 tensor, a Keras ``Dense(units=2**26)``); an honest
    model can exceed one too (a torch export that creates a 2**27-element tensor). A load
    refuses such a file, unless the caller passed ``allow_arbitrary_code=True`` (a file they
    made themselves): then it loads with a warning. A save collects what it finds, so that it
    can warn that loading the file will need that.
    """

    def __init__(self, source: str, *, lifted: bool = False, collect: bool = False) -> None:
        self.source = source
        self._lifted = lifted
        self._collect = collect
        self.found: list[str] = []

    @classmethod
    def for_load(cls, source: str, policy: LoadPolicy) -> SizeBounds:
        return cls(source, lifted=policy.allow_arbitrary_code)

    @classmethod
    def for_save(cls) -> SizeBounds:
        return cls("the model", collect=True)

    def exceeded(self, what: str) -> None:
        """Report one size beyond its bound: raises, unless lifted or collecting."""
        if what not in self.found:
            self.found.append(what)
        if self._lifted or self._collect:
            return
        raise FormatError(
            f"{self.source}: {what}. Amber bounds such sizes in files it cannot trust: the "
            f"file is damaged or crafted, or holds an honest model this large. Only if you "
            f"made it yourself: amber.load(..., allow_arbitrary_code=True), or "
            f"--allow-arbitrary-code on the command line, which lifts the bounds"
        )

    def warn_if_lifted(self) -> None:
        """At the end of a load's checks: say which bounds ``allow_arbitrary_code`` lifted."""
        if self._lifted and self.found:
            warnings.warn(
                f"{self.source}: {'; '.join(self.found[:3])}; beyond Amber's size bounds, "
                f"loaded because allow_arbitrary_code=True (for files you made yourself)",
                UnsafeLoadWarning,
                stacklevel=caller_level(),
            )


# Bounds of boosted trees (XGBoost, LightGBM), applied through SizeBounds.
# The most splits on a path from a tree's root to a leaf. XGBoost and LightGBM recurse on the
# depth when they explain a prediction (SHAP contributions, which also take depth**2 memory)
# or dump a tree: a forged chain 100,000 splits deep overflowed their stacks, and 5,000 deep
# took XGBoost's get_dump() 79 s. Honest boosted trees are tens of splits deep.
MAX_DEPTH = 2048
# The categories of all categorical splits. XGBoost gives each split a bitset as wide as its
# largest category (2 MiB for 2**24 - 1): a 9 kB file of such splits took 4 GB at load, so the
# bitsets' bits are bounded (2**28: 32 MB). LightGBM's dump lists, one by one, every category a
# split sends left (about 46 bytes each: a 5 kB file of full bitsets took 1.5 GB), so the
# categories its sets hold are (2**22); it puts at most max_cat_threshold (32) in a split.
MAX_CATEGORY_BITS = {"XGBoost": 2**28, "LightGBM": 2**22}


def check_depth(framework: str, depth: int, bounds: SizeBounds) -> None:
    """A tree deeper than ``MAX_DEPTH`` splits is beyond the bounds (see ``MAX_DEPTH``)."""
    if depth > MAX_DEPTH:
        bounds.exceeded(
            f"the {framework} model has a tree {depth:,} splits deep (over {MAX_DEPTH:,})"
        )


def check_category_bits(framework: str, bits: int, bounds: SizeBounds) -> None:
    """Categorical split sets past ``MAX_CATEGORY_BITS`` in all are beyond the bounds."""
    limit = MAX_CATEGORY_BITS[framework]
    if bits > limit:
        bounds.exceeded(
            f"the {framework} model's categorical splits hold {bits:,} categories in all (over "
            f"{limit:,})"
        )


def caller_level() -> int:
    """The ``stacklevel`` that points a warning issued in this package at the first frame
    outside it: the caller's line, whatever path the load took to get here."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame: types.FrameType | None = sys._getframe(2)  # the function that called warnings.warn
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level
