"""Registry URIs (``models:/name@alias``, ``models:/name/latest``, ``models:/name/3``).

Each poll asks the catalog which version the URI points at (aliases and ``latest`` move; a pinned
version never does). A version is then verified (``amber.verify`` of its blob: every digest, a
safe load, the probe) and loaded by its pinned URI through ``Registry.load``, which also checks
that the artifact is the one the catalog recorded at push and re-runs the probe.
"""

from __future__ import annotations

from typing import Any

from amber.serving._source import Resolved, check_digests

__all__ = ["RegistrySource"]


class RegistrySource:
    """A ``models:/`` URI in a registry (``registry``: its location, else the default one)."""

    def __init__(self, uri: str, *, registry: str | None = None) -> None:
        from amber.registry import Registry, parse_uri

        ref = parse_uri(uri)
        self.uri = uri
        self.name = ref.name
        self.movable = ref.version is None
        self._registry: Any = Registry(registry) if registry else Registry()
        self._pinned: dict[str, str] = {}

    def resolve(self) -> Resolved:
        found = self._registry.get(self.uri)
        pinned = f"models:/{found.name}/{found.version}"
        path = self._registry.path(pinned)
        return Resolved(str(found.version), path)

    def still(self, resolved: Resolved) -> bool:
        return str(self._registry.get(self.uri).version) == resolved.version

    def load(
        self, resolved: Resolved, trusted: list[str], *, allow_arbitrary_code: bool = False
    ) -> Any:
        pinned = f"models:/{self.name}/{resolved.version}"
        check_digests(self._registry.path(pinned))
        return self._registry.load(
            pinned, trusted=trusted, allow_arbitrary_code=allow_arbitrary_code, probe="always"
        )
