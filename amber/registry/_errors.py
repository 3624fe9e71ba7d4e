"""Errors of the registry, below :class:`~amber.errors.AmberError`.

::

    AmberError
    ├── ModelNotFound (KeyError)             (amber.errors) a name, version or alias is absent
    └── RegistryError                        a registry operation failed
        ├── InvalidURI (ValueError)          a ``models:/`` URI or a name that cannot be parsed
        ├── CatalogUnavailable (ConnectionError)   the SQL catalog cannot be reached or opened
        ├── StorageUnavailable (ConnectionError)   the blob storage cannot be reached or written
        └── VersionConflict (ValueError)     a publish or delete that would break an invariant
"""

from __future__ import annotations

from amber.errors import AmberError

__all__ = [
    "CatalogReadOnly",
    "CatalogUnavailable",
    "InvalidURI",
    "RegistryError",
    "StorageUnavailable",
    "VersionConflict",
]


class RegistryError(AmberError):
    """A registry operation failed."""


class InvalidURI(RegistryError, ValueError):
    """A ``models:/`` URI, model name or alias that does not follow the grammar."""


class CatalogUnavailable(RegistryError, ConnectionError):
    """The catalog database cannot be reached, opened or migrated."""


class CatalogReadOnly(CatalogUnavailable):
    """A change was asked of a registry whose catalog this process can only read."""


class StorageUnavailable(RegistryError, ConnectionError):
    """The blob storage (a folder or an fsspec URL such as ``s3://``) cannot be reached."""


class VersionConflict(RegistryError, ValueError):
    """The operation would break an invariant (an aliased version deleted, a version reused)."""
