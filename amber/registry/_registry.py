"""``Registry``: named, versioned models with aliases; a catalog plus a blob store."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amber.artifact._manifest import encode
from amber.artifact._reader import ArtifactReader
from amber.errors import FormatError, IntegrityError, ModelNotFound
from amber.registry._catalog import Catalog, PublishRequest
from amber.registry._distribution import check_signatures, export_version, import_file
from amber.registry._errors import InvalidURI
from amber.registry._inputs import (
    Artifact,
    as_ref,
    carried,
    catalog_fields,
    check_description,
    check_metrics,
    check_tags,
    content_hash,
    env_storage_options,
    is_local,
    manifest_hash,
    not_a_file,
    registry_meta,
    sig_key,
)
from amber.registry._store import LocalStore, RemoteStore, default_cache_dir
from amber.registry._types import AliasChange, GcReport, ModelVersion, RegisteredModel, _key_of
from amber.registry._uri import ModelRef, check_alias, check_name, check_version

if TYPE_CHECKING:
    from amber._api import EnvMode, ParityMode, ProbeMode

__all__ = ["DEFAULT_LOCATION", "Registry"]

DEFAULT_LOCATION = "./amber-models"
_CATALOG_FILE = "catalog.sqlite"


#: What ``amber.verify`` of a file asked for no key says of a signed one (``amber/_api.py``).
_UNCHECKED_SIGNATURE = "signed (pass a public key to check the signature)"

_MAX_GRACE = 1e9  # seconds, about 31 years: gc's grace= beyond that is a mistake


_MAX_LIMIT = 2**63 - 1  # what SQL's LIMIT takes (a 64-bit integer); any more lists everything


def _check_limit(limit: object) -> int | None:
    """A ``limit=``: None or a positive int; one beyond what SQL takes lists everything."""
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r:.40}")
    return None if limit is None else min(limit, _MAX_LIMIT)


class Registry:
    """Named, versioned models with aliases: a SQL catalog plus content-addressed blob storage.

    Parameters
    ----------
    location:
        A local folder (default: ``$AMBER_REGISTRY``, else ``./amber-models``) or any fsspec URL
        (``s3://bucket/models``, ``gs://...``, ``memory://...``).
    catalog:
        A database URL (``postgresql://user@host/db``, ``sqlite:///catalog.sqlite``) or a SQLite
        file path. Default: ``$AMBER_CATALOG``, else ``LOCATION/catalog.sqlite`` for a folder;
        a remote location needs one.
    storage_options:
        Passed to fsspec (credentials, ``client_kwargs={"endpoint_url": ...}``, ...). Default:
        the JSON object in ``$AMBER_STORAGE_OPTIONS``, if set.
    cache:
        Where remote blobs are cached by hash (default ``$AMBER_CACHE`` or ``~/.cache/amber``).

    Examples
    --------
    >>> reg = amber.Registry()                                              # doctest: +SKIP
    >>> v = reg.push("iris", clf, sample=X[:32], metrics={"accuracy": 0.97},
    ...              alias="production")                                    # doctest: +SKIP
    >>> clf2 = reg.load("models:/iris@production")                          # doctest: +SKIP
    """

    def __init__(
        self,
        location: str | os.PathLike[str] | None = None,
        *,
        catalog: str | os.PathLike[str] | None = None,
        storage_options: dict[str, Any] | None = None,
        cache: str | os.PathLike[str] | None = None,
    ) -> None:
        if location is None:
            location = os.environ.get("AMBER_REGISTRY") or DEFAULT_LOCATION
        if not isinstance(location, (str, os.PathLike)):
            raise TypeError(f"location must be a folder or a URL, got {location!r}")
        text = os.fspath(location)
        if catalog is None:
            catalog = os.environ.get("AMBER_CATALOG") or None
        self._store: LocalStore | RemoteStore
        if is_local(text):
            root = Path(text.removeprefix("file://")).expanduser().absolute()
            if root.exists() and not root.is_dir():
                raise NotADirectoryError(
                    f"the registry location {str(root)!r} is a file, not a folder: a registry "
                    f"is a folder holding catalog.sqlite and blobs/; check the location "
                    f"(--registry, $AMBER_REGISTRY)"
                )
            self.location = str(root)
            self._store = LocalStore(root)
            catalog = catalog if catalog is not None else root / _CATALOG_FILE
        else:
            if catalog is None:
                raise InvalidURI(
                    f"a registry at {text!r} needs a catalog database: pass "
                    f"catalog='postgresql://user@host:5432/db' (on the command line --catalog, or "
                    f"set AMBER_CATALOG)"
                )
            self.location = text
            if storage_options is None:
                storage_options = env_storage_options()
            cache_dir = Path(cache).expanduser() if cache is not None else default_cache_dir()
            self._store = RemoteStore(text, dict(storage_options or {}), cache_dir)
        if storage_options and not self._store.remote:
            raise TypeError(
                f"storage_options apply to remote locations (s3://, gs://, ...); {text!r} is a "
                f"local folder"
            )
        self.catalog = Catalog(catalog, label=self.location)

    def __repr__(self) -> str:
        return f"Registry({self.location!r}, catalog={self.catalog.safe_url!r})"

    def close(self) -> None:
        """Release the catalog's connections."""
        self.catalog.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prepare_write(self) -> None:
        self.catalog.check_writable()
        if isinstance(self._store, LocalStore):
            try:
                self._store.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FileNotFoundError(
                    f"cannot create the registry folder {self.location!r}: {exc}"
                ) from exc

    # -- publishing --------------------------------------------------------------------------
    def push(
        self,
        name: str,
        model: Any,
        *,
        sample: Any = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        description: str | None = None,
        alias: str | None = None,
        compress: str = "none",
        signing_key: Any = None,
    ) -> ModelVersion:
        """Publish a new version of ``name``: a model object, or an existing ``.amber`` file.

        The artifact is stored (content-addressed by its BLAKE3 digest; identical pushes share
        one blob) and checked first; then the version number is taken from the catalog and the
        version row, its tags and the ``alias`` move are committed in one transaction.
        ``signing_key`` (an Ed25519 private key file) adds a detached signature binding the name
        and the new version (``docs/FORMAT.md`` section 6).

        A file's metrics, tags and description are taken as :meth:`import_` takes them (its
        ``registry`` field, else its ``metadata``) unless given here; one the registry cannot
        record (a metric that is not a finite number, a tag that is not a string, text with a
        NUL character) is refused, naming it, never dropped.

        Examples
        --------
        >>> v = reg.push("iris", clf, metrics={"accuracy": 0.97}, alias="staging")  # doctest: +SKIP
        >>> v = reg.push("iris", "iris.amber")                                      # doctest: +SKIP
        """
        check_name(name)
        if alias is not None:
            check_alias(alias)
        metrics_ = check_metrics(metrics)
        tags_ = check_tags(tags)
        if description is not None:
            check_description(description)
        key = self._private_key(signing_key)
        self._prepare_write()
        if isinstance(model, (str, os.PathLike)):
            if sample is not None or compress != "none":
                raise TypeError(
                    f"sample= and compress= apply when pushing a model object; "
                    f"{os.fspath(model)!r} is already saved (re-save it with amber.save to "
                    f"change them)"
                )
            source = Path(model)
            if not source.is_file():
                raise not_a_file(source, "push a saved .amber file or a model object")
            art = Artifact(source, verify=True)
            # What the file carries, read as an import reads it; a value given here replaces it.
            # A file's value the registry cannot record is refused, never dropped.
            given = {"metrics": metrics, "tags": tags, "description": description}
            file_metrics, file_tags, file_description = carried(
                art.manifest,
                source=str(source),
                action="push",
                wanted={k for k, v in given.items() if v is None},
            )
            if metrics is None:
                metrics_ = file_metrics
            if tags is None:
                tags_ = file_tags
            if description is None:
                description = file_description
            return self._publish(art, False, name, metrics_, tags_, description, alias, key)
        from amber._api import save

        staging = self._store.staging_file()
        try:
            metadata: dict[str, Any] = {"metrics": metrics_, "tags": tags_}
            if description:
                metadata["description"] = description
            save(model, staging, sample=sample, metadata=metadata, compress=compress)
            art = Artifact(staging, verify=False)
            return self._publish(art, True, name, metrics_, tags_, description, alias, key)
        finally:
            staging.unlink(missing_ok=True)

    def _private_key(self, signing_key: Any) -> Any:
        if signing_key is None:
            return None
        from amber.security._signing import load_private_key

        return load_private_key(signing_key)

    def _signer(self, art: Artifact, key: Any) -> Callable[[ModelVersion], str | None] | None:
        if key is None:
            return None
        from amber.security._signing import make_signature

        def sign(mv: ModelVersion) -> str:
            exported = encode({**art.manifest, "registry": registry_meta(mv)})
            return make_signature(exported, key, name=mv.name, version=mv.version).decode()

        return sign

    def _publish(
        self,
        art: Artifact,
        owned: bool,
        name: str,
        metrics: dict[str, Any],
        tags: dict[str, str],
        description: str | None,
        alias: str | None,
        key: Any,
        version: int | None = None,
        *,
        dedupe: bool = False,
    ) -> ModelVersion:
        fields = catalog_fields(art.manifest, repr(str(art.path)) if not owned else "the model")
        req = PublishRequest(
            name=name,
            blob_hash=art.hash,
            size=art.size,
            manifest_hash=manifest_hash(art.manifest_bytes),
            content_hash=art.content,
            framework=fields["framework"],
            object_type=fields["object_type"],
            summary=art.summary(),
            metrics=metrics,
            tags=tags,
            description=description or "",
            signed_by=sig_key(art.signature),
            alias=alias,
            version=version,
            sign=self._signer(art, key),
            dedupe=dedupe,
        )
        if dedupe or version is not None:  # an import compares models by content
            self._backfill_content(name)
        self.catalog.begin_upload(art.hash)
        try:
            self._store.put(art.path, art.hash, owned=owned)
            return self.catalog.publish(req)
        except BaseException:
            with contextlib.suppress(Exception):
                self.catalog.end_upload(art.hash)
            raise

    def _backfill_content(self, name: str) -> None:
        """Versions published before catalog schema step 3 have no content digest (what an
        import compares): computed once from their blobs' manifests, read from the store."""
        if not self.catalog.exists():
            return
        with contextlib.suppress(ModelNotFound):
            for version_id, blob_hash, size in self.catalog.without_content(name):
                try:
                    path = self._store.local_path(blob_hash, size)
                    with ArtifactReader(path) as reader:
                        content = content_hash(reader.manifest)
                except (OSError, IntegrityError, FormatError):
                    continue  # a blob that cannot be read: compared by its digests alone
                self.catalog.set_content(version_id, content)

    # -- reading -----------------------------------------------------------------------------
    def get(self, ref: str) -> ModelVersion:
        """The version a URI or name points to: ``models:/iris/3``, ``iris@production``, ``iris``.

        Examples
        --------
        >>> reg.get("models:/iris@production").version  # doctest: +SKIP
        3
        """
        return self.catalog.get(as_ref(ref))

    def versions(self, name: str, *, limit: int | None = None) -> list[ModelVersion]:
        """Every version of ``name``, oldest first (``limit``: only the newest ``limit``)."""
        check_name(name)
        return self.catalog.versions(name, limit=_check_limit(limit))

    def models(self) -> list[RegisteredModel]:
        """Every model with at least one version, by name."""
        return self.catalog.models()

    def search(
        self,
        *,
        name: str | None = None,
        tag: str | None = None,
        alias: str | None = None,
        limit: int | None = None,
    ) -> list[ModelVersion]:
        """Versions matching all the criteria given.

        ``name`` is a glob matched case-sensitively, as names are (``"fraud-*"``; ``?`` is one
        character, ``[ab]`` one of a set, ``[!ab]`` one not in it), ``tag`` is ``"key=value"``
        or just ``"key"``, ``alias`` keeps versions that carry that alias.

        Examples
        --------
        >>> reg.search(tag="team=risk")  # doctest: +SKIP
        """
        tag_pair: tuple[str, str | None] | None = None
        if tag is not None:
            if not isinstance(tag, str) or not tag or tag.startswith("="):
                raise ValueError(f"tag must be 'key=value' or 'key', got {tag!r}")
            key, eq, value = tag.partition("=")
            tag_pair = (key, value if eq else None)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a glob pattern string, got {name!r}")
        limit = _check_limit(limit)
        if alias is not None:
            check_alias(alias)
        return self.catalog.search(name=name, tag=tag_pair, alias=alias, limit=limit)

    def aliases(self, name: str) -> dict[str, int]:
        """The aliases of ``name`` and the versions they point to."""
        return self.catalog.aliases(check_name(name))

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasChange]:
        """Every move and removal of the aliases of ``name`` (or of one alias), oldest first."""
        return self.catalog.alias_history(check_name(name), alias)

    # -- aliases and deletion ----------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: int) -> int | None:
        """Point ``alias`` at ``version`` of ``name``; returns the version it pointed to before."""
        return self.catalog.set_alias(check_name(name), check_alias(alias), check_version(version))

    def remove_alias(self, name: str, alias: str) -> int:
        """Remove an alias; returns the version it pointed to."""
        return self.catalog.remove_alias(check_name(name), check_alias(alias))

    def delete(self, name: str, version: int, *, force: bool = False) -> ModelVersion:
        """Delete one version (its number is never reused). Its blob goes at the next ``gc``.

        A version that an alias points to is kept unless ``force=True``, which removes the
        aliases too (recorded in their history).
        """
        return self.catalog.delete_version(check_name(name), check_version(version), force=force)

    def gc(self, *, grace: float = 3600.0) -> GcReport:
        """Remove blobs that no version refers to; returns what was removed.

        A blob whose push is still in flight (uploaded, not yet committed) is kept for
        ``grace`` seconds after the push touched it, so a concurrent push never loses its blob;
        the blob of a version deleted less than ``grace`` seconds ago is kept too, so a load
        that resolved it just before the delete can still read it. ``grace=0`` also removes
        blobs and temporary files of pushes that were killed a moment ago: use it only when no
        push or load is running.
        """
        if (
            not isinstance(grace, (int, float))
            or isinstance(grace, bool)
            or not 0 <= grace <= _MAX_GRACE
        ):
            raise ValueError(
                f"grace must be a number of seconds from 0 to {_MAX_GRACE:.0e} (about 31 "
                f"years), got {grace!r}; the default keeps an hour"
            )
        report = GcReport()
        exists = self.catalog.exists()
        if exists:
            self.catalog.check_writable()
        report.temporary_files = self._store.clean_staging(grace)
        if not exists:
            return report
        cutoff = (_dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=grace)).isoformat(
            timespec="microseconds"
        )
        referenced = self.catalog.referenced()
        stored = dict(self._store.list())
        for blob_hash, size in stored.items():
            if blob_hash in referenced:
                continue
            outcome = self.catalog.collect(blob_hash, cutoff, self._deleter(blob_hash))
            if outcome == "deleted":
                report.removed.append(blob_hash)
                report.freed_bytes += size
            elif outcome == "pending":
                report.kept_pending += 1
            elif outcome == "recent":
                report.kept_deleted += 1
        # Marks of uploads that never stored anything (the pusher died first): drop stale ones.
        for blob_hash in self.catalog.pending_rows():
            if blob_hash not in stored and blob_hash not in referenced:
                self.catalog.collect(blob_hash, cutoff, lambda: False)
        return report

    def _deleter(self, blob_hash: str) -> Callable[[], bool]:
        return lambda: self._store.delete(blob_hash)

    # -- loading -----------------------------------------------------------------------------
    def path(self, ref: str) -> Path:
        """A local path of the version's artifact (downloaded into the cache if remote)."""
        mv = self.get(ref)
        return self._blob(mv, ref)

    def _blob(self, mv: ModelVersion, ref: str) -> Path:
        """The local path of ``mv``'s artifact, checked to start like one (a blob replaced by
        other bytes is named as such, not as a pickle or a file to convert)."""
        with self._resolved(mv, ref):
            path = self._store.local_path(mv.hash, mv.size)
        with open(path, "rb") as f:
            head = f.read(4)
        if head != b"PK\x03\x04":
            raise IntegrityError(
                f"the blob of {mv.uri} in registry {self.location} ({str(path)!r}) is not an "
                f"Amber artifact any more (it starts with {head!r}, not a zip header): it was "
                f"altered after the push. Restore it from a backup (its blake3 is "
                f"{mv.hash[:16]}...), or delete the version"
            )
        return path

    def load(
        self,
        ref: str,
        *,
        mmap: bool = False,
        trusted: Sequence[str] | None = None,
        allow_arbitrary_code: bool = False,
        probe: ProbeMode = "auto",
        parity: ParityMode = "raise",
        environment: EnvMode = "warn",
        trusted_keys: Sequence[Any] | None = None,
    ) -> Any:
        """Load a version through the same safe, verified path as :func:`amber.load`.

        The artifact's manifest must be the one the catalog recorded at push. With
        ``trusted_keys``, a valid signature by one of them that binds this name and version is
        required (the artifact's own, or the detached one made at push).

        Examples
        --------
        >>> clf = reg.load("models:/iris@production")  # doctest: +SKIP
        """
        from amber import _api
        from amber.security._policy import LoadPolicy

        _api.check_load_options(probe, parity, environment, mmap)
        policy = LoadPolicy.make(trusted, allow_arbitrary_code=allow_arbitrary_code)
        mv = self.get(ref)
        check = self._checker(mv, trusted_keys)
        path = self._blob(mv, ref)
        with self._resolved(mv, ref):
            return _api._load_path(
                path,
                policy=policy,
                mmap=mmap,
                probe=probe,
                parity=parity,
                environment=environment,
                check=check,
            )

    @contextlib.contextmanager
    def _resolved(self, mv: ModelVersion, ref: str) -> Iterator[None]:
        """Reading the blob of ``mv`` (what ``ref`` resolved to): if it fails because the
        version was deleted meanwhile (and ``gc`` removed its blob), say so."""
        try:
            yield
        except (IntegrityError, FileNotFoundError) as exc:
            try:
                self.catalog.get(ModelRef(mv.name, version=mv.version))
            except ModelNotFound:
                raise ModelNotFound(
                    f"{mv.uri} (what {ref!r} resolved to) was deleted from registry "
                    f"{self.location} while it was being read, and gc removed its blob; resolve "
                    f"{ref!r} again to load what it points to now (gc keeps the blob of a "
                    f"deleted version for its grace period: grace=0 removes it at once)"
                ) from exc
            except Exception:  # the catalog cannot tell: the first error is the one to show
                pass
            raise

    def _checker(
        self, mv: ModelVersion, trusted_keys: Sequence[Any] | None
    ) -> Callable[[ArtifactReader], None]:
        if trusted_keys is not None:
            from amber.security._signing import _decode_public

            _decode_public(trusted_keys)  # bad keys fail before any download

        def check(reader: ArtifactReader) -> None:
            got = manifest_hash(reader.manifest_bytes)
            if got != mv.manifest_hash:
                raise IntegrityError(
                    f"the artifact of {mv.uri} in registry {self.location} is not the one that "
                    f"was published (its manifest's blake3 is {got[:16]}..., the catalog "
                    f"recorded {mv.manifest_hash[:16]}...); the blob or the cache was altered. "
                    f"Delete the cached copy or restore the blob"
                )
            if trusted_keys is not None:
                check_signatures(reader, mv, trusted_keys)

        return check

    def verify(
        self,
        ref: str,
        *,
        trusted_keys: Sequence[Any] | None = None,
        trusted: list[str] | tuple[str, ...] | None = None,
        allow_arbitrary_code: bool = False,
    ) -> Any:
        """:func:`amber.verify` of a version, plus its signature binding with ``trusted_keys``."""
        from amber import _api

        mv = self.get(ref)
        path = self._blob(mv, ref)
        with self._resolved(mv, ref):
            with ArtifactReader(path) as reader:
                self._checker(mv, None)(reader)
                info = check_signatures(reader, mv, trusted_keys) if trusted_keys else None
            report = _api.verify(path, trusted=trusted, allow_arbitrary_code=allow_arbitrary_code)
        report.checks.insert(0, f"{mv.uri}: the manifest is the one recorded at push")
        if info is not None:
            # the file check, asked for no key, adds that the artifact is signed and unchecked:
            # the line above says which signature was checked
            report.checks = [c for c in report.checks if c != _UNCHECKED_SIGNATURE]
            report.checks.insert(1, f"{mv.uri}: {info}")
        elif mv.signature is not None and _UNCHECKED_SIGNATURE not in report.checks:
            report.checks.insert(
                1,
                f"{mv.uri}: signed at push by key {_key_of(mv.signature)} (pass a public key to "
                f"check the signature)",
            )
        return report

    # -- distribution ------------------------------------------------------------------------
    def export(
        self,
        ref: str,
        path: str | os.PathLike[str],
        *,
        signing_key: Any = None,
    ) -> ModelVersion:
        """Write one self-contained ``.amber`` file of a version, carrying its registry metadata.

        The manifest gains a ``registry`` field (name, version, metrics, tags, description, who
        and when). With ``signing_key`` the file is signed for this name and version; without
        one, a detached signature made at push is attached, or an artifact that was pushed
        already signed is copied byte for byte.

        Examples
        --------
        >>> reg.export("models:/iris@production", "iris-v3.amber")  # doctest: +SKIP
        """
        return export_version(self, ref, path, signing_key=signing_key)

    def import_(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        alias: str | None = None,
        signing_key: Any = None,
        keep_version: bool = True,
    ) -> ModelVersion:
        """Register an artifact file (typically one made by :meth:`export`) in this registry.

        The file is stored byte for byte, so its own signature stays valid. Name, metrics, tags
        and description come from its ``registry`` metadata (``name=`` overrides the name). The
        version number is kept when the file carries one for the same name, so that a signature
        binding ``name`` and ``version`` still holds here; ``keep_version=False`` takes the next
        number instead. A number held, or once held by a deleted version, of another model is
        refused (``VersionConflict``): numbers are never reused for another model.

        Importing a model that a version of the name already holds, under whatever number (the
        same file again, or an export of it, which differs only in its ``registry`` metadata),
        adds nothing: that version is returned, and ``alias`` is moved to it. With
        ``signing_key`` that version is signed here, if no signature was made for it here yet
        (one by another key: ``VersionConflict``). A signed file whose model a version holds
        without that key's signature is refused (``VersionConflict``): its signature covers the
        file's manifest, not the version's, and would be lost; the message says what to do.

        Examples
        --------
        >>> reg.import_("iris-v3.amber")                 # doctest: +SKIP
        >>> reg.import_("iris-v3.amber", name="iris-eu") # doctest: +SKIP
        """
        if keep_version is not True and keep_version is not False:
            raise TypeError(f"keep_version must be True or False, got {keep_version!r}")
        return import_file(
            self, path, name=name, alias=alias, signing_key=signing_key, keep_version=keep_version
        )
