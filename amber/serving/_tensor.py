"""JSON values to numpy arrays, checked: numbers, booleans, strings, regular shapes.

Each converter either returns an array of the wanted dtype or raises a ``RequestError`` that
names the first offending element (``inputs[0].data[3][1]``), what was expected and what came.
The happy path is one ``numpy.asarray`` call; the walk that finds the culprit runs only on error.
"""

from __future__ import annotations

import csv
import io
from contextvars import ContextVar
from typing import Any

import numpy as np

from amber.serving._errors import RequestError, describe_value

__all__ = [
    "DATATYPES",
    "MLFLOW_KEYS",
    "accepted_datatypes",
    "bad",
    "booleans_possible",
    "csv_rows",
    "datatype_of",
    "mlflow_form",
    "narrow",
    "output_array",
    "tensor_fields",
    "to_bools",
    "to_numbers",
    "to_strings",
]

#: Open Inference Protocol tensor datatypes and their numpy dtypes (BYTES: strings).
DATATYPES: dict[str, np.dtype[Any] | None] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": None,
}
_INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
_FLOATS = ("FP16", "FP32", "FP64")
_MAX_DEPTH = 32


_BY_DTYPE = {dt: name for name, dt in DATATYPES.items() if dt is not None}

#: Whether the JSON being converted may hold ``true`` or ``false``. numpy turns booleans mixed
#: with numbers into 1 and 0 without a word, so number arrays are searched for them, unless the
#: server found neither word anywhere in the request body (one search of its bytes, where a
#: walk over every value would double the cost of converting a large request).
booleans_possible: ContextVar[bool] = ContextVar("amber_booleans_possible", default=True)


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The OIP datatype for a numpy dtype (strings and objects are ``BYTES``)."""
    return _BY_DTYPE.get(dtype, "BYTES")


def accepted_datatypes(target: np.dtype[Any] | None) -> tuple[str, ...]:
    """OIP datatypes a client may send for an input of dtype ``target`` (None: strings)."""
    if target is None or target.kind in "OUS":
        return ("BYTES",)
    if target.kind == "b":
        return ("BOOL",)
    if target.kind in "iu":
        return _INTS
    return (*_FLOATS, *_INTS)


def expected_kind(target: np.dtype[Any]) -> str:
    if target.kind == "b":
        return f"booleans ({target})"
    if target.kind in "iu":
        return f"integers ({target})"
    return f"numbers ({target})"


def _fail(field: str, expected: str, got: str, what: str | None = None) -> RequestError:
    return RequestError(
        400,
        what or f"{field}: expected {expected}, got {got}",
        field=field,
        expected=expected,
        got=got,
    )


def _irregular(values: list[Any], field: str, depth: int = 0) -> RequestError | None:
    """The first place where nested arrays disagree in length or depth, if any."""
    if depth > _MAX_DEPTH:
        return _fail(field, f"at most {_MAX_DEPTH} levels of nesting", "deeper nesting")
    if not values:
        return None
    first = values[0]
    if isinstance(first, list):
        for i, item in enumerate(values):
            where = f"{field}[{i}]"
            if not isinstance(item, list):
                return _fail(
                    where,
                    f"an array of {len(first)} (like {field}[0])",
                    describe_value(item),
                    f"ragged data: {where} is {describe_value(item)}, but {field}[0] is an "
                    f"array of {len(first)}",
                )
            if len(item) != len(first):
                return _fail(
                    where,
                    f"{len(first)} values (like {field}[0])",
                    f"{len(item)} values",
                    f"ragged data: {where} has {len(item)} values, {field}[0] has {len(first)}",
                )
        for i, item in enumerate(values):
            found = _irregular(item, f"{field}[{i}]", depth + 1)
            if found is not None:
                return found
        return None
    for i, item in enumerate(values):
        if isinstance(item, list):
            where = f"{field}[{i}]"
            return _fail(
                where,
                f"a single value (like {field}[0])",
                describe_value(item),
                f"ragged data: {where} is {describe_value(item)}, but {field}[0] is a single value",
            )
    return None


def _offender(values: Any, field: str, ok: Any, expected: str, depth: int = 0) -> RequestError:
    """The first leaf for which ``ok(leaf)`` is false, as an error."""
    stack: list[tuple[str, Any, int]] = [(field, values, depth)]
    while stack:
        where, value, level = stack.pop()
        if isinstance(value, list):
            if level > _MAX_DEPTH:
                return _fail(where, f"at most {_MAX_DEPTH} levels of nesting", "deeper nesting")
            stack.extend(
                (f"{where}[{i}]", v, level + 1) for i, v in reversed(list(enumerate(value)))
            )
        elif not ok(value):
            return _fail(where, expected, describe_value(value))
    return _fail(field, expected, describe_value(values))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_array(values: Any, field: str, expected: str) -> np.ndarray:
    if not isinstance(values, list):
        raise _fail(field, f"an array of {expected}", describe_value(values))
    try:
        return np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        problem = _irregular(values, field)
        raise (
            problem or _fail(field, f"a regular array of {expected}", "an irregular array")
        ) from None


def to_numbers(
    values: Any, target: np.dtype[Any], field: str, *, allow_null: bool = False
) -> np.ndarray:
    """A numeric array of dtype ``target`` from (nested) JSON lists.

    Strings, booleans, objects and nulls are refused (``allow_null`` turns nulls into NaN for
    float targets); integer targets refuse fractions and values out of range.
    """
    if isinstance(values, list):
        try:
            arr = np.asarray(values)
        except (ValueError, TypeError, OverflowError):
            arr = None
        if (
            arr is not None
            and arr.dtype.kind in "iuf"
            and (target.kind == "f" or arr.dtype.kind != "f")
        ):  # the common case, checked with no error text built
            if target.kind in "iu":
                info = np.iinfo(target)
                if arr.size and (arr.min() < info.min or arr.max() > info.max):
                    raise _offender(
                        values,
                        field,
                        lambda v: info.min <= v <= info.max,
                        f"{expected_kind(target)} from {info.min} to {info.max}",
                    )
            _refuse_booleans(values, field, target)
            return arr.astype(target, copy=False)
    expected = expected_kind(target)
    arr = _as_array(values, field, expected)
    kind = arr.dtype.kind
    if kind == "O" and allow_null and target.kind == "f":
        if not all(v is None or _is_number(v) for v in _leaves(values)):
            raise _offender(values, field, lambda v: v is None or _is_number(v), expected)
        arr = np.array(values, dtype=np.float64)
        kind = "f"
    if kind not in "iuf":
        raise _offender(values, field, _is_number, expected)
    if target.kind in "iu":
        if kind == "f" and arr.size and not bool(np.all(np.trunc(arr) == arr)):
            raise _offender(
                values, field, lambda v: not isinstance(v, float) or v.is_integer(), expected
            )
        info = np.iinfo(target)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise _offender(
                values,
                field,
                lambda v: info.min <= v <= info.max,
                f"{expected} from {info.min} to {info.max}",
            )
    _refuse_booleans(values, field, target)
    return arr.astype(target, copy=False)


def narrow(arr: np.ndarray, target: np.dtype[Any], values: Any, field: str) -> np.ndarray:
    """``arr`` (checked as the type its tensor declared) in the model's own ``target`` type:
    integers that do not fit it and fractions for an integer input are refused, as are finite
    numbers a smaller float cannot hold; never wrapped or turned into infinity. ``values``
    (the request's JSON) names the offending element."""
    if target.kind in "iu" and arr.size:
        if arr.dtype.kind == "f" and not bool(np.all(np.trunc(arr) == arr)):
            raise _offender(
                values, field, lambda v: not isinstance(v, float) or v.is_integer(),
                expected_kind(target),
            )  # fmt: skip
        info = np.iinfo(target)
        if arr.min() < info.min or arr.max() > info.max:
            raise _offender(
                values, field, lambda v: info.min <= v <= info.max,
                f"{expected_kind(target)} from {info.min} to {info.max}",
            )  # fmt: skip
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(target)
        lost = ~np.isfinite(out) & np.isfinite(arr) if target.kind == "f" else None
    if lost is not None and arr.size and lost.any():
        top = float(np.finfo(target).max)
        raise _offender(
            values, field, lambda v: not _is_number(v) or abs(v) <= top,
            f"{expected_kind(target)} within +-{top:.3g}",
        )  # fmt: skip
    return out


def _refuse_booleans(values: list[Any], field: str, target: np.dtype[Any]) -> None:
    """Refuse ``true``/``false`` among numbers (numpy took them for 1 and 0)."""
    if booleans_possible.get() and any(v is True or v is False for v in _leaves(values)):
        raise _offender(values, field, _is_number, expected_kind(target))


def _leaves(values: Any) -> list[Any]:
    out: list[Any] = []
    stack = [values]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
        else:
            out.append(v)
    return out


def to_bools(values: Any, field: str) -> np.ndarray:
    """A boolean array from (nested) JSON lists of ``true``/``false``."""
    arr = _as_array(values, field, "booleans")
    if arr.dtype.kind != "b":
        raise _offender(values, field, lambda v: isinstance(v, bool), "booleans (true or false)")
    return arr


def to_strings(values: Any, field: str) -> list[str]:
    """A flat list of strings from a JSON list of strings (or a list of one-string lists)."""
    if not isinstance(values, list):
        raise _fail(field, "an array of strings", describe_value(values))
    flat = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in values]
    for i, v in enumerate(flat):
        if not isinstance(v, str):
            raise _fail(f"{field}[{i}]", "a string", describe_value(values[i]))
    return flat


