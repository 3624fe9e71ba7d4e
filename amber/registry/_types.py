"""What the registry hands back: versions, models, alias changes, a gc report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NoReturn

import orjson

from amber._words import counted

__all__ = ["AliasChange", "GcReport", "ModelVersion", "ReadOnlyDict", "RegisteredModel"]


class ReadOnlyDict(dict[str, Any]):
    """A dict that refuses changes: a ``ModelVersion``'s metrics and tags, a
    ``RegisteredModel``'s aliases.

    The registry hands the same ``ModelVersion`` objects to every caller that lists a model
    (they are cached until the model changes), so one caller changing ``v.metrics`` in place
    would change what every other one sees. Still a ``dict``: ``json.dumps``, ``orjson``,
    ``isinstance(x, dict)``, ``==``, ``|`` and ``dict(x)`` (a plain, changeable copy) all work.
    Unlike a ``dict`` it is hashable (its values are numbers or strings), so the frozen records
    that hold it can be set members and dict keys.
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(
            "a model version's metrics and tags (and a model's aliases) are read-only: the "
            "registry's records are immutable; copy them first to change the copy: "
            "dict(v.metrics)"
        )

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))

    def __copy__(self) -> ReadOnlyDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ReadOnlyDict:
        return self


@dataclass(frozen=True)
class ModelVersion:
    """One published version of a model.

    ``hash`` is the BLAKE3 digest of the artifact file (its blob's name in storage);
    ``manifest_hash`` that of its ``amber.json``. ``signed_by`` is the key id of the artifact's own
    signature, ``signature`` a detached one made at push (both optional).

    Examples
    --------
    >>> v = reg.get("models:/iris@production")  # doctest: +SKIP
    >>> v.uri, v.metrics["accuracy"]  # doctest: +SKIP
    ('models:/iris/3', 0.97)
    """

    name: str
    version: int
    hash: str
    size: int
    created: str
    created_by: str
    metrics: dict[str, Any]  # a ReadOnlyDict
    tags: dict[str, str]  # a ReadOnlyDict
    description: str
    aliases: tuple[str, ...]
    framework: str
    object_type: str
    manifest_hash: str = field(repr=False)
    summary_json: str = field(repr=False, default="{}")
    signed_by: str | None = field(repr=False, default=None)
    signature: str | None = field(repr=False, default=None)

    def __post_init__(self) -> None:
        for name in ("metrics", "tags"):
            value = getattr(self, name)
            if type(value) is not ReadOnlyDict:
                object.__setattr__(self, name, ReadOnlyDict(value))

    @property
    def summary(self) -> dict[str, Any]:
        """What the manifest says: Amber and Python versions, packages, probe, inputs (a new
        dict at each access: the version itself never changes)."""
        return dict(orjson.loads(self.summary_json))

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def signed(self) -> bool:
        return self.signed_by is not None or self.signature is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "hash": self.hash,
            "size": self.size,
            "created": self.created,
            "created_by": self.created_by,
            "metrics": self.metrics,
            "tags": self.tags,
            "description": self.description,
            "aliases": list(self.aliases),
            "framework": self.framework,
            "object_type": self.object_type,
            "manifest_hash": self.manifest_hash,
            "summary": self.summary,
            "signed_by": self.signed_by or (_key_of(self.signature) if self.signature else None),
        }

    def __str__(self) -> str:
        alias = f"  @{', @'.join(self.aliases)}" if self.aliases else ""
        metrics = ", ".join(f"{k}={v}" for k, v in sorted(self.metrics.items()))
        tags = ", ".join(f"{k}={v}" for k, v in sorted(self.tags.items()))
        lines = [
            f"{self.uri}{alias}",
            f"  {self.object_type} ({self.framework}), {self.size:,} bytes, "
            f"blake3 {self.hash[:16]}...",
            f"  created {self.created[:19].replace('T', ' ')} UTC by {self.created_by}",
        ]
        if metrics:
            lines.append(f"  metrics: {metrics}")
        if tags:
            lines.append(f"  tags: {tags}")
        if self.description:
            lines.append(f"  {self.description}")
        if self.signed:
            lines.append(f"  signed by key {self.to_dict()['signed_by']}")
        return "\n".join(lines)


def _key_of(signature: str) -> str | None:
    try:
        return str(json.loads(signature)["key_id"])
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class RegisteredModel:
    """A model name: how many versions it has, the latest, and its aliases."""

    name: str
    versions: int
    latest: int | None
    aliases: dict[str, int]  # a ReadOnlyDict, alias -> version, by alias
    created: str
    updated: str

    def __post_init__(self) -> None:
        if type(self.aliases) is not ReadOnlyDict:
            object.__setattr__(self, "aliases", ReadOnlyDict(self.aliases))

    def __str__(self) -> str:
        alias = ", ".join(f"@{a}={v}" for a, v in sorted(self.aliases.items()))
        return f"{self.name}  {counted(self.versions, 'version')}, latest {self.latest}" + (
            f"  {alias}" if alias else ""
        )


@dataclass(frozen=True)
class AliasChange:
    """One entry of an alias's history: it moved to ``version`` (``None``: it was removed)."""

    name: str
    alias: str
    version: int | None
    previous: int | None
    changed: str
    changed_by: str

    def __str__(self) -> str:
        when = self.changed[:19].replace("T", " ")
        what = (
            f"removed (was {self.previous})"
            if self.version is None
            else f"-> {self.version}" + (f" (was {self.previous})" if self.previous else "")
        )
        return f"{when}  {self.name}@{self.alias} {what}  by {self.changed_by}"


@dataclass
class GcReport:
    """What ``Registry.gc`` removed."""

    removed: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    kept_pending: int = 0
    temporary_files: int = 0
    kept_deleted: int = 0  # blobs of versions deleted less than the grace period ago

    def __str__(self) -> str:
        return (
            f"removed {counted(len(self.removed), 'unreferenced blob')}, "
            f"{self.freed_bytes:,} bytes; "
            f"{counted(self.temporary_files, 'leftover temporary file')}; "
            f"kept {counted(self.kept_pending, 'blob')} of pushes still in progress and "
            f"{self.kept_deleted} of versions deleted within the grace period"
        )
