"""``Registry``: named, versioned models with aliases; a catalog plus a blob store."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amber.artifact._manifest import encode
from amber.artifact._reader import ArtifactReader, NotAnArtifact
from amber.errors import FormatError, IntegrityError
from amber.registry._catalog import Catalog, PublishRequest
from amber.registry._errors import InvalidURI
from amber.registry._store import LocalStore, RemoteStore, default_cache_dir, file_blake3
from amber.registry._types import AliasChange, GcReport, ModelVersion, RegisteredModel
from amber.registry._uri import SCHEME, ModelRef, check_alias, check_name, check_version, parse_uri

if TYPE_CHECKING:
    from amber._api import EnvMode, ParityMode, ProbeMode

__all__ = ["DEFAULT_LOCATION", "Registry"]

DEFAULT_LOCATION = "./amber-models"
_CATALOG_FILE = "catalog.sqlite"


def _is_local(location: str) -> bool:
    return "://" not in location or location.startswith("file://")


def _ref(ref: object) -> ModelRef:
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


def _check_metrics(metrics: object) -> dict[str, Any]:
    if metrics is None:
        return {}
    if not isinstance(metrics, dict) or not all(isinstance(k, str) for k in metrics):
        raise TypeError(f"metrics must be a dict of name -> number, got {metrics!r}")
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            raise TypeError(
                f"metric {k!r} is {v!r}; metrics must be finite numbers (convert numpy values "
                f"with float())"
            )
        out[k] = float(v) if not isinstance(v, int) else int(v)
    json.dumps(out, allow_nan=False)
    return out


def _check_tags(tags: object) -> dict[str, str]:
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
    return dict(tags)


def _registry_meta(mv: ModelVersion) -> dict[str, Any]:
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


def _sig_key(sig: bytes | None) -> str | None:
    if sig is None:
        return None
    try:
        return str(json.loads(sig)["key_id"])[:64]
    except (ValueError, KeyError, TypeError):
        return "(unreadable)"


class _Artifact:
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
        if _is_local(text):
            root = Path(text.removeprefix("file://")).expanduser().absolute()
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
                storage_options = _env_storage_options()
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

        Examples
        --------
        >>> v = reg.push("iris", clf, metrics={"accuracy": 0.97}, alias="staging")  # doctest: +SKIP
        >>> v = reg.push("iris", "iris.amber")                                      # doctest: +SKIP
        """
        check_name(name)
        if alias is not None:
            check_alias(alias)
        metrics_ = _check_metrics(metrics)
        tags_ = _check_tags(tags)
        if description is not None and not isinstance(description, str):
            raise TypeError(f"description must be a string, got {description!r}")
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
                raise FileNotFoundError(
                    f"no such file: {str(source)!r}; push a saved .amber file or a model object"
                )
            art = _Artifact(source, verify=True)
            meta = art.manifest.get("metadata") or {}
            if metrics is None and isinstance(meta.get("metrics"), dict):
                with contextlib.suppress(TypeError):
                    metrics_ = _check_metrics(meta["metrics"])
            if tags is None and isinstance(meta.get("tags"), dict):
                with contextlib.suppress(TypeError):
                    tags_ = _check_tags(meta["tags"])
            if description is None and isinstance(meta.get("description"), str):
                description = meta["description"]
            return self._publish(art, False, name, metrics_, tags_, description, alias, key)
        from amber._api import save

        staging = self._store.staging_file()
        try:
            metadata: dict[str, Any] = {"metrics": metrics_, "tags": tags_}
            if description:
                metadata["description"] = description
            save(model, staging, sample=sample, metadata=metadata, compress=compress)
            art = _Artifact(staging, verify=False)
            return self._publish(art, True, name, metrics_, tags_, description, alias, key)
        finally:
            staging.unlink(missing_ok=True)

    def _private_key(self, signing_key: Any) -> Any:
        if signing_key is None:
            return None
        from amber.security._signing import load_private_key

        return load_private_key(signing_key)

    def _signer(self, art: _Artifact, key: Any) -> Callable[[ModelVersion], str | None] | None:
        if key is None:
            return None
        from amber.security._signing import make_signature

        def sign(mv: ModelVersion) -> str:
            exported = encode({**art.manifest, "registry": _registry_meta(mv)})
            return make_signature(exported, key, name=mv.name, version=mv.version).decode()

        return sign

    def _publish(
        self,
        art: _Artifact,
        owned: bool,
        name: str,
        metrics: dict[str, Any],
        tags: dict[str, str],
        description: str | None,
        alias: str | None,
        key: Any,
        version: int | None = None,
    ) -> ModelVersion:
        req = PublishRequest(
            name=name,
            blob_hash=art.hash,
            size=art.size,
            manifest_hash=_manifest_hash(art.manifest_bytes),
            framework=str(art.manifest.get("framework", "")),
            object_type=str(art.manifest.get("object_type", "")),
            summary=art.summary(),
            metrics=metrics,
            tags=tags,
            description=description or "",
            signed_by=_sig_key(art.signature),
            alias=alias,
            version=version,
            sign=self._signer(art, key),
        )
        self.catalog.begin_upload(art.hash)
        try:
            self._store.put(art.path, art.hash, owned=owned)
            return self.catalog.publish(req)
        except BaseException:
            with contextlib.suppress(Exception):
                self.catalog.end_upload(art.hash)
            raise

    # -- reading -----------------------------------------------------------------------------
    def get(self, ref: str) -> ModelVersion:
        """The version a URI or name points to: ``models:/iris/3``, ``iris@production``, ``iris``.

        Examples
        --------
        >>> reg.get("models:/iris@production").version  # doctest: +SKIP
        3
        """
        return self.catalog.get(_ref(ref))

    def versions(self, name: str, *, limit: int | None = None) -> list[ModelVersion]:
        """Every version of ``name``, oldest first (``limit``: only the newest ``limit``)."""
        check_name(name)
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        return self.catalog.versions(name, limit=limit)

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

        ``name`` is a glob (``"fraud-*"``), ``tag`` is ``"key=value"`` or just ``"key"``,
        ``alias`` keeps versions that carry that alias.

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
        self._prepare_write()
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
        ``grace=0`` also removes blobs of pushes that were killed a moment ago.
        """
        if not isinstance(grace, (int, float)) or isinstance(grace, bool) or grace < 0:
            raise ValueError(f"grace must be a number of seconds >= 0, got {grace!r}")
        report = GcReport()
        report.temporary_files = self._store.clean_staging(grace)
        if not self.catalog.exists():
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
        return self._store.local_path(mv.hash, mv.size)

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

        _api._check_choice("probe", probe, ("auto", "always", "never"))
        _api._check_choice("parity", parity, ("raise", "warn"))
        _api._check_choice("environment", environment, ("warn", "strict"))
        if mmap is not True and mmap is not False:
            raise TypeError(f"mmap must be True or False, got {mmap!r}")
        policy = LoadPolicy.make(trusted, allow_arbitrary_code=allow_arbitrary_code)
        mv = self.get(ref)
        check = self._checker(mv, trusted_keys)
        path = self._store.local_path(mv.hash, mv.size)
        return _api._load_path(
            path,
            policy=policy,
            mmap=mmap,
            probe=probe,
            parity=parity,
            environment=environment,
            check=check,
        )

    def _checker(
        self, mv: ModelVersion, trusted_keys: Sequence[Any] | None
    ) -> Callable[[ArtifactReader], None]:
        if trusted_keys is not None:
            from amber.security._signing import _decode_public

            _decode_public(trusted_keys)  # bad keys fail before any download

        def check(reader: ArtifactReader) -> None:
            got = _manifest_hash(reader.manifest_bytes)
            if got != mv.manifest_hash:
                raise IntegrityError(
                    f"the artifact of {mv.uri} in registry {self.location} is not the one that "
                    f"was published (its manifest's blake3 is {got[:16]}..., the catalog "
                    f"recorded {mv.manifest_hash[:16]}...); the blob or the cache was altered. "
                    f"Delete the cached copy or restore the blob"
                )
            if trusted_keys is not None:
                self._check_signatures(reader, mv, trusted_keys)

        return check

    def _check_signatures(
        self, reader: ArtifactReader, mv: ModelVersion, trusted_keys: Sequence[Any]
    ) -> Any:
        from amber.security._signing import check_signature

        source = mv.uri
        attempts: list[tuple[bytes, bytes | None]] = []
        embedded = reader.raw_signature()
        if embedded is not None:
            attempts.append((reader.manifest_bytes, embedded))
        if mv.signature is not None:
            exported = encode({**reader.manifest, "registry": _registry_meta(mv)})
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

    def verify(self, ref: str, *, trusted_keys: Sequence[Any] | None = None) -> Any:
        """:func:`amber.verify` of a version, plus its signature binding with ``trusted_keys``."""
        from amber import _api

        mv = self.get(ref)
        path = self._store.local_path(mv.hash, mv.size)
        with ArtifactReader(path) as reader:
            self._checker(mv, None)(reader)
            info = self._check_signatures(reader, mv, trusted_keys) if trusted_keys else None
        report = _api.verify(path)
        report.checks.insert(0, f"{mv.uri}: the manifest is the one recorded at push")
        if info is not None:
            report.checks.insert(1, f"{mv.uri}: {info}")
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
        from amber.artifact._rewrite import rewrite
        from amber.security._signing import make_signature

        key = self._private_key(signing_key)
        mv = self.get(ref)
        source = self._store.local_path(mv.hash, mv.size)
        target = Path(path)
        with ArtifactReader(source) as reader:
            self._checker(mv, None)(reader)
            reader.verify_all(strong=True)
            embedded = reader.raw_signature()
        meta = _registry_meta(mv)
        if key is None and mv.signature is None and embedded is not None:
            _copy_file(source, target)
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

    def import_(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        alias: str | None = None,
        signing_key: Any = None,
    ) -> ModelVersion:
        """Register an artifact file (typically one made by :meth:`export`) in this registry.

        The file is stored byte for byte, so its own signature stays valid. Name, metrics, tags
        and description come from its ``registry`` metadata (``name=`` overrides the name). The
        version number is kept when the file carries one for the same name, so that a signature
        binding ``name`` and ``version`` still holds here; importing the same file twice is a
        no-op. Otherwise the next number is taken.

        Examples
        --------
        >>> reg.import_("iris-v3.amber")                 # doctest: +SKIP
        >>> reg.import_("iris-v3.amber", name="iris-eu") # doctest: +SKIP
        """
        key = self._private_key(signing_key)
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"no such file: {str(source)!r}; give an exported .amber file")
        art = _Artifact(source, verify=True)
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
        version = meta.get("version") if meta.get("name") == target else None
        if version is not None:
            check_version(version)
        user = art.manifest.get("metadata") or {}
        metrics = meta.get("metrics", user.get("metrics"))
        tags = meta.get("tags", user.get("tags"))
        description = meta.get("description", user.get("description"))
        self._prepare_write()
        return self._publish(
            art,
            False,
            target,
            _check_metrics(metrics if isinstance(metrics, dict) else None),
            _check_tags(tags if isinstance(tags, dict) else None),
            description if isinstance(description, str) else None,
            alias,
            key,
            version=version,
        )


def _env_storage_options() -> dict[str, Any] | None:
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


def _manifest_hash(manifest_bytes: bytes) -> str:
    from amber.artifact._digest import blake3_hex

    return blake3_hex(manifest_bytes)


def _copy_file(source: Path, target: Path) -> None:
    from amber.artifact._atomic import atomic_writer

    with open(source, "rb") as fin, atomic_writer(target) as fout:
        while chunk := fin.read(8 << 20):
            fout.write(chunk)
