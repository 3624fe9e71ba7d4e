"""Forged probes and environments, with every digest recomputed: only AmberError comes out.

Found by fuzzing the container with a writer that keeps files internally consistent (a file
without a signature can be rewritten whole): an Arrow probe table whose string offsets point
past their data crashed `amber.verify` (and `amber.load`, which re-runs the probe when the
recorded environment differs, as a forged one can claim); Arrow's own errors came out as
`OSError` and `ArrowInvalid`; a probe output of rows of different lengths as `ValueError`; and
an empty package name in the recorded environment as `ValueError`.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import amber
from amber.artifact._reader import ArtifactReader
from amber.artifact._writer import artifact_writer
from amber.errors import FormatError, ParityError

X, Y = load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("forged") / "base.amber"
    amber.save(LogisticRegression(max_iter=500).fit(X, Y), path, sample=X[:8])
    return path


def forge(
    base: Path,
    path: Path,
    edit: Callable[[dict[str, Any]], None],
    add: dict[str, bytes] | None = None,
) -> Path:
    """``base`` rewritten through Amber's own writer: entries added, the manifest edited, every
    digest recomputed (what anyone who can write the file can do without a signature)."""
    with ArtifactReader(base) as reader:
        manifest = {k: v for k, v in reader.manifest.items() if k != "entries"}
        entries = {name: bytes(reader.read(name)) for name in reader.entries}
    entries.update(add or {})
    edit(manifest)
    with artifact_writer(path) as writer:
        for name, data in entries.items():
            writer.add(name, data)
        writer.finish(manifest)
    return path


def _elsewhere(manifest: dict[str, Any]) -> None:
    """Claim another environment: amber.load then re-runs the probe."""
    manifest["environment"]["python"] = "3.10.0"


def _bad_offsets_table() -> bytes:
    table = pa.table({"s": pa.array(["x", "yy", None, "z"] * 2)})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    blob = bytearray(sink.getvalue())
    at = bytes(blob).find(struct.pack("<9i", 0, 1, 3, 3, 4, 5, 7, 7, 8))
    assert at > 0
    struct.pack_into("<i", blob, at + 8, 67_108_867)  # slot 2 ends 64 MB past its 8-byte data
    return bytes(blob)


@pytest.mark.parametrize("where", ["input", "output"])
def test_an_arrow_table_whose_offsets_leave_their_buffer_is_a_format_error(
    saved: Path, tmp_path: Path, where: str
) -> None:
    entry = {"kind": "series", "entry": "probe/x.arrow"}

    def edit(manifest: dict[str, Any]) -> None:
        if where == "input":
            manifest["probe"]["input"] = entry
        else:
            manifest["probe"]["outputs"]["predict"] = entry
        _elsewhere(manifest)

    path = forge(saved, tmp_path / "bad.amber", edit, {"probe/x.arrow": _bad_offsets_table()})
    # in a child: before the fix this crashed the process (SIGSEGV in Arrow's compute kernels)
    code = f"""
import warnings, amber
warnings.simplefilter("ignore")
for call in (lambda: amber.verify({str(path)!r}), lambda: amber.load({str(path)!r})):
    try:
        call()
        print("no error")
    except amber.errors.AmberError as exc:
        print(type(exc).__name__, str(exc)[:200])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-800:])
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all("FormatError" in x and "offset" in x.lower() for x in lines)


@pytest.mark.parametrize(
    ("blob", "what"),
    [
        (b"\xff\xff\xff\xff\x10\x00\x00\x00" + b"\x00" * 16, "garbage metadata"),
        (lambda b: b[: len(b) - 40], "a truncated body"),
    ],
)
def test_arrow_errors_about_the_data_are_format_errors(
    saved: Path, tmp_path: Path, blob: Any, what: str
) -> None:
    table = pa.table({"v": pa.array(np.arange(64.0))})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data = blob(sink.getvalue()) if callable(blob) else blob

    def edit(manifest: dict[str, Any]) -> None:
        manifest["probe"]["outputs"]["predict"] = {"kind": "series", "entry": "probe/x.arrow"}

    path = forge(saved, tmp_path / "bad.amber", edit, {"probe/x.arrow": data})
    with pytest.raises(FormatError, match="malformed probe table"):
        amber.verify(path)


