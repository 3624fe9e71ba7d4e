"""Clear errors for what users get wrong or what breaks: unreachable catalogs and buckets,
catalogs from a newer Amber, and ``import amber`` staying light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _reg_services import PostgresServer, S3Server, free_port

import amber
from amber.registry import (
    CatalogUnavailable,
    InvalidURI,
    Registry,
    StorageUnavailable,
)


def test_import_amber_imports_no_registry_dependency() -> None:
    code = (
        "import sys, amber\n"
        "heavy = [m for m in ('sqlalchemy', 'fsspec', 's3fs', 'cryptography', 'psycopg')"
        " if m in sys.modules]\n"
        "print(heavy); assert amber.Registry.__name__ == 'Registry'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_unreachable_postgresql_catalog_says_where_and_what_to_check(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://amber:s3cret@127.0.0.1:{port}/models"
    reg = Registry(tmp_path / "blobs", catalog=url)
    with pytest.raises(CatalogUnavailable) as err:
        reg.models()
    message = str(err.value)
    assert f"127.0.0.1:{port}/models" in message
    assert "s3cret" not in message  # the password is never printed
    assert "check that the PostgreSQL server is running" in message
    assert isinstance(err.value, ConnectionError) and isinstance(err.value, amber.AmberError)


def test_a_catalog_that_is_not_a_database_url(tmp_path: Path) -> None:
    with pytest.raises(CatalogUnavailable, match="runs on SQLite or PostgreSQL"):
        Registry(tmp_path, catalog="mysql://u@h/db")
    with pytest.raises(CatalogUnavailable, match="not a database URL"):
        Registry(tmp_path, catalog="postgresql://u@h:notaport/db")


def test_an_unreadable_sqlite_catalog(tmp_path: Path) -> None:
    bogus = tmp_path / "catalog.sqlite"
    bogus.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CatalogUnavailable, match=r"catalog\.sqlite.*is a writable SQLite file"):
        Registry(tmp_path, catalog=bogus).models()


def test_unreachable_s3_endpoint_says_where_and_what_to_check(
    tmp_path: Path, artifact: Path
) -> None:
    port = free_port()
    options: dict[str, Any] = {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
    }
    reg = Registry("s3://nowhere/models", catalog=tmp_path / "c.sqlite", storage_options=options)
    with pytest.raises(StorageUnavailable) as err:
        reg.push("iris", artifact)
    message = str(err.value)
    assert "blob storage 's3://nowhere/models'" in message
    assert "that the bucket exists and is reachable" in message
    assert reg.models() == []  # nothing was published


def test_a_missing_bucket(tmp_path: Path, s3: S3Server, artifact: Path) -> None:
    reg = Registry(
        "s3://no-such-bucket/models",
        catalog=tmp_path / "c.sqlite",
        storage_options=s3.storage_options,
    )
    with pytest.raises(StorageUnavailable, match=r"s3://no-such-bucket/models.*bucket"):
        reg.push("iris", artifact)


def test_a_catalog_written_by_a_newer_amber_is_refused(
    tmp_path: Path, artifact: Path, postgres: PostgresServer
) -> None:
    reg = Registry(tmp_path / "reg")
    reg.push("iris", artifact)
    engine = sa.create_engine(reg.catalog.url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO amber_schema_migrations (version, name, applied_at) "
                "VALUES (99, 'from the future', '2099-01-01')"
            )
        )
    engine.dispose()
    with pytest.raises(CatalogUnavailable, match="schema version 99, newer than the 3"):
        Registry(tmp_path / "reg").models()


def test_migrations_are_recorded_once_on_both_databases(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    import secrets

    schema = f"m_{secrets.token_hex(4)}"
    engine = sa.create_engine(postgres.url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine.dispose()
    for catalog in (
        f"sqlite:///{tmp_path / 'c.sqlite'}",
        f"{postgres.url}?options=-csearch_path%3D{schema}",
    ):
        for _ in range(2):  # opening again applies nothing new
            with Registry(tmp_path / "blobs", catalog=catalog) as reg:
                reg.catalog.migrate()
        engine = sa.create_engine(catalog)
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT version FROM amber_schema_migrations")).all()
        engine.dispose()
        assert [r[0] for r in rows] == [1, 2, 3]


def test_a_catalog_of_schema_1_is_upgraded_in_place(tmp_path: Path, artifact: Path) -> None:
    """A catalog written before step 2 (no revisions table) gets it and step 3 at the next
    open; its models list from a count of 0, and the next write is seen by a reader's cached
    list."""
    with Registry(tmp_path / "reg") as reg:
        reg.push("iris", artifact, alias="production")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'reg' / 'catalog.sqlite'}")
    with engine.begin() as conn:  # back to what schema 1 wrote
        for table in ("amber_model_revisions", "amber_version_content", "amber_deleted_versions"):
            conn.execute(sa.text(f"DROP TABLE {table}"))
        conn.execute(sa.text("DELETE FROM amber_schema_migrations WHERE version >= 2"))
    with Registry(tmp_path / "reg") as reg, Registry(tmp_path / "reg") as writer:
        assert [(v.version, v.aliases) for v in reg.versions("iris")] == [(1, ("production",))]
        writer.push("iris", artifact)
        assert [v.version for v in reg.versions("iris")] == [1, 2]
    with engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT version FROM amber_schema_migrations")).all()
        revisions = conn.execute(sa.text("SELECT revision FROM amber_model_revisions")).all()
    engine.dispose()
    assert [r[0] for r in versions] == [1, 2, 3] and [r[0] for r in revisions] == [1]


def test_an_empty_local_registry_is_not_created_by_reads(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "none")
    assert reg.models() == []
    assert reg.search(tag="a=b") == []
    with pytest.raises(amber.ModelNotFound, match=r"is empty \(its folder .*none' does not exist"):
        reg.get("models:/iris/latest")
    assert reg.gc().removed == []
    assert not (tmp_path / "none").exists()


def test_amber_load_of_a_models_uri_without_a_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AMBER_REGISTRY", raising=False)
    monkeypatch.delenv("AMBER_CATALOG", raising=False)
    with pytest.raises(amber.ModelNotFound, match=r"amber-models is empty"):
        amber.load("models:/iris@production")
    with pytest.raises(InvalidURI, match="names no version or alias"):
        amber.load("models:/iris")
