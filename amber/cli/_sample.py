"""``--sample FILE``: sample inputs for the probe, from a ``.npy`` array or a ``.csv`` table.

Every failure says that it concerns ``--sample`` and what to give instead; numpy's and pandas'
own messages are kept only where they help (a CSV parse error's line), never their advice to
load pickled data. A CSV file's first row must be its header: one that is all numbers is data,
and is refused rather than silently taken for the column names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_NPY_MAGIC = b"\x93NUMPY"
_GIVE = "give a .npy file written by numpy.save(path, X) or a .csv table with a header row"


def read_sample(path: str) -> Any:
    """The sample stored at ``path``; ``ValueError`` or ``OSError`` naming ``--sample``."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".npy", ".csv"):
        raise ValueError(f"--sample {path!r}: {_GIVE}")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"--sample {path!r}: no such file; check the path and the working folder"
        ) from None
    except IsADirectoryError:
        raise IsADirectoryError(f"--sample {path!r} is a folder; {_GIVE}") from None
    except PermissionError:
        raise PermissionError(
            f"--sample {path!r}: permission denied; check its permissions (ls -l), or give "
            f"a sample file you may read"
        ) from None
    if suffix == ".npy":
        return _npy(path, head)
    return _csv(path)


def as_fitted(sample: Any, model: Any) -> Any:
    """``sample`` as ``model`` was fitted on it: a table read from a CSV file, as an array of
    its values for a model fitted on an array (it has ``n_features_in_`` and no
    ``feature_names_in_``); scikit-learn would warn, on every call of the probe, that the
    sample has feature names the model was fitted without, and the signature would record
    columns the model never knew. Anything else as it is (pandas is not imported for it)."""
    if type(sample).__module__.partition(".")[0] != "pandas":
        return sample
    fitted_on_array = hasattr(model, "n_features_in_") and not hasattr(model, "feature_names_in_")
    return sample.to_numpy() if fitted_on_array else sample


def _npy(path: str, head: bytes) -> Any:
    import numpy as np

    if head != _NPY_MAGIC:
        raise ValueError(
            f"--sample {path!r} is not a NumPy .npy file (it does not start with the .npy "
            f"header); {_GIVE}"
        )
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickled" in str(exc):
            raise ValueError(
                f"--sample {path!r} holds an array of Python objects (dtype object), which is "
                f"stored pickled and which Amber does not read; save a numeric or string array "
                f"(X.astype(float), X.astype(str)) or a .csv table instead"
            ) from None
        raise ValueError(
            f"--sample {path!r} is a damaged or truncated .npy file ({exc}); write it again "
            f"with numpy.save(path, X)"
        ) from None
    except (EOFError, OSError) as exc:
        raise ValueError(
            f"--sample {path!r} is a damaged or truncated .npy file ({exc}); write it again "
            f"with numpy.save(path, X)"
        ) from None


def _csv(path: str) -> Any:
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"--sample {path!r} is empty; {_GIVE} and at least one row of data"
        ) from None
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"--sample {path!r} is not UTF-8 text ({exc}); save the table as UTF-8 CSV"
        ) from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise ValueError(
            f"--sample {path!r} could not be read as a CSV table: {str(exc).strip()}; fix the "
            f"file (a header row, then one row per sample, commas between values)"
        ) from None
    _check_header(path, _first_row(path))
    return table


def _first_row(path: str) -> list[str]:
    """The first row of the CSV file as written (pandas renames repeated column names)."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def _check_header(path: str, names: list[str]) -> None:
    """Refuse a table whose header row, ``names`` as written, is all numbers: a file without
    a header, whose first row of data pandas would take for the column names and drop from
    the sample. The header ``0,1,...,n-1`` is pandas' own (``DataFrame(X).to_csv()``)."""
    numbered = [str(k) for k in range(len(names))]
    if names and names != numbered and all(_is_number(n) for n in names):
        row = ",".join(names)
        shown = row if len(row) <= 60 else row[:57] + "..."
        raise ValueError(
            f"--sample {path!r} has no header row: its first row ({shown}) is all numbers, "
            f"data that would be taken for the column names and dropped from the sample; add "
            f"a first line with the column names (those the model was fitted with, if any), "
            f"e.g. {','.join(f'x{i}' for i in range(min(len(names), 4)))}"
            f"{',...' if len(names) > 4 else ''}"
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return bool(text.strip())
