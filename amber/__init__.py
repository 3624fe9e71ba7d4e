"""Amber: persist trained machine-learning models and reload them, identical, safe and fast.

>>> import amber
>>> info = amber.save(clf, "iris.amber", sample=X[:32])   # doctest: +SKIP
>>> clf2 = amber.load("iris.amber")                       # doctest: +SKIP

The whole public API is re-exported here.
"""

from typing import TYPE_CHECKING

from amber._api import inspect, load, load_savedmodel_dir, save, scan, verify
from amber._info import ArtifactInfo, VerifyReport
from amber.errors import (
    AmberError,
    EnvironmentMismatch,
    EnvironmentMismatchError,
    FormatError,
    HandlerNotAvailable,
    IntegrityError,
    ModelNotFound,
    ParityError,
    SchemaError,
    UnsafeLoadWarning,
    UntrustedTypeError,
)
from amber.handlers import predict

__version__ = "0.1.0"

if TYPE_CHECKING:
    from amber.registry import ModelVersion, Registry
    from amber.security._signing import generate_key, sign

# Resolved on first use, so that `import amber` imports neither SQLAlchemy nor cryptography.
_LAZY = {
    "Registry": "amber.registry",
    "ModelVersion": "amber.registry",
    "sign": "amber.security._signing",
    "generate_key": "amber.security._signing",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'amber' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AmberError",
    "ArtifactInfo",
    "EnvironmentMismatch",
    "EnvironmentMismatchError",
    "FormatError",
    "HandlerNotAvailable",
    "IntegrityError",
    "ModelNotFound",
    "ModelVersion",
    "ParityError",
    "Registry",
    "SchemaError",
    "UnsafeLoadWarning",
    "UntrustedTypeError",
    "VerifyReport",
    "__version__",
    "generate_key",
    "inspect",
    "load",
    "load_savedmodel_dir",
    "predict",
    "save",
    "scan",
    "sign",
    "verify",
]
