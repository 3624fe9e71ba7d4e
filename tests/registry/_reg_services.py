"""Real servers for the registry tests: PostgreSQL (initdb into a temporary folder) and moto's
standalone S3 server, both on free loopback ports, both stopped when the session ends.

Nothing is mocked: the catalog talks to a PostgreSQL server over TCP, s3fs talks HTTP to moto.
The binaries are installed by ``scripts/test-services.sh`` (run by ``make test``); if they are
missing or a server does not start, the fixtures fail loudly: no test is skipped.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PostgresServer", "S3Server", "free_port", "start_postgres", "start_s3"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    raise RuntimeError(
        f"PostgreSQL's {name} was not found (on PATH or under /usr/lib/postgresql/*/bin); run "
        f"`bash scripts/test-services.sh` (as root: it apt-get installs postgresql) or `make test`"
    )


@dataclass
class PostgresServer:
    url: str  # postgresql+psycopg://amber@127.0.0.1:PORT/amber_test
    port: int
    datadir: Path
    _as_user: list[str]
    _pg_ctl: str

    def stop(self) -> None:
        subprocess.run(
            [*self._as_user, self._pg_ctl, "-D", str(self.datadir), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def start_postgres() -> PostgresServer:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="amber-pg-"))
    datadir, sockets = root / "data", root / "sock"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as 'postgres'
        if shutil.which("runuser") is None:
            raise RuntimeError("running as root needs runuser (util-linux) to start PostgreSQL")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()
    run = [*as_user, initdb, "-D", str(datadir), "-A", "trust", "-U", "amber", "-E", "UTF8"]
    done = subprocess.run([*run, "--no-sync"], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr[-2000:]}")
    options = (
        f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=100 "
        f"-c fsync=off -c full_page_writes=off"
    )
    log = root / "server.log"
    if as_user:
        log.touch()
        shutil.chown(log, "postgres")
    done = subprocess.run(
        [*as_user, pg_ctl, "-D", str(datadir), "-o", options, "-l", str(log), "-w", "start"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {done.stderr[-1000:]}\n{tail}")
    import psycopg

    with psycopg.connect(
        f"host=127.0.0.1 port={port} user=amber dbname=postgres", autocommit=True
    ) as conn:
        conn.execute("CREATE DATABASE amber_test")
    return PostgresServer(
        url=f"postgresql+psycopg://amber@127.0.0.1:{port}/amber_test",
        port=port,
        datadir=datadir,
        _as_user=as_user,
        _pg_ctl=pg_ctl,
    )


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]
    bucket: str = "amber-test"

    @property
    def storage_options(self) -> dict[str, object]:
        return {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze the server (SIGSTOP): requests to it hang until the block ends."""
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _no_proxy_for_loopback() -> None:
    """Requests to the test servers must never go through an HTTP proxy set in the environment."""
    for var in ("NO_PROXY", "no_proxy"):
        hosts = [h for h in os.environ.get(var, "").split(",") if h]
        os.environ[var] = ",".join([*hosts, "127.0.0.1", "localhost"])


def start_s3() -> S3Server:
    _no_proxy_for_loopback()
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="amber-moto-", suffix=".log", delete=False)  # noqa: SIM115
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"moto's S3 server exited ({process.returncode}): "
                f"{Path(log.name).read_text(errors='replace')[-2000:]}"
            )
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    f"moto's S3 server did not answer on {endpoint} within 60 s"
                ) from None
            time.sleep(0.1)
    server = S3Server(endpoint, process)
    create = urllib.request.Request(f"{endpoint}/{server.bucket}", method="PUT")
    urllib.request.urlopen(create, timeout=10).close()
    return server
