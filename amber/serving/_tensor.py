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
    "PerOutput",
    "accepted_datatypes",
    "bad",
    "booleans_possible",
    "csv_rows",
    "datatype_of",
    "expected_kind",
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
                _check_range(arr, target, values, field)
            _refuse_booleans(values, field, target)
            return _cast(arr, target, values, field)
    expected = expected_kind(target)
    arr = _as_array(values, field, expected)
    kind = arr.dtype.kind
    if kind == "O" and allow_null and target.kind == "f":
        if not all(v is None or _is_number(v) for v in _leaves(values)):
            raise _offender(values, field, lambda v: v is None or _is_number(v), expected)
        arr = np.array(values, dtype=np.float64)
        kind = "f"
    if kind == "O" and all(_is_number(v) for v in _leaves(values)):
        # integers past 64 bits: numpy keeps them as Python objects
        if target.kind in "iu":
            return _exact_integers(values, arr.shape, target, field)
        top = float(np.finfo(target).max)
        finite = lambda v: abs(v) <= top  # noqa: E731
        if not all(finite(v) for v in _leaves(values)):
            raise _offender(values, field, finite, f"{expected} within +-{top:.3g}")
        arr, kind = np.array(values, dtype=np.float64), "f"
    if kind not in "iuf":
        raise _offender(values, field, _is_number, expected)
    if target.kind in "iu":
        if kind == "f" and arr.size and float(np.abs(arr).max()) >= _EXACT_IN_FLOAT:
            return _exact_integers(values, arr.shape, target, field)
        if kind == "f" and arr.size and not bool(np.all(np.trunc(arr) == arr)):
            raise _offender(
                values, field, lambda v: not isinstance(v, float) or v.is_integer(), expected
            )
        _check_range(arr, target, values, field)
    _refuse_booleans(values, field, target)
    return _cast(arr, target, values, field)


def _exact_integers(
    values: list[Any], shape: tuple[int, ...], target: np.dtype[Any], field: str
) -> np.ndarray:
    """Integers of type ``target`` taken from the JSON values themselves.

    numpy reads integers mixed with floats, or past 64 bits, as float64, which rounds those
    beyond 2**53 (2**53 + 1 became 2**53, and 2**64 - 1 became 2**64, out of range): Python
    compares and converts them exactly.
    """
    info = np.iinfo(target)

    def fits(v: Any) -> bool:
        return (
            _is_number(v)
            and (not isinstance(v, float) or v.is_integer())
            and info.min <= v <= info.max
        )

    flat = np.array(values, dtype=object).reshape(-1)
    if not all(fits(v) for v in flat):
        raise _offender(
            values, field, fits, f"{expected_kind(target)} from {info.min} to {info.max}"
        )
    return np.array([int(v) for v in flat], dtype=target).reshape(shape)


def _cast(arr: np.ndarray, target: np.dtype[Any], values: Any, field: str) -> np.ndarray:
    """``arr`` as ``target``; a float type too small for a value refuses it (the cast would
    have turned 1e39 into infinity for a float32 input)."""
    if target.kind != "f" or target.itemsize >= 8 or not arr.size:
        return arr.astype(target, copy=False)
    with np.errstate(over="ignore"):
        out = arr.astype(target)
    if bool(np.isinf(out).any()):
        top = float(np.finfo(target).max)
        raise _offender(
            values, field, lambda v: not _is_number(v) or abs(v) <= top,
            f"{expected_kind(target)} within +-{top:.3g}",
        )  # fmt: skip
    return out


# Every integer up to this size is exact in float64; past it, a float may stand for a rounded one.
_EXACT_IN_FLOAT = 2.0**53


def _check_range(arr: np.ndarray, target: np.dtype[Any], values: Any, field: str) -> None:
    """Refuse values of ``arr`` (integral) that ``target``, an integer type, cannot hold.

    Floats are compared with the powers of two that bound the type, which float64 holds exactly
    (its own rounding of the type's largest value, 2**63 - 1 to 2**63, let 2**63 through, and
    the cast then wrapped it to -2**63); integer arrays compare exactly as they are.
    """
    if not arr.size:
        return
    info = np.iinfo(target)
    if arr.dtype.kind == "f":
        fits = float(arr.min()) >= float(info.min) and float(arr.max()) < float(info.max + 1)
    else:
        fits = not (arr.min() < info.min or arr.max() > info.max)
    if not fits:
        raise _offender(
            values,
            field,
            lambda v: not _is_number(v) or info.min <= v <= info.max,
            f"{expected_kind(target)} from {info.min} to {info.max}",
        )


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
        _check_range(arr, target, values, field)
    if target.kind == "f":
        return _cast(arr, target, values, field)
    return arr.astype(target)


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


class PerOutput:
    """An output that is one array per target, all with a row per input row (a multi-output
    classifier's ``predict_proba``: widths differ by target's classes). The batcher slices it
    by rows like an array; the server answers one tensor per target."""

    __slots__ = ("arrays",)

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = arrays

    @classmethod
    def of(cls, value: Any) -> PerOutput:
        if not isinstance(value, (list, tuple)) or not value:
            raise TypeError(
                f"the model returned {type(value).__name__}, not one array per target as its "
                f"probe recorded"
            )
        return cls([output_array(v) for v in value])

    def __len__(self) -> int:
        rows = {len(a) if a.ndim else -1 for a in self.arrays}
        return rows.pop() if len(rows) == 1 else -1  # never a batch's row count: one call each

    def __getitem__(self, rows: slice) -> PerOutput:
        return PerOutput([a[rows] for a in self.arrays])

    def nested_json(self) -> list[list[Any]]:
        """Per row, that row of each target's array (MLflow's ``predictions``)."""
        lists = [a.tolist() for a in self.arrays]
        return [list(row) for row in zip(*lists, strict=True)]


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


def nested_json(arr: np.ndarray | PerOutput) -> Any:
    """``arr`` with its shape (MLflow's ``predictions``): nested lists, or the array itself
    (C-contiguous, as orjson needs: a MultiOutputRegressor's output is Fortran-ordered)."""
    if isinstance(arr, PerOutput):
        return arr.nested_json()
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
    if not isinstance(datatype, str) or datatype not in DATATYPES:
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
    end are dropped. Strict: a quote left open is an error, where the csv module's default
    took the rest of the body into one cell and the answers lost their rows. A byte order
    mark (Excel writes one) is dropped."""
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        rows = [r or [""] for r in reader]
    except csv.Error as exc:
        hint = "; a quote is left open" if "end of data" in str(exc) else ""
        raise bad(
            "(body)", "CSV text", f"malformed CSV at line {reader.line_num} ({exc}{hint})"
        ) from None
    while rows and rows[-1] == [""]:
        rows.pop()
    if not rows:
        raise bad("(body)", "CSV rows", "no rows", "the CSV body has no rows")
    return rows
