"""What publishing reads and checks: references, metrics, tags, an artifact file's facts."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from amber.artifact._reader import ArtifactReader, NotAnArtifact
from amber.errors import FormatError
from amber.registry._errors import InvalidURI
from amber.registry._store import file_blake3
from amber.registry._types import ModelVersion
from amber.registry._uri import SCHEME, ModelRef, check_name, parse_uri

_INT_RANGE = (-(2**63), 2**64 - 1)  # what a JSON reader (orjson) gives back as an int

__all__ = [
    "Artifact",
    "as_ref",
    "check_metrics",
    "check_tags",
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


def check_metrics(metrics: object) -> dict[str, Any]:
    if metrics is None:
        return {}
    if not isinstance(metrics, dict) or not all(isinstance(k, str) for k in metrics):
        raise TypeError(f"metrics must be a dict of name -> number, got {metrics!r}")
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TypeError(
                f"metric {k!r} is {v!r}; metrics must be finite numbers (convert numpy values "
                f"with float())"
            )
        if isinstance(v, int) and not _INT_RANGE[0] <= v <= _INT_RANGE[1]:
            raise TypeError(
                f"metric {k!r} is {v}, beyond 64 bits: it would be stored as a float and come "
                f"back changed; pass float(value) if an approximation will do"
            )
        out[k] = float(v) if not isinstance(v, int) else int(v)
    json.dumps(out, allow_nan=False)
    return out


def check_tags(tags: object, *, searchable: bool = True) -> dict[str, str]:
    """Tags as given; ``searchable`` (a push) also refuses keys that search could never find,
    which an import of a file from an older registry must take as they are."""
    if tags is None:
        return {}
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and len(k) <= 128 and len(v) <= 512
        for k, v in tags.items()
    ):
        raise TypeError(
            f"tags must be a dict of non-empty string keys (at most 128 characters) to string "
            f"values (at most 512), got {tags!r}"
        )
    for key in tags if searchable else ():
        if "=" in key:
            raise TypeError(
                f"tag key {key!r} contains '=': search(tag='key=value') splits at the first "
                f"'=', so it could never find it; use another character (e.g. '-' or ':')"
            )
    return dict(tags)


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


class Artifact:
    """What publishing needs from a local artifact file, read once."""

    def __init__(self, path: Path, *, verify: bool) -> None:
        try:
            reader = ArtifactReader(path)
        except NotAnArtifact:
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
