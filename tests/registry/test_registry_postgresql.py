"""What only a PostgreSQL catalog can get wrong, on a real server.

- Concurrent changes to one model interleaving: an import checks whether its model is already
  there, and that answer must still hold when it writes. The interleaving is forced, not hoped
  for: a hook runs the other change right after the import's check and waits until that change
  either finished or is blocked on a lock (``pg_stat_activity``). On SQLite every write
  transaction holds the whole database from its ``BEGIN IMMEDIATE``, so there is no interleaving
  to force; the conformance suite covers the same calls one after the other.
- The database's collation: names and aliases are listed in byte order whatever it is.
- A role that may only read the catalog: the read-only error a read-only SQLite folder gives.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from _reg_services import PostgresServer, S3Server
from reg_helpers import IRIS_X, Backend, folder_sqlite, predicts_like, s3_postgresql

import amber
from amber.registry import CatalogReadOnly, Registry


@pytest.fixture
def backend(tmp_path: Path, postgres: PostgresServer, s3: S3Server) -> Backend:
    return s3_postgresql(tmp_path, postgres, s3)


def _blocked(monitor: psycopg.Connection[Any]) -> int:
    """How many sessions of the test database wait for a lock held by another transaction."""
    row = monitor.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'amber_test' "
        "AND wait_event_type = 'Lock'"
    ).fetchone()
    return int(row[0]) if row else 0


class Other(threading.Thread):
    """Another writer's call, in its own thread; its result or exception is kept."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as exc:  # handed to the test
            self.error = exc


def after_the_check(reg: Registry, postgres: PostgresServer, other: Other) -> None:
    """Run ``other`` right after ``reg``'s next import has checked whether its model is there,
    and let the import go on only once ``other`` has finished or waits for a lock."""
    catalog: Any = reg.catalog
    check = catalog._same_content

    def hooked(conn: sa.Connection, req: Any) -> Any:
        found = check(conn, req)
        catalog._same_content = check  # once
        other.start()
        deadline = time.monotonic() + 60  # a bound on a hang, not a timing under test
        with psycopg.connect(
            f"host=127.0.0.1 port={postgres.port} user=amber dbname=amber_test", autocommit=True
        ) as monitor:
            while other.is_alive() and not _blocked(monitor):
                if time.monotonic() > deadline:
                    raise AssertionError("the other writer neither finished nor waited for a lock")
                time.sleep(0.005)
        return found

    catalog._same_content = hooked


@pytest.fixture
def exported(tmp_path: Path, iris_model: Any) -> Path:
    with Registry(tmp_path / "source") as source:
        source.push("iris", iris_model, sample=IRIS_X[:4])
        source.export("models:/iris/1", tmp_path / "iris-v1.amber")
    return tmp_path / "iris-v1.amber"


def test_two_imports_of_one_file_at_once_make_one_version(
    backend: Backend, postgres: PostgresServer, exported: Path, other_model: Any
) -> None:
    with backend.open() as reg, backend.open() as elsewhere:
        reg.push("iris-eu", other_model)  # the target model exists, without this file's model
        second = Other(lambda: elsewhere.import_(exported, name="iris-eu"))
        after_the_check(reg, postgres, second)
        first = reg.import_(exported, name="iris-eu")
        second.join(60)
        assert second.error is None, second.error
        assert (first.version, second.result.version) == (2, 2)
        assert [v.version for v in reg.versions("iris-eu")] == [1, 2]


@pytest.mark.parametrize("alias", ["prod", None])
def test_an_import_racing_a_delete_of_its_model_is_serialized(
    backend: Backend, postgres: PostgresServer, exported: Path, alias: str | None
) -> None:
    with backend.open() as reg, backend.open() as elsewhere:
        held = reg.import_(exported, name="iris-eu", keep_version=False)
        delete = Other(lambda: elsewhere.delete("iris-eu", held.version, force=True))
        after_the_check(reg, postgres, delete)
        again = reg.import_(exported, name="iris-eu", alias=alias)  # finds it: nothing new
        delete.join(60)
        assert delete.error is None, delete.error
        assert again.version == held.version and again.aliases == ((alias,) if alias else ())
        with pytest.raises(amber.ModelNotFound, match="no versions left"):  # then deleted
            reg.versions("iris-eu")
        assert reg.import_(exported, name="iris-eu").version == held.version + 1  # a new number


