"""The probe: a sample input, the original model's outputs on it, and the input signature.

Inputs and outputs are stored as plain ``.npy`` arrays (never pickled) or, for data frames, as an
Arrow IPC stream. ``check`` re-runs the model on the stored input and compares: exactly in the
environment that saved the model, within ``RTOL``/``ATOL`` for floating-point outputs across
environments, at least as loosely as the precision of the output and of the sample allows
(``_PRECISION_FLOORS``); integers, booleans and strings stay exact.

Which functions run is the handler's choice (``probe_methods``; by default the model's
``predict``, ``predict_proba``, ``decision_function`` and ``transform``). Framework tensors
(PyTorch, TensorFlow) are recorded and compared as numpy arrays. A handler whose reloaded model
runs other code than the saved one (a SavedModel graph for Keras layers) asks for a tolerance
even in the same environment (``parity={"exact": False, ...}``).
"""

from __future__ import annotations

import copy
import io
import json
import math
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amber.artifact._manifest import JSON_INT_RANGE, is_utf8
from amber.artifact._reader import ArtifactReader
from amber.artifact._writer import ArtifactWriter, npy_bytes
from amber.errors import AmberError, FormatError
from amber.handlers._base import DEFAULT_PROBE_METHODS, FALLBACK_PROBE_METHODS, probe_methods
from amber.handlers._common import caller_level

__all__ = ["ATOL", "METHODS", "RTOL", "ProbeReport", "as_numpy", "check", "record"]

METHODS = DEFAULT_PROBE_METHODS
RTOL = 1e-6
ATOL = 1e-9
# Across environments outputs are compared at least this loosely: (rtol, atol per unit of the
# output's largest finite magnitude), by the byte width of the real part of the least precise
# of the output, the stored one and the sample's float arrays (a float32 sample is computed on
# in float32 even where the output is float64, as KernelRidge's). The same model computed with
# other kernels (another processor, BLAS build or library version) differs in its last bits,
# a larger part of a float32's 7 digits than of a float64's 16. Measured with OpenBLAS's Haswell
# and Sandy Bridge kernels against its AVX-512 ones over 284 scikit-learn models: float32
# outputs moved by up to 1.4e-5 relative; float64 ones by 5e-14, except a square root of a
# difference near zero (Birch's distance from a point to itself: 1.7e-7, the largest 18).
_PRECISION_FLOORS = {2: (1e-2, 1e-3), 4: (1e-4, 1e-5), 8: (0.0, 1e-7)}
_ORIGINAL_RTOL = 1e-3  # the object against its pickled copy (see _compare_original)
_ORIGINAL_ATOL = 1e-6
_PREFIX = "probe/"


# -- encoding values as plain entries -----------------------------------------------------------
def _is_sparse(value: Any) -> bool:
    mod = type(value).__module__
    return mod.startswith("scipy.sparse") and hasattr(value, "tocsr")


def _is_frame(value: Any) -> bool:
    return type(value).__module__.startswith("pandas") and type(value).__name__ in (
        "DataFrame",
        "Series",
    )


_TENSOR_ROOTS = frozenset({"torch", "tensorflow", "keras", "jax", "jaxlib"})


def as_numpy(value: Any) -> Any:
    """A framework tensor (PyTorch, TensorFlow) as a numpy array; anything else unchanged."""
    if type(value).__module__.split(".")[0] not in _TENSOR_ROOTS:
        return value
    if hasattr(value, "detach"):  # torch.Tensor
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy"):  # tf.Tensor, tf.Variable
        return np.asarray(value.numpy())
    return np.asarray(value)


def _plain_array(value: np.ndarray) -> np.ndarray:
    if not value.dtype.hasobject:
        return value
    flat = value.ravel().tolist()
    if all(isinstance(v, str) for v in flat):
        return value.astype(str)
    if all(isinstance(v, (bool, int, float, np.number, np.bool_)) for v in flat):
        return np.asarray(flat).reshape(value.shape)
    kinds = sorted({type(v).__name__ for v in flat})
    raise TypeError(f"an object array holding {', '.join(kinds)} cannot be stored as plain data")


_RECORD_VALUES = (str, bool, int, float)
_SIGNATURE_KEYS_MAX = 256  # keys a records signature lists by name (the rest are counted)


def _is_records(value: Any) -> bool:
    """A list (or tuple) of dicts: the rows DictVectorizer and FeatureHasher take."""
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(row, dict) for row in value)
    )


def _plain_value(value: Any) -> Any:
    """A record's value as JSON stores it: numpy scalars as Python ones."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bool, int, float)) and type(value) not in _RECORD_VALUES:
        value = float(value) if isinstance(value, float) else int(value)  # IntEnum: its value
    if type(value) is int and not JSON_INT_RANGE[0] <= value <= JSON_INT_RANGE[1]:
        raise TypeError("an integer beyond 64 bits")  # what a server could not be sent either
    if _is_plain(value):
        return value
    raise TypeError(f"a {type(value).__name__}")


def _is_plain(value: Any) -> bool:
    """Whether a value read back from JSON is one a probe stores: a string, number, boolean or
    null (not a list or an object)."""
    return value is None or type(value) in _RECORD_VALUES


def _write_json(data: Any, entry: str, writer: ArtifactWriter) -> str:
    """Write plain ``data`` as the JSON entry ``entry``, as Python writes it: floats round-trip
    exactly, NaN and infinities included, and every string, a lone surrogate too, as ASCII
    escapes. Returns ``entry``."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=True, separators=(",", ":"))
    writer.add(entry, text.encode("ascii"))
    return entry


def _read_json(raw: memoryview) -> Any:
    return json.loads(bytes(raw).decode("utf-8"))


def _plain_records(rows: Any) -> list[dict[str, Any]]:
    """``rows`` (dicts of str keys to strings, numbers, booleans or None) as plain JSON data."""
    out = []
    for i, row in enumerate(rows):
        plain = {}
        for key, value in row.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"row {i} of the records has the key {key!r:.40}, not a string; records are "
                    f"stored as JSON objects"
                )
            if not is_utf8(key):
                raise TypeError(
                    f"row {i} of the records has the key {key!r:.40}, which holds a lone "
                    f"surrogate, not valid Unicode text (the signature names every key)"
                )
            try:
                plain[str(key)] = _plain_value(value)
            except TypeError as exc:
                raise TypeError(
                    f"row {i} of the records holds {exc} under {key!r:.40}; records store "
                    f"strings, numbers within 64 bits, booleans and None"
                ) from None
        out.append(plain)
    return out


