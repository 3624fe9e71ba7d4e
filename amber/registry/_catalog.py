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
transaction; the blob was uploaded and checked before it started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import importlib.util
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from amber.errors import ModelNotFound
from amber.registry._errors import CatalogUnavailable, VersionConflict
from amber.registry._schema import MIGRATIONS, SCHEMA_VERSION, now, t
from amber.registry._types import AliasChange, ModelVersion, RegisteredModel
from amber.registry._uri import ModelRef

__all__ = ["Catalog", "PublishRequest", "normalize_url"]

_LOCK_KEY = 0x616D626572  # "amber": the advisory lock that serializes PostgreSQL migrations
_EPOCH = "1970-01-01T00:00:00.000000+00:00"


def normalize_url(url: str | os.PathLike[str]) -> str:
    """A SQLAlchemy URL: a plain path means a SQLite file; ``postgresql://`` uses psycopg 3."""
    text = os.fspath(url)
    if "://" not in text:
        return f"sqlite:///{Path(text).expanduser().absolute()}"
    scheme, _, rest = text.partition("://")
    if scheme in ("postgres", "postgresql") and importlib.util.find_spec("psycopg"):
        return f"postgresql+psycopg://{rest}"
    return text


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


class PublishRequest:
    """Everything the publishing transaction writes, gathered before it starts."""

    def __init__(
        self,
        *,
        name: str,
        blob_hash: str,
        size: int,
        manifest_hash: str,
        framework: str,
        object_type: str,
        summary: dict[str, Any],
        metrics: dict[str, Any],
        tags: dict[str, str],
        description: str,
        signed_by: str | None,
        alias: str | None,
        version: int | None = None,
        sign: Callable[[ModelVersion], str | None] | None = None,
    ) -> None:
        self.name = name
        self.blob_hash = blob_hash
        self.size = size
        self.manifest_hash = manifest_hash
        self.framework = framework
        self.object_type = object_type
        self.summary = summary
        self.metrics = metrics
        self.tags = tags
        self.description = description
        self.signed_by = signed_by
        self.alias = alias
        self.version = version
        self.sign = sign


_VERSION_COLUMNS = [
    t.models.c.name,
    t.versions.c.id,
    t.versions.c.version,
    t.versions.c.blob_hash,
    t.versions.c.size,
    t.versions.c.created_at,
    t.versions.c.created_by,
    t.versions.c.metrics,
    t.versions.c.tags,
    t.versions.c.description,
    t.versions.c.framework,
    t.versions.c.object_type,
    t.versions.c.manifest_hash,
    t.versions.c.summary,
    t.versions.c.signed_by,
    t.versions.c.signature,
]


def _row_to_version(row: Any, aliases: tuple[str, ...]) -> ModelVersion:
    return ModelVersion(
        name=row[0],
        version=row[2],
        hash=row[3],
        size=row[4],
        created=row[5],
        created_by=row[6],
        metrics=orjson.loads(row[7]),
        tags=orjson.loads(row[8]),
        description=row[9],
        aliases=aliases,
        framework=row[10],
        object_type=row[11],
        manifest_hash=row[12],
        summary_json=row[13],
        signed_by=row[14],
        signature=row[15],
    )


def _numbers(values: list[int]) -> str:
    """``1-3, 5, 9-12``: a compact list of version numbers."""
    runs: list[str] = []
    start = prev = None
    for v in [*values, None]:
        if start is not None and v is not None and prev is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            runs.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = v
    return ", ".join(runs)


