"""Records: requests for a model that takes a list of dicts (``DictVectorizer``,
``FeatureHasher``), from a ``records`` signature (see docs/FORMAT.md).

Each row is a JSON object of strings, numbers, booleans and nulls. A key the sample held is
checked against the types it held there: a number where the sample had strings (or the reverse)
would silently become another feature (``DictVectorizer`` one-hot encodes strings as
``"key=value"`` and ignores features it has not seen), so it is refused. Keys the sample did not
hold are passed through: a sample rarely shows every feature a model knows.

Forms: MLflow's ``dataframe_records``, ``instances`` and ``inputs`` (a list of objects) and
``dataframe_split`` (a null cell is a key the row does not have); the Open Inference Protocol as
one ``BYTES`` tensor whose strings are JSON objects; CSV with a header of keys (an empty cell is
a key the row does not have; a cell under a key of numbers is read as a number, and ``true`` or
``false`` under a key of booleans as one).
"""

from __future__ import annotations

import json
import math
from typing import Any

from amber.artifact._manifest import JSON_INT_RANGE, is_utf8
from amber.serving._errors import describe_value
from amber.serving._tensor import bad, csv_rows, mlflow_form, tensor_fields

__all__ = ["RecordsSchema"]

INPUT_NAME = "records"
_NUMBERS = frozenset({"int", "float"})
_JSON_TYPE = {"str": "string", "int": "number", "float": "number", "bool": "boolean"}


def _kind(value: Any) -> str | None:
    """A request value's type as a signature names it; None for what a record cannot hold
    (containers, infinities, integers beyond 64 bits, text with a lone surrogate)."""
    if value is None:
        return "NoneType"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if JSON_INT_RANGE[0] <= value <= JSON_INT_RANGE[1] else None
    if isinstance(value, float):
        return "float" if math.isfinite(value) else None
    if isinstance(value, str):
        return "str" if is_utf8(value) else None
    return None


