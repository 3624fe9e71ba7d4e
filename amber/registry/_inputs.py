"""What publishing reads and checks: references, metrics, tags, an artifact file's facts."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Container
from pathlib import Path
from typing import Any

from amber.artifact._manifest import JSON_INT_RANGE
from amber.artifact._reader import ArtifactReader, NotAnArtifact
from amber.errors import FormatError
from amber.registry._errors import InvalidURI
from amber.registry._store import file_blake3
from amber.registry._types import ModelVersion
from amber.registry._uri import SCHEME, ModelRef, check_name, check_version, parse_uri

__all__ = [
    "Artifact",
    "as_ref",
    "carried",
    "catalog_fields",
    "check_description",
    "check_metrics",
    "check_tags",
    "check_text",
    "content_hash",
    "copy_file",
    "env_storage_options",
    "is_local",
    "manifest_hash",
    "registry_meta",
    "sig_key",
]


def is_local(location: str) -> bool:
    return "://" not in location or location.startswith("file://")


def as_ref(ref: object) -> ModelRef:
    """``models:/iris/3``, or the same without the scheme: ``iris/3``, ``iris@prod``, ``iris``."""
    if isinstance(ref, ModelRef):
        if ref.version is not None:
            check_version(ref.version)
        return ref
    if not isinstance(ref, str):
        raise InvalidURI(
            f"expected a model URI such as 'models:/iris/3' or a name, got a "
            f"{type(ref).__name__}: {ref!r}"
        )
    if ":" in ref:
        return parse_uri(ref)
    if "/" in ref or "@" in ref:
        return parse_uri(SCHEME + ref)
    return ModelRef(check_name(ref))


def check_text(value: str, what: str, *, hint: str | None = None) -> str:
    """Text the catalog stores as it is (a tag, a description, a name in the manifest): valid
    Unicode without NUL. PostgreSQL's text types refuse a NUL character (SQLite would keep it),
    and a lone surrogate cannot be encoded as UTF-8 at all: both are refused up front, on every
    backend, before anything is stored. ``hint`` (where the value came from) ends a refusal."""
    then = f"; {hint}" if hint else ""
    if "\x00" in value:
        raise ValueError(
            f"{what} {value!r:.120} contains a NUL character (\\x00), which the catalog cannot "
            f"store (PostgreSQL refuses it in text): remove it{then}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} {value!r:.120} is not valid Unicode text: it holds a lone surrogate "
            f"({value[exc.start]!r} at position {exc.start}), which cannot be encoded as UTF-8 "
            f"(bytes decoded with errors='surrogateescape'?); decode the original bytes with "
            f"their real encoding, or remove it{then}"
        ) from None
    return value


_METRIC_HINT = "convert numpy values with float()"


def check_metrics(metrics: object, *, hint: str = _METRIC_HINT) -> dict[str, Any]:
    """Metrics as given (name -> finite number); ``hint`` ends each refusal: what to do."""
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics must be a dict of name -> number, got {metrics!r:.200}; {hint}")
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if not isinstance(k, str):
            raise TypeError(
                f"metric name {k!r:.80} is not a string: metrics must be a dict of name -> "
                f"number; {hint}"
            )
        check_text(k, "metric name", hint=None if hint == _METRIC_HINT else hint)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TypeError(f"metric {k!r} is {v!r:.80}; metrics must be finite numbers ({hint})")
        if isinstance(v, int) and not JSON_INT_RANGE[0] <= v <= JSON_INT_RANGE[1]:
            raise TypeError(
                f"metric {k!r} is {v}, beyond 64 bits: it would be stored as a float and come "
                f"back changed; pass float(value) if an approximation will do"
                + ("" if hint == _METRIC_HINT else f" ({hint})")
            )
        out[k] = float(v) if not isinstance(v, int) else int(v)
    json.dumps(out, allow_nan=False)
    return out


_TAG_RULE = (
    "tags must be a dict of non-empty string keys (at most 128 characters) to string values (at "
    "most 512)"
)


def check_tags(tags: object, *, searchable: bool = True, hint: str | None = None) -> dict[str, str]:
    """Tags as given; ``searchable`` (a push) also refuses keys that search could never find,
    which an import of a file from an older registry must take as they are. ``hint`` ends each
    refusal: what to do."""
    if tags is None:
        return {}
    then = f"; {hint}" if hint else ""
    if not isinstance(tags, dict):
        raise TypeError(f"{_TAG_RULE}, got {tags!r:.200}{then}")
    for key, value in tags.items():
        if not isinstance(key, str) or not key or len(key) > 128:
            raise TypeError(f"tag key {key!r:.160} is not valid: {_TAG_RULE}{then}")
        if not isinstance(value, str) or len(value) > 512:
            shown = f"{len(value)} characters long" if isinstance(value, str) else f"{value!r:.80}"
            raise TypeError(f"tag {key!r} is {shown}: {_TAG_RULE}{then}")
        check_text(key, "tag key", hint=hint)
        check_text(value, f"the value of tag {key!r}:", hint=hint)
        if searchable and "=" in key:
            raise TypeError(
                f"tag key {key!r} contains '=': search(tag='key=value') splits at the first "
                f"'=', so it could never find it; use another character (e.g. '-' or ':'){then}"
            )
    return dict(tags)


def check_description(description: object, *, hint: str | None = None) -> str:
    if not isinstance(description, str):
        raise TypeError(
            f"description must be a string, got {description!r:.80}" + (f"; {hint}" if hint else "")
        )
    return check_text(description, "description", hint=hint)


def carried(
    manifest: dict[str, Any],
    *,
    source: str | None = None,
    action: str = "import",
    wanted: Container[str] = ("metrics", "tags", "description"),
) -> tuple[dict[str, Any], dict[str, str], str | None]:
    """The metrics, tags and description a file brings to a push or an import: its ``registry``
    field (an export), else its user ``metadata`` (``amber.save(metadata=...)``).

    A value the registry cannot record is refused, naming it and what to do, never dropped: a
    push or import must not quietly lose what the file says. ``source`` (the file) and
    ``action`` (``"push"`` or ``"import"``) shape that advice; only the ``wanted`` ones are read
    (a push given ``metrics=`` does not look at the file's).
    """
    meta = manifest.get("registry") or {}
    if not isinstance(meta, dict):
        meta = {}
    user = manifest.get("metadata") or {}
    if not isinstance(user, dict):
        user = {}

    def field(key: str) -> tuple[Any, str]:
        if meta.get(key) is not None:
            return meta[key], "registry field"
        return user.get(key), "metadata"

    def hint(key: str, where: str, fix: str) -> str:
        told = f"{source!r} carries it in its {where}" if source else f"it is in the {where}"
        if action == "push":
            return (
                f"{told}: pass {key}= to push to record others instead ({key}="
                + ("''" if key == "description" else "{}")
                + f" records none), or save the file again with {fix}"
            )
        return (
            f"{told}: save the file again with {fix}, or push it with {key}= instead (an import "
            f"records what the file carries)"
        )

    checked_metrics: dict[str, Any] = {}
    checked_tags: dict[str, str] = {}
    description = None
    if "metrics" in wanted:
        metrics, where = field("metrics")
        checked_metrics = check_metrics(
            metrics, hint=hint("metrics", where, "finite numbers (e.g. 1.0 for True)")
        )
    if "tags" in wanted:
        tags, where = field("tags")
        checked_tags = check_tags(
            tags, searchable=action == "push", hint=hint("tags", where, "string tags")
        )
    if "description" in wanted:
        description, where = field("description")
        if description is not None:
            check_description(description, hint=hint("description", where, "a string"))
    return checked_metrics, checked_tags, description


#: What the catalog's columns hold of an artifact's manifest (characters).
_FIELD_LIMITS = {"framework": 200, "object_type": 400}


def catalog_fields(manifest: dict[str, Any], source: str) -> dict[str, str]:
    """``framework`` and ``object_type`` of a manifest, checked to fit the catalog's columns
    (on every backend: PostgreSQL would refuse longer values, SQLite would keep them)."""
    out = {}
    for key, limit in _FIELD_LIMITS.items():
        value = str(manifest.get(key, ""))
        check_text(value, f"{source}: the manifest's {key}")
        if len(value) > limit:
            raise ValueError(
                f"{source}: the manifest's {key} is {len(value)} characters long "
                f"({value[:60]!r}...), beyond the {limit} a registry records; save the model "
                f"from a class with a shorter qualified name (or wrap it in one) to publish it"
            )
        out[key] = value
    return out


def registry_meta(mv: ModelVersion) -> dict[str, Any]:
    """What an exported file carries in its manifest's ``registry`` field (FORMAT.md section 6)."""
    return {
        "name": mv.name,
        "version": mv.version,
        "metrics": mv.metrics,
        "tags": mv.tags,
        "description": mv.description,
        "created": mv.created,
        "created_by": mv.created_by,
    }


def sig_key(sig: bytes | None) -> str | None:
    if sig is None:
        return None
    try:
        return str(json.loads(sig)["key_id"])[:64]
    except (ValueError, KeyError, TypeError):
        return "(unreadable)"


def not_a_file(source: Path, advice: str) -> OSError:
    """The error for a path given as a file that is none: a folder, or nothing."""
    if source.is_dir():
        return IsADirectoryError(f"{str(source)!r}: is a folder, not a file; {advice}")
    return FileNotFoundError(f"{str(source)!r}: no such file; {advice}")


class Artifact:
    """What publishing needs from a local artifact file, read once."""

    def __init__(self, path: Path, *, verify: bool) -> None:
        try:
            reader = ArtifactReader(path)
        except NotAnArtifact:
            from amber.security._foreign import unconvertible

            said = unconvertible(path)
            if said is not None:
                raise FormatError(
                    f"{said}; the registry takes .amber artifacts (or a model object)"
                ) from None
            raise FormatError(
                f"{str(path)!r} is not an Amber artifact; convert a pickle or joblib file first "
                f"(`amber convert {path} model.amber`), or push the model object itself"
            ) from None
        with reader:
            if verify:
                reader.verify_all(strong=True)
            self.manifest = reader.manifest
            self.manifest_bytes = reader.manifest_bytes
            self.signature = reader.raw_signature()
        self.path = path
        self.size = path.stat().st_size
        self.hash = file_blake3(path)
        self.content = content_hash(self.manifest)

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        env = m.get("environment", {})
        return {
            "amber_version": m.get("amber_version"),
            "format_version": m.get("format_version"),
            "handler": m.get("handler"),
            "saved": m.get("created"),
            "python": env.get("python"),
            "packages": env.get("packages", {}),
            "probe": "probe" in m,
            "inputs": (m.get("signature") or {}).get("inputs"),
        }


def env_storage_options() -> dict[str, Any] | None:
    raw = os.environ.get("AMBER_STORAGE_OPTIONS")
    if not raw:
        return None
    try:
        options = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"AMBER_STORAGE_OPTIONS is not valid JSON ({exc}): {raw!r}") from None
    if not isinstance(options, dict):
        raise ValueError(f"AMBER_STORAGE_OPTIONS must hold a JSON object, got {raw!r}")
    return options


def content_hash(manifest: dict[str, Any]) -> str:
    """What identifies the model in an artifact: the BLAKE3 of its canonical manifest without the
    ``registry`` field (which export, import and signing rewrite; every entry's digest stays)."""
    from amber.artifact._manifest import encode

    return manifest_hash(encode({k: v for k, v in manifest.items() if k != "registry"}))


def manifest_hash(manifest_bytes: bytes) -> str:
    from amber.artifact._digest import blake3_hex

    return blake3_hex(manifest_bytes)


def copy_file(source: Path, target: Path) -> None:
    from amber.artifact._atomic import atomic_writer

    with open(source, "rb") as fin, atomic_writer(target) as fout:
        while chunk := fin.read(8 << 20):
            fout.write(chunk)
