"""The handler protocol: one module per framework, each saving into and loading from an artifact."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from amber.artifact._reader import ArtifactReader
from amber.artifact._writer import ArtifactWriter
from amber.security._policy import LoadPolicy

__all__ = ["Handler", "SavedPayload"]


@dataclass(frozen=True)
class SavedPayload:
    """What a handler reports after writing a model's entries."""

    payload: dict[str, Any]  # goes to the manifest as "payload": how to read the entries back
    framework: str  # e.g. "scikit-learn"
    object_type: str  # dotted type of the saved object
    globals: tuple[str, ...] = ()  # Python globals the payload references ("module.name")
    modules: tuple[str, ...] = ()  # modules whose distributions the environment must record
    untrusted: tuple[str, ...] = field(default=())  # globals outside the allowlist


class Handler(Protocol):
    """One framework's way of persisting models.

    ``name`` is recorded in the manifest; ``module_roots`` are the top-level modules whose
    objects the handler claims (checked on the object's type, so detection imports nothing).
    """

    name: str
    module_roots: tuple[str, ...]

    def matches(self, obj: Any) -> bool: ...

    def save(self, obj: Any, writer: ArtifactWriter) -> SavedPayload: ...

    def load(
        self, reader: ArtifactReader, payload: dict[str, Any], *, policy: LoadPolicy
    ) -> Any: ...

    def predict(self, model: Any, inputs: Any) -> Any: ...
