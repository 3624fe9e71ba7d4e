"""Export, import and signature checks of registry versions (``docs/FORMAT.md`` section 6)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amber.artifact._manifest import encode
from amber.artifact._reader import ArtifactReader
from amber.errors import IntegrityError
from amber.registry._errors import InvalidURI, VersionConflict
from amber.registry._inputs import Artifact, carried, copy_file, not_a_file, registry_meta
from amber.registry._types import ModelVersion
from amber.registry._uri import check_alias, check_name, check_version

if TYPE_CHECKING:
    from amber.registry._registry import Registry

__all__ = ["check_signatures", "export_version", "import_file"]


def check_signatures(reader: ArtifactReader, mv: ModelVersion, trusted_keys: Sequence[Any]) -> Any:
    """Require a trusted signature binding ``mv``'s name and version; check every entry.

    Tried in turn: the artifact's own ``amber.sig`` (over its manifest), then the detached
    signature made at push (over the manifest that ``export`` writes for this version).
    """
    from amber.security._signing import check_signature

    source = mv.uri
    attempts: list[tuple[bytes, bytes | None]] = []
    embedded = reader.raw_signature()
    if embedded is not None:
        attempts.append((reader.manifest_bytes, embedded))
    if mv.signature is not None:
        exported = encode({**reader.manifest, "registry": registry_meta(mv)})
        attempts.append((exported, mv.signature.encode()))
    if not attempts:
        attempts.append((reader.manifest_bytes, None))
    first: IntegrityError | None = None
    for manifest_bytes, sig in attempts:
        try:
            info = check_signature(
                manifest_bytes,
                sig,
                trusted_keys,
                source=source,
                name=mv.name,
                version=mv.version,
            )
        except IntegrityError as exc:
            first = first or exc
            continue
        reader.verify_all(strong=True)
        return info
    raise first or IntegrityError(f"{source}: no signature could be checked")


def _refuse_a_place_of_the_registry(reg: Registry, target: Path) -> None:
    """An export goes outside the registry: written into its folder (over a blob, the
    catalog, a temporary file of a push) or its cache of downloaded blobs, it would replace
    what the registry holds with a file the catalog does not describe."""
    from amber.registry._store import LocalStore

    where = target.expanduser().resolve()  # (through symlinks, as the write would go)
    store = reg._store
    if isinstance(store, LocalStore):
        root, kind = store.root, "folder"
    else:
        root, kind = store.cache, "cache of downloaded blobs"
    inside = where.is_relative_to(Path(root).expanduser().resolve())
    catalog = reg.catalog.sqlite_path
    if not inside and catalog is not None:  # (a catalog kept outside the folder)
        names = {catalog.name + suffix for suffix in ("", "-wal", "-shm", "-journal")}
        inside = where.parent == catalog.expanduser().resolve().parent and where.name in names
        kind = "SQLite catalog"
    if inside:
        raise ValueError(
            f"{str(target)!r} is inside registry {reg.location}'s {kind}, and an export "
            f"there would overwrite what the registry holds; write it to a path outside "
            f"the registry"
        )


def export_version(
    reg: Registry,
    ref: str,
    path: str | os.PathLike[str],
    *,
    signing_key: Any = None,
) -> ModelVersion:
    """:meth:`Registry.export`: one self-contained file of a version, with registry metadata.

    The manifest gains a ``registry`` field (name, version, metrics, tags, description, who
    and when). With ``signing_key`` the file is signed for this name and version; without
    one, a detached signature made at push is attached, or an artifact that was pushed
    already signed is copied byte for byte.

    Examples
    --------
    >>> reg.export("models:/iris@production", "iris-v3.amber")  # doctest: +SKIP
    """
    from amber.artifact._rewrite import rewrite
    from amber.security._signing import make_signature

    target = Path(path)
    _refuse_a_place_of_the_registry(reg, target)
    key = reg._private_key(signing_key)
    mv = reg.get(ref)
    source = reg._blob(mv, ref)
    with ArtifactReader(source) as reader:
        reg._checker(mv, None)(reader)
        reader.verify_all(strong=True)
        embedded = reader.raw_signature()
        manifest = reader.manifest
    meta = registry_meta(mv)
    if key is None and mv.signature is None and embedded is not None:
        # Signed before it was pushed: the signature covers the file as it was. Copied byte for
        # byte, it must still carry what the catalog records, or an import would lose it.
        lost = _not_carried(manifest, mv)
        if lost:
            raise VersionConflict(
                f"{mv.uri} was pushed as a file already signed (key {mv.signed_by}), and that "
                f"signature covers a manifest without the {', '.join(lost)} that registry "
                f"{reg.location} records for it: a copy that keeps the signature would lose "
                f"them. Export it with signing_key= (--key FILE) to sign a copy that carries "
                f"them for {mv.name} version {mv.version}"
            )
        copy_file(source, target)
        return mv
    detached = mv.signature.encode() if mv.signature is not None else None

    def signer(raw: bytes) -> bytes:
        if key is not None:
            return make_signature(raw, key, name=mv.name, version=mv.version)
        return detached  # type: ignore[return-value]

    rewrite(
        source,
        target,
        update=lambda m: {**m, "registry": meta},
        signer=signer if key is not None or detached is not None else None,
    )
    return mv


def _not_carried(manifest: dict[str, Any], mv: ModelVersion) -> list[str]:
    """What of ``mv``'s metrics, tags and description an import of ``manifest`` would lose."""
    try:
        metrics, tags, description = carried(manifest)
    except (TypeError, ValueError):
        return ["metrics", "tags", "description"]
    lost = []
    if metrics != dict(mv.metrics):
        lost.append(f"metrics {dict(mv.metrics)}")
    if tags != dict(mv.tags):
        lost.append(f"tags {dict(mv.tags)}")
    if (description or "") != mv.description:
        lost.append(f"description {mv.description!r}")
    return lost


def import_file(
    reg: Registry,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    alias: str | None = None,
    signing_key: Any = None,
    keep_version: bool = True,
) -> ModelVersion:
    """What :meth:`Registry.import_` does (documented there)."""
    key = reg._private_key(signing_key)
    source = Path(path)
    if not source.is_file():
        raise not_a_file(source, "give an exported .amber file")
    art = Artifact(source, verify=True)
    meta = art.manifest.get("registry") or {}
    if not isinstance(meta, dict):
        meta = {}
    target = name if name is not None else meta.get("name")
    if target is None:
        raise TypeError(
            f"{str(source)!r} carries no registry name (it was not exported from a "
            f"registry); give one: import_(path, name='iris') or --name iris"
        )
    check_name(target)
    if alias is not None:
        check_alias(alias)
    version = meta.get("version") if keep_version and meta.get("name") == target else None
    if version is not None:
        try:
            check_version(version)
        except InvalidURI as exc:
            raise InvalidURI(
                f"{str(source)!r} carries registry version {version!r:.40}, which cannot be kept "
                f"here ({exc}); import it with keep_version=False (--new-version) to take the "
                f"next number of {target}"
            ) from None
    metrics, tags, description = carried(art.manifest, source=str(source), action="import")
    reg._prepare_write()
    return reg._publish(
        art,
        False,
        target,
        metrics,
        tags,
        description,
        alias,
        key,
        version=version,
        dedupe=True,
    )