# -- collation --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def en_us_database(postgres: PostgresServer) -> str:
    """A database whose collation is ICU en-US (what a server set up with LANG=en_US.UTF-8
    gives), where 'a_b' sorts before 'B2' and '_' and '-' are nearly ignored."""
    with psycopg.connect(
        f"host=127.0.0.1 port={postgres.port} user=amber dbname=postgres", autocommit=True
    ) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'amber_en_us'").fetchone():
            conn.execute(
                "CREATE DATABASE amber_en_us TEMPLATE template0 LOCALE_PROVIDER icu "
                "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
            )
    return postgres.url.replace("/amber_test", "/amber_en_us")


def test_names_and_aliases_are_listed_in_byte_order_whatever_the_collation(
    tmp_path: Path, en_us_database: str, s3: S3Server, artifact: Path
) -> None:
    schema = f"t_{secrets.token_hex(6)}"
    engine = sa.create_engine(en_us_database)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        assert conn.execute(sa.text("SELECT 'a_b' < 'B2'")).scalar()  # the collation differs
    engine.dispose()
    en_us = Backend(
        "s3-postgresql-en-us",
        f"s3://{s3.bucket}/{schema}",
        catalog=f"{en_us_database}?options=-csearch_path%3D{schema}",
        storage_options=s3.storage_options,
        cache=tmp_path / "cache",
    )
    names = ["Zeta", "alpha", "a-b", "a_b", "ab", "B2", "b1"]
    aliases = ["Prod", "canary", "b_x", "b-x"]
    seen = []
    for backend in (folder_sqlite(tmp_path), en_us):
        with backend.open() as reg:
            for name in names:
                reg.push(name, artifact, tags={"team": "risk"})
            for alias in aliases:
                reg.set_alias("ab", alias, 1)
            with pytest.raises(amber.ModelNotFound) as err:
                reg.get("nope")
            seen.append(
                (
                    [m.name for m in reg.models()],
                    [v.name for v in reg.search(tag="team", limit=3)],
                    reg.get("ab").aliases,
                    reg.versions("ab")[0].aliases,
                    reg.search(name="ab")[0].aliases,
                    list(next(m for m in reg.models() if m.name == "ab").aliases),
                    str(err.value).split("models there: ")[1],
                )
            )
    assert seen[0] == seen[1]
    assert seen[0][0] == sorted(names) == ["B2", "Zeta", "a-b", "a_b", "ab", "alpha", "b1"]
    assert seen[0][1] == ["B2", "Zeta", "a-b"]
    assert seen[0][2] == tuple(sorted(aliases)) == ("Prod", "b-x", "b_x", "canary")


# -- a role that may only read ----------------------------------------------------------------
def test_a_role_that_may_only_read_gets_the_read_only_error(
    postgres: PostgresServer, backend: Backend, iris_model: Any, artifact: Path
) -> None:
    with backend.open() as reg:
        reg.push("iris", iris_model, alias="production")
        reg.catalog.close()
        schema = backend.location.rsplit("/", 1)[-1]
        engine = sa.create_engine(postgres.url)
        role = f"reader_{secrets.token_hex(4)}"
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
            conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
        try:
            assert backend.catalog is not None
            reader = Backend(
                backend.id,
                backend.location,
                catalog=backend.catalog.replace("amber@", f"{role}@"),
                storage_options=backend.storage_options,
                cache=backend.cache,
            )
            with reader.open() as ro:
                assert predicts_like(ro.load("models:/iris@production"), iris_model)
                assert [v.version for v in ro.versions("iris")] == [1]
                for change in (
                    lambda: ro.push("iris", artifact),
                    lambda: ro.set_alias("iris", "production", 1),
                    lambda: ro.delete("iris", 1, force=True),
                    lambda: ro.import_(artifact, name="wine"),
                ):
                    with pytest.raises(CatalogReadOnly) as err:
                        change()
                    message = str(err.value)
                    assert "read-only here" in message and "need a writable registry" in message
                    assert "permission denied" in message
                    assert "check that the PostgreSQL server is running" not in message
            assert [v.version for v in reg.versions("iris")] == [1]
            assert reg.aliases("iris") == {"production": 1}
        finally:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP OWNED BY {role}")
                conn.exec_driver_sql(f"DROP ROLE {role}")
            engine.dispose()
