"""Where a served model comes from: something that names its current version and file.

A source resolves to ``(version, path)`` and can be asked again later; a *movable* source
(a registry alias, ``latest``, a file that may be replaced) can answer with another version,
which is what hot swap polls for. Requests never name a source: the server only ever resolves
the sources it was started with.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from amber.errors import FormatError, IntegrityError

__all__ = ["FileSource", "ModelSource", "Resolved", "open_source"]

URI_PREFIX = "models:/"


@dataclass(frozen=True)
class Resolved:
    """One version of a source: its label and the artifact file holding it."""

    version: str
    path: Path


class ModelSource(Protocol):
    uri: str
    name: str  # the default model name
    movable: bool

    def resolve(self) -> Resolved:
        """The version the source points at now (blocking: call from a thread)."""
        ...

    def still(self, resolved: Resolved) -> bool:
        """Whether ``resolved`` is still what the source points at (checked after a load)."""
        ...

    def load(
        self, resolved: Resolved, trusted: list[str], *, allow_arbitrary_code: bool = False
    ) -> Any:
        """Verify ``resolved`` fully (digests, safe load, probe parity) and return the model."""
        ...


def content_version(manifest: dict[str, Any]) -> str:
    """A short label for an artifact's content: a digest of its entries' digests."""
    digest = hashlib.sha256()
    for name, entry in sorted(manifest.get("entries", {}).items()):
        digest.update(f"{name}:{entry.get('blake3', '')};".encode())
    return digest.hexdigest()[:12]


class FileSource:
    """An ``.amber`` file. Its version is its ``metadata["version"]`` if set, else a content
    digest; replacing the file (``amber.save`` renames a new file into place) is a new version."""

    movable = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.uri = str(path)
        self.name = default_name(str(path))
        self._key: tuple[int, int, int] | None = None
        self._resolved: Resolved | None = None

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def resolve(self) -> Resolved:
        import amber

        key = self._stat()
        if key == self._key and self._resolved is not None:
            return self._resolved
        info = amber.inspect(self.path)
        label = info.metadata.get("version")
        version = str(label) if isinstance(label, (str, int)) else content_version(info.manifest)
        self._key, self._resolved = key, Resolved(version, self.path)
        return self._resolved

    def still(self, resolved: Resolved) -> bool:
        return self.resolve() == resolved

    def load(
        self, resolved: Resolved, trusted: list[str], *, allow_arbitrary_code: bool = False
    ) -> Any:
        import amber

        check_digests(resolved.path)
        return amber.load(
            resolved.path,
            trusted=trusted,
            allow_arbitrary_code=allow_arbitrary_code,
            probe="always",
        )


def check_digests(path: str | os.PathLike[str]) -> None:
    """Every entry's BLAKE3 digest, as ``amber.verify`` checks them.

    With a load that re-runs the probe (``probe="always"``) this is everything ``verify``
    proves, on the very object that will serve, for one load of the model instead of two.
    """
    from amber.artifact._reader import ArtifactReader

    with ArtifactReader(path) as reader:
        reader.verify_all(strong=True)


def default_name(source: str) -> str:
    """The name a model is served under when none is given: the registry model's name, or the
    file's name up to its first dot."""
    if source.startswith(URI_PREFIX):
        return source[len(URI_PREFIX) :].split("@")[0].split("/")[0]
    return Path(source).name.split(".")[0] or "model"


def open_source(source: str, *, registry: str | None = None) -> ModelSource:
    """The source for ``source``: a registry URI or an artifact file (which must exist)."""
    if source.startswith(URI_PREFIX):
        from amber.serving._registry_source import RegistrySource

        return RegistrySource(source, registry=registry)
    if "://" in source or source.startswith("models:"):
        raise ValueError(
            f"cannot serve {source!r}: give an .amber file or a registry URI such as "
            f"models:/iris@production or models:/iris/3"
        )
    path = Path(source)
    if path.is_dir():
        raise IsADirectoryError(
            f"cannot serve {source!r}: it is a folder; give an .amber file or a registry URI"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {source!r}; check the path")
    _check_artifact(path, source)
    return FileSource(path)


def _check_artifact(path: Path, source: str) -> None:
    """Refuse, before the server starts, a file that is no artifact at all or whose zip and
    manifest are broken: a server that started on it would only log failed loads until the
    file is replaced. (What opens here may still fail the full load, reported as a load.)"""
    from amber.artifact._reader import ArtifactReader, NotAnArtifact

    try:
        with ArtifactReader(path):
            pass
    except NotAnArtifact:
        from amber.security._foreign import converted_name

        out = converted_name(path)
        raise FormatError(
            f"cannot serve {source!r}: it is not an Amber artifact; a pickle or joblib file is "
            f"served once converted (`amber convert {source} {out}`), which also checks it"
        ) from None
    except (FormatError, IntegrityError) as exc:
        if source in str(exc):
            raise
        raise type(exc)(f"cannot serve {source!r}: {exc}") from None