_MAX_OBJECT_DIMS = 32  # numpy's own limit is 64; a sample has two


def _encode_objects(arr: np.ndarray, base: str, writer: ArtifactWriter) -> dict[str, Any]:
    """An object array of strings, numbers, booleans and missing values (``None``, NaN), as
    ``df.to_numpy()`` gives a categorical column with gaps: its values in C order as JSON,
    which keeps each one's type (3 is not "3", None is not NaN, as an encoder sees them)."""
    try:
        values = [_plain_value(v) for v in arr.ravel().tolist()]
    except TypeError as exc:
        kinds = sorted({type(v).__name__ for v in arr.ravel().tolist()})
        raise TypeError(
            f"an object array holding {', '.join(kinds)} cannot be stored as plain data ({exc}; "
            f"an object array may hold strings, numbers within 64 bits, booleans and None)"
        ) from None
    entry = _write_json(values, base + ".json", writer)
    return {"kind": "objects", "entry": entry, "shape": list(arr.shape)}


def _objects_from_json(raw: memoryview, shape: Any) -> np.ndarray:
    values = _read_json(raw)
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_OBJECT_DIMS
        or not all(type(n) is int and n >= 0 for n in shape)
        or not isinstance(values, list)
        or math.prod(shape) != len(values)
        or not all(map(_is_plain, values))
    ):
        raise FormatError(
            "malformed probe entry: an object array must be a JSON list of strings, numbers, "
            "booleans and nulls, as many as its shape says"
        )
    return _object_vector(values).reshape(shape)


