"""Amber: persist trained machine-learning models and reload them, identical, safe and fast.

>>> import amber
>>> info = amber.save(clf, "iris.amber", sample=X[:32])   # doctest: +SKIP
>>> clf2 = amber.load("iris.amber")                       # doctest: +SKIP

The whole public API is re-exported here.
"""

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

__all__ = [
    "AmberError",
    "ArtifactInfo",
    "EnvironmentMismatch",
    "EnvironmentMismatchError",
    "FormatError",
    "HandlerNotAvailable",
    "IntegrityError",
    "ModelNotFound",
    "ParityError",
    "SchemaError",
    "UnsafeLoadWarning",
    "UntrustedTypeError",
    "VerifyReport",
    "__version__",
    "inspect",
    "load",
    "load_savedmodel_dir",
    "predict",
    "save",
    "scan",
    "verify",
]
