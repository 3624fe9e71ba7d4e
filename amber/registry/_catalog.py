"""The catalog: names, versions, aliases and their history, in SQLite or PostgreSQL.

One SQL layer (SQLAlchemy Core) for both. Locking, so that concurrent writers never lose or
duplicate a version:

- **SQLite**: every write transaction starts with ``BEGIN IMMEDIATE``, which takes the database's
  write lock at once (a deferred ``BEGIN`` would take it at the first write and could fail with
  "database is locked" half-way). Readers use plain ``BEGIN`` and, in WAL mode, never block
  writers. ``busy_timeout`` makes a writer wait up to 60 s for the lock.
- **PostgreSQL**: a version number is taken with ``UPDATE amber_models SET next_version =
  next_version + 1 ... RETURNING``, which locks that model's row until the transaction commits;
  a concurrent publisher of the same name waits and then reads the incremented counter (READ
  COMMITTED re-evaluates the row). Alias changes and deletes lock the model row with ``SELECT
  ... FOR UPDATE`` first, so every change to one model is serialized and its history is exact.

The version row, its tags, its alias move and the alias history are written in that one
transaction; the blob was uploaded and checked before it started. Every write that changes a
model's versions or aliases also raises its revision (``amber_model_revisions``) in the same
transaction: readers cache a model's version list under that number.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from amber.registry._engine import normalize_url
from amber.registry._errors import VersionConflict
from amber.registry._lookup import CatalogLookup
from amber.registry._schema import now, t
from amber.registry._types import ModelVersion
from amber.registry._uri import ModelRef

__all__ = ["Catalog", "PublishRequest", "normalize_url"]

_EPOCH = "1970-01-01T00:00:00.000000+00:00"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PublishRequest:
    """Everything the publishing transaction writes, gathered before it starts.

    ``version`` set: keep that number (an import); ``sign`` makes the detached signature once
    the version is numbered; ``dedupe`` (an import): a version of ``name`` that holds the same
    model (``content_hash``, see ``_inputs.content_hash``) is returned instead of a new one.
    """

    name: str
    blob_hash: str
    size: int
    manifest_hash: str
    content_hash: str
    framework: str
    object_type: str
    summary: dict[str, Any]
    metrics: dict[str, Any]
    tags: dict[str, str]
    description: str
    signed_by: str | None
    alias: str | None
    version: int | None = None
    sign: Callable[[ModelVersion], str | None] | None = None
    dedupe: bool = False


class Catalog(CatalogLookup):
    """The catalog: :class:`CatalogLookup`'s reads plus every write, each one transaction."""

    # -- uploads in flight -------------------------------------------------------------------
    def begin_upload(self, blob_hash: str) -> None:
        """Mark a blob as being uploaded, so that ``gc`` leaves it alone until the commit."""
        stmt = self._insert(t.blobs).values(hash=blob_hash, pending=1, touched_at=now())
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.blobs.c.hash],
            set_={"pending": t.blobs.c.pending + 1, "touched_at": stmt.excluded.touched_at},
        )
        with self._tx(True, "write to") as conn:
            conn.execute(stmt)

    def _release(self, conn: sa.Connection, blob_hash: str) -> None:
        conn.execute(
            t.blobs.update()
            .where(t.blobs.c.hash == blob_hash)
            .values(
                pending=sa.case((t.blobs.c.pending > 0, t.blobs.c.pending - 1), else_=0),
                touched_at=now(),
            )
        )

    def end_upload(self, blob_hash: str) -> None:
        """An upload was abandoned (the push failed before its commit)."""
        with self._tx(True, "write to") as conn:
            self._release(conn, blob_hash)

    # -- publishing --------------------------------------------------------------------------
    def publish(self, req: PublishRequest) -> ModelVersion:
        """One transaction: number the version, insert it with its tags, move the alias."""
        with self._tx(True, "write to") as conn:
            ts = now()
            conn.execute(
                self._insert(t.models)
                .values(name=req.name, next_version=1, created_at=ts)
                .on_conflict_do_nothing(index_elements=[t.models.c.name])
            )
            if req.dedupe and req.version is None:
                same = self._same_content(conn, req)
                if same is not None:
                    return self._existing(conn, req, same)
            if req.version is None:
                model_id, version = conn.execute(
                    t.models.update()
                    .where(t.models.c.name == req.name)
                    .values(next_version=t.models.c.next_version + 1)
                    .returning(t.models.c.id, t.models.c.next_version - 1)
                ).one()
            else:
                model_id, version = self._claim_version(conn, req)
                if model_id is None:  # the same model already holds that version
                    return self._existing(conn, req, version)
            mv = ModelVersion(
                name=req.name,
                version=version,
                hash=req.blob_hash,
                size=req.size,
                created=ts,
                created_by=self.who,
                metrics=req.metrics,
                tags=req.tags,
                description=req.description,
                aliases=(req.alias,) if req.alias else (),
                framework=req.framework,
                object_type=req.object_type,
                manifest_hash=req.manifest_hash,
                summary_json=_json(req.summary),
                signed_by=req.signed_by,
            )
            signature = req.sign(mv) if req.sign is not None else None
            version_id = conn.execute(
                t.versions.insert()
                .values(
                    model_id=model_id,
                    version=version,
                    blob_hash=req.blob_hash,
                    size=req.size,
                    manifest_hash=req.manifest_hash,
                    framework=req.framework,
                    object_type=req.object_type,
                    summary=mv.summary_json,
                    metrics=_json(req.metrics),
                    tags=_json(req.tags),
                    description=req.description,
                    created_at=ts,
                    created_by=self.who,
                    signed_by=req.signed_by,
                    signature=signature,
                )
                .returning(t.versions.c.id)
            ).scalar_one()
            conn.execute(
                t.version_content.insert().values(
                    version_id=version_id, content_hash=req.content_hash
                )
            )
            if req.tags:
                conn.execute(
                    t.version_tags.insert(),
                    [{"version_id": version_id, "key": k, "value": v} for k, v in req.tags.items()],
                )
            self._release(conn, req.blob_hash)
            if req.alias:
                self._move_alias(conn, model_id, req.name, req.alias, version_id, version, ts)
            else:
                self._changed(conn, model_id)
        return dataclasses.replace(mv, signature=signature)

    def _changed(self, conn: sa.Connection, model_id: int, *, deleted: int = 0) -> None:
        """Raise the model's revision (its versions or aliases changed), and count ``deleted``
        versions: what readers check their kept lists against."""
        conn.execute(
            self._insert(t.revisions)
            .values(model_id=model_id, revision=1, deleted=deleted)
            .on_conflict_do_update(
                index_elements=[t.revisions.c.model_id],
                set_={
                    "revision": t.revisions.c.revision + 1,
                    "deleted": t.revisions.c.deleted + deleted,
                },
            )
        )

    def without_content(self, name: str) -> list[tuple[int, str, int]]:
        """(version id, blob hash, size) of ``name``'s versions published before catalog schema
        step 3, which have no content digest yet."""
        with self._tx(False, "read") as conn:
            rows = conn.execute(
                sa.select(t.versions.c.id, t.versions.c.blob_hash, t.versions.c.size)
                .select_from(
                    t.versions.join(t.models, t.versions.c.model_id == t.models.c.id).outerjoin(
                        t.version_content, t.version_content.c.version_id == t.versions.c.id
                    )
                )
                .where(t.models.c.name == name, t.version_content.c.version_id.is_(None))
            ).all()
        return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]

    def set_content(self, version_id: int, content: str) -> None:
        """Record a content digest computed for a version that had none (a no-op if another
        process recorded it first)."""
        with self._tx(True, "record a version's content digest") as conn:
            exists = conn.execute(
                sa.select(t.version_content.c.version_id).where(
                    t.version_content.c.version_id == version_id
                )
            ).first()
            alive = conn.execute(
                sa.select(t.versions.c.id).where(t.versions.c.id == version_id)
            ).first()
            if exists is None and alive is not None:
                conn.execute(
                    t.version_content.insert().values(version_id=version_id, content_hash=content)
                )

    def _same_content(self, conn: sa.Connection, req: PublishRequest) -> int | None:
        """The newest version of ``req.name`` that holds the same model, if any."""
        content = sa.select(t.version_content.c.version_id).where(
            t.version_content.c.content_hash == req.content_hash
        )
        return conn.execute(
            sa.select(sa.func.max(t.versions.c.version))
            .select_from(t.versions.join(t.models, t.versions.c.model_id == t.models.c.id))
            .where(
                t.models.c.name == req.name,
                (t.versions.c.blob_hash == req.blob_hash)
                | (t.versions.c.manifest_hash == req.content_hash)
                | t.versions.c.id.in_(content),
            )
        ).scalar()

    def _existing(self, conn: sa.Connection, req: PublishRequest, version: int) -> ModelVersion:
        """An import of a model that ``version`` already holds: nothing new, but ``req.alias``
        is moved to it."""
        self._release(conn, req.blob_hash)
        if req.alias:
            model_id = self._lock_model(conn, req.name)
            version_id, aliased = conn.execute(
                sa.select(t.versions.c.id, t.aliases.c.version_id)
                .select_from(
                    t.versions.outerjoin(
                        t.aliases,
                        (t.aliases.c.model_id == model_id) & (t.aliases.c.alias == req.alias),
                    )
                )
                .where(t.versions.c.model_id == model_id, t.versions.c.version == version)
            ).one()
            if aliased != version_id:
                self._move_alias(conn, model_id, req.name, req.alias, version_id, version, now())
        return self._resolve(conn, ModelRef(req.name, version=version))

    def _claim_version(self, conn: sa.Connection, req: PublishRequest) -> tuple[Any, int]:
        """Import keeps a version number: take it if free, advancing the counter past it."""
        version = req.version
        if version is None:
            raise ValueError("an import needs the version to keep")
        model_id = conn.execute(
            sa.select(t.models.c.id).where(t.models.c.name == req.name).with_for_update()
        ).scalar_one()
        taken = conn.execute(
            sa.select(
                t.versions.c.blob_hash, t.versions.c.manifest_hash, t.version_content.c.content_hash
            )
            .select_from(
                t.versions.outerjoin(
                    t.version_content, t.version_content.c.version_id == t.versions.c.id
                )
            )
            .where(t.versions.c.model_id == model_id, t.versions.c.version == version)
        ).first()
        elsewhere = (
            f"import it under another name (name=..., --name) to keep both, or as the next "
            f"version of {req.name} (keep_version=False, --new-version; a signature that binds "
            f"version {version} does not hold for another number)"
        )
        if taken is not None:
            blob_hash, stored_manifest, content = taken
            if req.content_hash in (content, stored_manifest) or blob_hash == req.blob_hash:
                return None, version
            raise VersionConflict(
                f"{req.name} version {version} already exists in registry {self.label} with "
                f"another model (blake3 {blob_hash[:16]}..., the file has "
                f"{req.blob_hash[:16]}...); {elsewhere}"
            )
        gone = conn.execute(
            sa.select(
                t.deleted_versions.c.content_hash,
                t.deleted_versions.c.blob_hash,
                t.deleted_versions.c.deleted_at,
            )
            .where(
                t.deleted_versions.c.model_id == model_id,
                t.deleted_versions.c.version == version,
            )
            .order_by(t.deleted_versions.c.id.desc())
            .limit(1)
        ).first()
        # a version deleted before schema step 3 recorded its manifest's digest: the same
        # blob is the same model too
        if gone is not None and req.content_hash != gone[0] and req.blob_hash != gone[1]:
            raise VersionConflict(
                f"{req.name} version {version} was used by a version deleted on "
                f"{gone[2][:19].replace('T', ' ')} UTC (blake3 {gone[1][:16]}...), which held "
                f"another model than this file ({req.blob_hash[:16]}...); version numbers are "
                f"never reused in registry {self.label} for another model: {elsewhere}"
            )
        conn.execute(
            t.models.update()
            .where(t.models.c.id == model_id)
            .values(
                next_version=sa.case(
                    (t.models.c.next_version <= version, version + 1),
                    else_=t.models.c.next_version,
                )
            )
        )
        return model_id, version

    def _move_alias(
        self,
        conn: sa.Connection,
        model_id: int,
        name: str,
        alias: str,
        version_id: int | None,
        version: int | None,
        ts: str,
    ) -> int | None:
        """Point ``alias`` at a version (``None``: remove it); record the change; return the old."""
        previous = conn.execute(
            sa.select(t.versions.c.version)
            .select_from(t.aliases.join(t.versions, t.aliases.c.version_id == t.versions.c.id))
            .where(t.aliases.c.model_id == model_id, t.aliases.c.alias == alias)
        ).scalar()
        where = (t.aliases.c.model_id == model_id) & (t.aliases.c.alias == alias)
        if version_id is None:
            conn.execute(t.aliases.delete().where(where))
        elif previous is None:
            conn.execute(
                t.aliases.insert().values(
                    model_id=model_id,
                    alias=alias,
                    version_id=version_id,
                    updated_at=ts,
                    updated_by=self.who,
                )
            )
        else:
            conn.execute(
                t.aliases.update()
                .where(where)
                .values(version_id=version_id, updated_at=ts, updated_by=self.who)
            )
        conn.execute(
            t.alias_history.insert().values(
                model_id=model_id,
                alias=alias,
                version=version,
                previous=previous,
                changed_at=ts,
                changed_by=self.who,
            )
        )
        self._changed(conn, model_id)
        return int(previous) if previous is not None else None

    def _require_catalog(self, name: str) -> None:
        """Changes to existing models never create a registry (a mistyped path stays absent)."""
        if not self.exists():
            raise self._no_model(None, name)

    def _lock_model(self, conn: sa.Connection, name: str) -> int:
        model_id = conn.execute(
            sa.select(t.models.c.id).where(t.models.c.name == name).with_for_update()
        ).scalar()
        if model_id is None:
            raise self._no_model(conn, name)
        return int(model_id)

    def set_alias(self, name: str, alias: str, version: int) -> int | None:
        self._require_catalog(name)
        with self._tx(True, "write to") as conn:
            model_id = self._lock_model(conn, name)
            version_id = conn.execute(
                sa.select(t.versions.c.id).where(
                    t.versions.c.model_id == model_id, t.versions.c.version == version
                )
            ).scalar()
            if version_id is None:
                raise self._not_found(conn, ModelRef(name, version=version))
            return self._move_alias(conn, model_id, name, alias, version_id, version, now())

    def remove_alias(self, name: str, alias: str) -> int:
        self._require_catalog(name)
        with self._tx(True, "write to") as conn:
            model_id = self._lock_model(conn, name)
            previous = self._move_alias(conn, model_id, name, alias, None, None, now())
            if previous is None:
                raise self._not_found(conn, ModelRef(name, alias=alias))
            return previous

    def delete_version(self, name: str, version: int, *, force: bool) -> ModelVersion:
        self._require_catalog(name)
        with self._tx(True, "write to") as conn:
            model_id = self._lock_model(conn, name)
            mv = self._resolve(conn, ModelRef(name, version=version))
            if mv.aliases and not force:
                listed = ", ".join("@" + a for a in mv.aliases)
                verb = "points" if len(mv.aliases) == 1 else "point"
                raise VersionConflict(
                    f"{name} version {version} is what {listed} {verb} to; move or remove the "
                    f"alias first, or delete with force=True (--force) to remove it too"
                )
            for alias in mv.aliases:
                self._move_alias(conn, model_id, name, alias, None, None, now())
            version_id = conn.execute(
                sa.select(t.versions.c.id).where(
                    t.versions.c.model_id == model_id, t.versions.c.version == version
                )
            ).scalar_one()
            content = conn.execute(
                sa.select(t.version_content.c.content_hash).where(
                    t.version_content.c.version_id == version_id
                )
            ).scalar()
            conn.execute(
                t.deleted_versions.insert().values(
                    model_id=model_id,
                    version=version,
                    blob_hash=mv.hash,
                    # a version published before schema step 3: its manifest's digest
                    content_hash=content or mv.manifest_hash,
                    deleted_at=now(),
                    deleted_by=self.who,
                )
            )
            conn.execute(t.version_tags.delete().where(t.version_tags.c.version_id == version_id))
            conn.execute(
                t.version_content.delete().where(t.version_content.c.version_id == version_id)
            )
            conn.execute(t.versions.delete().where(t.versions.c.id == version_id))
            self._changed(conn, model_id, deleted=1)
            return mv

    # -- garbage collection ------------------------------------------------------------------
    def collect(self, blob_hash: str, cutoff: str, delete: Callable[[], bool]) -> str:
        """Delete one unreferenced blob under the catalog's lock; ``delete`` removes the bytes.

        Returns ``"deleted"``, ``"referenced"``, ``"pending"`` (an upload in flight, touched
        after ``cutoff``) or ``"recent"`` (a version that used it was deleted after ``cutoff``:
        a load that resolved it just before may still be about to open it). The blob row is
        locked first, so a push that starts now waits for the decision and then uploads the
        blob again if it was deleted.
        """
        with self._tx(True, "write to") as conn:
            conn.execute(
                self._insert(t.blobs)
                .values(hash=blob_hash, pending=0, touched_at=_EPOCH)
                .on_conflict_do_nothing(index_elements=[t.blobs.c.hash])
            )
            pending, touched = conn.execute(
                sa.select(t.blobs.c.pending, t.blobs.c.touched_at)
                .where(t.blobs.c.hash == blob_hash)
                .with_for_update()
            ).one()
            used = conn.execute(
                sa.select(t.versions.c.id).where(t.versions.c.blob_hash == blob_hash).limit(1)
            ).first()
            if used is not None:
                return "referenced"
            if pending > 0 and touched > cutoff:
                return "pending"
            recent = conn.execute(
                sa.select(t.deleted_versions.c.id)
                .where(
                    t.deleted_versions.c.blob_hash == blob_hash,
                    t.deleted_versions.c.deleted_at > cutoff,
                )
                .limit(1)
            ).first()
            if recent is not None:
                return "recent"
            delete()
            conn.execute(t.blobs.delete().where(t.blobs.c.hash == blob_hash))
            return "deleted"
