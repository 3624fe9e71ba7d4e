"""Parity across machines: float32 outputs computed with other kernels differ in their last
bits; the probe compares them at the precision they have, and another processor (or a variable
forcing other kernels) is another environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import amber
from amber import _probe


def test_float32_outputs_get_a_tolerance_of_their_precision_across_environments() -> None:
    rng = np.random.default_rng(0)
    stored = rng.normal(size=(64, 3)).astype(np.float32) * 100
    moved = stored * np.float32(1 + 5e-6)  # a few dozen float32 units in the last place
    assert not np.allclose(stored, moved, rtol=_probe.RTOL, atol=_probe.ATOL)
    assert _probe._compare(stored, moved, exact=False) is None
    assert "values differ" in str(_probe._compare(stored, moved, exact=True))
    # a real change is still one
    assert "values differ" in str(_probe._compare(stored, stored * np.float32(1.001), False))
    # near zero, the absolute floor is relative to the output's magnitude (100s here)
    near_zero = stored.copy()
    near_zero[0, 0] = 1e-3
    nudged = near_zero.copy()
    nudged[0, 0] += 2e-4
    assert _probe._compare(near_zero, nudged, exact=False) is None
    nudged[0, 0] += 1e-1
    assert "values differ" in str(_probe._compare(near_zero, nudged, exact=False))


def test_float64_outputs_keep_their_relative_tolerance_and_an_absolute_one_of_scale() -> None:
    stored = np.linspace(1, 2, 50)
    assert "values differ" in str(_probe._compare(stored, stored * (1 + 5e-6), exact=False))
    assert _probe._compare(stored, stored * (1 + 5e-8), exact=False) is None
    # a float64 output against a float32 one: compared at float32's precision
    assert _probe._compare(stored, (stored * (1 + 5e-6)).astype(np.float32), False) is None
    # a distance of a point to itself: 0 here, the square root of a rounding error elsewhere
    distances = np.array([0.0, 3.5, 18.0])
    moved = distances + np.array([1.7e-7, 0, 0])
    assert _probe._compare(distances, moved, exact=False) is None
    assert "values differ" in str(_probe._compare(distances, distances + 1e-4, exact=False))


def test_a_float32_sample_loosens_float64_outputs_computed_from_it() -> None:
    """KernelRidge on a float32 sample computes its kernel in float32 and answers float64."""
    stored = np.linspace(100, 200, 40)
    moved = stored * (1 + 5e-6)
    assert "values differ" in str(_probe._compare(stored, moved, exact=False))
    assert _probe._compare(stored, moved, exact=False, width=4) is None
    x32 = np.ones((3, 2), dtype=np.float32)
    assert _probe._sample_width(x32) == 4
    assert _probe._sample_width(x32.astype(np.float64)) == 8
    assert _probe._sample_width([np.arange(3), x32]) == 4
    assert _probe._sample_width({"a": np.ones(2, np.float16)}) == 2
    assert _probe._sample_width(["text", "more"]) == 8
    import pandas as pd

    frame = pd.DataFrame({"a": np.ones(2, np.float32), "b": ["x", "y"], "c": [1, 2]})
    assert _probe._sample_width(frame) == 4
    assert _probe._sample_width(frame[["b", "c"]]) == 8


def test_an_infinite_output_does_not_widen_the_tolerance() -> None:
    stored = np.array([np.inf, 1.0, 2.0], dtype=np.float32)
    assert "values differ" in str(_probe._compare(stored, stored + np.float32(0.01), False))
    assert _probe._compare(stored, stored * np.float32(1 + 5e-6), False) is None
    half = np.array([1.0, 2.0], dtype=np.float16)
    assert _probe._compare(half, half * np.float16(1.004), False) is None
    assert "values differ" in str(_probe._compare(half, half * np.float16(1.1), False))


_VERIFY_WITH_OTHER_KERNELS = """
import sys, numpy as np, amber
from amber.artifact._reader import ArtifactReader
from amber import _probe
path = sys.argv[1]
model = amber.load(path, probe="never")
with ArtifactReader(path) as r:
    spec = r.manifest["probe"]
    x = _probe._decode(spec["input"], r)
    stored = _probe._decode(spec["outputs"]["predict"], r)
print("differs" if not np.array_equal(model.predict(x), stored) else "same")
report = amber.verify(path)
print(report.environment_changes)
print(report.probe)
"""


def test_verify_on_a_machine_whose_blas_takes_other_kernels(tmp_path: Path) -> None:
    """A float32 network saved here and verified where OpenBLAS takes its Haswell kernels (as
    on an AVX2 machine): the same packages, other last bits. verify used to compare exactly and
    raise ParityError ('not what they claim') for an intact model."""
    from sklearn.datasets import make_regression
    from sklearn.neural_network import MLPRegressor

    X, y = make_regression(600, 40, noise=5, random_state=0)
    X = X.astype(np.float32)
    model = MLPRegressor(hidden_layer_sizes=(128, 64), max_iter=30, random_state=0)
    with pytest.warns(Warning):  # not converged in 30 iterations: fine for a probe
        model.fit(X, y)
    path = tmp_path / "mlp32.amber"
    amber.save(model, path, sample=X[:64])
    out = subprocess.run(
        [sys.executable, "-c", _VERIFY_WITH_OTHER_KERNELS, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENBLAS_CORETYPE": "Haswell"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert "OPENBLAS_CORETYPE=Haswell" in lines[1]
    assert "predict: ok" in out.stdout
    if lines[0] == "same":
        pytest.skip("OpenBLAS's Haswell kernels give this processor's bits (an AVX2 machine)")


def test_the_tolerance_in_words_names_the_float_widths_compared(tmp_path: Path) -> None:
    """A float64 model's report states the float64 floor only (it listed float32's and
    float16's too); a float32 one states float32's."""
    from sklearn.linear_model import LinearRegression

    from amber.artifact._reader import ArtifactReader

    rng = np.random.default_rng(1)
    for dtype, shown, absent in (
        (np.float64, "float64", "float32"),
        (np.float32, "float32", "float16"),
    ):
        X = rng.normal(size=(40, 3)).astype(dtype)
        model = LinearRegression().fit(X, X @ np.array([1.0, 2.0, 3.0], dtype=dtype))
        path = tmp_path / f"{shown}.amber"
        amber.save(model, path, sample=X[:8])
        with ArtifactReader(path) as reader:
            report = _probe.check(model, reader.manifest["probe"], reader, exact=False)
        assert report.ok and f"for {shown}" in report.tolerance, report.tolerance
        assert absent not in report.tolerance, report.tolerance
