"""Exact comparison of a model and its reloaded copy: outputs, parameters, fitted state.

Shared by the scikit-learn round trips (``test_roundtrip_sklearn.py``) and the sweep over
every estimator (``test_all_estimators.py``).
"""

from __future__ import annotations

import functools
import math
import types
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.testing import assert_array_equal

__all__ = ["OUTPUT_METHODS", "assert_same_output", "assert_same_params", "assert_same_state"]

# what a fitted model computes on new rows, compared after every reload
OUTPUT_METHODS = (
    "predict",
    "predict_proba",
    "predict_log_proba",
    "decision_function",
    "transform",
    "score_samples",
)


def assert_same_output(expected: Any, got: Any, what: str) -> None:
    """Exact equality of one output: type, dtype, shape, structure (sparse), values."""
    assert type(got) is type(expected), f"{what}: type {type(got)}, expected {type(expected)}"
    if isinstance(expected, tuple | list):
        assert len(got) == len(expected), f"{what}: length"
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            assert_same_output(e, g, f"{what}[{i}]")
    elif isinstance(expected, pd.DataFrame | pd.Series):
        if isinstance(expected, pd.DataFrame):
            pd.testing.assert_frame_equal(got, expected, check_exact=True)
        else:
            pd.testing.assert_series_equal(got, expected, check_exact=True)
    elif sp.issparse(expected):
        assert got.format == expected.format, f"{what}: format {got.format}"
        assert got.shape == expected.shape, f"{what}: shape {got.shape}"
        assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype}"
        e, g = expected.tocsr(), got.tocsr()
        for part in ("indptr", "indices", "data"):
            assert_array_equal(getattr(g, part), getattr(e, part), err_msg=f"{what}.{part}")
    else:
        e, g = np.asarray(expected), np.asarray(got)
        assert g.dtype == e.dtype, f"{what}: dtype {g.dtype}, expected {e.dtype}"
        assert g.shape == e.shape, f"{what}: shape {g.shape}, expected {e.shape}"
        assert_array_equal(g, e, err_msg=what, strict=True)


def assert_same_params(expected: Any, got: Any, where: str = "") -> None:
    """``get_params()`` equal all the way down: nested estimators compared by type and params."""
    assert type(got) is type(expected), f"{where or 'object'}: {type(got)} != {type(expected)}"
    pe, pg = expected.get_params(deep=False), got.get_params(deep=False)
    assert pg.keys() == pe.keys(), f"{where}: parameter names differ"
    for name, value in pe.items():
        _assert_same_value(value, pg[name], f"{where}{name}")


def _assert_same_value(expected: Any, got: Any, where: str) -> None:
    if hasattr(expected, "get_params") and not isinstance(expected, type):
        assert_same_params(expected, got, where + "__")
    elif isinstance(expected, list | tuple):
        assert type(got) is type(expected) and len(got) == len(expected), where
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            _assert_same_value(e, g, f"{where}[{i}]")
    elif isinstance(expected, dict):
        assert got.keys() == expected.keys(), where
        for key in expected:
            _assert_same_value(expected[key], got[key], f"{where}[{key!r}]")
    elif isinstance(expected, np.ndarray):
        assert_array_equal(got, expected, err_msg=where, strict=True)
    elif isinstance(expected, float) and math.isnan(expected):
        assert isinstance(got, float) and math.isnan(got), where
    elif expected is pd.NA:
        assert got is pd.NA, f"{where}: {got!r} is not pd.NA"
    elif type(expected).__eq__ is object.__eq__ and hasattr(expected, "__dict__"):
        # a parameter object without equality of its own (make_column_selector, a scorer):
        # the same type and the same attributes
        assert type(got) is type(expected), f"{where}: {type(got)} != {type(expected)}"
        _assert_same_value(vars(expected), vars(got), f"{where}.__dict__")
    else:
        assert type(got) is type(expected) and got == expected, f"{where}: {got!r} != {expected!r}"


# pickled by name: the copy must hold the very same object
_BY_REFERENCE = (type, types.BuiltinFunctionType, types.FunctionType, np.ufunc)


def assert_same_state(expected: Any, got: Any, where: str = "obj") -> None:
    """The whole fitted state equal, bit for bit, walking what pickle would walk.

    Arrays are compared by dtype, shape and bytes (so NaN payloads and -0.0 count); scalars by
    type and value; any other object through its ``__reduce_ex__(4)``: the same reconstructor,
    then equal arguments and state. Objects shared (or cyclic, like Birch's leaf list) in the
    original must be shared the same way in the copy. Unlike comparing two pickles byte for
    byte, whether equal strings happen to be one object or two does not matter.
    """
    _same_state(expected, got, where, {})


