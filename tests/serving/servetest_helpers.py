"""Helpers for the serving tests: saving models, ``amber serve`` in a subprocess, load
generators and waits.

A module of its own, not ``conftest``: ``from conftest import ...`` resolves to whichever
``conftest`` module Python imported first, which is another folder's when pytest collects several
test folders in one run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).parent
TOKEN = "test-token-123"
RELOAD_TOKEN = "reload-token-456"
TRUST = ["servetest_models.SlowModel", "servetest_models.NoisyModel"]


def save(obj: Any, path: Path, sample: Any, **metadata: Any) -> Path:
    import amber

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # custom test classes are not allowlisted
        amber.save(obj, path, sample=sample, metadata=metadata)
    return path


def iris_data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return X, y


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``amber serve`` in a subprocess; ``url``, ``client`` (httpx), ``log`` (its stderr)."""

    def __init__(self, args: list[str], tmp: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"server-{self.port}.log"
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
        full_env.update(env or {})
        cmd = [sys.executable, "-m", "amber", "serve", *args, "--port", str(self.port)]
        for name in TRUST:
            cmd += ["--trust", name]
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_live(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log}")
            try:
                if self.client.get("/v2/health/live").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"the server did not start:\n{self.log}")

    def wait_ready(self, timeout: float = 60) -> None:
        self.wait_live(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.get("/v2/health/ready").status_code == 200:
                return
            time.sleep(0.05)
        raise TimeoutError(f"the server did not get ready:\n{self.log}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the server and wait; the exit status (uvicorn re-raises the signal after a
        graceful shutdown, so a clean SIGTERM exit is -15)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()
        self._log.close()
        return int(self.proc.returncode)


def oip(data: Any, shape: list[int], datatype: str = "FP64", name: str = "input-0") -> dict:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


class Load:
    """Concurrent clients posting ``body`` to ``path`` until stopped, in a background thread.

    ``results`` holds ``(start, end, status, version)`` per request; transport errors count
    as status 0.
    """

    def __init__(
        self, srv: Server, path: str, body: Any, *, clients: int = 8, limit_s: float = 60.0
    ) -> None:
        import threading

        self.results: list[tuple[float, float, int, str | None]] = []
        self._stop = threading.Event()
        self._args = (srv.url, dict(srv.client.headers), path, body, clients, limit_s)
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def versions(self) -> list[str | None]:
        return [r[3] for r in sorted(self.results)]

    def _main(self) -> None:
        import asyncio

        asyncio.run(self._run())

    async def _run(self) -> None:
        import asyncio

        url, headers, path, body, clients, limit_s = self._args
        deadline = time.monotonic() + limit_s
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:

            async def worker() -> None:
                while not self._stop.is_set() and time.monotonic() < deadline:
                    start = time.monotonic()
                    try:
                        r = await client.post(path, json=body)
                        status, version = r.status_code, r.headers.get("x-amber-model-version")
                    except httpx.HTTPError:
                        status, version = 0, None
                    self.results.append((start, time.monotonic(), status, version))

            await asyncio.gather(*(worker() for _ in range(clients)))


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def stopped_cleanly(srv: Server) -> bool:
    """Stop ``srv`` with SIGTERM; True when it shut down gracefully."""
    code = srv.stop()
    return code in (0, -signal.SIGTERM) and "Application shutdown complete" in srv.log
