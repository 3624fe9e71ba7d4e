"""The registry conformance suite, run against every backend.

- folder + SQLite: the embedded default (``./amber-models``).
- memory:// + SQLite: an fsspec store, downloads through the local cache.
- S3 + PostgreSQL: moto's S3 server over HTTP on loopback and a real PostgreSQL server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _reg_services import PostgresServer, S3Server
from reg_conformance import RegistryConformance, RemoteConformance
from reg_conformance_publish import PublishConformance
from reg_helpers import Backend, folder_sqlite, memory_sqlite, s3_postgresql


class TestFolderSQLite(RegistryConformance, PublishConformance):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return folder_sqlite(tmp_path)


class TestMemorySQLite(RegistryConformance, PublishConformance, RemoteConformance):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return memory_sqlite(tmp_path)


class TestS3PostgreSQL(RegistryConformance, PublishConformance, RemoteConformance):
    @pytest.fixture
    def backend(self, tmp_path: Path, postgres: PostgresServer, s3: S3Server) -> Backend:
        return s3_postgresql(tmp_path, postgres, s3)