def _same_state(expected: Any, got: Any, where: str, seen: dict[int, Any]) -> None:
    assert type(got) is type(expected), f"{where}: type {type(got)}, expected {type(expected)}"
    if expected is None or isinstance(expected, bool | int | str | bytes | complex | np.dtype):
        assert got == expected, f"{where}: {got!r} != {expected!r}"
    elif isinstance(expected, float):
        assert expected.hex() == got.hex(), f"{where}: {got!r} != {expected!r}"
    elif isinstance(expected, np.generic):
        assert np.asarray(got).tobytes() == np.asarray(expected).tobytes(), where
    elif isinstance(expected, np.ndarray):
        assert (got.dtype, got.shape) == (expected.dtype, expected.shape), where
        if isinstance(expected, np.ma.MaskedArray):
            assert_array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(expected), where)
            expected, got = expected.data, got.data
        if expected.dtype.names:  # structured (tree nodes): field by field, padding ignored
            for name in expected.dtype.names:
                _same_state(expected[name], got[name], f"{where}[{name!r}]", seen)
        elif expected.dtype.hasobject:
            for i, (e, g) in enumerate(zip(expected.ravel(), got.ravel(), strict=True)):
                _same_state(e, g, f"{where}.flat[{i}]", seen)
        else:
            e_bytes = np.ascontiguousarray(expected).tobytes()
            assert np.ascontiguousarray(got).tobytes() == e_bytes, f"{where}: values differ"
    elif isinstance(expected, _BY_REFERENCE):
        assert got is expected, f"{where}: {got!r} is not {expected!r}"
    elif isinstance(expected, list | tuple):
        assert len(got) == len(expected), f"{where}: length {len(got)} != {len(expected)}"
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            _same_state(e, g, f"{where}[{i}]", seen)
    elif isinstance(expected, dict):
        assert list(got) == list(expected), f"{where}: keys {list(got)} != {list(expected)}"
        for key in expected:
            _same_state(expected[key], got[key], f"{where}[{key!r}]", seen)
    elif isinstance(expected, set | frozenset):
        assert got == expected, where
    elif isinstance(expected, pd.DataFrame | pd.Series | pd.Index):
        assert_same_output(expected, got, where)
    elif isinstance(expected, functools.partial):  # its reduce state exposes a lazy __dict__
        parts = (expected.func, expected.args, expected.keywords)
        _same_state(parts, (got.func, got.args, got.keywords), f"{where}.<partial>", seen)
    elif id(expected) in seen:
        assert got is seen[id(expected)], f"{where}: shared differently than in the original"
    else:
        seen[id(expected)] = got
        e_reduced, g_reduced = _saved_reduction(expected), got.__reduce_ex__(4)
        if isinstance(e_reduced, str):  # a global, pickled by name
            assert got is expected, f"{where}: {got!r} is not {expected!r}"
            return
        assert g_reduced[0] is e_reduced[0], f"{where}: rebuilt by {g_reduced[0]!r}"
        e_parts, g_parts = _materialise(e_reduced[1:]), _materialise(g_reduced[1:])
        _same_state(e_parts, g_parts, f"{where}.<{type(expected).__name__}>", seen)


def _saved_reduction(obj: Any) -> Any:
    """``obj.__reduce_ex__(4)`` less what amber.save leaves out: the bound methods of itself an
    estimator keeps under their own names (a HistGradientBoosting fitted with early stopping on
    a scorer keeps ``_raw_predict``); loaded, the attribute is the class's method again."""
    reduced = obj.__reduce_ex__(4)
    if isinstance(reduced, tuple) and len(reduced) > 2 and isinstance(reduced[2], dict):
        own = [
            k
            for k, v in reduced[2].items()
            if isinstance(v, types.MethodType)
            and v.__self__ is obj
            and getattr(type(obj), k, None) is v.__func__
        ]
        if own:
            state = {k: v for k, v in reduced[2].items() if k not in own}
            return (reduced[0], reduced[1], state, *reduced[3:])
    return reduced


def _materialise(parts: tuple[Any, ...]) -> tuple[Any, ...]:
    """A reduce tuple with its list- and dict-item iterators turned into lists."""
    return tuple(list(p) if hasattr(p, "__next__") else p for p in parts)
