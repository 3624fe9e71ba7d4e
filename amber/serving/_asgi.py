"""The ASGI app around :class:`~amber.serving._app.AmberServer`: routes, lifespan, the access
log middleware, JSON error handlers, and ``create_app`` for people who mount it."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from amber.serving._app import AmberServer, json_response
from amber.serving._config import ModelSpec, ServeConfig
from amber.serving._errors import RequestError
from amber.serving._logs import ACCESS, EVENTS, access

__all__ = ["build_app", "create_app"]


class _AccessLog:
    """Pure ASGI middleware: after each response has gone out, the request's metrics and one
    JSON access record (method, path, status, ms, client, model, version, rows)."""

    def __init__(self, app: ASGIApp, server: AmberServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.server._started:
            await self.server.startup()
        started = time.perf_counter()
        status = 0

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            target = _infer_target(scope)
            if target is None:
                await self.app(scope, receive, send_logged)
            else:  # the hot path, straight to the handler: no router, no per-route wrappers
                request = Request(scope, receive)
                try:
                    response = await self.server.infer_at(request, *target)
                except Exception as exc:  # what ServerErrorMiddleware does for the other routes
                    await (await _internal_error(request, exc))(scope, receive, send_logged)
                    raise
                await response(scope, receive, send_logged)
        finally:
            stats = scope.get("amber_stats")
            if stats is not None:
                self.server.record(stats)
            if ACCESS.isEnabledFor(logging.INFO):
                client = scope.get("client")
                record = {
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status or 500,
                    "ms": round((time.perf_counter() - started) * 1000, 3),
                    "client": f"{client[0]}:{client[1]}" if client else None,
                    **scope.get("amber", {}),
                }
                access(record)


_INFER_PREFIX = "/v2/models/"
_INFER_SUFFIX = "/infer"


def _infer_target(scope: Scope) -> tuple[str, str | None] | None:
    """(name, version) of a ``POST /v2/models/{name}[/versions/{version}]/infer``, else None.

    The same paths as the two infer routes (a segment is anything but ``/``, as Starlette's
    ``{name}``), matched with string operations before the router's regular expressions.
    """
    path = scope["path"]
    root = scope.get("root_path")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        path = path[len(root) :]  # mounted: the path below the mount, as Starlette's routes see
    if (
        scope["method"] != "POST"
        or not path.startswith(_INFER_PREFIX)
        or not path.endswith(_INFER_SUFFIX)
    ):
        return None
    parts = path[len(_INFER_PREFIX) : -len(_INFER_SUFFIX)].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
        return parts[0], parts[2]
    return None


class _App(Starlette):
    """Starlette with the access log outermost: it sees every response, 500s included, and
    its infer fast path skips Starlette's error middleware too (handling errors as it does)."""

    def build_middleware_stack(self) -> ASGIApp:
        return _AccessLog(super().build_middleware_stack(), self.state.amber)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    text = {
        404: f"no such endpoint: {request.url.path}",
        405: f"method {request.method} not allowed on {request.url.path}",
    }
    err = RequestError(status, text.get(status, str(getattr(exc, "detail", "error"))))
    return json_response(err.body(), status, getattr(exc, "headers", None))


async def _internal_error(request: Request, exc: Exception) -> Response:
    EVENTS.exception(
        "internal_error", extra={"fields": {"event": "internal_error", "path": request.url.path}}
    )
    return json_response({"error": "internal error; the server log has the details"}, 500)


def build_app(config: ServeConfig) -> Starlette:
    """The Starlette app for ``config`` (``create_app`` with the options grouped)."""
    server = AmberServer(config)
    routes = [
        Route("/v2/models/{name}/infer", server.infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", server.infer, methods=["POST"]),
        Route("/invocations", server.invocations, methods=["POST"]),
        Route("/models/{name}/invocations", server.invocations, methods=["POST"]),
        Route("/v2", server.server_metadata, methods=["GET"]),
        Route("/v2/health/live", server.live, methods=["GET"]),
        Route("/v2/health/ready", server.ready_all, methods=["GET"]),
        Route("/v2/models/{name}", server.model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", server.model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", server.model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", server.model_ready, methods=["GET"]),
        Route("/ping", server.ping, methods=["GET"]),
        Route("/health", server.ping, methods=["GET"]),
        Route("/version", server.version, methods=["GET"]),
        Route("/metrics", server.prometheus, methods=["GET"]),
        Route("/openapi.json", server.openapi, methods=["GET"]),
        Route("/docs", server.docs, methods=["GET"]),
        Route("/admin/reload", server.reload, methods=["POST"]),
        Route("/admin/reload/{name}", server.reload, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.startup()
        try:
            yield
        finally:
            await server.shutdown()

    app = _App(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: _http_error,
            RequestError: _request_error,
            Exception: _internal_error,
        },
    )
    app.state.amber = server
    if not config.access_log:
        ACCESS.disabled = True
    return app


async def _request_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestError):
        return await _internal_error(request, exc)
    return json_response(exc.body(), exc.status, exc.headers)


def create_app(
    models: Sequence[str | ModelSpec],
    *,
    token: str | None = None,
    reload_token: str | None = None,
    public_metrics: bool = False,
    public_docs: bool = False,
    poll_interval_s: float | None = 30.0,
    request_timeout_s: float = 30.0,
    max_body_bytes: int = 16 * 1024 * 1024,
    registry: str | None = None,
    access_log: bool = True,
) -> Starlette:
    """An ASGI app serving ``models`` (files or ``models:/`` URIs), to run or to mount.

    Models load in the background once the app starts (its lifespan, or the first request when
    mounted in another app); ``/v2/health/ready`` says when every one is verified and serving.

    With a ``token``, every endpoint that names the models asks for it, ``/metrics``,
    ``/openapi.json`` and ``/docs`` included; ``public_metrics=True`` opens ``/metrics``, and
    ``public_docs=True`` opens ``/openapi.json`` and ``/docs``, to clients without it.

    Examples
    --------
    >>> app = amber.serving.create_app(["iris.amber"], token="s3cret")  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8080)                    # doctest: +SKIP
    """
    if isinstance(models, str):
        raise TypeError("models must be a list of files or URIs, e.g. ['iris.amber']")
    specs = tuple(m if isinstance(m, ModelSpec) else ModelSpec(source=str(m)) for m in models)
    config = ServeConfig(
        models=specs,
        token=token,
        reload_token=reload_token,
        public_metrics=public_metrics,
        public_docs=public_docs,
        poll_interval_s=poll_interval_s,
        request_timeout_s=request_timeout_s,
        max_body_bytes=max_body_bytes,
        registry=registry,
        access_log=access_log,
    )
    return build_app(config)
