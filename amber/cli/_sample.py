"""``--sample FILE``: sample inputs for the probe, from a ``.npy`` array or a ``.csv`` table.

Every failure says that it concerns ``--sample`` and what to give instead; numpy's and pandas'
own messages are kept only where they help (a CSV parse error's line), never their advice to
load pickled data.
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
        return pd.read_csv(path)
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
