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
