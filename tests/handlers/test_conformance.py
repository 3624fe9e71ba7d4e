"""The handler contract, run against every handler (in the style of ``parametrize_with_checks``).

Each case in ``_cases.CASES`` (a tiny real model per handler and format) goes through the same
checks: the right handler is chosen; save and load round-trip with the probe re-run; ``inspect``
imports no framework; a flipped byte is refused; the probe and tensor signature are recorded;
``amber.predict`` gives the same numpy output before and after. A handler registered without a
case fails ``test_every_handler_has_a_case``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _cases import CASES, Case

import amber
from amber.artifact import _zip
from amber.artifact._reader import ArtifactReader
from amber.errors import IntegrityError
from amber.handlers import known_handlers

ROOT = Path(__file__).resolve().parents[2]
_SAVED: dict[str, tuple[Any, np.ndarray, Path, amber.ArtifactInfo]] = {}


def _params(case: Case) -> Any:
    return pytest.param(
        case,
        id=case.id,
        marks=pytest.mark.skipif(not case.available(), reason=f"{case.requires} not installed"),
    )


CHECKED = [_params(c) for c in CASES]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conformance")


def saved(case: Case, store: Path) -> tuple[Any, np.ndarray, Path, amber.ArtifactInfo]:
    """(model, sample, path, info), saved once per case for the whole module."""
    if case.id not in _SAVED:
        model, sample = case.build()
        path = store / f"{case.id}.amber"
        info = amber.save(model, path, sample=sample, **dict(case.save_kwargs))
        _SAVED[case.id] = (model, sample, path, info)
    return _SAVED[case.id]


def _inputs(sample: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.normal(size=(12, sample.shape[1])).astype(sample.dtype)


def _same(a: Any, b: Any, info: amber.ArtifactInfo) -> None:
    probe = info.manifest["probe"]
    if probe.get("exact", True):
        np.testing.assert_array_equal(a, b)
    else:
        tol = probe["tolerance"]
        np.testing.assert_allclose(a, b, rtol=tol["rtol"], atol=tol["atol"])


def test_every_handler_has_a_case() -> None:
    covered = {c.handler for c in CASES}
    assert set(known_handlers()) <= covered, set(known_handlers()) - covered


@pytest.mark.parametrize("case", CHECKED)
def test_the_right_handler_saves_it(case: Case, store: Path) -> None:
    _, _, _, info = saved(case, store)
    assert info.handler == case.handler
    assert amber.inspect(info.path).handler == case.handler


@pytest.mark.parametrize("case", CHECKED)
def test_round_trip_reruns_the_probe(case: Case, store: Path) -> None:
    model, sample, path, info = saved(case, store)
    loaded = amber.load(path, probe="always", trusted=list(case.trusted))
    _same(amber.predict(model, sample), amber.predict(loaded, sample), info)
    report = amber.verify(path, trusted=list(case.trusted))
    assert "probe matched" in str(report)


@pytest.mark.parametrize("case", CHECKED)
def test_uniform_predict_is_numpy_in_numpy_out(case: Case, store: Path) -> None:
    model, sample, path, info = saved(case, store)
    loaded = amber.load(path, trusted=list(case.trusted))
    X = _inputs(sample)
    before, after = amber.predict(model, X), amber.predict(loaded, X)
    assert isinstance(after, np.ndarray)
    assert after.shape[0] == len(X)
    _same(before, after, info)


@pytest.mark.parametrize("case", CHECKED)
def test_probe_signature_and_environment_are_recorded(case: Case, store: Path) -> None:
    _, sample, _, info = saved(case, store)
    assert info.signature is not None
    assert info.signature["inputs"] == {
        "kind": "ndarray",
        "dtype": str(sample.dtype),
        "shape": [None, sample.shape[1]],
    }
    outputs = info.manifest["probe"]["outputs"]
    assert "predict" in outputs
    assert outputs["predict"]["signature"]["shape"][0] is None
    assert info.framework
    dist = {"sklearn": "scikit-learn"}.get(case.requires, case.requires)
    assert any(d.startswith(dist) for d in info.environment["packages"])


@pytest.mark.parametrize("case", CHECKED)
def test_a_flipped_byte_is_refused(case: Case, store: Path, tmp_path: Path) -> None:
    _, _, path, _ = saved(case, store)
    copy = tmp_path / "flipped.amber"
    shutil.copy(path, copy)
    with ArtifactReader(copy) as reader:
        name = max(
            (n for n in reader.entries if n.startswith("model/")),
            key=lambda n: reader.entries[n]["size"],
        )
        entry = reader.zip_entries[name]
        fd = os.open(copy, os.O_RDONLY)
        try:
            offset = _zip.read_data_offset(fd, entry) + entry.size // 2
        finally:
            os.close(fd)
    with open(copy, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(IntegrityError, match="fails its"):
        amber.load(copy, trusted=list(case.trusted))


_NO_IMPORT = """
import sys, amber
info = amber.inspect(sys.argv[1])
print(info)
loaded = sorted(m for m in sys.modules if m.split('.')[0] in sys.argv[2:])
assert not loaded, loaded
"""


@pytest.mark.parametrize("case", CHECKED)
def test_inspect_imports_no_framework(case: Case, store: Path) -> None:
    _, _, path, _ = saved(case, store)
    result = subprocess.run(
        [sys.executable, "-c", _NO_IMPORT, str(path), *case.framework_modules],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert case.handler in result.stdout


def test_import_amber_imports_no_framework() -> None:
    code = (
        "import sys, amber, amber.handlers\n"
        "bad = {'torch', 'tensorflow', 'keras', 'xgboost', 'lightgbm', 'safetensors', 'sklearn'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_a_missing_framework_names_its_install_hint(store: Path) -> None:
    torch_case = next(c for c in CASES if c.id == "torch-class")
    if not torch_case.available():
        pytest.skip("torch not installed")
    _, _, path, _ = saved(torch_case, store)
    code = (
        "import sys; sys.modules['torch'] = None  # as if torch were not installed\n"
        "import amber\n"
        "try:\n"
        "    amber.load(sys.argv[1])\n"
        "except amber.HandlerNotAvailable as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'install it with: pip install "amber[torch]"' in result.stdout


def test_an_unknown_format_is_refused_with_the_choices(tmp_path: Path) -> None:
    model = {"weights": [1.0, 2.0]}  # a plain object: the sklearn (pickle) handler
    with pytest.raises(ValueError, match=r"format='onnx' .*'sklearn'.*saves: none"):
        amber.save(model, tmp_path / "m.amber", format="onnx")
    assert not (tmp_path / "m.amber").exists()