class Catalog:
    """Catalog queries over one SQLAlchemy engine, created on first use."""

    def __init__(self, url: str | os.PathLike[str], *, label: str) -> None:
        self.url = normalize_url(url)
        self.label = label  # the registry's location, for messages
        try:
            parsed = sa.engine.make_url(self.url)
        except (sa.exc.ArgumentError, ValueError) as exc:
            raise CatalogUnavailable(
                f"catalog URL {str(url)!r} is not a database URL ({exc}); use "
                f"'postgresql://user@host:5432/db' or 'sqlite:///path/catalog.sqlite'"
            ) from None
        self.safe_url = parsed.render_as_string(hide_password=True)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise CatalogUnavailable(
                f"catalog {self.safe_url!r}: Amber's catalog runs on SQLite or PostgreSQL, not "
                f"{self.dialect!r}"
            )
        self.sqlite_path = (
            Path(parsed.database) if self.dialect == "sqlite" and parsed.database else None
        )
        self._engine: sa.Engine | None = None
        self._migrated = False
        self.who = _who()

    # -- connections -------------------------------------------------------------------------
    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = self._make_engine()
        return self._engine

    def _make_engine(self) -> sa.Engine:
        if self.dialect == "sqlite":
            engine = sa.create_engine(self.url, connect_args={"timeout": 60})

            @sa.event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA busy_timeout=60000")
                if cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            @sa.event.listens_for(engine, "begin")
            def _on_begin(conn: sa.Connection) -> None:
                write = conn.get_execution_options().get("amber_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

            return engine
        return sa.create_engine(self.url, pool_pre_ping=True, connect_args={"connect_timeout": 10})

    def _unavailable(self, exc: BaseException, action: str) -> CatalogUnavailable:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        reason = detail[0] if detail else type(exc).__name__
        if self.dialect == "sqlite":
            hint = (
                f"check that {str(self.sqlite_path)!r} is a writable SQLite file on a local disk "
                f"(not a network share) and that no process holds its write lock for long"
            )
        else:
            hint = (
                "check that the PostgreSQL server is running and reachable at that host and "
                "port, that the database exists, and the credentials (password in the URL, "
                "PGPASSWORD or ~/.pgpass)"
            )
        return CatalogUnavailable(
            f"cannot {action} the catalog {self.safe_url} of registry {self.label}: {reason}; "
            f"{hint}"
        )

    @contextlib.contextmanager
    def _tx(self, write: bool, action: str) -> Iterator[sa.Connection]:
        if not self._migrated:
            self.migrate()
        try:
            with self.engine.connect() as conn:
                conn.execution_options(amber_write=write)
                with conn.begin():
                    yield conn
        except sa.exc.IntegrityError:
            raise
        except sa.exc.DBAPIError as exc:
            raise self._unavailable(exc, action) from exc

    def exists(self) -> bool:
        """False only for a SQLite catalog whose file was never created (an empty registry)."""
        return self.sqlite_path is None or self.sqlite_path.exists()

    def migrate(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execution_options(amber_write=True)
                with conn.begin():
                    if self.dialect == "postgresql":
                        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
                    t.migrations.create(conn, checkfirst=True)
                    applied = conn.execute(sa.select(sa.func.max(t.migrations.c.version))).scalar()
                    applied = applied or 0
                    if applied > SCHEMA_VERSION:
                        raise CatalogUnavailable(
                            f"the catalog {self.safe_url} has schema version {applied}, newer "
                            f"than the {SCHEMA_VERSION} this Amber knows: a newer Amber wrote "
                            f"it. Upgrade Amber (pip install -U amber) on this machine"
                        )
                    for number, name, step in MIGRATIONS:
                        if number > applied:
                            step(conn)
                            conn.execute(
                                t.migrations.insert().values(
                                    version=number, name=name, applied_at=now()
                                )
                            )
        except sa.exc.DBAPIError as exc:
            raise self._unavailable(exc, "open") from exc
        self._migrated = True

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _insert(self, table: sa.Table) -> Any:
        from sqlalchemy.dialects import postgresql, sqlite

        return (postgresql if self.dialect == "postgresql" else sqlite).insert(table)

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
            if req.version is None:
                model_id, version = conn.execute(
                    t.models.update()
                    .where(t.models.c.name == req.name)
                    .values(next_version=t.models.c.next_version + 1)
                    .returning(t.models.c.id, t.models.c.next_version - 1)
                ).one()
            else:
                model_id, version = self._claim_version(conn, req)
                if model_id is None:  # the same content already holds that version
                    self._release(conn, req.blob_hash)
                    return self._resolve(conn, ModelRef(req.name, version=version))
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
            if req.tags:
                conn.execute(
                    t.version_tags.insert(),
                    [{"version_id": version_id, "key": k, "value": v} for k, v in req.tags.items()],
                )
            self._release(conn, req.blob_hash)
            if req.alias:
                self._move_alias(conn, model_id, req.name, req.alias, version_id, version, ts)
        return dataclasses.replace(mv, signature=signature)

    def _claim_version(self, conn: sa.Connection, req: PublishRequest) -> tuple[Any, int]:
        """Import keeps a version number: take it if free, advancing the counter past it."""
        version = req.version
        if version is None:
            raise ValueError("an import needs the version to keep")
        model_id = conn.execute(
            sa.select(t.models.c.id).where(t.models.c.name == req.name).with_for_update()
        ).scalar_one()
        taken = conn.execute(
            sa.select(t.versions.c.blob_hash).where(
                t.versions.c.model_id == model_id, t.versions.c.version == version
            )
        ).first()
        if taken is not None:
            if taken[0] == req.blob_hash:
                return None, version
            raise VersionConflict(
                f"{req.name} version {version} already exists in registry {self.label} with "
                f"other content (blake3 {taken[0][:16]}..., the file has "
                f"{req.blob_hash[:16]}...); import it under another name (name=...) to keep "
                f"both"
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
        return int(previous) if previous is not None else None

    def _lock_model(self, conn: sa.Connection, name: str) -> int:
        model_id = conn.execute(
            sa.select(t.models.c.id).where(t.models.c.name == name).with_for_update()
        ).scalar()
        if model_id is None:
            raise self._no_model(conn, name)
        return int(model_id)

    def set_alias(self, name: str, alias: str, version: int) -> int | None:
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
        with self._tx(True, "write to") as conn:
            model_id = self._lock_model(conn, name)
            previous = self._move_alias(conn, model_id, name, alias, None, None, now())
            if previous is None:
                raise self._not_found(conn, ModelRef(name, alias=alias))
            return previous

    def delete_version(self, name: str, version: int, *, force: bool) -> ModelVersion:
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
            conn.execute(t.version_tags.delete().where(t.version_tags.c.version_id == version_id))
            conn.execute(t.versions.delete().where(t.versions.c.id == version_id))
            return mv

    # -- reading -----------------------------------------------------------------------------
    def _names(self, conn: sa.Connection) -> list[str]:
        return list(
            conn.execute(
                sa.select(t.models.c.name)
                .where(sa.exists().where(t.versions.c.model_id == t.models.c.id))
                .order_by(t.models.c.name)
            ).scalars()
        )

    def _no_model(self, conn: sa.Connection | None, name: str) -> ModelNotFound:
        names = self._names(conn) if conn is not None else []
        if not names:
            return ModelNotFound(
                f"no model named {name!r}: registry {self.label} is empty; publish one with "
                f"reg.push({name!r}, model) or `amber push FILE --name {name}`"
            )
        shown = ", ".join(names[:30]) + (
            f" (and {len(names) - 30} more)" if len(names) > 30 else ""
        )
        return ModelNotFound(
            f"no model named {name!r} in registry {self.label}; models there: {shown}"
        )

    def _not_found(self, conn: sa.Connection, ref: ModelRef) -> ModelNotFound:
        model_id = conn.execute(
            sa.select(t.models.c.id).where(t.models.c.name == ref.name)
        ).scalar()
        existing = (
            list(
                conn.execute(
                    sa.select(t.versions.c.version)
                    .where(t.versions.c.model_id == model_id)
                    .order_by(t.versions.c.version)
                ).scalars()
            )
            if model_id is not None
            else []
        )
        if not existing or model_id is None:
            return self._no_model(conn, ref.name)
        if ref.alias is not None:
            aliases = self._aliases(conn, model_id)
            listed = (
                ", ".join(f"@{a} -> {v}" for a, v in sorted(aliases.items()))
                if aliases
                else "none yet"
            )
            return ModelNotFound(
                f"{ref.name} has no alias {ref.alias!r} in registry {self.label}; its aliases: "
                f"{listed}. Set one with reg.set_alias({ref.name!r}, {ref.alias!r}, VERSION) or "
                f"`amber models alias {ref.name} {ref.alias} VERSION`"
            )
        return ModelNotFound(
            f"{ref.name} has no version {ref.version} in registry {self.label}; its versions: "
            f"{_numbers(existing)} (latest {existing[-1]}, models:/{ref.name}/latest)"
        )

    def _aliases(self, conn: sa.Connection, model_id: int) -> dict[str, int]:
        rows = conn.execute(
            sa.select(t.aliases.c.alias, t.versions.c.version)
            .select_from(t.aliases.join(t.versions, t.aliases.c.version_id == t.versions.c.id))
            .where(t.aliases.c.model_id == model_id)
        )
        return {a: v for a, v in rows}

    def _resolve(self, conn: sa.Connection, ref: ModelRef) -> ModelVersion:
        base = sa.select(*_VERSION_COLUMNS).select_from(
            t.versions.join(t.models, t.versions.c.model_id == t.models.c.id)
        )
        if ref.version is not None:
            query = base.where(t.models.c.name == ref.name, t.versions.c.version == ref.version)
        elif ref.alias is not None:
            query = base.join(t.aliases, t.aliases.c.version_id == t.versions.c.id).where(
                t.models.c.name == ref.name, t.aliases.c.alias == ref.alias
            )
        else:
            query = (
                base.where(t.models.c.name == ref.name)
                .order_by(t.versions.c.version.desc())
                .limit(1)
            )
        row = conn.execute(query).first()
        if row is None:
            raise self._not_found(conn, ref)
        names = conn.execute(
            sa.select(t.aliases.c.alias)
            .where(t.aliases.c.version_id == row[1])
            .order_by(t.aliases.c.alias)
        ).scalars()
        return _row_to_version(row, tuple(names))

    def get(self, ref: ModelRef) -> ModelVersion:
        if not self.exists():
            raise self._no_model(None, ref.name)
        with self._tx(False, "read") as conn:
            return self._resolve(conn, ref)

    def versions(self, name: str, *, limit: int | None = None) -> list[ModelVersion]:
        if not self.exists():
            raise self._no_model(None, name)
        with self._tx(False, "read") as conn:
            model_id = conn.execute(
                sa.select(t.models.c.id).where(t.models.c.name == name)
            ).scalar()
            if model_id is None:
                raise self._no_model(conn, name)
            query = (
                sa.select(*_VERSION_COLUMNS)
                .select_from(t.versions.join(t.models, t.versions.c.model_id == t.models.c.id))
                .where(t.versions.c.model_id == model_id)
                .order_by(t.versions.c.version.desc())
            )
            if limit is not None:
                query = query.limit(limit)
            rows = conn.execute(query).all()
            by_version: dict[int, list[str]] = {}
            for alias, version_id in conn.execute(
                sa.select(t.aliases.c.alias, t.aliases.c.version_id)
                .where(t.aliases.c.model_id == model_id)
                .order_by(t.aliases.c.alias)
            ):
                by_version.setdefault(version_id, []).append(alias)
        return [_row_to_version(r, tuple(by_version.get(r[1], ()))) for r in reversed(rows)]

    def models(self) -> list[RegisteredModel]:
        if not self.exists():
            return []
        with self._tx(False, "read") as conn:
            rows = conn.execute(
                sa.select(
                    t.models.c.name,
                    sa.func.count(t.versions.c.id),
                    sa.func.max(t.versions.c.version),
                    t.models.c.created_at,
                    sa.func.max(t.versions.c.created_at),
                )
                .select_from(t.models.join(t.versions, t.versions.c.model_id == t.models.c.id))
                .group_by(t.models.c.id, t.models.c.name, t.models.c.created_at)
                .order_by(t.models.c.name)
            ).all()
            aliases: dict[str, dict[str, int]] = {}
            for name, alias, version in conn.execute(
                sa.select(t.models.c.name, t.aliases.c.alias, t.versions.c.version).select_from(
                    t.aliases.join(t.models, t.aliases.c.model_id == t.models.c.id).join(
                        t.versions, t.aliases.c.version_id == t.versions.c.id
                    )
                )
            ):
                aliases.setdefault(name, {})[alias] = version
        return [
            RegisteredModel(n, c, latest, aliases.get(n, {}), created, updated)
            for n, c, latest, created, updated in rows
        ]

    def search(
        self,
        *,
        name: str | None,
        tag: tuple[str, str | None] | None,
        alias: str | None,
        limit: int | None,
    ) -> list[ModelVersion]:
        if not self.exists():
            return []
        query = sa.select(*_VERSION_COLUMNS).select_from(
            t.versions.join(t.models, t.versions.c.model_id == t.models.c.id)
        )
        if name is not None:
            pattern = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = pattern.replace("*", "%").replace("?", "_")
            query = query.where(t.models.c.name.like(pattern, escape="\\"))
        if tag is not None:
            key, value = tag
            cond = (t.version_tags.c.version_id == t.versions.c.id) & (t.version_tags.c.key == key)
            if value is not None:
                cond = cond & (t.version_tags.c.value == value)
            query = query.where(sa.exists().where(cond))
        if alias is not None:
            query = query.where(
                sa.exists().where(
                    (t.aliases.c.version_id == t.versions.c.id) & (t.aliases.c.alias == alias)
                )
            )
        query = query.order_by(t.models.c.name, t.versions.c.version)
        if limit is not None:
            query = query.limit(limit)
        with self._tx(False, "read") as conn:
            rows = conn.execute(query).all()
            ids = [r[1] for r in rows]
            by_version: dict[int, list[str]] = {}
            for start in range(0, len(ids), 500):
                for a, vid in conn.execute(
                    sa.select(t.aliases.c.alias, t.aliases.c.version_id)
                    .where(t.aliases.c.version_id.in_(ids[start : start + 500]))
                    .order_by(t.aliases.c.alias)
                ):
                    by_version.setdefault(vid, []).append(a)
        return [_row_to_version(r, tuple(by_version.get(r[1], ()))) for r in rows]

    def alias_history(self, name: str, alias: str | None) -> list[AliasChange]:
        if not self.exists():
            raise self._no_model(None, name)
        with self._tx(False, "read") as conn:
            model_id = conn.execute(
                sa.select(t.models.c.id).where(t.models.c.name == name)
            ).scalar()
            if model_id is None:
                raise self._no_model(conn, name)
            query = sa.select(
                t.alias_history.c.alias,
                t.alias_history.c.version,
                t.alias_history.c.previous,
                t.alias_history.c.changed_at,
                t.alias_history.c.changed_by,
            ).where(t.alias_history.c.model_id == model_id)
            if alias is not None:
                query = query.where(t.alias_history.c.alias == alias)
            rows = conn.execute(query.order_by(t.alias_history.c.id)).all()
        return [AliasChange(name, a, v, p, c, b) for a, v, p, c, b in rows]

    def aliases(self, name: str) -> dict[str, int]:
        if not self.exists():
            raise self._no_model(None, name)
        with self._tx(False, "read") as conn:
            model_id = conn.execute(
                sa.select(t.models.c.id).where(t.models.c.name == name)
            ).scalar()
            if model_id is None:
                raise self._no_model(conn, name)
            return dict(sorted(self._aliases(conn, model_id).items()))

    # -- garbage collection ------------------------------------------------------------------
    def referenced(self) -> set[str]:
        if not self.exists():
            return set()
        with self._tx(False, "read") as conn:
            return set(conn.execute(sa.select(t.versions.c.blob_hash).distinct()).scalars())

    def pending_rows(self) -> list[str]:
        if not self.exists():
            return []
        with self._tx(False, "read") as conn:
            return list(conn.execute(sa.select(t.blobs.c.hash)).scalars())

    def collect(self, blob_hash: str, cutoff: str, delete: Callable[[], bool]) -> str:
        """Delete one unreferenced blob under the catalog's lock; ``delete`` removes the bytes.

        Returns ``"deleted"``, ``"referenced"`` or ``"pending"`` (an upload in flight, touched
        after ``cutoff``). The blob row is locked first, so a push that starts now waits for the
        decision and then uploads the blob again if it was deleted.
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
            delete()
            conn.execute(t.blobs.delete().where(t.blobs.c.hash == blob_hash))
            return "deleted"
