"""The catalog's connection to its database: engine, transactions, errors, migrations.

SQLite and PostgreSQL through one SQL layer (SQLAlchemy Core). On SQLite every write transaction
starts with ``BEGIN IMMEDIATE``, which takes the database's write lock at once (a deferred
``BEGIN`` would take it at the first write and could fail with "database is locked" half-way);
readers use plain ``BEGIN`` and, in WAL mode, never block writers; ``busy_timeout`` makes a
writer wait up to 60 s for the lock. Migrations (``_schema.py``) run once per process, in one
transaction, under a lock (on PostgreSQL an advisory lock; on SQLite the write lock).
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.util
import os
import socket
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from amber.registry._errors import CatalogReadOnly, CatalogUnavailable
from amber.registry._schema import MIGRATIONS, SCHEMA_VERSION, now, t

__all__ = ["CatalogEngine", "normalize_url"]

_LOCK_KEY = 0x616D626572  # "amber": the advisory lock that serializes PostgreSQL migrations
_INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL's SQLSTATE for "permission denied"


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
    return f"{user}@{socket.gethostname()}"[:200]  # the catalog's created_by holds 200


def _wal(cur: Any) -> None:
    """Switch a new catalog to WAL. SQLite answers "database is locked" at once, without its
    busy handler, when other connections hold the file while one switches (several processes
    pushing to a new registry at the same moment): retry for up to the busy timeout."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class CatalogEngine:
    """One SQLAlchemy engine, created on first use, and the transactions over it."""

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
        self._file_id: tuple[int, int] | None = None  # (device, inode) of the SQLite file
        self.read_only = False  # a SQLite catalog this process cannot write (see _make_engine)
        self.who = _who()

    # -- connections -------------------------------------------------------------------------
    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = self._make_engine()
        return self._engine

    def _sqlite_read_only(self) -> bool:
        """Whether the SQLite catalog exists but this process cannot write it or its folder
        (a registry on a read-only mount, or baked into an image and run as another user)."""
        path = self.sqlite_path
        if path is None or not path.exists():
            return False
        return not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))

    def _read_only_uri(self) -> str:
        """A read-only SQLite URI for the catalog. ``mode=ro`` when SQLite can share the
        write-ahead log's index (a writer has it open, or the folder takes new files); else,
        with no log left to replay, ``immutable=1``, which reads the file without locks. A
        fresh connection is opened for each transaction, so either way every read sees what
        was last committed."""
        assert self.sqlite_path is not None
        path = urllib.parse.quote(str(self.sqlite_path))
        try:
            probe = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                probe.close()
            return f"file:{path}?mode=ro"
        except sqlite3.Error:
            wal = self.sqlite_path.with_name(self.sqlite_path.name + "-wal")
            if wal.exists() and wal.stat().st_size:
                raise CatalogUnavailable(
                    f"the catalog of registry {self.label} is read-only here and its write-ahead "
                    f"log {str(wal)!r} holds changes this process cannot merge: open the "
                    f"registry once where it is writable (any 'amber models list' does), then "
                    f"read it here again"
                ) from None
            return f"file:{path}?immutable=1"

    def _make_engine(self) -> sa.Engine:
        if self.dialect == "sqlite":
            self.read_only = self._sqlite_read_only()
            if self.read_only:
                uri = self._read_only_uri()
                engine = sa.create_engine(
                    "sqlite://",
                    creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False),
                    poolclass=sa.pool.NullPool,
                )
            else:
                engine = sa.create_engine(self.url, connect_args={"timeout": 60})

            @sa.event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA busy_timeout=60000")
                if not self.read_only:
                    _wal(cur)
                    cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            @sa.event.listens_for(engine, "begin")
            def _on_begin(conn: sa.Connection) -> None:
                write = conn.get_execution_options().get("amber_write", False)
                if write and self.read_only:
                    raise CatalogReadOnly(self._read_only_message())
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

            return engine
        return sa.create_engine(self.url, pool_pre_ping=True, connect_args={"connect_timeout": 10})

    def _unavailable(self, exc: BaseException, action: str) -> CatalogUnavailable:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        reason = detail[0] if detail else type(exc).__name__
        sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
        if sqlstate == _INSUFFICIENT_PRIVILEGE and action != "read":
            return CatalogReadOnly(self._role_read_only_message(reason, action))
        if self.dialect == "sqlite":
            hint = (
                f"check that {str(self.sqlite_path)!r} is a writable SQLite file on a local disk "
                f"(not a network share) and that no process holds its write lock for long"
            )
        elif isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
            hint = (
                "check that the PostgreSQL server is running and reachable at that host and "
                "port, that the database exists, and the credentials (password in the URL, "
                "PGPASSWORD or ~/.pgpass)"
            )
        elif sqlstate == _INSUFFICIENT_PRIVILEGE:
            hint = (
                "the PostgreSQL role in the URL may not read the catalog: grant it USAGE on the "
                "schema and SELECT on the amber_* tables, or use a role that has them"
            )
        else:  # the server answered and refused the statement: not a connection problem
            hint = (
                f"the server refused the statement (SQLSTATE {sqlstate}); check that the "
                f"database's amber_* tables are the ones Amber made (no column changed by hand)"
            )
        return CatalogUnavailable(
            f"cannot {action} the catalog {self.safe_url} of registry {self.label}: {reason}; "
            f"{hint}"
        )

    def _role_read_only_message(self, reason: str, action: str) -> str:
        """A PostgreSQL role that may only read the catalog: as a read-only SQLite folder."""
        if action == "open":  # its schema needs an upgrade that this role may not make
            return (
                f"the catalog {self.safe_url} of registry {self.label} must be created or "
                f"upgraded to this Amber's schema, and its PostgreSQL role may not ({reason}): "
                f"open it once with a role that may create tables in it (any 'amber models "
                f"list' does it), then use it with this one"
            )
        return (
            f"registry {self.label} is read-only here: the PostgreSQL role of its catalog "
            f"{self.safe_url} may not write it ({reason}). Loading, listing and serving work; "
            f"push, alias, tag, delete, import and gc need a writable registry: a role with "
            f"INSERT, UPDATE and DELETE on the amber_* tables (and USAGE on their sequences)"
        )

    def _sqlite_file_id(self) -> tuple[int, int] | None:
        if self.sqlite_path is None:
            return None
        try:
            st = os.stat(self.sqlite_path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _follow_replaced_file(self) -> None:
        """A SQLite catalog file replaced or removed since it was opened (the registry folder
        wiped and made again): open connections would keep reading the old file, so drop them
        and what was read through them, and open the file now at that path."""
        if self.sqlite_path is None or self._engine is None:
            return
        if self._sqlite_file_id() != self._file_id:
            self.close()
            self._migrated = False
            self._forget()

    def _forget(self) -> None:
        """Drop anything kept from the catalog (subclasses keep listings)."""

    @contextlib.contextmanager
    def _tx(self, write: bool, action: str) -> Iterator[sa.Connection]:
        self._follow_replaced_file()
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

    def check_writable(self) -> None:
        """Raise :class:`CatalogReadOnly` before a change is begun on a read-only catalog."""
        _ = self.engine  # made first: it finds out whether a SQLite catalog is read-only
        if self.read_only:
            raise CatalogReadOnly(self._read_only_message())

    def _read_only_message(self) -> str:
        return (
            f"registry {self.label} is read-only here: this process cannot write "
            f"{str(self.sqlite_path)!r} or its folder (a read-only mount, or files owned by "
            f"another user). Loading, listing and serving work; push, alias, tag, delete, "
            f"import and gc need a writable registry"
        )

    def migrate(self) -> None:
        _ = self.engine  # made first: it finds out whether a SQLite catalog is read-only
        if self.read_only:
            self._check_read_only_schema()
            return
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
        self._file_id = self._sqlite_file_id()

    def _check_read_only_schema(self) -> None:
        """A read-only catalog is read as it is: it must be at this Amber's schema version."""
        try:
            with self.engine.connect() as conn, conn.begin():
                applied = conn.execute(sa.select(sa.func.max(t.migrations.c.version))).scalar()
        except sa.exc.DBAPIError as exc:
            raise self._unavailable(exc, "open") from exc
        if applied != SCHEMA_VERSION:
            newer = (applied or 0) > SCHEMA_VERSION
            raise CatalogUnavailable(
                f"the catalog {self.safe_url} of registry {self.label} has schema version "
                f"{applied or 0}, {'newer' if newer else 'older'} than the {SCHEMA_VERSION} this "
                f"Amber reads, and it is read-only here: "
                + (
                    "upgrade Amber (pip install -U amber) on this machine"
                    if newer
                    else "open it once with this Amber where it is writable (any 'amber models "
                    "list' upgrades it), then read it here"
                )
            )
        self._migrated = True
        self._file_id = self._sqlite_file_id()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _insert(self, table: sa.Table) -> Any:
        from sqlalchemy.dialects import postgresql, sqlite

        return (postgresql if self.dialect == "postgresql" else sqlite).insert(table)