class RecordsSchema:
    """Rows of str-keyed JSON objects; ``keys`` maps the sample's keys to the types they held."""

    kind = "records"

    def __init__(self, keys: dict[str, list[str]]) -> None:
        self.keys = {str(k): frozenset(map(str, t)) for k, t in keys.items()}

    # -- checking --------------------------------------------------------------------------
    def _accepts(self, key: str, kind: str) -> bool:
        held = self.keys.get(key)
        if held is None:
            return kind != "NoneType"
        if kind in held:
            return True
        return kind in _NUMBERS and bool(held & _NUMBERS)  # 3 where the sample had 3.5

    def _row(self, row: Any, field: str) -> dict[str, Any]:
        if not isinstance(row, dict):
            raise bad(field, "an object of keys and values", describe_value(row))
        for key, value in row.items():
            if not is_utf8(key):
                raise bad(field, "keys of valid Unicode text", "a key with a lone surrogate")
            kind = _kind(value)
            if kind is None:
                raise bad(
                    f"{field}.{key}",
                    "a string of valid Unicode, a finite number within 64 bits, a boolean or null",
                    describe_value(value),
                )
            if not self._accepts(key, kind):
                held = self.keys.get(key)
                expected = (
                    "/".join(sorted(_JSON_TYPE.get(t, "null") for t in held))
                    if held
                    else "a string, a number or a boolean"
                )
                raise bad(
                    f"{field}.{key}",
                    expected,
                    describe_value(value),
                    f"{field}.{key}: expected {expected} (what the model's sample held there), "
                    f"got {describe_value(value)}; another type would be another feature",
                )
        return row

    def _rows(self, rows: Any, field: str) -> list[dict[str, Any]]:
        if not isinstance(rows, list) or not rows:
            raise bad(field, "a non-empty array of objects", describe_value(rows))
        return [self._row(row, f"{field}[{i}]") for i, row in enumerate(rows)]

    # -- request forms ---------------------------------------------------------------------
    def from_oip(self, inputs: Any) -> list[dict[str, Any]]:
        if not isinstance(inputs, list) or len(inputs) != 1:
            got = f"{len(inputs)} tensors" if isinstance(inputs, list) else describe_value(inputs)
            raise bad("inputs", "an array of exactly 1 tensor", got)
        name, shape, datatype, data = tensor_fields(inputs[0], 0)
        if name != INPUT_NAME:
            raise bad("inputs[0].name", repr(INPUT_NAME), describe_value(name))
        if datatype != "BYTES" or len(shape) != 1:
            raise bad(
                "inputs[0]",
                "a BYTES tensor of shape [n], one JSON object per string",
                f"{describe_value(datatype)} of shape {shape}",
            )
        if not isinstance(data, list) or len(data) != shape[0]:
            got = f"{len(data)} values" if isinstance(data, list) else describe_value(data)
            raise bad("inputs[0].data", f"{shape[0]} strings for shape {shape}", got)
        rows = []
        for i, text in enumerate(data):
            if not isinstance(text, str):
                raise bad(
                    f"inputs[0].data[{i}]", "a string holding a JSON object", describe_value(text)
                )
            try:
                rows.append(json.loads(text))
            except (ValueError, RecursionError):
                raise bad(
                    f"inputs[0].data[{i}]", "a string holding a JSON object", describe_value(text)
                ) from None
        return self._rows(rows, "inputs[0].data")

    def from_mlflow(self, payload: Any) -> list[dict[str, Any]]:
        key, value = mlflow_form(payload)
        if key != "dataframe_split":
            return self._rows(value, key)
        if not isinstance(value, dict) or not isinstance(value.get("columns"), list):
            raise bad(key, "an object with columns and data", describe_value(value))
        columns, data = value["columns"], value.get("data")
        if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
            raise bad(f"{key}.columns", "distinct string keys", describe_value(columns))
        if not isinstance(data, list) or not data:
            raise bad(f"{key}.data", "a non-empty array of rows", describe_value(data))
        rows = []
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(columns):
                got = f"{len(row)} values" if isinstance(row, list) else describe_value(row)
                raise bad(f"{key}.data[{i}]", f"{len(columns)} values (one per column)", got)
            rows.append({c: v for c, v in zip(columns, row, strict=True) if v is not None})
        return self._rows(rows, f"{key}.data")

    def from_csv(self, text: str) -> list[dict[str, Any]]:
        table = csv_rows(text)
        header, body = table[0], table[1:]
        if len(set(header)) != len(header) or not all(header):
            raise bad("(header)", "distinct, non-empty keys", ", ".join(header)[:200])
        if not body:
            raise bad("(body)", "a header and at least one row", "a header alone")
        rows = []
        for i, cells in enumerate(body):
            if len(cells) != len(header):
                raise bad(f"row {i + 1}", f"{len(header)} values", f"{len(cells)} values")
            row: dict[str, Any] = {}
            for key, cell in zip(header, cells, strict=True):
                if cell == "":
                    continue  # a key this row does not have
                held = self.keys.get(key)
                if held is not None and held <= {"str", "NoneType"}:
                    row[key] = cell
                    continue
                if held is not None and "bool" in held and cell.lower() in ("true", "false"):
                    row[key] = cell.lower() == "true"
                    continue
                try:
                    row[key] = int(cell)
                except ValueError:
                    try:
                        row[key] = float(cell)
                    except ValueError:
                        if held is not None and held & _NUMBERS:
                            raise bad(
                                f"row {i + 1}.{key}", "a number", describe_value(cell)
                            ) from None
                        row[key] = cell
            rows.append(row)
        return self._rows(rows, "(rows)")

    # -- batching ----------------------------------------------------------------------------
    def rows(self, part: Any) -> int:
        return len(part)

    def concat(self, parts: list[Any]) -> list[dict[str, Any]]:
        return parts[0] if len(parts) == 1 else [row for p in parts for row in p]

    def prepare(self, part: Any) -> Any:
        return part

    # -- description ---------------------------------------------------------------------------
    def oip_metadata(self) -> list[dict[str, Any]]:
        return [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]

    def _record_schema(self) -> dict[str, Any]:
        properties = {
            key: {"type": sorted({_JSON_TYPE.get(t, "null") for t in held})}
            for key, held in self.keys.items()
        }
        return {"type": "object", "properties": properties, "additionalProperties": True}

    def json_schema_oip(self) -> dict[str, Any]:
        tensor = {
            "type": "object",
            "required": ["name", "shape", "datatype", "data"],
            "properties": {
                "name": {"type": "string", "enum": [INPUT_NAME]},
                "shape": {"type": "array", "items": {"type": "integer"}, "maxItems": 1},
                "datatype": {"type": "string", "enum": ["BYTES"]},
                "data": {
                    "type": "array",
                    "items": {"type": "string", "description": "one JSON object per row"},
                },
            },
        }
        return {"type": "array", "items": tensor, "minItems": 1, "maxItems": 1}

    def json_schema_mlflow(self) -> dict[str, Any]:
        rows = {"type": "array", "items": self._record_schema(), "minItems": 1}
        return {"dataframe_records": rows, "instances": rows, "inputs": rows}

    def examples(self, sample: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        first = sample[0] if isinstance(sample, (list, tuple)) and sample else {}
        # what a request could send: the sample may hold what JSON bodies cannot (2**64, text
        # with a lone surrogate, NaN), which the API document must not hold either
        row = {
            k: v
            for k, v in (first.items() if isinstance(first, dict) else ())
            if is_utf8(k) and _kind(v) is not None
        }
        oip = {
            "inputs": [
                {"name": INPUT_NAME, "shape": [1], "datatype": "BYTES", "data": [json.dumps(row)]}
            ]
        }
        return oip, {"dataframe_records": [row]}
