"""The environment record: the versions it reads agree with the package metadata."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from amber import _env


def test_versions_read_from_loaded_modules_are_the_metadata_versions() -> None:
    """For numpy, scipy, scikit-learn, ... an imported module's ``__version__`` stands in for
    the metadata (no METADATA file parsed); both must give the same string, imported or not."""
    import joblib  # noqa: F401
    import numpy  # noqa: F401
    import scipy  # noqa: F401
    import sklearn  # noqa: F401

    for dist in ("numpy", "scipy", "scikit-learn", "joblib"):
        _env._installed_version.cache_clear()
        assert _env._installed_version(dist) == importlib.metadata.version(dist), dist


def test_a_fresh_process_records_the_same_versions_before_and_after_importing() -> None:
    code = (
        "from amber import _env\n"
        "before = _env.capture(['sklearn.base'])['packages']\n"
        "_env._installed_version.cache_clear()\n"
        "import sklearn, numpy, scipy\n"
        "after = _env.capture(['sklearn.base'])['packages']\n"
        "assert before == after, (before, after)\n"
        "print(sorted(after))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "scikit-learn" in out and "numpy" in out


def _fresh_capture(extra_env: dict[str, str]) -> dict[str, str]:
    import json
    import os

    code = "import json; from amber import _env; print(json.dumps(_env.capture([])))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, **extra_env},
    ).stdout
    return dict(json.loads(out))


def test_the_processor_is_recorded_with_what_overrides_its_kernels() -> None:
    """BLAS and numpy choose kernels by processor; a variable that forces other kernels makes
    another environment for the probe (float results differ in their last bits)."""
    here = _env.capture([])
    vendor, level = here["cpu"].split()[:2]
    assert level != "" and vendor != ""
    forced = _fresh_capture({"OPENBLAS_CORETYPE": "Haswell"})
    assert forced["cpu"].endswith("OPENBLAS_CORETYPE=Haswell")
    saved = {**here, "cpu": forced["cpu"]}
    assert _env.diff(saved) == [f"cpu {forced['cpu']} -> {here['cpu']}"]


def test_an_artifact_that_records_no_processor_is_not_another_environment() -> None:
    """Artifacts written before the processor was recorded compare as before."""
    saved = dict(_env.capture([]))
    del saved["cpu"]
    assert _env.diff(saved) == []
    assert _env.diff({**saved, "cpu": "SomeVendor AVX2"}) == [
        f"cpu SomeVendor AVX2 -> {_env.capture([])['cpu']}"
    ]
