"""Fixtures of the registry tests: the real servers (session-wide), models, keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _reg_services import PostgresServer, S3Server, start_postgres, start_s3
from reg_helpers import IRIS_X, IRIS_Y
from sklearn.linear_model import LogisticRegression

import amber


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    server = start_s3()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def iris_model() -> LogisticRegression:
    return LogisticRegression(max_iter=500).fit(IRIS_X, IRIS_Y)


@pytest.fixture(scope="session")
def other_model() -> LogisticRegression:
    return LogisticRegression(max_iter=500, C=0.1).fit(IRIS_X, IRIS_Y)


@pytest.fixture
def artifact(tmp_path: Path, iris_model: LogisticRegression) -> Path:
    path = tmp_path / "iris.amber"
    amber.save(iris_model, path, sample=IRIS_X[:8], metadata={"metrics": {"accuracy": 0.97}})
    return path


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two Ed25519 key pairs: 'alice' (trusted) and 'mallory'."""
    folder = tmp_path_factory.mktemp("keys")
    out = {}
    for who in ("alice", "mallory"):
        private, public = amber.generate_key()
        (folder / f"{who}.key").write_bytes(private)
        (folder / f"{who}.pub").write_bytes(public)
        out[who] = folder / f"{who}.key"
        out[f"{who}.pub"] = folder / f"{who}.pub"
    return out