def test_stored_rows_of_different_lengths_are_a_mismatch(saved: Path, tmp_path: Path) -> None:
    def edit(manifest: dict[str, Any]) -> None:
        spec = {"kind": "rows", "entry": "probe/rows.json", "rows": "list"}
        manifest["probe"]["outputs"]["predict"] = spec
        _elsewhere(manifest)

    rows = json.dumps([[1], [1, 2]] * 4).encode()
    path = forge(saved, tmp_path / "bad.amber", edit, {"probe/rows.json": rows})
    with pytest.raises(ParityError, match="predict"):
        amber.verify(path)
    with pytest.raises(ParityError, match="predict"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        amber.load(path)


def test_rows_of_different_lengths_compare_one_by_one() -> None:
    from amber._probe import _compare

    assert _compare([[1], [1, 2]], [[1], [1, 2]], exact=True) is None
    assert _compare([[1], [1, 2]], [[1], [1, 3]], exact=True) == "1 of 2 values differ"


def test_outputs_that_turned_nan_are_described_without_a_warning() -> None:
    """A model whose outputs became NaN was reported as "largest absolute difference nan", with
    numpy's "All-NaN slice encountered" warning on the way."""
    from amber._probe import _compare

    stored = np.array([[0.25, 0.75], [0.5, 0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for exact in (True, False):
            nan = _compare(stored, np.full_like(stored, np.nan), exact=exact)
            assert nan == "values differ (4 of 4 values NaN on one side only)"
            changed = stored.copy()
            changed[0] = [np.nan, 0.5]
            assert _compare(stored, changed, exact=exact) == (
                "values differ (largest absolute difference 0.25; 1 of 4 values NaN on one side "
                "only)"
            )
            assert _compare(stored, stored + 1e-3, exact=exact) == (
                "values differ (largest absolute difference 0.001)"
            )
        as_complex = stored.astype(np.complex128)
        assert _compare(as_complex, as_complex + 2j, exact=True) == (
            "values differ (largest absolute difference 2)"
        )


@pytest.mark.parametrize("name", ["", " numpy", "numpy\n", "a/b", "-x"])
def test_a_package_name_that_names_no_distribution_is_a_format_error(
    saved: Path, tmp_path: Path, name: str
) -> None:
    def edit(manifest: dict[str, Any]) -> None:
        manifest["environment"]["packages"][name] = "1.0"

    path = forge(saved, tmp_path / "bad.amber", edit)
    for call in (amber.load, amber.verify, amber.inspect):
        with pytest.raises(FormatError, match="no distribution name"):
            call(path)


def test_an_empty_distribution_name_is_not_installed() -> None:
    from amber._env import _installed_version

    assert _installed_version("") is None  # importlib.metadata raises ValueError for it


def test_a_codec_of_a_newer_amber_is_refused_where_it_is_met_with_an_upgrade_message(
    saved: Path, tmp_path: Path
) -> None:
    """FORMAT.md 7: a new codec name breaks no reader that does not meet it. A file whose probe
    input is stored with a codec this Amber does not know loads (the probe is not re-run in the
    saving environment); verify, which reads every entry, says to upgrade."""
    path = tmp_path / "newer.amber"
    with ArtifactReader(saved) as reader:
        manifest = {k: v for k, v in reader.manifest.items() if k != "entries"}
        stored = {
            name: (bytes(reader.raw_entry(name)), rec) for name, rec in reader.entries.items()
        }
    with artifact_writer(path) as writer:
        for name, (raw, rec) in stored.items():
            codec = "brotli" if name == "probe/input.npy" else rec["compression"]
            writer.add_stored(name, memoryview(raw), dict(rec, compression=codec))
        writer.finish(manifest)
    assert amber.load(path).predict(X[:3]).shape == (3,)
    with pytest.raises(FormatError, match=r"'brotli', a codec .* newer Amber. Upgrade Amber"):
        amber.verify(path)
    with pytest.raises(FormatError, match="newer Amber"):
        amber.load(path, probe="always")
