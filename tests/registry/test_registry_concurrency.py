"""Real processes against real backends: concurrent pushers, and pushers killed mid-push.

- N processes pushing the same name at once get N x K distinct, consecutive versions.
- A pusher killed mid-upload, or after its upload and before its commit, leaves no version
  (never a version without its blob); ``gc`` keeps its blob while the push could still be in
  flight, and removes it (and leftover temporary files) once the grace period is over.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _reg_services import PostgresServer, S3Server
from reg_helpers import Backend, folder_sqlite, s3_postgresql
from sklearn.preprocessing import StandardScaler

import amber
from amber.registry import Registry
from amber.registry._store import file_blake3

PUSHER = Path(__file__).with_name("reg_pusher.py")
ROOT = Path(__file__).resolve().parents[2]


def _spawn(backend: Backend, out: Path, name: str, files: list[Path]) -> subprocess.Popen[bytes]:
    env = {**os.environ, **backend.env(), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(PUSHER), name, str(out), *map(str, files)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


def _artifacts(folder: Path, count: int, model: Any) -> list[Path]:
    paths = []
    for i in range(count):
        path = folder / f"m{i}.amber"
        amber.save(model, path, metadata={"metrics": {"i": i}})
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def big_model() -> StandardScaler:
    """About 65 MB of arrays: an upload that takes long enough to be interrupted."""
    x = np.random.default_rng(0).random((4, 2_700_000))
    return StandardScaler().fit(x)


@pytest.fixture(params=["folder-sqlite", "s3-postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "folder-sqlite":
        return folder_sqlite(tmp_path)
    pg: PostgresServer = request.getfixturevalue("postgres")
    s3: S3Server = request.getfixturevalue("s3")
    return s3_postgresql(tmp_path, pg, s3)


def test_concurrent_pushers_get_distinct_consecutive_versions(
    backend: Backend, tmp_path: Path, iris_model: Any
) -> None:
    # 8 pushers on the embedded registry; 4 against S3 + PostgreSQL, whose clients take a
    # second of CPU each to start on the 2-core reference machine.
    n_procs, per_proc = (8, 2) if backend.id == "folder-sqlite" else (4, 2)
    files = _artifacts(tmp_path, 4, iris_model)
    outs = [tmp_path / f"out{i}.json" for i in range(n_procs)]
    procs = [
        _spawn(backend, out, "iris", [files[(i + k) % 4] for k in range(per_proc)])
        for i, out in enumerate(outs)
    ]
    try:
        _wait(lambda: all(Path(f"{o}.ready").exists() for o in outs), "pushers to start", 120)
        for out in outs:
            Path(f"{out}.go").touch()
        for p in procs:
            assert p.wait(timeout=120) == 0, p.stdout.read().decode() if p.stdout else ""
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    got = [json.loads(o.read_text()) for o in outs]
    everything = sorted(v for vs in got for v in vs)
    assert everything == list(range(1, n_procs * per_proc + 1))  # none lost, none duplicated
    assert all(vs == sorted(vs) for vs in got)
    with backend.open() as reg:
        versions = reg.versions("iris")
        assert [v.version for v in versions] == everything
        hashes = {file_blake3(f) for f in files}
        assert {v.hash for v in versions} == hashes
        assert sorted(h for h, _ in reg._store.list()) == sorted(hashes)  # one blob per content
        assert reg.get("models:/iris/latest").version == n_procs * per_proc


def _pending(reg: Registry, blob_hash: str) -> bool:
    import sqlalchemy as sa

    engine = sa.create_engine(reg.catalog.url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT pending FROM amber_blobs WHERE hash = :h"), {"h": blob_hash}
            ).first()
    finally:
        engine.dispose()
    return row is not None and row[0] > 0


def _after_the_crash(reg: Registry, blob_hash: str, blob_was_stored: bool, big: Path) -> None:
    """What must hold once a pusher died before its commit."""
    with pytest.raises(amber.ModelNotFound, match="no model named 'big'"):
        reg.get("models:/big/latest")
    stored = [h for h, _ in reg._store.list()]
    assert stored == ([blob_hash] if blob_was_stored else [])
    kept = reg.gc()  # the push might still be running: its blob stays
    assert kept.removed == [] and kept.kept_pending == (1 if blob_was_stored else 0)
    swept = reg.gc(grace=0)  # nobody is pushing: the orphan goes
    assert swept.removed == ([blob_hash] if blob_was_stored else [])
    assert [h for h, _ in reg._store.list()] == []
    assert not _pending(reg, blob_hash)
    assert reg.push("big", big).version == 1  # the catalog is consistent and usable


def test_folder_pusher_killed_between_upload_and_commit(
    tmp_path: Path, big_model: StandardScaler
) -> None:
    backend = folder_sqlite(tmp_path)
    big = tmp_path / "big.amber"
    amber.save(big_model, big)
    blob_hash = file_blake3(big)
    with backend.open() as reg:
        reg._prepare_write()
        reg.catalog.migrate()  # create the catalog
        proc = _spawn(backend, tmp_path / "out.json", "big", [big])
        try:
            _wait(lambda: Path(f"{tmp_path / 'out.json'}.ready").exists(), "the pusher")
            Path(f"{tmp_path / 'out.json'}.go").touch()
            _wait(lambda: _pending(reg, blob_hash), "the upload to start")
            # Take SQLite's write lock while the file is copied in: the commit must wait.
            lock = sqlite3.connect(reg.catalog.sqlite_path, isolation_level=None, timeout=60)
            lock.execute("BEGIN IMMEDIATE")
            _wait(lambda: reg._store.exists(blob_hash), "the upload to finish")
            time.sleep(0.3)  # the pusher is now waiting for the lock, in its commit
            assert proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            lock.execute("ROLLBACK")
            lock.close()
        finally:
            if proc.poll() is None:
                proc.kill()
        _after_the_crash(reg, blob_hash, True, big)


def test_folder_pusher_killed_mid_copy(tmp_path: Path, big_model: StandardScaler) -> None:
    backend = folder_sqlite(tmp_path)
    big = tmp_path / "big.amber"
    amber.save(big_model, big)
    blob_hash = file_blake3(big)
    staging = Path(backend.location) / "tmp"
    with backend.open() as reg:
        reg._prepare_write()
        reg.catalog.migrate()
        proc = _spawn(backend, tmp_path / "out.json", "big", [big])
        try:
            _wait(lambda: Path(f"{tmp_path / 'out.json'}.ready").exists(), "the pusher")
            Path(f"{tmp_path / 'out.json'}.go").touch()

            def copying() -> bool:
                return any(p.stat().st_size > 0 for p in staging.glob("*.amber"))

            _wait(lambda: copying() or reg._store.exists(blob_hash), "the copy to start")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        partial = [p for p in staging.glob("*.amber")]
        if not reg._store.exists(blob_hash):  # the usual case: killed mid-copy
            assert partial and partial[0].stat().st_size < big.stat().st_size
            assert reg.gc(grace=0).temporary_files == 1
            assert list(staging.glob("*.amber")) == []
            _after_the_crash(reg, blob_hash, False, big)
        else:  # the copy had just finished: the blob is whole, still no version
            _after_the_crash(reg, blob_hash, True, big)


def _s3_crash_backend(
    tmp_path: Path, postgres: PostgresServer, s3: S3Server
) -> tuple[Backend, Registry]:
    backend = s3_postgresql(tmp_path, postgres, s3)
    reg = backend.open()
    reg.catalog.migrate()  # create the catalog before anything is locked or paused
    return backend, reg


def test_s3_pusher_killed_mid_upload(
    tmp_path: Path, postgres: PostgresServer, s3: S3Server, iris_model: Any
) -> None:
    backend, reg = _s3_crash_backend(tmp_path, postgres, s3)
    big = _artifacts(tmp_path, 1, iris_model)[0]
    blob_hash = file_blake3(big)
    out = tmp_path / "out.json"
    proc = _spawn(backend, out, "big", [big])
    try:
        _wait(lambda: Path(f"{out}.ready").exists(), "the pusher")
        with s3.paused():  # the S3 server freezes: the upload hangs half-way
            Path(f"{out}.go").touch()
            _wait(lambda: _pending(reg, blob_hash), "the upload to start")
            time.sleep(0.3)
            assert proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with reg:
        _after_the_crash(reg, blob_hash, False, big)


def test_s3_pusher_killed_between_upload_and_commit(
    tmp_path: Path, postgres: PostgresServer, s3: S3Server, iris_model: Any
) -> None:
    import psycopg

    backend, reg = _s3_crash_backend(tmp_path, postgres, s3)
    big = _artifacts(tmp_path, 1, iris_model)[0]
    blob_hash = file_blake3(big)
    out = tmp_path / "out.json"
    schema = backend.location.rsplit("/", 1)[-1]
    proc = _spawn(backend, out, "big", [big])
    lock = psycopg.connect(f"host=127.0.0.1 port={postgres.port} user=amber dbname=amber_test")
    try:
        _wait(lambda: Path(f"{out}.ready").exists(), "the pusher")
        # Lock the models table: the upload goes through, the commit must wait.
        lock.execute(f"LOCK TABLE {schema}.amber_models IN EXCLUSIVE MODE")
        Path(f"{out}.go").touch()
        _wait(lambda: reg._store.exists(blob_hash), "the upload to finish")
        time.sleep(0.3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        lock.rollback()
        lock.close()
        if proc.poll() is None:
            proc.kill()
    with reg:
        _after_the_crash(reg, blob_hash, True, big)


def test_switching_a_new_catalog_to_wal_waits_for_other_connections(tmp_path: Path) -> None:
    """SQLite answers "database is locked" at once, without its busy handler, to a switch to WAL
    while another connection holds the file: several processes pushing to a new registry at the
    same moment hit it. The switch retries instead of failing the push."""
    import threading

    from amber.registry._engine import _wal

    path = tmp_path / "catalog.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        _wal(other.cursor())
    finally:
        release.join()
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
