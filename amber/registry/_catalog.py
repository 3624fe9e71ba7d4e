"""The catalog: names, versions, aliases and their history, in SQLite or PostgreSQL.

One SQL layer (SQLAlchemy Core) for both. Locking, so that concurrent writers never lose or
duplicate a version:

- **SQLite**: every write transaction starts with ``BEGIN IMMEDIATE``, which takes the database's
  write lock at once (a deferred ``BEGIN`` would take it at the first write and could fail with
  "database is locked" half-way). Readers use plain ``BEGIN`` and, in WAL mode, never block
  writers. ``busy_timeout`` makes a writer wait up to 60 s for the lock.
- **PostgreSQL**: every change to a model (publish, import, alias change, delete) first locks
  the model's row with ``SELECT ... FOR UPDATE`` and reads nothing of it before: a concurrent
  writer of the same name waits until the commit, then reads what it left (READ COMMITTED takes
  a new snapshot for each statement). The version number comes from that row's counter, so
  every change to one model is serialized, its history is exact, and an import's "is this model
  here already?" is answered under the lock.

Version numbers run from 1 to ``MAX_VERSION`` (2**31-1, PostgreSQL's INTEGER) on both.

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
from amber.registry._types import ModelVersion, _key_of
from amber.registry._uri import MAX_VERSION, ModelRef

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
        """One transaction: number the version, insert it with its tags, move the alias.

        The model's row is locked first (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
        ``BEGIN IMMEDIATE`` already holds the whole database), and only then is anything read:
        whether an import's model is already there, which number is free. Two imports of one
        file, or an import and a delete, are thereby serialized like every other change.
        """
        with self._tx(True, "write to") as conn:
            ts = now()
            conn.execute(
                self._insert(t.models)
                .values(name=req.name, next_version=1, created_at=ts)
                .on_conflict_do_nothing(index_elements=[t.models.c.name])
            )
            model_id, counter = conn.execute(
                sa.select(t.models.c.id, t.models.c.next_version)
                .where(t.models.c.name == req.name)
                .with_for_update()
            ).one()
            if req.dedupe or req.version is not None:  # an import: is its model here already?
                same = self._same_content(conn, req)
                if same is not None:
                    return self._existing(conn, req, model_id, same)
            if req.version is None:
                version = self._next_number(conn, req.name, model_id, counter)
            else:
                version = self._claim_version(conn, req, model_id, counter)
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

    def _number_used(self, conn: sa.Connection, model_id: int, version: int) -> bool:
        """Whether ``version`` of the model exists or once existed (numbers are never reused)."""
        for table in (t.versions, t.deleted_versions):
            found = conn.execute(
                sa.select(table.c.id)
                .where(table.c.model_id == model_id, table.c.version == version)
                .limit(1)
            ).first()
            if found is not None:
                return True
        return False

    def _next_number(self, conn: sa.Connection, name: str, model_id: int, counter: Any) -> int:
        """Take the model's next version number from its counter (the row is locked).

        The counter stays within the version range (it would overflow PostgreSQL's INTEGER
        column): once the number ``MAX_VERSION`` is taken, the counter stays there and the
        model takes no further number.
        """
        if counter > MAX_VERSION or (
            counter == MAX_VERSION and self._number_used(conn, model_id, MAX_VERSION)
        ):
            raise VersionConflict(
                f"{name} has used every version number up to {MAX_VERSION} (2**31-1), the "
                f"highest a registry records (registry {self.label}); publish it under another "
                f"name"
            )
        version = int(counter)
        conn.execute(
            t.models.update()
            .where(t.models.c.id == model_id)
            .values(next_version=min(version + 1, MAX_VERSION))
        )
        return version

    def _changed(self, conn: sa.Connection, model_id: int, *, rewritten: int = 0) -> None:
        """Raise the model's revision (its versions or aliases changed), and count versions
        ``rewritten`` (deleted, or changed in place: a signature attached): what readers check
        their kept lists against. A reader brings its list up to date by the new rows alone
        only while that count stays the same."""
        conn.execute(
            self._insert(t.revisions)
            .values(model_id=model_id, revision=1, deleted=rewritten)
            .on_conflict_do_update(
                index_elements=[t.revisions.c.model_id],
                set_={
                    "revision": t.revisions.c.revision + 1,
                    "deleted": t.revisions.c.deleted + rewritten,
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

    def _existing(
        self, conn: sa.Connection, req: PublishRequest, model_id: int, version: int
    ) -> ModelVersion:
        """An import of a model that ``version`` already holds: nothing new, but ``req.alias``
        is moved to it, and a ``signing_key`` signature is attached to it (if it has none). A
        signature the file carries that the version lacks cannot be attached: refused."""
        self._release(conn, req.blob_hash)
        mv = self._resolve(conn, ModelRef(req.name, version=version))
        version_id = conn.execute(
            sa.select(t.versions.c.id).where(
                t.versions.c.model_id == model_id, t.versions.c.version == version
            )
        ).scalar_one()
        held = {k for k in (mv.signed_by, _key_of(mv.signature or "")) if k is not None}
        signature = req.sign(mv) if req.sign is not None else None
        added = _key_of(signature) if signature is not None else None
        file_key = req.signed_by if req.signed_by != "(unreadable)" else None
        if file_key is not None and file_key not in held | {added}:
            raise VersionConflict(
                f"{mv.uri} in registry {self.label} already holds the model of this file, "
                + (f"signed by key {', '.join(sorted(held))} only" if held else "unsigned")
                + f"; the file's own signature (key {file_key}) covers its manifest, which "
                f"this registry does not store for that version, so the import would drop it. "
                f"To have {mv.name} signed by that key here: sign the version with that key "
                f"(import with signing_key=, --key), or delete {mv.uri} (force=True, --force, "
                f"if an alias points to it) and import the file again"
            )
        if added is not None and added not in held:
            if mv.signature is not None:
                raise VersionConflict(
                    f"{mv.uri} in registry {self.label} already holds the model of this file and "
                    f"carries a signature made here by key {_key_of(mv.signature)}; a version "
                    f"keeps one such signature, so it cannot also be signed by key {added}. "
                    f"Export it with signing_key= (--key) to give a copy signed by that key"
                )
            conn.execute(
                t.versions.update().where(t.versions.c.id == version_id).values(signature=signature)
            )
            mv = dataclasses.replace(mv, signature=signature)
            # a version row changed in place: readers read the model's list whole again
            self._changed(conn, model_id, rewritten=1)
        if req.alias and req.alias not in mv.aliases:
            self._move_alias(conn, model_id, req.name, req.alias, version_id, version, now())
            return self._resolve(conn, ModelRef(req.name, version=version))
        return mv

    def _claim_version(
        self, conn: sa.Connection, req: PublishRequest, model_id: int, counter: Any
    ) -> int:
        """Import keeps a version number: take it if free, advancing the counter past it (the
        model's row is locked, and no version of it holds this file's model)."""
        version = req.version
        if version is None:
            raise ValueError("an import needs the version to keep")
        taken = conn.execute(
            sa.select(t.versions.c.blob_hash).where(
                t.versions.c.model_id == model_id, t.versions.c.version == version
            )
        ).scalar()
        elsewhere = (
            f"import it under another name (name=..., --name) to keep both, or as the next "
            f"version of {req.name} (keep_version=False, --new-version; a signature that binds "
            f"version {version} does not hold for another number)"
        )
        if taken is not None:
            raise VersionConflict(
                f"{req.name} version {version} already exists in registry {self.label} with "
                f"another model (blake3 {taken[:16]}..., the file has "
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
        if counter <= version:  # the counter stays in range (see _next_number)
            conn.execute(
                t.models.update()
                .where(t.models.c.id == model_id)
                .values(next_version=min(version + 1, MAX_VERSION))
            )
        return version

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
            self._changed(conn, model_id, rewritten=1)
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
