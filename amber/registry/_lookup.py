"""Reading the catalog: versions, models, aliases, search, and errors that list what exists."""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any

import orjson
import sqlalchemy as sa

from amber.errors import ModelNotFound
from amber.registry._engine import CatalogEngine
from amber.registry._schema import t
from amber.registry._types import AliasChange, ModelVersion, ReadOnlyDict, RegisteredModel
from amber.registry._uri import ModelRef

__all__ = ["CatalogLookup"]

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
    """A ModelVersion from a row of ``_VERSION_COLUMNS``.

    Built without the dataclass ``__init__`` (which sets 16 frozen fields one
    ``object.__setattr__`` at a time): listing 10,000 versions spends most of its time here.
    """
    v = object.__new__(ModelVersion)
    v.__dict__.update(
        name=row[0],
        version=row[2],
        hash=row[3],
        size=row[4],
        created=row[5],
        created_by=row[6],
        metrics=ReadOnlyDict(orjson.loads(row[7])),
        tags=ReadOnlyDict(orjson.loads(row[8])),
        description=row[9],
        aliases=aliases,
        framework=row[10],
        object_type=row[11],
        manifest_hash=row[12],
        summary_json=row[13],
        signed_by=row[14],
        signature=row[15],
    )
    return v


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


#: How many models' version lists one catalog keeps (the least recently read is dropped first).
_LISTINGS_KEPT = 16


@dataclasses.dataclass(frozen=True)
class _Listing:
    """One model's versions as of ``key`` (model id, revision, versions deleted or changed so
    far):
    ``versions`` by number, ``ids`` their row ids in the same order, ``top`` the highest of
    those, ``aliased`` row id -> aliases."""

    key: tuple[int, int, int]
    versions: tuple[ModelVersion, ...]
    ids: tuple[int, ...]
    aliased: dict[int, tuple[str, ...]]
    top: int


def _with_aliases(v: ModelVersion, aliases: tuple[str, ...]) -> ModelVersion:
    """A copy of ``v`` with other aliases (built as in ``_row_to_version``)."""
    w = object.__new__(ModelVersion)
    w.__dict__.update(v.__dict__, aliases=aliases)
    return w


