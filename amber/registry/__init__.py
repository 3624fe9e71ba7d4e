"""The model registry: names, versions and aliases over a SQL catalog and a blob store.

``Registry()`` is a folder with a SQLite catalog (``./amber-models``); the same API runs on any
fsspec URL (``s3://``, ``gs://``, ``memory://``) with a PostgreSQL catalog. Importing this package
imports SQLAlchemy; ``import amber`` does not (``amber.Registry`` is resolved on first use).
"""

from amber.registry._errors import (
    CatalogReadOnly,
    CatalogUnavailable,
    InvalidURI,
    RegistryError,
    StorageUnavailable,
    VersionConflict,
)
from amber.registry._registry import DEFAULT_LOCATION, Registry
from amber.registry._types import AliasChange, GcReport, ModelVersion, RegisteredModel
from amber.registry._uri import ModelRef, parse_uri

__all__ = [
    "DEFAULT_LOCATION",
    "AliasChange",
    "CatalogReadOnly",
    "CatalogUnavailable",
    "GcReport",
    "InvalidURI",
    "ModelRef",
    "ModelVersion",
    "RegisteredModel",
    "Registry",
    "RegistryError",
    "StorageUnavailable",
    "VersionConflict",
    "parse_uri",
]
