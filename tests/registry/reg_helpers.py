"""Shared helpers of the registry tests: the backends under test and a model check.

A :class:`Backend` knows how to open a fresh, isolated registry (its own folder, bucket prefix or
PostgreSQL schema) and how to describe it to a subprocess (environment variables).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _reg_services import PostgresServer, S3Server
from sklearn.datasets import load_iris

from amber.registry import Registry

IRIS_X, IRIS_Y = load_iris(return_X_y=True)


@dataclass
class Backend:
    """One registry configuration under test."""

    id: str
    location: str
    catalog: str | None = None
    storage_options: dict[str, Any] | None = None
    cache: Path | None = None
    s3: S3Server | None = field(default=None, repr=False)

    @property
    def remote(self) -> bool:
        return "://" in self.location

    def open(self) -> Registry:
        return Registry(
            self.location,
            catalog=self.catalog,
            storage_options=self.storage_options,
            cache=self.cache,
        )

    def env(self) -> dict[str, str]:
        """The same registry, for ``amber.load("models:/...")`` and the CLI in a subprocess."""
        env = {"AMBER_REGISTRY": self.location}
        if self.catalog is not None:
            env["AMBER_CATALOG"] = self.catalog
        if self.storage_options is not None:
            env["AMBER_STORAGE_OPTIONS"] = json.dumps(self.storage_options)
        if self.cache is not None:
            env["AMBER_CACHE"] = str(self.cache)
        return env


def folder_sqlite(tmp_path: Path) -> Backend:
    return Backend("folder-sqlite", str(tmp_path / "amber-models"))


def memory_sqlite(tmp_path: Path) -> Backend:
    return Backend(
        "memory-sqlite",
        f"memory://amber-{secrets.token_hex(6)}/models",
        catalog=f"sqlite:///{tmp_path / 'catalog.sqlite'}",
        cache=tmp_path / "cache",
    )


def s3_postgresql(tmp_path: Path, postgres: PostgresServer, s3: S3Server) -> Backend:
    import sqlalchemy as sa

    schema = f"t_{secrets.token_hex(6)}"
    engine = sa.create_engine(postgres.url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine.dispose()
    return Backend(
        "s3-postgresql",
        f"s3://{s3.bucket}/{schema}",
        catalog=f"{postgres.url}?options=-csearch_path%3D{schema}",
        storage_options=s3.storage_options,
        cache=tmp_path / "cache",
        s3=s3,
    )


def predicts_like(model: Any, reference: Any) -> bool:
    return bool(np.array_equal(model.predict(IRIS_X), reference.predict(IRIS_X)))
