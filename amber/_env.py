"""The environment an artifact was saved in, and how the current one differs from it."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from collections.abc import Iterable
from functools import cache
from typing import Any

__all__ = ["capture", "diff", "distribution_for"]

# Top-level module -> distribution, for the common cases (the metadata scan is slow).
_KNOWN_DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "joblib": "joblib",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "torch": "torch",
    "tensorflow": "tensorflow",
    "keras": "keras",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "threadpoolctl": "threadpoolctl",
}
_STDLIB = frozenset(sys.stdlib_module_names) | {"builtins"}


@cache
def distribution_for(top_module: str) -> str | None:
    """The installed distribution that provides ``top_module`` (None for the standard library)."""
    if top_module in _STDLIB or top_module == "amber":
        return None
    if top_module in _KNOWN_DISTRIBUTIONS:
        return _KNOWN_DISTRIBUTIONS[top_module]
    dists = importlib.metadata.packages_distributions().get(top_module)
    return dists[0] if dists else top_module


# Distributions published under one name only, whose module's ``__version__`` is the metadata's
# version (xgboost and tensorflow are not here: they also ship as xgboost-cpu, tensorflow-cpu).
_MODULE_OF = {
    dist: module
    for module, dist in _KNOWN_DISTRIBUTIONS.items()
    if dist in {"numpy", "scipy", "scikit-learn", "pandas", "joblib", "threadpoolctl"}
}


@cache
def _installed_version(dist: str) -> str | None:
    """The installed version of ``dist``: for the distributions of ``_MODULE_OF`` whose module is
    already imported, its ``__version__`` (no METADATA file to read and parse: a few
    milliseconds and an email parser per package on a process's first load); otherwise the
    package metadata."""
    module = sys.modules.get(_MODULE_OF.get(dist, ""))
    version = getattr(module, "__version__", None)
    if isinstance(version, str) and version[:1].isdigit():
        return version  # the same string the metadata holds, for these distributions
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@cache
def _python_facts() -> tuple[tuple[str, str], ...]:
    return (
        ("python", platform.python_version()),
        ("implementation", sys.implementation.name),
        ("platform", f"{platform.system()}-{platform.machine()}"),
        ("byteorder", sys.byteorder),
    )


def _python() -> dict[str, str]:
    """Python and platform facts (asked once per process: they cannot change while it runs)."""
    return dict(_python_facts())


def capture(modules: Iterable[str], extra_distributions: Iterable[str] = ()) -> dict[str, Any]:
    """Python, platform and versions of the distributions behind ``modules``."""
    dists = {distribution_for(m.split(".")[0]) for m in modules} | set(extra_distributions)
    dists.add("numpy")
    packages = {}
    for dist in sorted(d for d in dists if d):
        version = _installed_version(dist)
        if version is not None:
            packages[dist] = version
    return {**_python(), "packages": packages}


def diff(saved: dict[str, Any]) -> list[str]:
    """Human-readable differences between ``saved`` and the running environment (empty if same)."""
    now = _python()
    changes = [f"{key} {saved.get(key)} -> {now[key]}" for key in now if saved.get(key) != now[key]]
    packages = saved.get("packages")
    if isinstance(packages, dict):
        for dist, version in sorted(packages.items()):
            current = _installed_version(str(dist))
            if current != version:
                changes.append(f"{dist} {version} -> {current or 'not installed'}")
    return changes
