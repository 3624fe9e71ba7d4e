"""The registry that ``amber.load("models:/...")`` uses: ``$AMBER_REGISTRY`` (with
``$AMBER_CATALOG``, ``$AMBER_STORAGE_OPTIONS``, ``$AMBER_CACHE``), else ``./amber-models``; one
instance per setting, kept for reuse."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from amber.registry._registry import DEFAULT_LOCATION, Registry

__all__ = ["default_registry", "load_uri"]

_lock = threading.Lock()
_open: dict[tuple[str | None, ...], Registry] = {}


def default_registry() -> Registry:
    location = os.environ.get("AMBER_REGISTRY") or DEFAULT_LOCATION
    if "://" not in location:
        location = str(Path(location).expanduser().absolute())
    catalog = os.environ.get("AMBER_CATALOG") or None
    key = (
        location,
        catalog,
        os.environ.get("AMBER_STORAGE_OPTIONS"),
        os.environ.get("AMBER_CACHE"),
    )
    with _lock:
        reg = _open.get(key)
        if reg is None:
            reg = _open[key] = Registry(location, catalog=catalog)
        return reg


def load_uri(uri: str, **options: Any) -> Any:
    """``amber.load`` of a ``models:/`` URI, through the default registry."""
    return default_registry().load(uri, **options)
