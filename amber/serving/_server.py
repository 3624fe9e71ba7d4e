"""Running the app under uvicorn: one process, or ``workers`` processes sharing the port.

uvicorn picks uvloop and httptools when installed (the ``serve`` extra installs both). On
SIGTERM or SIGINT it stops accepting connections, lets requests in flight finish (up to
``graceful_timeout_s``), then runs the app's shutdown.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from typing import Any

from amber.serving._config import ModelSpec, ServeConfig, check_duration

__all__ = ["app_from_environment", "serve"]

_ENV = "AMBER_SERVE_CONFIG"


def _encode(config: ServeConfig) -> str:
    return json.dumps(dataclasses.asdict(config))


def _decode(text: str) -> ServeConfig:
    raw: dict[str, Any] = json.loads(text)
    models = tuple(
        ModelSpec(**{**m, "trusted": tuple(m.get("trusted", ()))}) for m in raw.pop("models")
    )
    return ServeConfig(models=models, **raw)


def app_from_environment() -> Any:
    """The app for a worker process (uvicorn ``factory=True``): the config comes in the
    environment, set by :func:`serve`."""
    from amber.serving._asgi import build_app
    from amber.serving._logs import setup_logging

    config = _decode(os.environ[_ENV])
    setup_logging(os.environ.get("AMBER_SERVE_LOG_LEVEL", "info"), access_log=config.access_log)
    return build_app(config)


def _check_bindable(host: str, port: int) -> None:
    """Say now, plainly, that the server could not listen on ``host:port`` (an address of no
    interface here, a port taken), before any model loads; uvicorn would log one JSON line
    and exit with status 3. A bind and close, with the options uvicorn sets: something may
    still take the port between this check and the server's own bind."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(
            f"cannot listen on host {host!r}: {getattr(exc, 'strerror', None) or exc}; give an "
            f"address of this machine, such as 127.0.0.1 (the default) or 0.0.0.0 (--host)"
        ) from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another port "
                f"(--port) or stop what holds it",
            ) from None


def serve(
    config: ServeConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    graceful_timeout_s: float = 30.0,
    log_level: str = "info",
) -> None:
    """Serve ``config`` until SIGTERM or SIGINT (blocking)."""
    import uvicorn

    from amber.serving._asgi import build_app
    from amber.serving._logs import setup_logging

    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"the port must be a whole number from 0 to 65535, got {port!r} (--port)")
    check_duration(
        graceful_timeout_s, "the graceful shutdown timeout, in seconds", "--graceful-timeout"
    )
    _check_bindable(host, port)
    setup_logging(log_level, access_log=config.access_log)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "timeout_graceful_shutdown": graceful_timeout_s,
        "timeout_keep_alive": 5,
        "lifespan": "on",
    }
    if workers > 1:
        os.environ[_ENV] = _encode(dataclasses.replace(config, preload=True))
        os.environ["AMBER_SERVE_LOG_LEVEL"] = log_level
        uvicorn.run(
            "amber.serving._server:app_from_environment", factory=True, workers=workers, **options
        )
    else:
        app = build_app(config)  # a bad source fails here, before the port is bound
        uvicorn.run(app, **options)