def output_array(value: Any) -> np.ndarray:
    """A model's output as a plain numpy array (dense, no pandas, strings as str)."""
    if hasattr(value, "toarray") and type(value).__module__.startswith("scipy.sparse"):
        value = value.toarray()
    elif hasattr(value, "to_numpy"):
        value = value.to_numpy()
    arr = np.asarray(value)
    if arr.dtype.kind == "O":
        flat = arr.ravel().tolist()
        if all(isinstance(v, str) for v in flat):
            return arr.astype(str)
        if all(isinstance(v, (bool, int, float, np.number, np.bool_)) for v in flat):
            return np.asarray(flat).reshape(arr.shape)
        return arr.astype(str)
    return arr


def _orjson_native(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "biuf" and arr.dtype != np.float16


def json_data(arr: np.ndarray) -> Any:
    """``arr`` flattened, as orjson serialises it (numeric arrays directly; NaN becomes null)."""
    return arr.ravel() if _orjson_native(arr) else arr.ravel().tolist()


def nested_json(arr: np.ndarray) -> Any:
    """``arr`` with its shape (MLflow's ``predictions``): nested lists, or the array itself
    (C-contiguous, as orjson needs: a MultiOutputRegressor's output is Fortran-ordered)."""
    return np.ascontiguousarray(arr) if _orjson_native(arr) else arr.tolist()


# -- request envelopes ------------------------------------------------------------------------
MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def bad(field: str, expected: str, got: str, message: str | None = None) -> RequestError:
    return RequestError(
        400,
        message or f"{field}: expected {expected}, got {got}",
        field=field,
        expected=expected,
        got=got,
    )


def tensor_fields(t: Any, i: int) -> tuple[str, list[int], str, Any]:
    """Check one OIP tensor object; return its name, shape, datatype and data."""
    field = f"inputs[{i}]"
    if not isinstance(t, dict):
        raise bad(field, "a tensor object with name, shape, datatype and data", describe_value(t))
    for key in ("name", "shape", "datatype", "data"):
        if key not in t:
            raise bad(f"{field}.{key}", f"a {key}", "nothing", f"{field} has no {key!r}")
    name, shape, datatype = t["name"], t["shape"], t["datatype"]
    if not isinstance(name, str):
        raise bad(f"{field}.name", "a string", describe_value(name))
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise bad(f"{field}.shape", "an array of non-negative integers", describe_value(shape))
    if datatype not in DATATYPES:
        raise bad(f"{field}.datatype", f"one of {', '.join(DATATYPES)}", describe_value(datatype))
    return name, shape, datatype, t["data"]


def mlflow_form(payload: Any) -> tuple[str, Any]:
    """Which of MLflow's four input keys ``payload`` uses, and its value."""
    if not isinstance(payload, dict):
        raise bad(
            "(body)", f"a JSON object with one of {', '.join(MLFLOW_KEYS)}", describe_value(payload)
        )
    keys = [k for k in MLFLOW_KEYS if k in payload]
    extra = sorted(set(payload) - set(MLFLOW_KEYS) - {"params"})
    if len(keys) != 1 or extra:
        got = ", ".join(map(str, payload)) or "no keys"
        raise bad(
            "(body)",
            f"exactly one of {', '.join(MLFLOW_KEYS)} (and optionally params)",
            got,
            f"an /invocations body needs exactly one of {', '.join(MLFLOW_KEYS)}; got: {got}",
        )
    return keys[0], payload[keys[0]]


def csv_rows(text: str) -> list[list[str]]:
    """The rows of a CSV body. An empty line is a row of one empty cell (a missing value of a
    one-column input: dropping it shifted every answer after it); only empty lines at the
    end are dropped."""
    try:
        rows = [r or [""] for r in csv.reader(io.StringIO(text))]
    except csv.Error as exc:
        raise bad("(body)", "CSV text", f"malformed CSV ({exc})") from None
    while rows and rows[-1] == [""]:
        rows.pop()
    if not rows:
        raise bad("(body)", "CSV rows", "no rows", "the CSV body has no rows")
    return rows
