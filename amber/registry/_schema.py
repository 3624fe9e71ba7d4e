"""The catalog's tables and their migrations (SQLAlchemy Core; SQLite and PostgreSQL alike).

Migrations: a small versioned table (``amber_schema_migrations``), not Alembic. The catalog is
opened by every ``Registry()`` on users' machines, not deployed by an operator, so upgrades must
run by themselves, inside the library, under a lock, in one transaction per step, with no
migration scripts folder, ``env.py`` or extra dependency to ship. Alembic shines when a team
reviews and runs migrations by hand against one production database; here the schema is a
handful of tables that the library owns outright. Each step is a Python function applied once,
in order, and recorded with its number; a catalog newer than this Amber is refused with a
message to upgrade.

Rules for a new step: append it to ``MIGRATIONS`` with the next number; never edit an applied
step. Step 1 creates the tables as first defined: when a later step alters a table, step 1 must
keep creating the old shape (freeze its DDL then).

Tables: ``amber_models`` (one row per name, with the counter that numbers its versions),
``amber_versions`` (hash, size, manifest digest and summary, metrics, tags, description, who and
when, signatures), ``amber_version_tags`` (tags again, as rows, for search), ``amber_aliases``,
``amber_alias_history`` (every move and removal of an alias), ``amber_blobs`` (uploads in flight,
so that ``gc`` never deletes a blob that a push is about to commit), ``amber_model_revisions``
(step 2: per model, a revision that every change to its versions or aliases raises and a count
of versions deleted or changed in place, such as a signature attached later; a missing row reads
as 0 and 0), ``amber_version_content`` (step 3: per
version, the BLAKE3 of its manifest without the ``registry`` field, which export and import
rewrite: what identifies the model) and ``amber_deleted_versions`` (step 3: every deleted
version, its blob, content and when, so that an import never gives its number to another model
and ``gc`` keeps a blob that a load may still be reading).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable

import sqlalchemy as sa

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "TABLES", "now", "t"]

metadata = sa.MetaData()

_HASH = sa.String(64)

migrations_table = sa.Table(
    "amber_schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.String(40), nullable=False),
)

models = sa.Table(
    "amber_models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("next_version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", sa.String(40), nullable=False),
)

versions = sa.Table(
    "amber_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("amber_models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("blob_hash", _HASH, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("manifest_hash", _HASH, nullable=False),
    sa.Column("framework", sa.String(200), nullable=False),
    sa.Column("object_type", sa.String(400), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),  # JSON: environment, handler, inputs
    sa.Column("metrics", sa.Text, nullable=False),  # JSON object
    sa.Column("tags", sa.Text, nullable=False),  # JSON object of strings
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("signed_by", sa.String(64)),  # key id of the artifact's own amber.sig, if any
    sa.Column("signature", sa.Text),  # a detached amber.sig made at push (section 6)
    sa.UniqueConstraint("model_id", "version", name="amber_versions_model_version"),
)
sa.Index("amber_versions_blob", versions.c.blob_hash)

version_tags = sa.Table(
    "amber_version_tags",
    metadata,
    sa.Column("version_id", sa.Integer, sa.ForeignKey("amber_versions.id"), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.String(512), nullable=False),
)
sa.Index("amber_version_tags_kv", version_tags.c.key, version_tags.c.value)

aliases = sa.Table(
    "amber_aliases",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("amber_models.id"), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version_id", sa.Integer, sa.ForeignKey("amber_versions.id"), nullable=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

alias_history = sa.Table(
    "amber_alias_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("amber_models.id"), nullable=False),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer),  # None: the alias was removed
    sa.Column("previous", sa.Integer),  # None: the alias was new
    sa.Column("changed_at", sa.String(40), nullable=False),
    sa.Column("changed_by", sa.String(200), nullable=False),
)
sa.Index("amber_alias_history_model", alias_history.c.model_id, alias_history.c.alias)

blobs = sa.Table(
    "amber_blobs",
    metadata,
    sa.Column("hash", _HASH, primary_key=True),
    sa.Column("pending", sa.Integer, nullable=False, server_default="0"),
    sa.Column("touched_at", sa.String(40), nullable=False),
)


# Step 2: counters per model, so that a reader can tell in one cheap query whether what it
# listed before still holds: ``revision`` is raised by every write that changes the model's
# versions or aliases, ``deleted`` counts the versions ever deleted or changed in place (a
# signature attached by an import): after either, a reader reads the model's list whole again.
revisions = sa.Table(
    "amber_model_revisions",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("amber_models.id"), primary_key=True),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("deleted", sa.BigInteger, nullable=False),
)


# Step 3: what identifies a version's model (the manifest's digest without the ``registry``
# field that export and import rewrite), and a record of deleted versions (their numbers are
# never given to another model; their blobs outlive the delete by gc's grace).
version_content = sa.Table(
    "amber_version_content",
    metadata,
    sa.Column("version_id", sa.Integer, sa.ForeignKey("amber_versions.id"), primary_key=True),
    sa.Column("content_hash", _HASH, nullable=False),
)

deleted_versions = sa.Table(
    "amber_deleted_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("amber_models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("blob_hash", _HASH, nullable=False),
    sa.Column("content_hash", _HASH, nullable=False),
    sa.Column("deleted_at", sa.String(40), nullable=False),
    sa.Column("deleted_by", sa.String(200), nullable=False),
)
sa.Index("amber_deleted_versions_model", deleted_versions.c.model_id, deleted_versions.c.version)
sa.Index("amber_deleted_versions_blob", deleted_versions.c.blob_hash)


class t:  # a namespace: t.models, t.versions, ...
    models = models
    versions = versions
    version_tags = version_tags
    aliases = aliases
    alias_history = alias_history
    blobs = blobs
    revisions = revisions
    version_content = version_content
    deleted_versions = deleted_versions
    migrations = migrations_table


#: The tables of step 1, as it created them (frozen: later steps add their own).
_V1_TABLES = [models, versions, version_tags, aliases, alias_history, blobs]
TABLES = [*_V1_TABLES, revisions, version_content, deleted_versions]


def now() -> str:
    """The time as stored: ISO 8601, UTC, microseconds (sorts as text)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


def _v1_create(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=_V1_TABLES)


def _v2_revisions(conn: sa.Connection) -> None:
    revisions.create(conn)


def _v3_content_and_deletions(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[version_content, deleted_versions])


MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "models, versions, tags, aliases, alias history, blobs", _v1_create),
    (2, "a revision counter per model, for readers' caches", _v2_revisions),
    (3, "content digests of versions, deleted versions", _v3_content_and_deletions),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
