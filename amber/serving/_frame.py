"""The schema of a DataFrame input: named columns, each with a dtype.

Requests are decoded column by column into numpy arrays (numbers, booleans, strings, dates), so
that concurrent requests can be joined per column and the DataFrame is built once per batch.
Column names must match exactly (none missing, none unexpected); the error names both lists.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from amber.serving import _tensor as T
from amber.serving._errors import RequestError, describe_value
from amber.serving._tensor import csv_rows, mlflow_form, tensor_fields

__all__ = ["FrameSchema"]

_STRINGS = ("object", "str", "string", "string[python]", "string[pyarrow]", "category")


def _bad(field: str, expected: str, got: str, message: str | None = None) -> RequestError:
    return RequestError(
        400,
        message or f"{field}: expected {expected}, got {got}",
        field=field,
        expected=expected,
        got=got,
    )


def _per_row(column: _Column, values: list[Any], where: str) -> np.ndarray:
    """``column.convert`` with errors naming the row: ``where`` holds ``{i}`` for its index
    (replaced literally: a column name may hold braces)."""
    probe = "\x00"
    try:
        return column.convert(values, probe)
    except RequestError as exc:
        field = exc.field or probe
        if field.startswith(probe + "[") and "]" in field:
            index, _, rest = field[2:].partition("]")
            renamed = where.replace("{i}", index) + rest
        else:
            renamed = where.replace("{i}", "*") + field[1:]
        if exc.expected:  # "like <probe>[0]": the row it names, in the request's terms
            exc.expected = re.sub(
                r"\x00\[(\d+)\]", lambda m: where.replace("{i}", m.group(1)), exc.expected
            ).replace(probe, where.replace("{i}", "*"))
        exc.restate(renamed)
        raise


class _Column:
    """One column: its name, pandas dtype, and how JSON values become an array."""

    def __init__(
        self,
        name: str,
        dtype: str,
        categories: str | None = None,
        values: str | None = None,
        missing: str | None = None,
    ) -> None:
        self.name = name
        self.dtype = dtype
        # what a null becomes in an object column: what the sample's missing values were (an
        # encoder fitted on None takes NaN for an unknown category); None when it held none
        self.missing: Any = math.nan if missing == "nan" and dtype == "object" else None
        # whether the sample showed missing values (an empty CSV cell is then one)
        self.held_missing = missing in ("none", "nan")
        self.numpy: np.dtype[Any] | None = None
        # a category column's categories as fitted (from the artifact's sample), in order
        self.trained: Any = None
        self.nullable = False
        # a category column's values keep their type: 3 is not the category "3"
        self.categories = categories
        if dtype == "object" and values is not None:
            # an object column of numbers (or of several kinds): values kept as sent, checked
            # to be numbers where the sample held only numbers
            self.kind = "category"
            self.categories = _OBJECT_VALUES.get(values)
            self.numpy = _numpy_dtype(self.categories) if self.categories else None
        elif (
            dtype == "category"
            and categories is not None
            and categories not in _STRINGS
            and _numpy_dtype(categories) is not None
        ):
            self.kind = "category"
            self.numpy = _numpy_dtype(categories)
        elif dtype in _STRINGS:  # a category column saved without its categories' type: strings
            self.kind = "string"
        elif dtype.startswith("datetime64"):
            self.kind = "datetime"
        elif dtype in _NULLABLE:
            self.kind = "bool" if dtype == "boolean" else "number"
            self.nullable = True
            self.numpy = np.dtype(bool) if dtype == "boolean" else np.dtype(dtype.lower())
        else:
            try:
                self.numpy = np.dtype(dtype)
            except TypeError:
                self.kind = "any"
            else:
                self.kind = {"b": "bool", "i": "number", "u": "number", "f": "number"}.get(
                    self.numpy.kind, "any"
                )

    @property
    def boolean_category(self) -> bool:
        """A category column whose categories are True and False."""
        return self.kind == "category" and self.numpy is not None and self.numpy.kind == "b"

    @property
    def expected(self) -> str:
        return {
            "category": (
                "strings"
                if self.categories in _STRINGS
                else f"category values ({self.categories})"
                if self.categories
                else "category values (strings or numbers)"
            ),
            "string": "strings",
            "datetime": "ISO 8601 date-time strings",
            "bool": "booleans",
            "number": f"{'integers' if self.numpy and self.numpy.kind in 'iu' else 'numbers'}"
            f" ({self.dtype})",
            "any": "values",
        }[self.kind]

    def accepted(self) -> tuple[str, ...]:
        if self.kind == "category":
            if self.numpy is not None:
                return ("BOOL",) if self.numpy.kind == "b" else T.accepted_datatypes(self.numpy)
            return ("BYTES",) if self.categories in _STRINGS else tuple(T.DATATYPES)
        if self.kind == "number":
            return T.accepted_datatypes(self.numpy)
        if self.kind == "bool":
            return ("BOOL",)
        if self.kind == "any":
            return tuple(T.DATATYPES)
        return ("BYTES",)

    def convert(self, values: Any, field: str) -> np.ndarray:
        if not isinstance(values, list):
            raise _bad(field, f"an array of {self.expected}", describe_value(values))
        if self.numpy is not None and (
            (self.nullable and self.numpy.kind in "biu")
            or (self.kind == "category" and None in values)  # a missing category
        ):
            arr = self._with_nulls(values, field)  # Int64, boolean: null is <NA>
        elif self.boolean_category:
            arr = T.to_bools(values, field)
        elif self.kind in ("number", "category") and self.numpy is not None:
            floats = self.numpy.kind == "f"
            arr = T.to_numbers(values, self.numpy, field, allow_null=floats or self.nullable)
        elif self.kind == "bool":
            arr = T.to_bools(values, field)
        elif self.kind == "string" or (self.kind == "category" and self.categories in _STRINGS):
            if None in values:  # a missing category or string
                T.to_strings(["" if v is None else v for v in values], field)
                arr = np.array(values, dtype=object)
            else:
                arr = np.array(T.to_strings(values, field), dtype=object)
        elif self.kind == "datetime":
            if None in values:  # strings or null (a missing date): a number is no date
                T.to_strings(["" if v is None else v for v in values], field)
                arr = self._dates(values, field)
            else:
                arr = self._dates(T.to_strings(values, field), field)
        else:
            for i, v in enumerate(values):
                if isinstance(v, (list, dict)):
                    raise _bad(f"{field}[{i}]", "a single value", describe_value(v))
            arr = np.array(values, dtype=object)
        if arr.ndim != 1:
            raise _bad(
                field, f"a single value per row ({self.expected})", f"shape {list(arr.shape)}"
            )
        if self.missing is not None and arr.dtype == object:
            arr[[i for i, v in enumerate(arr.tolist()) if v is None]] = self.missing
        return arr

    def _with_nulls(self, values: list[Any], field: str) -> np.ndarray:
        """A nullable integer or boolean column: checked values, and None where null came."""
        assert self.numpy is not None
        boolean = self.numpy.kind == "b"
        # nulls stand in as a value that fits, so that an error names the right index
        filled = [(False if boolean else 0) if v is None else v for v in values]
        checked = T.to_bools(filled, field) if boolean else T.to_numbers(filled, self.numpy, field)
        out = np.array(checked.tolist(), dtype=object)
        out[[i for i, v in enumerate(values) if v is None]] = None
        return out

    def _dates(
        self, texts: list[Any], field: str, where: Callable[[int], str] | None = None
    ) -> np.ndarray:
        """ISO 8601 dates, parsed while the request is checked (a bad one is a 400 naming its
        row, not a model failure); one with an offset is converted to UTC and the offset
        dropped, as the column holds naive date-times."""
        import pandas as pd

        series = pd.Series(texts, dtype=object)
        # null, "" and "NaT" are a missing date; anything else must parse
        missing = series.isna().to_numpy() | series.isin(["", "NaT", "nat"]).to_numpy()
        parsed = pd.to_datetime(
            series.where(~missing, None), format="ISO8601", utc=True, errors="coerce"
        )
        # pandas reads "now" and "today" as the time of the request: not a date the client sent
        relative = series.map(lambda v: isinstance(v, str) and v.strip().lower() in _RELATIVE)
        bad = np.flatnonzero((parsed.isna().to_numpy() & ~missing) | relative.to_numpy(bool))
        if bad.size:  # one vectorised pass found them: name the first
            i = int(bad[0])
            raise _bad(
                where(i) if where else f"{field}[{i}]",
                "an ISO 8601 date-time in range",
                describe_value(texts[i]),
            )
        return parsed.dt.tz_localize(None).to_numpy()

    def from_text(self, cells: list[str], field: str) -> np.ndarray:
        if (
            self.kind in ("number", "category")
            and self.numpy is not None
            and self.numpy.kind != "b"
        ):
            out: list[Any] = []
            for i, cell in enumerate(cells):
                text = cell.strip()
                if text == "" and self.numpy.kind == "f":
                    out.append(math.nan)
                    continue
                if text == "" and (self.nullable or self.kind == "category"):
                    out.append(None)
                    continue
                try:
                    out.append(int(text) if self.numpy.kind in "iu" else float(text))
                except ValueError:
                    raise _bad(
                        f"row {i + 1}, column {self.name!r}", self.expected, describe_value(cell)
                    ) from None
            try:
                if None in out:
                    return self._with_nulls(out, "\x00")
                return T.to_numbers(out, self.numpy, "\x00")
            except RequestError as exc:  # "\x00[3]": the cell of row 4
                index = (exc.field or "").removeprefix("\x00[").partition("]")[0]
                place = f"row {int(index) + 1}, " if index.isdigit() else ""
                exc.restate(f"{place}column {self.name!r}")
                raise
        if self.kind == "datetime":
            return self._dates(
                cells, f"column {self.name!r}", lambda i: f"row {i + 1}, column {self.name!r}"
            )
        if self.kind == "bool" or self.boolean_category:
            truth: dict[str, bool | None] = {"true": True, "1": True, "false": False, "0": False}
            if self.nullable:  # boolean: an empty cell is <NA>
                truth[""] = None
            for i, cell in enumerate(cells):
                if cell.strip().lower() not in truth:
                    raise _bad(
                        f"row {i + 1}, column {self.name!r}",
                        "true/false or 1/0",
                        describe_value(cell),
                    )
            values = [truth[c.strip().lower()] for c in cells]
            return np.array(values, dtype=object if None in values else bool)
        if self.dtype == "category" or self.held_missing:
            # an empty cell is a missing category, as pandas reads it; in a column of strings,
            # a missing value where the sample showed that the column has them
            return np.array([c if c else self.missing for c in cells], dtype=object)
        return np.array(cells, dtype=object)

    def finish(self, arr: np.ndarray) -> Any:
        """The column as pandas should hold it."""
        import pandas as pd

        if self.kind == "datetime":  # parsed (to UTC) when the request was checked
            series = pd.Series(arr)
            if "," in self.dtype:  # datetime64[us, Europe/Paris]: a zone-aware column
                series = series.dt.tz_localize("UTC")
            return series.astype(self.dtype)
        if self.dtype == "category" and self.trained is not None:
            # the fitted categories, in their order, then any new value: a request of nulls
            # only, or of one value, keeps the categories (and codes) the model was fitted on
            values = pd.Series(arr, dtype=object)
            known = set(self.trained)
            extra = [v for v in pd.unique(values.dropna()) if v not in known]
            categories = self.trained.append(pd.Index(extra)) if extra else self.trained
            return pd.Series(pd.Categorical(values, categories=categories))
        if self.kind in ("string", "category") or self.nullable:
            if self.dtype == "object":  # numbers kept as Python numbers, as the model saw them
                return pd.Series(arr.tolist(), dtype=object)
            return pd.Series(arr).astype(self.dtype)
        return arr


_RELATIVE = frozenset({"now", "today"})

_NULLABLE = frozenset(
    {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"}
    | {"Float32", "Float64", "boolean"}
)
# pandas' infer_dtype of an object column's sample -> the dtype its values are checked as
_OBJECT_VALUES = {"integer": "int64", "floating": "float64", "mixed-integer-float": "float64"}


def _numpy_dtype(name: str) -> np.dtype[Any] | None:
    """A plain numpy number or boolean dtype by name, else None (a name from the file)."""
    try:
        dtype = np.dtype(name)
    except (TypeError, ValueError):
        return None
    plain = dtype.kind in "biuf" and dtype.shape == () and dtype.itemsize <= 8
    return dtype if plain else None


class FrameSchema:
    """A DataFrame input (or a Series, ``series=True``): named columns with pandas dtypes."""

    kind = "dataframe"

    def __init__(
        self,
        columns: list[tuple[str, str]],
        *,
        series: bool = False,
        categories: dict[str, str] | None = None,
        values: dict[str, str] | None = None,
        missing: dict[str, str] | None = None,
        labels: dict[str, Any] | None = None,
    ) -> None:
        cats = categories or {}
        held = values or {}
        gaps = missing or {}
        self.columns = [_Column(n, d, cats.get(n), held.get(n), gaps.get(n)) for n, d in columns]
        self.names = [c.name for c in self.columns]
        self.series = series
        # Columns whose label was not a string (0, 1, 2 in a frame made from an array): the
        # model gets them under that label, as it was fitted, and a dataframe_split may name
        # them by it (pandas' to_dict("split") does); JSON objects can only use the text.
        self.labels = [(labels or {}).get(n, n) for n in self.names]
        self._by_label = {
            (type(v), v): n for n, v in zip(self.names, self.labels, strict=True) if v is not n
        }

    def adopt_categories(self, sample: Any) -> None:
        """Take each category column's fitted categories from the artifact's sample frame."""
        import pandas as pd

        if not isinstance(sample, pd.DataFrame):
            return
        for column, label in zip(self.columns, self.labels, strict=True):
            if column.dtype == "category" and label in sample.columns:
                dtype = sample[label].dtype
                if isinstance(dtype, pd.CategoricalDtype) and len(dtype.categories):
                    column.trained = dtype.categories

    # -- decoding ---------------------------------------------------------------------------
    def _check_names(self, got: list[Any], field: str) -> None:
        if got == self.names:
            return
        missing = [n for n in self.names if n not in got]
        unexpected = [g for g in got if g not in self.names]
        dupes = sorted({str(g) for g in got if got.count(g) > 1})
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unexpected:
            parts.append(f"unexpected {unexpected}")
        if dupes:
            parts.append(f"repeated {dupes}")
        if not parts:
            return  # same names, another order: fine
        raise _bad(
            field,
            f"the {len(self.names)} columns {self.names}",
            f"{len(got)} columns {got}",
            f"{field}: wrong columns ({'; '.join(parts)}); expected the {len(self.names)} "
            f"columns {self.names}",
        )

    def _from_columns(self, data: dict[str, np.ndarray], field: str) -> dict[str, np.ndarray]:
        lengths = {name: len(arr) for name, arr in data.items()}
        first = self.names[0]
        for name, n in lengths.items():
            if n != lengths[first]:
                raise _bad(
                    f"{field}: column {name!r}",
                    f"{lengths[first]} rows (like {first!r})",
                    f"{n} rows",
                    f"ragged columns: {name!r} has {n} rows, {first!r} has {lengths[first]}",
                )
        if lengths[first] == 0:
            raise _bad(field, "at least one row", "0 rows", f"{field}: no rows to predict")
        return {c.name: data[c.name] for c in self.columns}

    def _records(self, records: Any, field: str) -> dict[str, np.ndarray]:
        if not isinstance(records, list) or not records:
            raise _bad(field, "a non-empty array of records (objects)", describe_value(records))
        for i, r in enumerate(records):
            if not isinstance(r, dict):
                raise _bad(f"{field}[{i}]", "a record (object)", describe_value(r))
            if len(r) != len(self.names) or any(n not in r for n in self.names):
                self._check_names(list(r), f"{field}[{i}]")
        return self._from_columns(
            {
                c.name: _per_row(c, [r[c.name] for r in records], f"{field}[{{i}}]." + c.name)
                for c in self.columns
            },
            field,
        )

    def from_oip(self, inputs: Any) -> dict[str, np.ndarray]:
        if not isinstance(inputs, list) or not inputs:
            raise _bad(
                "inputs",
                f"an array of {len(self.names)} tensors, one per column",
                describe_value(inputs),
            )
        tensors = [tensor_fields(t, i) for i, t in enumerate(inputs)]
        self._check_names([t[0] for t in tensors], "inputs")
        by_name = {c.name: c for c in self.columns}
        data = {}
        for i, (name, shape, datatype, values) in enumerate(tensors):
            col = by_name[name]
            if datatype not in col.accepted():
                raise _bad(
                    f"inputs[{i}].datatype",
                    f"one of {', '.join(col.accepted())} for column {name!r} ({col.dtype})",
                    describe_value(datatype),
                )
            if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                raise _bad(
                    f"inputs[{i}].shape", "[n] or [n, 1] (one value per row)", describe_value(shape)
                )
            flat = values
            if isinstance(values, list) and values and all(isinstance(v, list) for v in values):
                flat = [v[0] if len(v) == 1 else v for v in values]
            arr = col.convert(flat, f"inputs[{i}].data")
            if len(arr) != shape[0]:
                raise _bad(
                    f"inputs[{i}].data",
                    f"{shape[0]} values for shape {shape}",
                    f"{len(arr)} values",
                )
            data[name] = arr
        return self._from_columns(data, "inputs")

    def from_mlflow(self, payload: Any) -> dict[str, np.ndarray]:
        key, value = mlflow_form(payload)
        if key == "dataframe_split":
            if not isinstance(value, dict) or "columns" not in value or "data" not in value:
                raise _bad(key, "an object with columns and data", describe_value(value))
            columns, rows = value["columns"], value["data"]
            if not isinstance(columns, list):
                raise _bad(f"{key}.columns", "an array of column names", describe_value(columns))
            if self._by_label:
                columns = [
                    c if type(c) is str else self._by_label.get((type(c), c), c) for c in columns
                ]
            self._check_names(columns, f"{key}.columns")
            if not isinstance(rows, list) or not rows:
                raise _bad(f"{key}.data", "a non-empty array of rows", describe_value(rows))
            for i, row in enumerate(rows):
                if not isinstance(row, list) or len(row) != len(columns):
                    got = f"{len(row)} values" if isinstance(row, list) else describe_value(row)
                    raise _bad(
                        f"{key}.data[{i}]",
                        f"{len(columns)} values (one per column)",
                        got,
                        f"ragged rows: {key}.data[{i}] has {got}, expected {len(columns)}",
                    )
            by_name = {c.name: c for c in self.columns}
            cols = [list(c) for c in zip(*rows, strict=True)]
            return self._from_columns(
                {
                    n: _per_row(by_name[n], v, f"{key}.data[{{i}}][{j}] ({n!r})")
                    for j, (n, v) in enumerate(zip(columns, cols, strict=True))
                },
                key,
            )
        if key == "dataframe_records" or isinstance(value, list):
            return self._records(value, key)
        if not isinstance(value, dict):
            raise _bad(key, "records, or an object of columns", describe_value(value))
        self._check_names(list(value), key)
        return self._from_columns(
            {c.name: c.convert(value[c.name], f"{key}.{c.name}") for c in self.columns}, key
        )

    def from_csv(self, text: str) -> dict[str, np.ndarray]:
        rows = csv_rows(text)
        header, body = rows[0], rows[1:]
        self._check_names(header, "(header)")
        if not body:
            raise _bad("(body)", "at least one row", "0 rows", "the CSV body has no data rows")
        for i, row in enumerate(body):
            if len(row) != len(header):
                raise _bad(f"row {i + 1}", f"{len(header)} values", f"{len(row)} values")
        by_name = {c.name: c for c in self.columns}
        cols = [list(c) for c in zip(*body, strict=True)]
        return self._from_columns(
            {n: by_name[n].from_text(v, n) for n, v in zip(header, cols, strict=True)}, "(body)"
        )

    # -- batching and the model's input -----------------------------------------------------
    def rows(self, part: Any) -> int:
        return len(part[self.names[0]])

    def concat(self, parts: list[Any]) -> dict[str, np.ndarray]:
        if len(parts) == 1:
            return dict(parts[0])
        return {n: np.concatenate([p[n] for p in parts]) for n in self.names}

    def prepare(self, part: Any) -> Any:
        import pandas as pd

        frame = pd.DataFrame({c.name: c.finish(part[c.name]) for c in self.columns})
        if self._by_label:
            frame.columns = self.labels
        return frame.iloc[:, 0] if self.series else frame

    # -- description ------------------------------------------------------------------------
    def oip_metadata(self) -> list[dict[str, Any]]:
        return [
            {
                "name": c.name,
                "datatype": T.datatype_of(c.numpy)
                if c.kind in ("number", "category") and c.numpy is not None
                else "BYTES"
                if c.kind == "number"
                else c.accepted()[0],
                "shape": [-1],
            }
            for c in self.columns
        ]

    def _json_type(self, col: _Column) -> dict[str, Any]:
        if col.boolean_category:
            return {"type": "boolean"}
        if col.kind == "number" or (col.kind == "category" and col.numpy is not None):
            kind = "integer" if col.numpy is not None and col.numpy.kind in "iu" else "number"
            return {"type": [kind, "null"]} if col.nullable or kind == "number" else {"type": kind}
        if col.kind == "category":
            return {"type": ["string", "null"]} if col.categories in _STRINGS else {}
        if col.kind == "bool":
            return {"type": ["boolean", "null"]} if col.nullable else {"type": "boolean"}
        if col.kind == "datetime":
            return {"type": "string", "format": "date-time"}
        if col.kind == "string":
            return {"type": ["string", "null"]}  # null: a missing value
        return {}

    def json_schema_oip(self) -> dict[str, Any]:
        tensors = [
            {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "properties": {
                    "name": {"const": c.name},
                    "shape": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0},
                        "minItems": 1,
                        "maxItems": 2,
                    },
                    "datatype": {"type": "string", "enum": list(c.accepted())},
                    "data": {"type": "array", "items": self._json_type(c)},
                },
            }
            for c in self.columns
        ]
        n = len(self.columns)
        return {"type": "array", "items": {"oneOf": tensors}, "minItems": n, "maxItems": n}

    def json_schema_mlflow(self) -> dict[str, Any]:
        record = {
            "type": "object",
            "properties": {c.name: self._json_type(c) for c in self.columns},
            "required": self.names,
            "additionalProperties": False,
        }
        records = {"type": "array", "items": record, "minItems": 1}
        return {
            "dataframe_split": {
                "type": "object",
                "required": ["columns", "data"],
                "properties": {
                    "columns": {
                        "type": "array",
                        "items": {"type": "string"},
                        "example": self.names,
                    },
                    "data": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "array",
                            "minItems": len(self.names),
                            "maxItems": len(self.names),
                        },
                    },
                },
            },
            "dataframe_records": records,
            "instances": records,
            "inputs": records,
        }

    def examples(self, sample: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        row: dict[str, Any] = {}
        placeholder = {
            "number": 0,
            "bool": False,
            "string": "a",
            "datetime": "2024-01-01T00:00:00",
            "any": 0,
        }
        for c in self.columns:
            kind = c.kind
            if kind == "category":
                kind = "number" if c.numpy is not None else "string"
            value: Any = placeholder[kind]
            try:
                if sample is not None:
                    value = (sample if self.series else sample[c.name]).iloc[0]
                    value = value.isoformat() if hasattr(value, "isoformat") else value
                    value = value.item() if hasattr(value, "item") else value
            except (KeyError, IndexError, AttributeError, TypeError):
                value = placeholder[kind]
            if (isinstance(value, float) and math.isnan(value)) or type(value).__name__ in (
                "NAType",
                "NaTType",
            ):
                value = None
            row[c.name] = value
        oip = {
            "inputs": [
                {"name": c.name, "shape": [1], "datatype": meta["datatype"], "data": [row[c.name]]}
                for c, meta in zip(self.columns, self.oip_metadata(), strict=True)
            ]
        }
        return oip, {"dataframe_split": {"columns": self.names, "data": [list(row.values())]}}