def _object_vector(values: Any) -> np.ndarray:
    """A 1-d object array of ``values`` as they are (numpy would nest lists into dimensions)."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _encode_rows(value: list[Any] | tuple[Any, ...], base: str, writer: ArtifactWriter) -> Any:
    """A list (or tuple) of lists, or of tuples, of plain values, of any lengths: the token lists
    ``FeatureHasher(input_type="string")`` takes, the label sets of ``MultiLabelBinarizer``.
    Stored as JSON rows; None when ``value`` is not that."""
    inner = {type(row) for row in value}
    if not value or len(inner) != 1 or not inner <= {list, tuple}:
        return None
    try:
        rows = [[_plain_value(v) for v in row] for row in value]
    except TypeError:
        return None  # a row holds a list, a dict, bytes...: not plain rows
    return {
        "kind": "rows",
        "entry": _write_json(rows, base + ".json", writer),
        "tuple": isinstance(value, tuple),
        "rows": "tuple" if inner == {tuple} else "list",
    }


def _rows_from_json(raw: memoryview, spec: dict[str, Any]) -> list[Any] | tuple[Any, ...]:
    rows = _read_json(raw)
    if (
        not isinstance(rows, list)
        or not rows
        or spec.get("rows") not in ("list", "tuple")
        or not all(isinstance(row, list) and all(map(_is_plain, row)) for row in rows)
    ):
        raise FormatError(
            "malformed probe entry: rows must be a non-empty JSON list of lists of strings, "
            "numbers, booleans and nulls"
        )
    out = [tuple(row) for row in rows] if spec["rows"] == "tuple" else rows
    return tuple(out) if spec.get("tuple") is True else out


def _records_from_json(raw: memoryview) -> list[dict[str, Any]]:
    rows = _read_json(raw)
    if (
        not isinstance(rows, list)
        or not rows
        or not all(isinstance(row, dict) and all(map(_is_plain, row.values())) for row in rows)
    ):
        raise FormatError(
            "malformed probe entry: records must be a non-empty JSON list of objects of "
            "strings, numbers, booleans and nulls"
        )
    return rows


def _encode(value: Any, name: str, writer: ArtifactWriter) -> dict[str, Any]:
    """Write ``value`` under ``probe/<name>...``; return the spec that reads it back."""
    base = _PREFIX + name
    value = as_numpy(value)
    if _is_frame(value):
        import pyarrow as pa

        series = type(value).__name__ == "Series"
        frame = value.to_frame() if series else value
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, OverflowError) as exc:  # a column Arrow cannot type
            raise TypeError(f"a column Arrow cannot store ({_first_line(exc)})") from None
        for column in table.schema:
            if not _plain_arrow_type(column.type):  # what a reader would refuse
                raise TypeError(
                    f"sample column {column.name!r:.40} holds {column.type}, which a probe "
                    f"does not store; pass a sample of plain columns (numbers, strings, "
                    f"categories, dates)"
                )
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as stream:
            stream.write_table(table)
        try:  # what a reader will do; pandas cannot rebuild every dtype it can write
            table.to_pandas()
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise TypeError(
                f"a column pandas cannot read back from Arrow ({_first_line(exc)}); convert it "
                f"(e.g. to a plain category or string column) in the sample"
            ) from None
        writer.add(base + ".arrow", sink.getbuffer())
        spec: dict[str, Any] = {
            "kind": "series" if series else "dataframe",
            "entry": base + ".arrow",
        }
        objects = [
            i for i, t in enumerate(frame.dtypes) if isinstance(t, np.dtype) and t.kind == "O"
        ]
        if objects:  # Arrow types them (ints, strings): a reader casts them back to object
            spec["object_columns"] = objects
            nulls = {str(i): _null_kinds(frame.iloc[:, i]) for i in objects}
            nulls = {i: kinds for i, kinds in nulls.items() if kinds}
            if nulls:  # Arrow keeps that a value is missing, not which missing value it was
                spec["object_nulls"] = nulls
        labels = [value.name] if series else list(frame.columns)
        if not all(type(label) is str for label in labels) and all(map(_json_label, labels)):
            # Arrow names columns by strings: 0 would come back as "0", and a model fitted on
            # integer-labelled columns would then see feature names it was not fitted with
            spec["labels"] = [list(x) if isinstance(x, tuple) else x for x in labels]
        return spec
    if _is_sparse(value):
        csr = value.tocsr()
        if not csr.has_sorted_indices:
            csr = csr.copy() if csr is value else csr  # the caller's matrix stays as it was
            csr.sort_indices()
        for part in ("data", "indices", "indptr"):
            writer.add_array(f"{base}.{part}.npy", getattr(csr, part))
        return {
            "kind": "sparse",
            "format": value.format,
            "array": type(value).__name__.endswith("_array"),
            "shape": list(csr.shape),
            "entries": [f"{base}.{p}.npy" for p in ("data", "indices", "indptr")],
        }
    if _holds_arrays(value):
        return _encode_several(value, name, writer)
    if _is_records(value):
        entry = _write_json(_plain_records(value), base + ".json", writer)
        return {"kind": "records", "entry": entry, "tuple": isinstance(value, tuple)}
    if isinstance(value, (list, tuple)):
        try:
            arr = _plain_array(np.asarray(value, dtype=object))
        except (ValueError, TypeError) as exc:  # ragged rows, or values of several kinds
            rows = _encode_rows(value, base, writer)
            if rows is not None:
                return rows
            if isinstance(exc, TypeError):
                raise
            # numpy cannot even lay it out: a ragged nest of lists
            raise TypeError(f"a ragged {type(value).__name__} ({exc})") from None
        writer.add_array(base + ".npy", arr)
        return {"kind": "list", "entry": base + ".npy"}
    if isinstance(value, np.ndarray) or np.isscalar(value):
        arr = np.asarray(value)
        try:
            plain = _plain_array(arr)
        except TypeError:
            if arr.ndim == 0:
                raise
            return _encode_objects(arr, base, writer)
        writer.add_array(base + ".npy", plain)
        return {"kind": "ndarray", "entry": base + ".npy"}
    raise TypeError(f"a {type(value).__module__}.{type(value).__qualname__} cannot be stored")


# A model of several inputs or outputs (a tuple of tensors, a dict of named outputs) has its
# values stored one by one: a list of arrays of one shape would otherwise come back as a single
# stacked array read back as nested lists, and one of several shapes could not be stored at all.
_MAX_ITEMS = 64
_MAX_NESTING = 1  # containers of values may hold containers of values, no deeper


def _is_array_like(value: Any) -> bool:
    value = as_numpy(value)
    return (
        (isinstance(value, np.ndarray) and value.ndim >= 1) or _is_frame(value) or _is_sparse(value)
    )


def _holds_arrays(value: Any, depth: int = 0) -> bool:
    """A tuple, list or str-keyed dict of arrays (tensors, frames, sparse matrices), or of
    such containers one level down (an LSTM's ``(output, (h, c))``)."""
    if isinstance(value, dict):
        items = list(value.values())
        if not all(type(k) is str for k in value):
            return False
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        return False
    return bool(items) and all(
        _is_array_like(v) or (depth < _MAX_NESTING and _holds_arrays(v, depth + 1)) for v in items
    )


def _encode_several(value: Any, name: str, writer: ArtifactWriter) -> dict[str, Any]:
    if len(value) > _MAX_ITEMS:
        raise TypeError(f"{len(value)} values, over the {_MAX_ITEMS} a probe stores")
    if isinstance(value, dict):
        keys = list(value)
        items = [_encode(value[k], f"{name}.{i}", writer) for i, k in enumerate(keys)]
        return {"kind": "mapping", "keys": keys, "items": items}
    items = [_encode(v, f"{name}.{i}", writer) for i, v in enumerate(value)]
    return {"kind": "sequence", "tuple": isinstance(value, tuple), "items": items}


def _decode_several(spec: dict[str, Any], reader: ArtifactReader, depth: int = 0) -> Any:
    items = spec.get("items")
    if not isinstance(items, list):
        raise FormatError("malformed probe entry: its items are not a list")
    if not 0 < len(items) <= _MAX_ITEMS:
        raise FormatError(f"malformed probe entry: {len(items)} items (1 to {_MAX_ITEMS})")
    if any(not isinstance(i, dict) for i in items):
        raise FormatError("malformed probe entry: its items must be values")
    nested = [i for i in items if i.get("kind") in ("sequence", "mapping")]
    if nested and depth >= _MAX_NESTING:
        raise FormatError(
            f"malformed probe entry: containers nested more than {_MAX_NESTING} level deep"
        )
    if depth == 0:
        # each value reads entries of its own: one entry named 64 times would decode 64 copies
        used = _entries_of(spec)
        if len(used) != len(set(used)):
            raise FormatError("malformed probe entry: its items share entries")
    values = [
        _decode_several(item, reader, depth + 1)
        if item.get("kind") in ("sequence", "mapping")
        else _decode(item, reader)
        for item in items
    ]
    if spec["kind"] == "mapping":
        keys = spec.get("keys")
        if (
            not isinstance(keys, list)
            or len(keys) != len(values)
            or not all(type(k) is str for k in keys)
            or len(set(keys)) != len(keys)
        ):
            raise FormatError("malformed probe entry: its keys do not match its items")
        return dict(zip(keys, values, strict=True))
    return tuple(values) if spec.get("tuple") is True else values


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _entries_of(spec: dict[str, Any], depth: int = 0) -> list[Any]:
    if spec.get("kind") in ("sequence", "mapping") and depth <= _MAX_NESTING:
        items = spec.get("items")
        return [
            e
            for i in (items if isinstance(items, list) else [])
            if isinstance(i, dict)
            for e in _entries_of(i, depth + 1)
        ]
    entries = spec.get("entries")
    named = entries if isinstance(entries, list) else [spec.get("entry")]
    return [e if isinstance(e, (str, int, float)) else repr(e) for e in named]


def _json_label(label: Any) -> bool:
    """Whether a column label survives JSON as itself (a tuple as a list: MultiIndex)."""
    if isinstance(label, tuple):
        return all(_json_label(x) for x in label)
    if type(label) is float:
        return math.isfinite(label)
    return label is None or type(label) in (str, int, bool)


def _decode(spec: Any, reader: ArtifactReader) -> Any:
    """A stored probe value, from its spec; a spec or entry that does not fit is a FormatError."""
    if not isinstance(spec, dict):
        raise FormatError(f"malformed probe entry spec {spec!r:.80}")
    try:
        return _decode_spec(spec, reader)
    except (AmberError, OSError):
        raise
    except Exception as exc:  # the spec or the entry is malformed (damaged or crafted)
        raise FormatError(
            f"malformed probe entry {spec.get('entry') or spec.get('entries')!r:.80}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _field_at(buf: bytes, table: int, index: int) -> int:
    """Where field ``index`` of the flatbuffer table at ``table`` lies, or 0 if absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    slot = 4 + 2 * index
    if slot + 2 > struct.unpack_from("<H", buf, vtable)[0]:
        return 0
    offset: int = struct.unpack_from("<H", buf, vtable + slot)[0]
    return table + offset if offset else 0


def _body_compressed(meta: bytes) -> bool:
    """Whether an Arrow IPC message (its flatbuffer metadata) declares compressed buffers:
    Message.header (field 2) of type RecordBatch (3), or DictionaryBatch (2) whose data
    (field 1) is one, with RecordBatch.compression (field 3) set."""
    try:
        root = struct.unpack_from("<I", meta, 0)[0]
        header = _field_at(meta, root, 2)
        kind_at = _field_at(meta, root, 1)
        kind = meta[kind_at] if kind_at else 0
        if not header or kind not in (2, 3):
            return False
        table = header + struct.unpack_from("<I", meta, header)[0]
        if kind == 2:
            data = _field_at(meta, table, 1)
            if not data:
                return False
            table = data + struct.unpack_from("<I", meta, data)[0]
        return _field_at(meta, table, 3) != 0
    except (struct.error, IndexError):
        raise FormatError("probe table with malformed Arrow message metadata") from None


def _plain_arrow_type(t: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return _plain_arrow_type(t.value_type) and pa.types.is_integer(t.index_type)
    return bool(
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_date(t)
        or pa.types.is_duration(t)
        or pa.types.is_decimal(t)
    )


def _check_table(table: Any, stored: int) -> None:
    """What pandas' conversion would expand: only the column types the writer produces (not
    null, run-end-encoded, view or nested columns, which a few bytes can make hold hundreds of
    millions of rows), and no more cells than the entry's bytes can describe."""
    for column in table.schema:
        if not _plain_arrow_type(column.type):
            raise FormatError(f"probe column {column.name!r:.40} has the type {column.type}")
    if table.num_rows * max(table.num_columns, 1) > 8 * stored + 4096:
        raise FormatError(
            f"probe table of {table.num_rows} rows and {table.num_columns} columns in an "
            f"entry of {stored} bytes"
        )


_SPARSE_FORMATS = {"csr", "csc", "coo", "bsr", "dia", "dok", "lil"}
_MAX_CONVERTED_SIDE = 1 << 24  # a probe sample's columns; converting allocates per column


# The missing values an object column of a sample can hold, by the name a probe records. Arrow
# stores each as null, and pandas reads a null back as None (pandas 2) or NaN (pandas 3, its
# strings): a model that tells them apart (TargetEncoder fitted with None as a category) then
# answered differently after an upgrade of pandas alone.
_NULLS: dict[str, Any] = {"none": None, "nan": float("nan")}


def _null_kind(value: Any) -> str | None:
    if value is None:
        return "none"
    if isinstance(value, float) and value != value:
        return "nan"
    return None


def _null_kinds(column: Any) -> str | list[str | None] | None:
    """The missing values of an object column: ``"none"`` or ``"nan"`` when all are alike, else
    one per missing value in row order (None for another kind, pd.NA or NaT, read back as
    pandas reads it); None when it has none."""
    missing = column[column.isna()]
    if not len(missing):
        return None
    kinds = [_null_kind(v) for v in missing]
    if len(set(kinds)) == 1 and kinds[0] is not None:
        return kinds[0]
    return kinds


def _restore_nulls(column: Any, kinds: Any) -> Any:
    mask = column.isna().to_numpy()
    count = int(mask.sum())
    if isinstance(kinds, str):
        kinds = [kinds] * count
    if (
        not isinstance(kinds, list)
        or len(kinds) != count
        or not all(k is None or k in _NULLS for k in kinds)
    ):
        raise FormatError("probe entry's missing values do not match its object columns")
    values = column.to_numpy(dtype=object, copy=True)
    for row, kind in zip(np.flatnonzero(mask), kinds, strict=True):
        if kind is not None:
            values[row] = _NULLS[kind]
    import pandas as pd

    return pd.Series(values, index=column.index, name=column.name, dtype=object)


def _decode_spec(spec: dict[str, Any], reader: ArtifactReader) -> Any:
    kind = spec.get("kind")
    if kind in ("dataframe", "series"):
        import pyarrow as pa

        raw = reader.read(spec["entry"])
        try:  # bytes in memory, already verified: an OSError here is Arrow's, about the data
            for message in pa.ipc.MessageReader.open_stream(raw):
                if _body_compressed(message.metadata.to_pybytes()):
                    # decoded before anything could bound it: 37 kB became 2.5 GB
                    raise FormatError("probe table with compressed Arrow bodies (never written)")
            with pa.ipc.open_stream(raw) as stream:
                table = stream.read_all()
            _check_table(table, raw.nbytes)
            # offsets and sizes that point outside their buffers: Arrow's compute kernels and
            # pandas read them unchecked (a string offset past its data crashed the verify)
            table.validate(full=True)
            frame = table.to_pandas(integer_object_nulls=True)  # object ints keep None
        except (FormatError, MemoryError):
            raise
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise FormatError(
                f"malformed probe table {spec['entry']!r:.80}: {type(exc).__name__}: {exc}"
            ) from exc
        objects = spec.get("object_columns", [])
        if not isinstance(objects, list) or not all(
            type(i) is int and 0 <= i < frame.shape[1] for i in objects
        ):
            raise FormatError("probe entry's object columns do not match its columns")
        nulls = spec.get("object_nulls", {})
        if not isinstance(nulls, dict) or not set(nulls) <= {str(i) for i in objects}:
            raise FormatError("probe entry's missing values do not match its object columns")
        for i in objects:
            column = frame.iloc[:, i].astype(object)
            if str(i) in nulls:
                column = _restore_nulls(column, nulls[str(i)])
            frame.isetitem(i, column)
        labels = spec.get("labels")
        if labels is not None:
            if not isinstance(labels, list) or len(labels) != frame.shape[1]:
                raise FormatError("probe entry's column labels do not match its columns")
            labels = [tuple(x) if isinstance(x, list) else x for x in labels]
            if kind == "series":
                return frame.iloc[:, 0].rename(labels[0])
            if any(isinstance(x, tuple) for x in labels):
                import pandas as pd

                frame.columns = pd.MultiIndex.from_tuples(labels)
            else:
                frame.columns = labels
        return frame.iloc[:, 0] if kind == "series" else frame
    if kind == "sparse":
        import scipy.sparse as sp

        entries, shape, fmt = spec.get("entries"), spec.get("shape"), spec.get("format", "csr")
        if not (isinstance(entries, list) and len(entries) == 3):
            raise FormatError("malformed sparse probe entry: it needs data, indices and indptr")
        data, indices, indptr = (reader.read_array(e) for e in entries)
        if (
            not isinstance(shape, list)
            or len(shape) != 2
            or not all(type(n) is int and n >= 0 for n in shape)
            or shape[0] != len(indptr) - 1
            or fmt not in _SPARSE_FORMATS
            or (fmt != "csr" and shape[1] > _MAX_CONVERTED_SIDE)
        ):
            raise FormatError(
                f"malformed sparse probe entry: shape {shape!r:.60} and format {fmt!r:.20} do "
                f"not fit its {len(indptr) - 1} rows"
            )
        cls = sp.csr_array if spec.get("array") else sp.csr_matrix
        matrix = cls((data, indices, indptr), shape=tuple(shape))
        matrix.check_format(full_check=True)
        return matrix.asformat(fmt)
    if kind in ("sequence", "mapping"):
        return _decode_several(spec, reader)
    if kind == "records":
        rows = _records_from_json(reader.read(spec["entry"]))
        return tuple(rows) if spec.get("tuple") is True else rows
    if kind == "list":
        return reader.read_array(spec["entry"]).tolist()
    if kind == "rows":
        return _rows_from_json(reader.read(spec["entry"]), spec)
    if kind == "ndarray":
        return reader.read_array(spec["entry"])
    if kind == "objects":
        return _objects_from_json(reader.read(spec["entry"]), spec.get("shape"))
    raise FormatError(
        f"probe entry of unknown kind {kind!r:.40}: a newer Amber may have written it; upgrade "
        f"Amber to verify its probe (loading the model does not need it)"
    )


# -- signature ----------------------------------------------------------------------------------
def describe(value: Any) -> dict[str, Any]:
    """The input signature of ``value``: columns and dtypes, or dtype and shape."""
    value = as_numpy(value)
    if _is_frame(value):
        if type(value).__name__ == "Series":
            return {"kind": "series", "name": str(value.name), "dtype": str(value.dtype)}
        return {
            "kind": "dataframe",
            "columns": [
                _column(c, t, value.iloc[:, i]) for i, (c, t) in enumerate(value.dtypes.items())
            ],
        }
    if _is_sparse(value):
        return {
            "kind": "sparse",
            "format": value.format,
            "dtype": str(value.dtype),
            "shape": [None, *value.shape[1:]],
        }
    if _holds_arrays(value):
        if isinstance(value, dict):
            return {"kind": "mapping", "items": {k: describe(v) for k, v in value.items()}}
        return {"kind": "sequence", "items": [describe(v) for v in value]}
    if _is_records(value):
        keys: dict[str, set[str]] = {}
        for row in value:
            for key, item in row.items():
                plain = item.item() if isinstance(item, np.generic) else item
                keys.setdefault(str(key), set()).add(type(plain).__name__)
        listed = dict(list(keys.items())[:_SIGNATURE_KEYS_MAX])
        out: dict[str, Any] = {
            "kind": "records",
            "keys": {k: sorted(types) for k, types in listed.items()},
            "shape": [None],
        }
        if len(keys) > len(listed):
            out["more_keys"] = len(keys) - len(listed)
        return out
    if isinstance(value, (list, tuple)):
        types = sorted({type(v).__name__ for v in value})
        return {"kind": "list", "item_types": types, "shape": [None]}
    arr = np.asarray(value)
    return {"kind": "ndarray", "dtype": str(arr.dtype), "shape": [None, *arr.shape[1:]]}


def _column(name: Any, dtype: Any, values: Any) -> dict[str, Any]:
    """A column's signature; a category column's also says what its categories are, and an
    object column what its values are when they are not strings (3 and "3" are different
    values, and a server must not turn one into the other)."""
    out: dict[str, Any] = {"name": str(name), "dtype": str(dtype)}
    label = name.item() if isinstance(name, np.generic) else name
    if type(label) in (int, bool, float) and _json_label(label):
        out["label"] = label  # the label itself (a frame made from an array has 0, 1, 2, ...)
    categories = getattr(dtype, "categories", None)
    if str(dtype) == "category" and categories is not None:
        out["categories"] = str(categories.dtype)
    if isinstance(dtype, np.dtype) and dtype.kind == "O":
        import pandas as pd

        held = pd.api.types.infer_dtype(values, skipna=True)
        if held not in ("string", "empty"):
            out["values"] = held  # "integer", "floating", "boolean", "mixed-integer", ...
        missing = _null_kinds(values)
        if isinstance(missing, str):
            # what a missing value was (None or NaN): a server hands the model the same for a
            # null, as an encoder fitted on None takes NaN for an unknown category
            out["missing"] = missing
    return out


# -- recording and checking ---------------------------------------------------------------------
def _default_methods(model: Any) -> dict[str, Callable[[Any], Any]]:
    return probe_methods(None, model)  # no handler: the default four, else a fallback


class _AsStored:
    """Probe entries held in memory: ``_encode`` writes them as it would into an artifact
    (``add``, ``add_array``) and ``_decode`` reads them back as from one (``read``,
    ``read_array``), so that the outputs at save are computed on the sample a reload reads."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}

    def add(self, name: str, data: Any, *, compress: str | None = None) -> None:
        self.entries[name] = bytes(data)

    def add_array(self, name: str, array: np.ndarray, *, compress: str | None = None) -> None:
        self.entries[name] = bytes(npy_bytes(name, array))

    def read(self, name: str) -> memoryview:
        return memoryview(self.entries[name])

    def read_array(self, name: str) -> np.ndarray:
        array: np.ndarray = np.lib.format.read_array(
            io.BytesIO(self.entries[name]), allow_pickle=False
        )
        return array


def _compare_original(
    method: str, fn: Callable[[Any], Any], given: Any, recorded: Any, parity: dict[str, Any]
) -> None:
    try:
        value = fn(given)
    except Exception:  # the copy answered, the object did not: nothing to compare
        return
    # loose: float32 outputs of a re-laid-out array differ by more than 1e-6; what is meant
    # here (dropped state, randomness) differs by far more, or changes labels (exact)
    rtol = max(float(parity.get("rtol", RTOL)), _ORIGINAL_RTOL)
    atol = max(float(parity.get("atol", ATOL)), _ORIGINAL_ATOL)
    problem = _compare(value, recorded, False, rtol, atol)
    if problem is not None:
        warnings.warn(
            f"the model's {method} on the sample changes when the model is pickled and read "
            f"back ({problem}): it keeps state its pickling drops, or computes at random (a "
            f"random_state of None?). The probe records the outputs of the model as read "
            f"back; if they are random, verify will report a difference",
            UserWarning,
            stacklevel=caller_level(),
        )


def _reasons(skipped: dict[str, str]) -> str:
    """Why each method failed, each reason once: the methods of a model usually fail alike."""
    if not skipped:
        return "no such methods"
    by_reason: dict[str, list[str]] = {}
    for method, reason in skipped.items():
        by_reason.setdefault(reason, []).append(method)
    return "; ".join(f"{', '.join(ms)}: {reason}" for reason, ms in by_reason.items())


def _check_rows(model: Any, sample: Any) -> None:
    """Refuse, saying what would do, a sample that is not rows of a model that takes rows of
    several features: one row as a 1-d array, a single value."""
    width = getattr(model, "n_features_in_", None)
    if not isinstance(width, int) or width < 2:
        return  # a text or 1-feature model takes 1-d input; others say it themselves
    if isinstance(sample, np.ndarray) and sample.ndim < 2:
        one_row = sample.ndim == 1 and sample.shape[0] == width
        raise ValueError(
            f"sample= is a {sample.ndim}-d array of shape {sample.shape}, but the "
            f"{type(model).__name__} takes rows of {width} features: pass several rows, "
            f"X[:32] (2-d)" + (", or this one row as sample.reshape(1, -1)" if one_row else "")
        )
    if isinstance(sample, (str, bytes, int, float, bool)):
        raise ValueError(
            f"sample= is a single {type(sample).__name__}, but the {type(model).__name__} "
            f"takes rows of {width} features: pass a few input rows, X[:32]"
        )


def record(
    model: Any,
    sample: Any,
    writer: ArtifactWriter,
    *,
    methods: dict[str, Callable[[Any], Any]] | None = None,
    parity: dict[str, Any] | None = None,
    original: dict[str, Callable[[Any], Any]] | None = None,
) -> dict[str, Any]:
    """Store ``sample`` and the model's outputs on it; return the manifest's probe section.

    ``methods`` are the named functions to record (default: the model's own ``predict``,
    ``predict_proba``, ``decision_function``, ``transform``); ``parity`` may set ``exact``
    (False: compare within the tolerance even in the saving environment), ``rtol``, ``atol``.
    ``original``: when ``model`` is the saved object as read back from its serialisation, the
    same methods of the object itself; an output of theirs beyond the tolerance of the
    recorded one is warned about (state the serialisation does not keep, or randomness).
    """
    stored = _AsStored()
    try:
        input_spec = _encode(sample, "input", stored)  # type: ignore[arg-type]
    except TypeError as exc:
        raise TypeError(
            f"sample= cannot be stored as a probe: {exc}. Pass a numpy array, a pandas "
            f"DataFrame, a scipy.sparse matrix, a list of strings, a list of dicts of plain "
            f"values (records, as DictVectorizer takes), a list of lists of plain values (as "
            f"FeatureHasher and MultiLabelBinarizer take), or a tuple, list or str-keyed dict of "
            f"arrays (one per input of the model)."
        ) from None
    _check_rows(model, sample)
    outputs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    chosen = _default_methods(model) if methods is None else methods
    for name, data in stored.entries.items():
        writer.add(name, data)
    # The outputs are computed on the sample as a reload reads it back: the same memory layout
    # (a Fortran-ordered sample comes back C-ordered, a frame's columns in Arrow's blocks), and
    # no memory shared with the model. Otherwise BLAS takes other paths and the last bits
    # differ: a Fortran-ordered sample, or the model's own training array (KernelRidge's
    # X_fit_, which numpy multiplied by itself through its symmetric routine at save and
    # through the general one after a reload), made verify raise ParityError on honest models.
    decoded = _decode(input_spec, stored)  # type: ignore[arg-type]
    for method, fn in chosen.items():
        # a fresh copy for each call: a model may scale its input in place
        # (StandardScaler(copy=False)), and the next method would see the scaled one
        given = copy.deepcopy(decoded)
        try:
            value = fn(given)
        except Exception as exc:  # a method the fitted model cannot run on this input
            skipped[method] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            continue
        try:
            spec = _encode(value, f"output.{method}", writer)
        except TypeError as exc:
            skipped[method] = f"output not storable: {exc}"[:300]
            continue
        spec["signature"] = describe(value)
        outputs[method] = spec
        if original is not None and method in original:
            fresh = copy.deepcopy(decoded)
            _compare_original(method, original[method], fresh, value, parity or {})
    if skipped and all(r.startswith("output not storable") for r in skipped.values()):
        raise ValueError(
            f"the model answers on sample=, but none of its outputs can be stored as a probe "
            f"({'; '.join(f'{m}: {r}' for m, r in skipped.items())}); save without sample= "
            f"(no probe), or save a model whose outputs are arrays of one kind"
        )
    if not chosen:
        raise ValueError(
            f"sample= was given but a {type(model).__name__} has none of "
            f"{', '.join(METHODS)}, {' or '.join(FALLBACK_PROBE_METHODS)}, so there is nothing "
            f"to probe; save it without sample="
        )
    if not outputs:
        raise ValueError(
            f"sample= was given but the model answers none of "
            f"{', '.join(chosen) or ', '.join(METHODS)} on it ({_reasons(skipped)}); "
            f"pass a sample the model accepts, or none"
        )
    parity = parity or {}
    section: dict[str, Any] = {
        "input": input_spec,
        "outputs": outputs,
        "skipped": skipped,
        "tolerance": {
            "rtol": float(parity.get("rtol", RTOL)),
            "atol": float(parity.get("atol", ATOL)),
        },
    }
    if parity.get("exact") is False:
        section["exact"] = False
    return section


@dataclass
class ProbeReport:
    """What re-running the probe found. ``ok`` is False if any output differs."""

    exact: bool
    matched: list[str] = field(default_factory=list)
    mismatched: dict[str, str] = field(default_factory=dict)
    rtol: float = RTOL
    atol: float = ATOL
    widths: set[int] = field(default_factory=set)  # byte widths of the floats compared

    @property
    def ok(self) -> bool:
        return not self.mismatched

    @property
    def tolerance(self) -> str:
        """How float outputs were compared, in words (the floors of the float widths met)."""
        if self.exact:
            return "exactly"
        floors = [_FLOOR_WORDS[w] for w in sorted(self.widths, reverse=True) if w in _FLOOR_WORDS]
        return (
            f"within rtol={self.rtol}, atol={self.atol}, at least the precision of the floats: "
            f"{', '.join(floors or _FLOOR_WORDS.values())}"
        )

    def __str__(self) -> str:
        how = self.tolerance
        lines = [f"probe {'matched' if self.ok else 'DIFFERS'} ({how})"]
        lines += [f"  {m}: identical" if self.exact else f"  {m}: ok" for m in self.matched]
        lines += [f"  {m}: {why}" for m, why in self.mismatched.items()]
        return "\n".join(lines)


def _floor_words(width: int) -> str:
    """A float width's precision floor (``_PRECISION_FLOORS``) in words."""
    rtol, atol = _PRECISION_FLOORS[width]

    def num(x: float) -> str:
        return f"{x:.0e}".replace("e-0", "e-")

    relative = f"rtol={num(rtol)} and " if rtol else ""
    return f"{relative}atol {num(atol)} of the output's magnitude for float{8 * width}"


_FLOOR_WORDS = {width: _floor_words(width) for width in sorted(_PRECISION_FLOORS, reverse=True)}


def _float_widths(value: Any) -> set[int]:
    """The byte widths of the floats in an output (arrays, frames, and one level of
    containers of them), as the tolerant comparison's floors go by them."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):  # outputs of several arrays; plain values: none
        return set().union(*(_float_widths(v) for v in value if not isinstance(v, (list, tuple))))
    value = as_numpy(value)
    if _is_frame(value):
        dtypes = list(getattr(value, "dtypes", []))
    else:
        dtype = getattr(value, "dtype", None)
        dtypes = [dtype] if dtype is not None else []
    return {_real_width(d) for d in dtypes if isinstance(d, np.dtype) and d.kind in "fc"}


def _as_dense(value: Any) -> np.ndarray:
    if _is_sparse(value):
        return np.asarray(value.toarray())
    if _is_frame(value):
        return np.asarray(value.to_numpy())
    try:
        arr = np.asarray(value)
    except ValueError:  # rows of different lengths: one object each, compared one by one
        arr = _object_vector(value)
    try:
        return _plain_array(arr)
    except TypeError:
        return arr  # strings, numbers and missing values mixed: compared one by one


def _same_value(x: Any, y: Any) -> bool:
    """Two values of object arrays: of one type and equal (3 is not "3", nor 3.0, nor True);
    NaN is itself."""
    x = x.item() if isinstance(x, np.generic) else x
    y = y.item() if isinstance(y, np.generic) else y
    if type(x) is not type(y):
        return False
    return bool(x == y) or (isinstance(x, float) and x != x and y != y)


def _compare_frames(expected: Any, got: Any, exact: bool, rtol: float, atol: float) -> str | None:
    """pandas outputs: missing values (None, NaN, pd.NA) compare equal to themselves."""
    import pandas.testing as pdt

    series = type(expected).__name__ == "Series"
    try:
        if series:
            pdt.assert_series_equal(
                expected, got, check_dtype=False, check_exact=exact, rtol=rtol, atol=atol
            )
        else:
            pdt.assert_frame_equal(
                expected, got, check_dtype=False, check_exact=exact, rtol=rtol, atol=atol
            )
    except AssertionError as exc:
        return " ".join(str(exc).split())[:300]
    return None


def _compare(
    expected: Any,
    got: Any,
    exact: bool,
    rtol: float = RTOL,
    atol: float = ATOL,
    width: int = 8,
) -> str | None:
    """Why ``got`` is not ``expected`` (None: it is). ``width``: the byte width of the sample's
    least precise floats (8 when it has none narrower)."""
    if _is_frame(expected) and _is_frame(got):
        return _compare_frames(expected, got, exact, rtol, atol)
    if isinstance(expected, (tuple, dict)) or (
        isinstance(expected, list) and expected and _is_array_like(expected[0])
    ):
        return _compare_several(expected, got, exact, rtol, atol, width)
    expected, got = as_numpy(expected), as_numpy(got)
    if _is_sparse(expected) or _is_sparse(got):  # compare shapes before densifying either
        shapes = (np.shape(expected), np.shape(got))
        if shapes[0] != shapes[1]:
            return f"shape {shapes[1]}, expected {shapes[0]}"
    a, b = _as_dense(expected), _as_dense(got)
    if a.shape != b.shape:
        return f"shape {b.shape}, expected {a.shape}"
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        if exact:
            if a.dtype != b.dtype:
                return f"dtype {b.dtype}, expected {a.dtype}"
            same = np.array_equal(a, b, equal_nan=True)
        else:
            r, t = _loosened(a, b, rtol, atol, width)
            same = np.allclose(a, b, rtol=r, atol=t, equal_nan=True)
        return None if same else _float_difference(a, b)
    if a.dtype.kind == "O" or b.dtype.kind == "O":
        pairs = zip(a.ravel().tolist(), b.ravel().tolist(), strict=True)  # shapes are equal
        n = sum(not _same_value(x, y) for x, y in pairs)
        return f"{n} of {a.size} values differ" if n else None
    strings = a.dtype.kind in "USO" and b.dtype.kind in "USO"
    if exact and a.dtype != b.dtype and not strings:
        return f"dtype {b.dtype}, expected {a.dtype}"
    if a.dtype.kind != b.dtype.kind and not (a.dtype.kind in "iub" and b.dtype.kind in "iub"):
        return f"dtype {b.dtype}, expected {a.dtype}"
    if not np.array_equal(a, b):
        n = int(np.sum(a != b))
        return f"{n} of {a.size} values differ"
    return None


def _real_width(dtype: np.dtype) -> int:
    return dtype.itemsize // (2 if dtype.kind == "c" else 1)


def _loosened(
    a: np.ndarray, b: np.ndarray, rtol: float, atol: float, width: int = 8
) -> tuple[float, float]:
    """``rtol``, ``atol`` raised to the floor of the least precise of two float arrays and the
    sample (``width``)."""
    width = min(_real_width(a.dtype), _real_width(b.dtype), width, 8)
    floor = _PRECISION_FLOORS.get(width)
    if floor is None:
        return rtol, atol
    magnitude = np.abs(a[np.isfinite(a)])
    scale = max(1.0, float(magnitude.max())) if magnitude.size else 1.0
    return max(rtol, floor[0]), max(atol, floor[1] * scale)


def _sample_width(value: Any, depth: int = 0) -> int:
    """The byte width of the real part of the least precise floats in a sample (8: none
    narrower, or no floats)."""
    if isinstance(value, (list, tuple, dict)):
        items = value.values() if isinstance(value, dict) else value
        if depth > 2 or not items:
            return 8
        return min(_sample_width(v, depth + 1) for v in list(items)[:64])
    if _is_frame(value):
        dtypes = [value.dtype] if type(value).__name__ == "Series" else list(value.dtypes)
    else:
        dtype = getattr(as_numpy(value), "dtype", None)
        dtypes = [] if dtype is None else [dtype]
    widths = [8]
    for d in dtypes:
        try:
            plain = np.dtype(getattr(d, "numpy_dtype", d))
        except TypeError:
            continue
        if plain.kind in "fc":
            widths.append(_real_width(plain))
    return min(widths)


def _float_difference(a: np.ndarray, b: np.ndarray) -> str:
    """How two float (or complex) arrays of one shape that do not match differ: the largest
    difference where both are numbers, and where one is NaN and the other is not."""
    wide = np.result_type(a, b, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a.astype(wide) - b.astype(wide))  # (inf - inf: NaN, not a difference)
    known = diff[~np.isnan(diff)]
    one_sided = int(np.count_nonzero(np.isnan(a) != np.isnan(b)))
    worst = float(known.max()) if known.size else 0.0
    said = [f"largest absolute difference {worst:.3g}"] if worst > 0 else []
    if one_sided:
        said.append(f"{one_sided} of {a.size} values NaN on one side only")
    return f"values differ ({'; '.join(said)})" if said else "values differ"


def _compare_several(
    expected: Any, got: Any, exact: bool, rtol: float, atol: float, width: int = 8
) -> str | None:
    """Outputs of several values (a tuple of tensors, a dict of named outputs), item by item."""
    if isinstance(expected, dict):
        if not isinstance(got, dict) or list(got) != list(expected):
            keys = list(got) if isinstance(got, dict) else type(got).__name__
            return f"outputs {keys}, expected {list(expected)}"
        pairs = [(repr(k), expected[k], got[k]) for k in expected]
    else:
        if not isinstance(got, (list, tuple)):
            return f"one {type(got).__name__}, expected {len(expected)} outputs"
        if len(got) != len(expected):
            return f"{len(got)} outputs, expected {len(expected)}"
        pairs = [(str(i), e, g) for i, (e, g) in enumerate(zip(expected, got, strict=True))]
    for label, e, g in pairs:
        problem = _compare(e, g, exact, rtol, atol, width)
        if problem:
            return f"output {label}: {problem}"
    return None


def _tolerance(probe: dict[str, Any]) -> tuple[float, float]:
    tol = probe.get("tolerance")
    if not isinstance(tol, dict):
        return RTOL, ATOL
    try:
        rtol, atol = float(tol.get("rtol", RTOL)), float(tol.get("atol", ATOL))
    except (TypeError, ValueError):
        raise FormatError(f"malformed probe tolerance {tol!r}") from None
    if not (0 <= rtol <= 0.1 and 0 <= atol <= 0.1):
        raise FormatError(f"probe tolerance {tol!r} is out of range (at most 0.1)")
    return rtol, atol


def check(
    model: Any,
    probe: dict[str, Any],
    reader: ArtifactReader,
    *,
    exact: bool,
    methods: dict[str, Callable[[Any], Any]] | None = None,
) -> ProbeReport:
    """Re-run the stored probe on ``model``; compare with the recorded outputs.

    ``exact`` is what the caller asks for (True in the saving environment); a probe recorded
    with ``"exact": false`` is compared within its stored tolerance regardless.
    """
    if not (
        isinstance(probe, dict)
        and isinstance(probe.get("input"), dict)
        and isinstance(probe.get("outputs"), dict)
    ):
        raise FormatError("malformed manifest: the probe is not an input and a table of outputs")
    decoded = _decode(probe["input"], reader)
    exact = exact and probe.get("exact", True) is not False
    rtol, atol = _tolerance(probe)
    report = ProbeReport(exact=exact, rtol=rtol, atol=atol)
    width = _sample_width(decoded)
    chosen = _default_methods(model) if methods is None else methods
    for method, spec in probe["outputs"].items():
        fn: Callable[[Any], Any] | None = chosen.get(method)
        if not callable(fn):
            report.mismatched[method] = "the reloaded model has no such method"
            continue
        sample = copy.deepcopy(decoded)  # fresh: a model may change its input in place
        try:
            got = fn(sample)
        except Exception as exc:
            report.mismatched[method] = f"raised {type(exc).__name__}: {exc}"[:500]
            continue
        expected = _decode(spec, reader)
        try:
            problem = _compare(expected, got, exact, rtol, atol, width)
        except AmberError:
            raise
        except Exception as exc:  # outputs of kinds that cannot be set side by side
            why = f"{type(exc).__name__}: {exc}"[:400]
            problem = f"cannot be compared with the stored output ({why})"
        if problem:
            report.mismatched[method] = problem
        else:
            report.matched.append(method)
        if not exact:
            report.widths |= _float_widths(expected) | _float_widths(got)
    if not exact and width < 8 and report.widths:
        report.widths.add(width)  # a narrower sample loosens the floor too
    return report
