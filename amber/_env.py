"""The environment an artifact was saved in, and how the current one differs from it."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from collections.abc import Iterable
from functools import cache
from typing import Any

__all__ = ["capture", "diff", "distribution_for", "installed_version", "software"]

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
    except (importlib.metadata.PackageNotFoundError, ValueError):  # ValueError: no name at all
        return None


# numpy's names for the instruction-set levels its kernels dispatch on, most capable first
# (x86, Arm, POWER, IBM Z); numpy 1.26 lacks some, which then count as absent
_SIMD_LEVELS = (
    "AVX512_SPR", "AVX512_ICL", "AVX512_CNL", "AVX512_CLX", "AVX512_SKX", "AVX512F", "AVX2",
    "AVX", "SSE42", "SSE2", "SVE", "ASIMD", "NEON", "VSX4", "VSX3", "VSX2", "VSX", "VXE2",
    "VXE", "VX",
)  # fmt: skip
# Variables that make numerical libraries take other kernels than the processor's own.
_DISPATCH_VARIABLES = (
    "NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
    "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS",
)  # fmt: skip


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo", "rb") as f:
            for _, line in zip(range(64), f, strict=False):  # the first processor's lines
                key, _, value = line.decode("ascii", "replace").partition(":")
                if key.strip() in ("vendor_id", "CPU implementer"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu() -> str:
    """The processor as numerical code sees it: vendor, the instruction-set level numpy
    dispatches to, and any variable that overrides the kernels libraries choose.

    BLAS and numpy pick kernels by processor, and float results then differ in the last bits
    (a float32 MLP by up to 1e-5 relative): a model saved on one machine and verified on
    another with the same packages is in another environment for the probe.
    """
    try:
        import numpy as np

        core = getattr(np, "_core", None) or np.core
        features = core._multiarray_umath.__cpu_features__
    except (ImportError, AttributeError):
        features = {}
    level = next((name for name in _SIMD_LEVELS if features.get(name)), "baseline")
    overrides = [f"{v}={os.environ[v]}" for v in _DISPATCH_VARIABLES if os.environ.get(v)]
    return " ".join([_cpu_vendor(), level, *overrides])


def installed_version(dist: str) -> str | None:
    """The installed version of the distribution ``dist`` (None: not installed)."""
    return _installed_version(dist)


@cache
def _python_facts() -> tuple[tuple[str, str], ...]:
    return (
        ("python", platform.python_version()),
        ("implementation", sys.implementation.name),
        ("platform", f"{platform.system()}-{platform.machine()}"),
        ("byteorder", sys.byteorder),
        ("cpu", _cpu()),
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
    """Human-readable differences between ``saved`` and the running environment (empty if same).

    ``cpu`` is compared only when ``saved`` records it (artifacts written before it was).
    """
    now = _python()
    changes = [
        f"{key} {saved.get(key)} -> {value}"
        for key, value in now.items()
        if saved.get(key) != value and (key != "cpu" or "cpu" in saved)
    ]
    packages = saved.get("packages")
    if isinstance(packages, dict):
        for dist, version in sorted(packages.items()):
            current = _installed_version(str(dist))
            if current != version:
                changes.append(f"{dist} {version} -> {current or 'not installed'}")
    return changes


def software(changes: list[str]) -> list[str]:
    """The changes of :func:`diff` other than the processor's: what installing the saving
    environment's versions would undo."""
    return [c for c in changes if not c.startswith("cpu ")]
