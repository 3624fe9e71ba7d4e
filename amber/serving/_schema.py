"""A model's input contract, from the artifact's signature: decode, check, and describe requests.

``schema_for(signature["inputs"])`` gives one of five schemas:

- :class:`ArraySchema` for ``ndarray`` (and ``sparse``) inputs: a dtype and the shape after the
  row dimension;
- :class:`FrameSchema` for ``dataframe`` (and ``series``) inputs: named columns with dtypes;
- :class:`TextSchema` for ``list`` inputs of strings (documents for a text pipeline);
- :class:`~amber.serving._records.RecordsSchema` for ``records`` inputs (a list of dicts, as
  DictVectorizer takes);
- :class:`MultiSchema` for several array inputs (a ``mapping`` by name or a ``sequence`` in
  order): one tensor each.

Each decodes the Open Inference Protocol's ``inputs``, MLflow's four JSON shapes and CSV into a
*part* (an array, a dict of column arrays, a list of strings), refusing anything that does not fit
with a :class:`~amber.serving._errors.RequestError`. Parts of concurrent requests are joined with
``concat`` and turned into what the model takes with ``prepare``; ``json_schema_*`` describe the
requests for OpenAPI.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from amber.serving import _tensor as T
from amber.serving._errors import RequestError, describe_value
from amber.serving._frame import FrameSchema
from amber.serving._records import RecordsSchema
from amber.serving._tensor import bad, csv_rows, mlflow_form, tensor_fields

# The one input of an array or text model, as the metadata endpoint names it. A request naming
# another input is refused: with KServe's and Triton's servers a client learns the names from
# the metadata, and a name that is not there means the client was written for another model.
INPUT_NAME = "input-0"


def check_input_name(name: str) -> None:
    if name != INPUT_NAME:
        raise bad(
            "inputs[0].name",
            repr(INPUT_NAME),
            describe_value(name),
            f"inputs[0].name: this model has one input, {INPUT_NAME!r} (see its metadata, "
            f"GET /v2/models/<name>); the request names {describe_value(name)}",
        )


__all__ = [
    "ArraySchema",
    "FrameSchema",
    "InputSchema",
    "MultiSchema",
    "RecordsSchema",
    "TextSchema",
    "schema_for",
]


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _integer_or_float(text: str) -> int | float:
    """A CSV cell (one ``float`` accepts) as an exact integer where it is written as one."""
    try:
        return int(text)
    except ValueError:
        return float(text)


class InputSchema(Protocol):
    """What every schema offers; see the module docstring."""

    kind: str

    def from_oip(self, inputs: Any) -> Any: ...

    def from_mlflow(self, payload: Any) -> Any: ...

    def from_csv(self, text: str) -> Any: ...

    def rows(self, part: Any) -> int: ...

    def concat(self, parts: list[Any]) -> Any: ...

    def prepare(self, part: Any) -> Any: ...

    def oip_metadata(self) -> list[dict[str, Any]]: ...

    def json_schema_oip(self) -> dict[str, Any]: ...

    def json_schema_mlflow(self) -> dict[str, Any]: ...

    def examples(self, sample: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """An OIP request and an MLflow request for one row of ``sample`` (or placeholders)."""
        ...


class ArraySchema:
    """A numeric (or boolean) array: ``dtype`` and the dimensions after the rows."""

    kind = "ndarray"

    def __init__(self, dtype: str, dims: list[int | None], *, sparse: str | None = None) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype.kind not in "biuf":
            raise ValueError(f"an array input of dtype {dtype} cannot be served as a tensor")
        self.dims = tuple(dims)
        self.sparse = sparse
        self.datatype = T.datatype_of(self.dtype)
        self.accepted = T.accepted_datatypes(self.dtype)
        self.shape_text = (
            "[" + ", ".join(["n", *("*" if d is None else str(d) for d in dims)]) + "]"
        )

    def _values(self, data: Any, dtype: np.dtype[Any], field: str) -> np.ndarray:
        if dtype.kind == "b":
            return T.to_bools(data, field)
        return T.to_numbers(data, dtype, field)

    def _check_shape(self, shape: tuple[int, ...], field: str) -> None:
        ok = len(shape) == 1 + len(self.dims) and all(
            d is None or d == s for d, s in zip(self.dims, shape[1:], strict=False)
        )
        if not ok:
            got = f"shape [{', '.join(map(str, shape))}]"
            raise bad(field, f"shape {self.shape_text}", got)
        if shape[0] == 0:
            raise bad(field, "at least one row", "0 rows", f"{field}: no rows to predict")

    def from_oip(self, inputs: Any) -> np.ndarray:
        if not isinstance(inputs, list) or len(inputs) != 1:
            got = f"{len(inputs)} tensors" if isinstance(inputs, list) else describe_value(inputs)
            raise bad("inputs", "an array of exactly 1 tensor", got)
        name, shape, datatype, data = tensor_fields(inputs[0], 0)
        check_input_name(name)
        return self.tensor(shape, datatype, data, "inputs[0]")

    def tensor(self, shape: list[int], datatype: str, data: Any, field: str) -> np.ndarray:
        """One OIP tensor's fields (checked by ``tensor_fields``) as this input's array."""
        if datatype not in self.accepted:
            raise bad(
                f"{field}.datatype",
                f"one of {', '.join(self.accepted)} (model input {self.dtype})",
                describe_value(datatype),
            )
        declared = T.DATATYPES[datatype] or self.dtype  # BYTES is never accepted here
        arr = self._values(data, declared, f"{field}.data")
        n = math.prod(shape)
        if arr.size != n:
            raise bad(
                f"{field}.data",
                f"{n} values for shape {shape}",
                f"{arr.size} values",
                f"{field}: shape {shape} needs {n} values, data has {arr.size}",
            )
        self._check_shape(tuple(shape), f"{field}.shape")
        if arr.dtype != self.dtype:  # e.g. INT64 sent for a uint8 input: checked, not wrapped
            arr = T.narrow(arr, self.dtype, data, f"{field}.data")
        return arr.reshape(shape)

    def _rows(self, values: Any, field: str) -> np.ndarray:
        arr = self._values(values, self.dtype, field)
        self._check_shape(arr.shape, field)
        return arr

    def from_mlflow(self, payload: Any) -> np.ndarray:
        key, value = mlflow_form(payload)
        if key in ("instances", "inputs"):
            return self._rows(value, key)
        if key == "dataframe_split":
            if not isinstance(value, dict) or "data" not in value:
                raise bad(key, "an object with columns and data", describe_value(value))
            columns = value.get("columns")
            width = self.dims[0] if len(self.dims) == 1 else None
            if columns is not None and (not isinstance(columns, list) or len(columns) != width):
                raise bad(f"{key}.columns", f"{width} columns", describe_value(columns))
            return self._rows(value["data"], f"{key}.data")
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise bad(key, "an array of records (objects)", describe_value(value))
        if value and any(list(r) != list(value[0]) for r in value):
            raise bad(key, "records with the same keys", "records with different keys")
        return self._rows([list(r.values()) for r in value], key)

    def from_csv(self, text: str) -> np.ndarray:
        if len(self.dims) != 1 or self.dims[0] is None:
            raise RequestError(415, f"CSV needs a 2-D input; this model takes {self.shape_text}")
        width = self.dims[0]
        rows = csv_rows(text)
        # a header names columns: a first row with any number in it is data, so that a bad cell
        # there is reported instead of the row being taken for a header and dropped
        start = 0 if any(_is_float(c) for c in rows[0]) else 1
        if start and len(rows[0]) != width:
            raise bad("(header)", f"{width} columns", f"{len(rows[0])} columns")
        body = rows[start:]
        if not body:
            raise bad("(body)", "at least one row", "0 rows", "the CSV body has no data rows")
        for i, row in enumerate(body):
            if len(row) != width:
                raise bad(f"row {i + 1}", f"{width} values", f"{len(row)} values")
        try:
            values = np.array(body, dtype=str).astype(np.float64)
        except ValueError:
            for i, row in enumerate(body):
                for j, cell in enumerate(row):
                    if not _is_float(cell):
                        raise bad(
                            f"row {i + 1}, column {j + 1}", "a number", describe_value(cell)
                        ) from None
            raise
        if self.dtype.kind == "f":
            with np.errstate(over="ignore"):
                out = values.astype(self.dtype)
            if self.dtype.itemsize < 8 and bool(np.isinf(out).any()):
                i, j = (int(k) for k in np.argwhere(np.isinf(out))[0])
                top = float(np.finfo(self.dtype).max)
                raise bad(
                    f"row {i + 1}, column {j + 1}",
                    f"{T.expected_kind(self.dtype)} within +-{top:.3g}",
                    describe_value(body[i][j]),
                )
            return out
        # integers from the text itself: float64 would round those past 2**53
        exact = [[_integer_or_float(cell) for cell in row] for row in body]
        return T.to_numbers(exact, self.dtype, "(body)")

    def rows(self, part: Any) -> int:
        return int(part.shape[0])

    def concat(self, parts: list[Any]) -> np.ndarray:
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def prepare(self, part: Any) -> Any:
        if self.sparse:
            import scipy.sparse as sp

            return sp.csr_matrix(part).asformat(self.sparse)
        return part

    def oip_metadata(self) -> list[dict[str, Any]]:
        shape = [-1, *(-1 if d is None else d for d in self.dims)]
        return [{"name": INPUT_NAME, "datatype": self.datatype, "shape": shape}]

    def _leaf(self) -> dict[str, Any]:
        if self.dtype.kind == "b":
            return {"type": "boolean"}
        return {"type": "integer"} if self.dtype.kind in "iu" else {"type": "number"}

    def _nested(self) -> dict[str, Any]:
        schema = self._leaf()
        for _ in self.dims:
            schema = {"type": "array", "items": schema}
        return {"type": "array", "items": schema, "minItems": 1}

    def json_schema_oip(self) -> dict[str, Any]:
        ndim = 1 + len(self.dims)
        tensor = {
            "type": "object",
            "required": ["name", "shape", "datatype", "data"],
            "properties": {
                "name": {"type": "string", "example": INPUT_NAME},
                "shape": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                    "minItems": ndim,
                    "maxItems": ndim,
                },
                "datatype": {"type": "string", "enum": list(self.accepted)},
                "data": {"type": "array", "items": {"anyOf": [self._leaf(), self._nested()]}},
                "parameters": {"type": "object"},
            },
        }
        return {"type": "array", "items": tensor, "minItems": 1, "maxItems": 1}

    def json_schema_mlflow(self) -> dict[str, Any]:
        rows = self._nested()
        return {
            "instances": rows,
            "inputs": rows,
            "dataframe_split": {
                "type": "object",
                "required": ["data"],
                "properties": {"columns": {"type": "array"}, "data": rows},
            },
            "dataframe_records": {"type": "array", "items": {"type": "object"}, "minItems": 1},
        }

    def examples(self, sample: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        if sample is not None and hasattr(sample, "toarray"):
            sample = sample.toarray()
        if isinstance(sample, np.ndarray) and sample.ndim >= 1 and len(sample):
            row = np.asarray(sample[:1], dtype=self.dtype)
        else:
            row = np.zeros([1, *(1 if d is None else d for d in self.dims)], dtype=self.dtype)
        oip = {
            "inputs": [
                {
                    "name": INPUT_NAME,
                    "shape": list(row.shape),
                    "datatype": self.datatype,
                    "data": row.ravel().tolist(),
                }
            ]
        }
        return oip, {"instances": row.tolist()}


class TextSchema:
    """A list of strings: one document per row."""

    kind = "list"

    def from_oip(self, inputs: Any) -> list[str]:
        if not isinstance(inputs, list) or len(inputs) != 1:
            got = f"{len(inputs)} tensors" if isinstance(inputs, list) else describe_value(inputs)
            raise bad("inputs", "an array of exactly 1 tensor", got)
        name, shape, datatype, data = tensor_fields(inputs[0], 0)
        check_input_name(name)
        if datatype != "BYTES":
            raise bad("inputs[0].datatype", "BYTES (strings)", describe_value(datatype))
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise bad("inputs[0].shape", "shape [n] or [n, 1]", describe_value(shape))
        docs = T.to_strings(data, "inputs[0].data")
        if len(docs) != shape[0]:
            raise bad(
                "inputs[0].data", f"{shape[0]} strings for shape {shape}", f"{len(docs)} values"
            )
        return self._nonempty(docs, "inputs[0].data")

    @staticmethod
    def _nonempty(docs: list[str], field: str) -> list[str]:
        if not docs:
            raise bad(field, "at least one string", "0 rows", f"{field}: no rows to predict")
        return docs

    def from_mlflow(self, payload: Any) -> list[str]:
        key, value = mlflow_form(payload)
        if key == "dataframe_split":
            if not isinstance(value, dict) or not isinstance(value.get("data"), list):
                raise bad(key, "an object with data", describe_value(value))
            return self._nonempty(T.to_strings(value["data"], f"{key}.data"), f"{key}.data")
        if key == "dataframe_records":
            if not isinstance(value, list) or not all(
                isinstance(r, dict) and len(r) == 1 for r in value
            ):
                raise bad(key, "records with one string field", describe_value(value))
            docs = [next(iter(r.values())) for r in value]
            return self._nonempty(T.to_strings(docs, key), key)
        return self._nonempty(T.to_strings(value, key), key)

    def from_csv(self, text: str) -> list[str]:
        rows = csv_rows(text)
        for i, row in enumerate(rows):
            if len(row) != 1:
                raise bad(f"row {i + 1}", "1 value (one document per row)", f"{len(row)} values")
        return [r[0] for r in rows]

    def rows(self, part: Any) -> int:
        return len(part)

    def prepare(self, part: Any) -> Any:
        return part

    def concat(self, parts: list[Any]) -> list[str]:
        return parts[0] if len(parts) == 1 else [d for p in parts for d in p]

    def oip_metadata(self) -> list[dict[str, Any]]:
        return [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]

    def json_schema_oip(self) -> dict[str, Any]:
        tensor = {
            "type": "object",
            "required": ["name", "shape", "datatype", "data"],
            "properties": {
                "name": {"type": "string"},
                "shape": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                    "minItems": 1,
                    "maxItems": 2,
                },
                "datatype": {"type": "string", "enum": ["BYTES"]},
                "data": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            },
        }
        return {"type": "array", "items": tensor, "minItems": 1, "maxItems": 1}

    def json_schema_mlflow(self) -> dict[str, Any]:
        docs = {"type": "array", "items": {"type": "string"}, "minItems": 1}
        return {"instances": docs, "inputs": docs}

    def examples(self, sample: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        doc = str(sample[0]) if isinstance(sample, list) and sample else "some text"
        oip = {"inputs": [{"name": INPUT_NAME, "shape": [1], "datatype": "BYTES", "data": [doc]}]}
        return oip, {"instances": [doc]}


class MultiSchema:
    """Several named arrays: a model of several inputs (a dict of them, or a list or tuple in
    order, named ``input-0``, ``input-1``, ... over HTTP). A request sends every input, each
    with the same number of rows."""

    kind = "multi"
    csv = False  # one CSV table cannot carry several inputs (a 415)

    def __init__(self, parts: dict[str, ArraySchema], *, keyed: bool) -> None:
        self.parts = parts
        self.keyed = keyed  # the model takes a dict by these names, else a list in this order

    def _joined(self, arrays: dict[str, np.ndarray], field: str) -> Any:
        rows = {name: int(a.shape[0]) for name, a in arrays.items()}
        if len(set(rows.values())) != 1:
            raise bad(field, "the same number of rows in every input", str(rows))
        # a tuple: what a model of several positional inputs takes (torch reads a list as one)
        return arrays if self.keyed else tuple(arrays[name] for name in self.parts)

    def from_oip(self, inputs: Any) -> Any:
        n = len(self.parts)
        if not isinstance(inputs, list) or len(inputs) != n:
            got = f"{len(inputs)} tensors" if isinstance(inputs, list) else describe_value(inputs)
            raise bad("inputs", f"an array of {n} tensors ({', '.join(self.parts)})", got)
        arrays: dict[str, np.ndarray] = {}
        for i, t in enumerate(inputs):
            name, shape, datatype, data = tensor_fields(t, i)
            if name not in self.parts or name in arrays:
                raise bad(
                    f"inputs[{i}].name",
                    f"one of {', '.join(map(repr, self.parts))}, each once",
                    describe_value(name),
                )
            arrays[name] = self.parts[name].tensor(shape, datatype, data, f"inputs[{i}]")
        return self._joined(arrays, "inputs")

    def from_mlflow(self, payload: Any) -> Any:
        key, value = mlflow_form(payload)
        if key != "inputs" or not isinstance(value, dict) or sorted(value) != sorted(self.parts):
            raise bad(
                key,
                f"'inputs': an object of {', '.join(map(repr, self.parts))} (each a list of rows)",
                describe_value(value),
            )
        arrays = {
            name: part._rows(value[name], f"inputs.{name}") for name, part in self.parts.items()
        }
        return self._joined(arrays, "inputs")

    def from_csv(self, text: str) -> Any:
        raise RequestError(
            415, f"CSV carries one table; this model takes {len(self.parts)} inputs: send JSON"
        )

    def rows(self, part: Any) -> int:
        first = next(iter(part.values())) if isinstance(part, dict) else part[0]
        return int(first.shape[0])

    def concat(self, parts: list[Any]) -> Any:
        if len(parts) == 1:
            return parts[0]
        if self.keyed:
            return {k: np.concatenate([p[k] for p in parts]) for k in self.parts}
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(self.parts)))

    def prepare(self, part: Any) -> Any:
        return part

    def oip_metadata(self) -> list[dict[str, Any]]:
        out = []
        for name, part in self.parts.items():
            (meta,) = part.oip_metadata()
            out.append({**meta, "name": name})
        return out

    def json_schema_oip(self) -> dict[str, Any]:
        tensors = []
        for name, part in self.parts.items():
            tensor = part.json_schema_oip()["items"]
            tensor["properties"] = {
                **tensor["properties"],
                "name": {"type": "string", "enum": [name]},
            }
            tensors.append(tensor)
        n = len(tensors)
        return {"type": "array", "items": {"anyOf": tensors}, "minItems": n, "maxItems": n}

    def json_schema_mlflow(self) -> dict[str, Any]:
        props = {name: part._nested() for name, part in self.parts.items()}
        return {"inputs": {"type": "object", "required": list(props), "properties": props}}

    def examples(self, sample: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        items = (
            sample
            if isinstance(sample, dict)
            else dict(zip(self.parts, sample or [], strict=False))
        )
        tensors, rows = [], {}
        for name, part in self.parts.items():
            ((tensor,),) = [part.examples(items.get(name))[0]["inputs"]]
            tensors.append({**tensor, "name": name})
            rows[name] = part.examples(items.get(name))[1]["instances"]
        return {"inputs": tensors}, {"inputs": rows}


def schema_for(inputs: dict[str, Any], *, several: bool = True) -> InputSchema:
    """The schema for a signature's ``inputs`` description (see docs/FORMAT.md).

    ``several``: whether a ``sequence`` of arrays is a model's several inputs (a tuple for
    torch, a list for Keras), rather than a list of rows, which is not served."""
    kind = inputs.get("kind")
    if kind == "ndarray":
        shape = list(inputs.get("shape") or [None])
        return ArraySchema(str(inputs["dtype"]), shape[1:])
    if kind == "sparse":
        shape = list(inputs.get("shape") or [None])
        return ArraySchema(str(inputs["dtype"]), shape[1:], sparse=str(inputs.get("format", "csr")))
    if kind == "dataframe":
        return FrameSchema(
            [(str(c["name"]), str(c["dtype"])) for c in inputs["columns"]],
            categories={
                str(c["name"]): str(c["categories"]) for c in inputs["columns"] if "categories" in c
            },
            values={str(c["name"]): str(c["values"]) for c in inputs["columns"] if "values" in c},
            missing={
                str(c["name"]): str(c["missing"]) for c in inputs["columns"] if "missing" in c
            },
            labels={
                str(c["name"]): c["label"]
                for c in inputs["columns"]
                if type(c.get("label")) in (int, bool, float)
            },
        )
    if kind == "series":
        return FrameSchema([(str(inputs.get("name")), str(inputs["dtype"]))], series=True)
    if kind == "list" and set(inputs.get("item_types", [])) <= {"str"}:
        return TextSchema()
    if kind == "records" and isinstance(inputs.get("keys"), dict):
        return RecordsSchema(inputs["keys"])
    items = inputs.get("items")
    if (kind == "mapping" or (kind == "sequence" and several)) and items:
        named = items if kind == "mapping" else {f"input-{k}": d for k, d in enumerate(items)}
        if isinstance(named, dict) and all(
            isinstance(d, dict) and d.get("kind") == "ndarray" for d in named.values()
        ):
            parts = {
                str(name): ArraySchema(str(d["dtype"]), list(d.get("shape") or [None])[1:])
                for name, d in named.items()
            }
            return MultiSchema(parts, keyed=kind == "mapping")
    raise ValueError(f"an input of kind {kind!r} ({inputs}) cannot be served over HTTP")