class CatalogLookup(CatalogEngine):
    """The read side of the catalog."""

    def __init__(self, url: Any, *, label: str) -> None:
        super().__init__(url, label=label)
        # name -> its versions as last read (ModelVersion objects are immutable, so shared)
        self._listings: dict[str, _Listing] = {}

    def _forget(self) -> None:
        self._listings.clear()

    def _bytewise(self, column: Any) -> Any:
        """``column`` to sort by byte order (code point order), as Python's ``sorted`` and
        SQLite's BINARY collation do: PostgreSQL would otherwise sort by the database's
        collation (``en_US``: ``a_b`` before ``A2``, ``_`` ignored), and listings, limits and
        error messages would differ from one backend to the other."""
        return column.collate("C") if self.dialect == "postgresql" else column

    def _names(self, conn: sa.Connection) -> list[str]:
        return list(
            conn.execute(
                sa.select(t.models.c.name)
                .where(sa.exists().where(t.versions.c.model_id == t.models.c.id))
                .order_by(self._bytewise(t.models.c.name))
            ).scalars()
        )

    def _no_model(self, conn: sa.Connection | None, name: str) -> ModelNotFound:
        folder = self.sqlite_path.parent if self.sqlite_path is not None else None
        names = self._names(conn) if conn is not None else []
        deleted = (
            conn.execute(
                sa.select(sa.func.max(t.deleted_versions.c.version))
                .select_from(
                    t.deleted_versions.join(
                        t.models, t.deleted_versions.c.model_id == t.models.c.id
                    )
                )
                .where(t.models.c.name == name)
            ).scalar()
            if conn is not None
            else None
        )
        if deleted is not None:
            where = f"; models there: {', '.join(names[:30])}" if names else ""
            return ModelNotFound(
                f"model {name!r} has no versions left in registry {self.label}: all of them, up "
                f"to version {deleted}, were deleted (a new push gets a new number, never a "
                f"deleted one){where}"
            )
        if not names:
            missing = (
                f" (its folder {str(folder)!r} does not exist: check the path if you expected "
                f"models there)"
                if conn is None and folder is not None and not folder.is_dir()
                else ""
            )
            return ModelNotFound(
                f"no model named {name!r}: registry {self.label} is empty{missing}; publish "
                f"one with reg.push({name!r}, model) or `amber push FILE --name {name}`"
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
            .order_by(self._bytewise(t.aliases.c.alias))
        ).scalars()
        return _row_to_version(row, tuple(names))

    def get(self, ref: ModelRef) -> ModelVersion:
        if not self.exists():
            raise self._no_model(None, ref.name)
        with self._tx(False, "read") as conn:
            return self._resolve(conn, ref)

    def _model_id(self, conn: sa.Connection, name: str) -> int:
        """The id of model ``name``; ModelNotFound (listing what exists) if there is none."""
        model_id = conn.execute(sa.select(t.models.c.id).where(t.models.c.name == name)).scalar()
        if model_id is None:
            raise self._no_model(conn, name)
        return int(model_id)

    def versions(self, name: str, *, limit: int | None = None) -> list[ModelVersion]:
        """Oldest first. The whole list is kept for the next call under the model's revision:
        while nothing changes, a call costs one indexed query; after a change, only the new
        rows are read (and any version whose aliases moved is copied), not all of them."""
        if not self.exists():
            raise self._no_model(None, name)
        with self._tx(False, "read") as conn:
            found = conn.execute(
                sa.select(t.models.c.id, t.revisions.c.revision, t.revisions.c.deleted)
                .select_from(
                    t.models.outerjoin(t.revisions, t.revisions.c.model_id == t.models.c.id)
                )
                .where(t.models.c.name == name)
            ).first()
            if found is None:
                raise self._no_model(conn, name)
            key = (int(found[0]), int(found[1] or 0), int(found[2] or 0))
            cached = self._listings.get(name)
            if cached is not None and cached.key == key:
                listing = cached
            elif (
                cached is not None and cached.key[::2] == key[::2]
            ):  # same model, no row deleted or changed
                listing = self._refresh(conn, key, cached)
            elif limit is not None:  # nothing kept: read only what is asked for
                rows = conn.execute(
                    self._version_rows(key[0]).order_by(t.versions.c.version.desc()).limit(limit)
                ).all()
                if not rows:  # every version was deleted: as get() and models() say
                    raise self._no_model(conn, name)
                aliased = self._alias_map(conn, key[0])
                return [_row_to_version(r, aliased.get(r[1], ())) for r in reversed(rows)]
            else:
                listing = self._listing(conn, key)
            if not listing.versions:  # every version was deleted: as get() and models() say
                raise self._no_model(conn, name)
        self._listings.pop(name, None)  # (re)inserted last: the most recently read
        if len(self._listings) >= _LISTINGS_KEPT:
            self._listings.pop(next(iter(self._listings)), None)
        self._listings[name] = listing
        return list(listing.versions if limit is None else listing.versions[-limit:])

    @staticmethod
    def _version_rows(model_id: int) -> Any:
        return (
            sa.select(*_VERSION_COLUMNS)
            .select_from(t.versions.join(t.models, t.versions.c.model_id == t.models.c.id))
            .where(t.versions.c.model_id == model_id)
        )

    def _alias_map(self, conn: sa.Connection, model_id: int) -> dict[int, tuple[str, ...]]:
        """Row id of a version -> its aliases, sorted (only versions that have some)."""
        by_id: dict[int, tuple[str, ...]] = {}
        for alias, version_id in conn.execute(
            sa.select(t.aliases.c.alias, t.aliases.c.version_id)
            .where(t.aliases.c.model_id == model_id)
            .order_by(self._bytewise(t.aliases.c.alias))
        ):
            by_id[version_id] = (*by_id.get(version_id, ()), alias)
        return by_id

    def _listing(self, conn: sa.Connection, key: tuple[int, int, int]) -> _Listing:
        """Every version of the model, read whole."""
        rows = conn.execute(self._version_rows(key[0]).order_by(t.versions.c.version)).all()
        aliased = self._alias_map(conn, key[0])
        return _Listing(
            key,
            tuple(_row_to_version(r, aliased.get(r[1], ())) for r in rows),
            tuple(r[1] for r in rows),
            aliased,
            max((r[1] for r in rows), default=0),
        )

    def _refresh(
        self, conn: sa.Connection, key: tuple[int, int, int], cached: _Listing
    ) -> _Listing:
        """``cached`` brought up to date, when no version was deleted or changed since it was
        read: by the rows added since (row ids only grow while nothing is deleted; SQLite hands
        out the highest id again only once its row is gone), and the aliases read again (a
        handful of rows). A version row changed in place (a signature attached) raises the count
        in the key as a delete does, so it is never brought up to date here."""
        model_id = key[0]
        new = conn.execute(
            self._version_rows(model_id)
            .where(t.versions.c.id > cached.top)
            .order_by(t.versions.c.version)
        ).all()
        aliased = self._alias_map(conn, model_id)
        versions = list(cached.versions)
        ids = list(cached.ids)
        for row_id in cached.aliased.keys() | aliased.keys():
            now = aliased.get(row_id, ())
            if cached.aliased.get(row_id, ()) == now:
                continue
            try:
                i = ids.index(row_id)
            except ValueError:  # a new row's alias: it is built with it below
                continue
            versions[i] = _with_aliases(versions[i], now)
        for r in new:
            versions.append(_row_to_version(r, aliased.get(r[1], ())))
            ids.append(r[1])
        if new and len(versions) > len(new) and new[0][2] < cached.versions[-1].version:
            order = sorted(range(len(versions)), key=lambda i: versions[i].version)
            versions = [versions[i] for i in order]
            ids = [ids[i] for i in order]
        top = max([cached.top, *(r[1] for r in new)])
        return _Listing(key, tuple(versions), tuple(ids), aliased, top)

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
                .order_by(self._bytewise(t.models.c.name))
            ).all()
            aliases: dict[str, dict[str, int]] = {}
            for name, alias, version in conn.execute(
                sa.select(t.models.c.name, t.aliases.c.alias, t.versions.c.version)
                .select_from(
                    t.aliases.join(t.models, t.aliases.c.model_id == t.models.c.id).join(
                        t.versions, t.aliases.c.version_id == t.versions.c.id
                    )
                )
                .order_by(self._bytewise(t.aliases.c.alias))
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
            # Matched here, not by SQL: LIKE ignores case on SQLite but not on PostgreSQL, and
            # neither knows [ab]. Names are few next to versions: read them all once.
            with self._tx(False, "read") as conn:
                every = conn.execute(sa.select(t.models.c.name)).scalars().all()
            matched = [n for n in every if fnmatch.fnmatchcase(n, name)]
            if not matched:
                return []
            query = query.where(t.models.c.name.in_(matched))
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
        query = query.order_by(self._bytewise(t.models.c.name), t.versions.c.version)
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
                    .order_by(self._bytewise(t.aliases.c.alias))
                ):
                    by_version.setdefault(vid, []).append(a)
        return [_row_to_version(r, tuple(by_version.get(r[1], ()))) for r in rows]

    def alias_history(self, name: str, alias: str | None) -> list[AliasChange]:
        if not self.exists():
            raise self._no_model(None, name)
        with self._tx(False, "read") as conn:
            model_id = self._model_id(conn, name)
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
            model_id = self._model_id(conn, name)
            if (
                conn.execute(
                    sa.select(t.versions.c.id).where(t.versions.c.model_id == model_id).limit(1)
                ).first()
                is None
            ):  # every version was deleted: as get() and models() say
                raise self._no_model(conn, name)
            return dict(sorted(self._aliases(conn, model_id).items()))

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
