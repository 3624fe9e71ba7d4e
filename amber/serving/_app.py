"""The server behind the app: Open Inference Protocol v2, MLflow ``/invocations``, health, metrics,
OpenAPI.

Starlette, chosen over FastAPI by measurement (see ``benchmarks/serve.py`` and the README): the
request schemas come from each artifact's signature at run time, so FastAPI's pydantic layer
would add cost per request without describing anything we do not already generate.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import itertools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from amber.serving import _tensor as T
from amber.serving._batcher import PredictionFailed
from amber.serving._config import ServeConfig
from amber.serving._deadline import Deadlines
from amber.serving._errors import RequestError, describe_value
from amber.serving._metrics import CONTENT_TYPE, Metrics
from amber.serving._model import LoadedModel
from amber.serving._openapi import DOCS_HTML, build_spec
from amber.serving._slot import ModelSlot
from amber.serving._source import open_source

__all__ = ["THREAD_BODY_BYTES", "AmberServer", "json_response"]

#: Request bodies larger than this are parsed and converted to arrays on the server's conversion
#: threads: an 8 MB JSON body takes 100 ms or more to parse, convert and check, which in the
#: event loop would hold up every other request, health probes and request timeouts with it.
#: (One C call that holds the GIL, the JSON parse above all at about 5 ms a MB, still holds up
#: the loop; the rest no longer does.) Smaller bodies, 0.5 ms of work at 64 KiB, are converted
#: in the loop: a round trip through a thread costs 50 us when the process is idle, and up to
#: the GIL's 5 ms switch interval when other threads (models predicting) are busy.
THREAD_BODY_BYTES = 64 * 1024
#: The most bodies converted at once: the parsed JSON of a large body takes several times its
#: size in memory, and the conversion holds the GIL most of the time, so more threads would
#: not convert faster.
_CONVERT_THREADS = min(4, os.cpu_count() or 1)

_R = TypeVar("_R")

_METRICS_HINT = (
    " (Prometheus sends it with 'authorization: {credentials_file: FILE}' in the scrape "
    "config), or start the server with --public-metrics to open /metrics to everyone"
)
_OPENAPI_HINT = ", or start the server with --public-docs to open /openapi.json and /docs"
_DOCS_HINT = (
    ": the page loads /openapi.json, which needs the token too; fetch /openapi.json with "
    "the header, or start the server with --public-docs to open both"
)

_JSON = "application/json"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
# JSON, no type, or what `curl -d` sends by default
_JSON_TYPES = (_JSON, "", "application/x-www-form-urlencoded", "text/json")
_JSON_BYTES = _JSON.encode()


class _JSONResponse(Response):
    """A JSON response whose raw headers are built at once (``Response.init_headers`` is
    general: it walks and re-encodes them, a few microseconds of every request)."""

    media_type = _JSON

    def __init__(self, content: bytes, status: int, headers: dict[str, str] | None) -> None:
        self.status_code = status
        self.background = None
        self.body = content
        raw = [(b"content-length", str(len(content)).encode()), (b"content-type", _JSON_BYTES)]
        if headers:
            raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers = raw


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return _JSONResponse(orjson.dumps(body, option=_NUMPY), status, headers)


def _header(request: Request, name: bytes) -> str | None:
    """A request header (``name`` in lower case; the first if repeated), from a dict made once
    per request: Starlette's ``request.headers.get`` scans the list, and raises and catches a
    KeyError for every absent one."""
    scope = request.scope
    found = scope.get("amber_headers")
    if found is None:
        found = scope["amber_headers"] = dict(reversed(scope["headers"]))
    value = found.get(name)
    return None if value is None else value.decode("latin-1")


def _request_id(given: str | None) -> str | None:
    """A client's X-Request-Id, echoed in the header and the body alike: its first 128
    characters, if it is printable ASCII (else the server makes one: a header's bytes read as
    Latin-1 came back garbled in the JSON)."""
    if not given:
        return None
    given = given[:128]
    return given if given.isascii() and given.isprintable() else None


def _media_type(request: Request) -> str:
    return (_header(request, b"content-type") or "").split(";")[0].strip().lower()


class AmberServer:
    """The state behind the app: model slots, metrics, options, background tasks."""

    def __init__(self, config: ServeConfig) -> None:
        if not config.models:
            raise ValueError("give at least one model to serve")
        self.config = config
        self.metrics = Metrics()
        self.slots: dict[str, ModelSlot] = {}
        for spec in config.models:
            source = open_source(spec.source, registry=config.registry)
            name = spec.name or source.name
            if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
                raise ValueError(
                    f"model name {name!r} must be letters, digits, '-', '_' or '.'; "
                    f"name it with NAME=SOURCE"
                )
            if name in self.slots:
                raise ValueError(f"two models are named {name!r}; name them with NAME=SOURCE")
            self.slots[name] = ModelSlot(
                name,
                spec,
                source,
                self.metrics,
                one_warning_filter=config.warning_filters == "once",
                freeze_heap=config.freeze_heap,
            )
        self.default_name = next(iter(self.slots))
        self.timeout = config.request_timeout_s
        self._deadlines = Deadlines(self.timeout)
        self._tasks: list[asyncio.Task[None]] = []
        self._converting: ThreadPoolExecutor | None = None
        self._started = False
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-{int(time.time()):x}-"

    def _next_id(self) -> str:
        """A request id unique to this server's life (cheaper than a UUID per request)."""
        return f"{self._id_prefix}{next(self._ids)}"

    # -- lifecycle --------------------------------------------------------------------------
    async def startup(self) -> None:
        """Start loading every model (in the background) and polling movable sources."""
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        if self.config.preload:
            await asyncio.gather(*(slot.refresh() for slot in self.slots.values()))
        for slot in self.slots.values():
            self._tasks.append(loop.create_task(slot.watch(self.config.poll_interval_s)))

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for slot in self.slots.values():
            slot.close()
        self._deadlines.close()
        if self._converting is not None:
            self._converting.shutdown(wait=False, cancel_futures=True)
            self._converting = None

    @property
    def ready(self) -> bool:
        return all(slot.ready for slot in self.slots.values())

    # -- helpers ----------------------------------------------------------------------------
    def _slot(self, name: str) -> ModelSlot:
        slot = self.slots.get(name)
        if slot is None:
            raise RequestError(
                404,
                f"model {name!r} is not served here; served: {', '.join(self.slots)}",
                field="model",
                expected=" or ".join(self.slots),
                got=describe_value(name),
            )
        return slot

    def _authorize(self, request: Request, token: str | None, hint: str = "") -> None:
        """Refuse ``request`` (401) unless it carries ``token``; ``hint`` ends the message."""
        if token is None:
            return
        given = _header(request, b"authorization") or ""
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            raise RequestError(
                401,
                f"missing or wrong bearer token: send 'Authorization: Bearer <token>'{hint}",
                field="Authorization",
                expected="Bearer <token>",
                got="nothing" if not given else "a wrong token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def _body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        encoding = _header(request, b"content-encoding")
        if encoding is not None and encoding.strip().lower() not in ("", "identity"):
            raise RequestError(
                415,
                f"Content-Encoding {encoding.strip()[:40]!r} is not supported: send the body "
                f"uncompressed",
                field="Content-Encoding",
                expected="identity (no compression)",
                got=encoding.strip()[:40],
            )
        declared = _header(request, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                raise RequestError(
                    400,
                    "Content-Length is not a number",
                    field="Content-Length",
                    expected="a number of bytes",
                    got=declared[:40],
                )
            if int(declared) > limit:
                raise self._too_large(int(declared))
        chunks = []
        size = 0
        receive = request.receive
        while True:  # the ASGI messages themselves: cheaper than request.stream()
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "the client went away before sending its body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large(size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not body or body.isspace():  # as `not body.strip()`, without copying a large body
            raise RequestError(
                400,
                "empty body: send a JSON object (or CSV for /invocations)",
                field="(body)",
                expected="a request body",
                got="nothing",
            )
        return body

    def _too_large(self, size: int) -> RequestError:
        limit = self.config.max_body_bytes
        return RequestError(
            413,
            f"body of {size} bytes or more is over the limit of {limit} bytes; send fewer "
            f"rows per request",
            field="(body)",
            expected=f"at most {limit} bytes",
            got=f"{size} bytes",
        )

    @staticmethod
    def _parse_json(body: bytes) -> Any:
        # set in the context the request's conversion runs in (its task's, or a copy on a
        # conversion thread): it searches number arrays for booleans only if the body can hold one
        T.booleans_possible.set(b"true" in body or b"false" in body)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(
                400,
                f"malformed JSON: {exc}",
                field="(body)",
                expected="valid JSON",
                got=f"malformed JSON ({exc})",
            ) from None

    def _serving(self, slot: ModelSlot, version: str | None) -> LoadedModel:
        loaded = slot.current
        if loaded is None:
            state = slot.status()
            why = f": {state['error']}" if state.get("error") else "; retry shortly"
            raise RequestError(
                503,
                f"model {slot.name!r} is not ready ({state['state']}){why}",
                headers={"Retry-After": "1"},
            )
        if version is not None and version != loaded.version:
            raise RequestError(
                404,
                f"model {slot.name!r} serves version {loaded.version}, not {version!r}",
                field="version",
                expected=loaded.version,
                got=describe_value(version),
            )
        return loaded

    # -- inference --------------------------------------------------------------------------
    async def _infer(
        self, request: Request, protocol: str, name: str, version: str | None
    ) -> Response:
        """One inference request. Metrics and the access record are written by the middleware
        once the response has gone out (``scope["amber_stats"]``), off the request's path."""
        started = time.perf_counter()
        scope = request.scope
        note: dict[str, Any] = {"model": name, "protocol": protocol}
        scope["amber"] = note
        label = name if name in self.slots else ""
        request_id = _request_id(_header(request, b"x-request-id")) or self._next_id()
        headers = {"x-request-id": request_id}
        loaded: LoadedModel | None = None
        code, reason = 200, None
        self.metrics.in_flight += 1
        try:
            self._authorize(request, self.config.token)  # before a 404 could list the models
            slot = self._slot(name)
            loaded = self._serving(slot, version)
            loaded.inflight += 1
            headers["x-amber-model"] = name
            headers["x-amber-model-version"] = loaded.version
            note["version"] = loaded.version
            with self._deadlines:  # a TimeoutError once the request's time is up
                body = await self._body(request)
                if protocol == "v2":
                    response = await self._oip(request, body, loaded, slot, request_id, headers)
                else:
                    response = await self._mlflow(request, body, loaded, slot, headers)
            note["rows"] = scope.get("amber_rows")
            return response
        except RequestError as exc:
            code, reason = exc.status, exc.reason
            return json_response(exc.body(protocol), exc.status, {**headers, **exc.headers})
        except TimeoutError:
            code, reason = 504, "DEADLINE_EXCEEDED"
            err = RequestError(504, f"request timed out after {self.timeout:g} s")
            return json_response(err.body(protocol), 504, headers)
        except PredictionFailed as exc:
            code, reason = 422, "MODEL_ERROR"
            err = RequestError(
                422,
                f"the model could not predict on this input: {exc}",
                field="inputs",
                expected="input the model accepts",
                got=str(exc)[:300],
            )
            return json_response(err.body(protocol), 422, headers)
        except Exception:
            code, reason = 500, "INTERNAL_ERROR"  # answered by the error handler, counted here
            raise
        finally:
            if loaded is not None:
                loaded.release()
            self.metrics.in_flight -= 1
            scope["amber_stats"] = (label, protocol, code, reason, started)

    def record(self, stats: tuple[str, str, int, str | None, float]) -> None:
        """Count one finished inference request (called once its response is out)."""
        label, protocol, code, reason, started = stats
        self.metrics.request(label, protocol, code, time.perf_counter() - started)
        if reason is not None:
            self.metrics.error(label, protocol, reason)

    def _methods(self, payload: dict[str, Any], loaded: LoadedModel) -> list[str]:
        wanted = payload.get("outputs")
        if wanted is None or wanted == []:  # none asked for: the default output
            return ["predict" if "predict" in loaded.methods else next(iter(loaded.methods))]
        allowed = ", ".join(loaded.methods)
        if not isinstance(wanted, list) or not wanted:
            raise RequestError(
                400,
                f"outputs: expected a list of {{'name': ...}} with names from {allowed}",
                field="outputs",
                expected=f"[{{'name': one of {allowed}}}]",
                got=describe_value(wanted),
            )
        names = []
        for i, item in enumerate(wanted):
            method = item.get("name") if isinstance(item, dict) else None
            if not isinstance(method, str) or method not in loaded.methods:
                raise RequestError(
                    400,
                    f"outputs[{i}].name: the model offers {allowed}",
                    field=f"outputs[{i}].name",
                    expected=f"one of {allowed}",
                    got=describe_value(method if isinstance(item, dict) else item),
                )
            names.append(method)
        return names

    async def _run(
        self, loaded: LoadedModel, slot: ModelSlot, method: str, part: Any
    ) -> np.ndarray | T.PerOutput:
        rows = loaded.schema.rows(part)
        runner = loaded.runner(method, slot.observe)
        out = await runner.submit(part, rows)
        result = out if isinstance(out, T.PerOutput) else T.output_array(out)
        for arr in result.arrays if isinstance(result, T.PerOutput) else [result]:
            if arr.dtype.kind in "fc" and arr.size and bool(np.isinf(arr).any()):
                # JSON has no infinity: orjson would have answered null, as if nothing came
                row = int(np.argwhere(np.isinf(arr))[0][0]) if arr.ndim else 0
                raise PredictionFailed(
                    f"the model's {method} output is infinite for row {row} (JSON cannot carry "
                    f"infinity); the input is probably out of the range the model was trained on"
                )
        return result

    async def _convert(self, body: bytes, convert: Callable[..., _R], *args: Any) -> _R:
        """``convert(*args)``: in the event loop for a small ``body``, on a conversion thread
        for one over ``THREAD_BODY_BYTES`` (in a copy of the request's context, which
        ``booleans_possible`` is set in)."""
        if len(body) <= THREAD_BODY_BYTES:
            return convert(*args)
        if self._converting is None:
            self._converting = ThreadPoolExecutor(
                _CONVERT_THREADS, thread_name_prefix="amber-convert"
            )
        run = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(
            self._converting, run, convert, *args
        )

    def _from_oip(self, body: bytes, loaded: LoadedModel) -> tuple[list[str], Any, Any]:
        """An Open Inference Protocol body as (methods, the model's input, the client's id)."""
        payload = self._parse_json(body)
        if not isinstance(payload, dict):
            raise RequestError(
                400,
                "the body must be a JSON object with 'inputs'",
                field="(body)",
                expected="an object with inputs",
                got=describe_value(payload),
            )
        if "inputs" not in payload:
            raise RequestError(
                400,
                "the body has no 'inputs'",
                field="inputs",
                expected="an array of input tensors",
                got="nothing",
            )
        methods = self._methods(payload, loaded)
        part = loaded.schema.from_oip(payload["inputs"])
        return methods, part, payload.get("id")

    async def _oip(
        self,
        request: Request,
        body: bytes,
        loaded: LoadedModel,
        slot: ModelSlot,
        request_id: str,
        headers: dict[str, str],
    ) -> Response:
        if _media_type(request) == "text/csv":
            raise RequestError(
                415,
                "the Open Inference Protocol takes JSON; send CSV to /invocations",
                field="Content-Type",
                expected=_JSON,
                got="text/csv",
            )
        if _header(request, b"inference-header-content-length") is not None:
            raise RequestError(
                415,
                "the binary tensor extension (Inference-Header-Content-Length) is not "
                "supported: send the tensors' data as JSON arrays",
                field="Inference-Header-Content-Length",
                expected="no binary data",
                got="a binary tensor body",
            )
        methods, part, given_id = await self._convert(body, self._from_oip, body, loaded)
        request.scope["amber_rows"] = loaded.schema.rows(part)
        outputs: list[dict[str, Any]] = []
        for method in methods:
            out = await self._run(loaded, slot, method, part)
            named = (
                [(f"{method}[{k}]", a) for k, a in enumerate(out.arrays)]
                if isinstance(out, T.PerOutput)
                else [(method, out)]
            )
            outputs.extend(
                {
                    "name": name,
                    "shape": list(arr.shape),
                    "datatype": T.datatype_of(arr.dtype),
                    "data": T.json_data(arr),
                }
                for name, arr in named
            )
        answer = {
            "model_name": slot.name,
            "model_version": loaded.version,
            "id": given_id if isinstance(given_id, str) else request_id,
            "outputs": outputs,
        }
        return json_response(answer, 200, headers)

    async def _mlflow(
        self,
        request: Request,
        body: bytes,
        loaded: LoadedModel,
        slot: ModelSlot,
        headers: dict[str, str],
    ) -> Response:
        kind = _media_type(request)
        csv = kind == "text/csv"
        if not csv and kind not in _JSON_TYPES and not kind.endswith("+json"):
            raise RequestError(
                415,
                f"content type {kind!r}: send application/json or text/csv",
                field="Content-Type",
                expected="application/json or text/csv",
                got=kind,
            )
        part = await self._convert(body, self._from_mlflow, csv, body, loaded)
        request.scope["amber_rows"] = loaded.schema.rows(part)
        method = "predict" if "predict" in loaded.methods else next(iter(loaded.methods))
        arr = await self._run(loaded, slot, method, part)
        return json_response({"predictions": T.nested_json(arr)}, 200, headers)

    def _from_mlflow(self, csv: bool, body: bytes, loaded: LoadedModel) -> Any:
        """An MLflow scoring body (JSON, or CSV if ``csv``) as the model's input."""
        if not csv:
            return loaded.schema.from_mlflow(self._parse_json(body))
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(
                400,
                f"the CSV body is not UTF-8 ({exc})",
                field="(body)",
                expected="UTF-8 text",
                got="invalid UTF-8",
            ) from None
        return loaded.schema.from_csv(text)

    # -- endpoints --------------------------------------------------------------------------
    async def infer(self, request: Request) -> Response:
        params = request.path_params
        return await self._infer(request, "v2", params["name"], params.get("version"))

    async def infer_at(self, request: Request, name: str, version: str | None) -> Response:
        """``infer`` for a path already split (the middleware's route for the hot path)."""
        return await self._infer(request, "v2", name, version)

    async def invocations(self, request: Request) -> Response:
        name = request.path_params.get("name", self.default_name)
        return await self._infer(request, "mlflow", name, None)

    async def live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def ready_all(self, request: Request) -> Response:
        ready = self.ready
        if not self._authorized(request):  # a probe without the token: the verdict, no names
            return json_response({"ready": ready}, 200 if ready else 503)
        models = {name: slot.status() for name, slot in self.slots.items()}
        return json_response({"ready": ready, "models": models}, 200 if ready else 503)

    def _authorized(self, request: Request) -> bool:
        try:
            self._authorize(request, self.config.token)
        except RequestError:
            return False
        return True

    async def ping(self, request: Request) -> Response:
        return json_response({"ready": self.ready}, 200 if self.ready else 503)

    async def model_ready(self, request: Request) -> Response:
        self._authorize(request, self.config.token)  # names, versions and sources: as inference
        slot = self._slot(request.path_params["name"])
        if "version" in request.path_params:
            self._serving(slot, request.path_params["version"])
        return json_response(
            {"name": slot.name, "ready": slot.ready, **slot.status()}, 200 if slot.ready else 503
        )

    async def model_metadata(self, request: Request) -> Response:
        self._authorize(request, self.config.token)
        slot = self._slot(request.path_params["name"])
        loaded = self._serving(slot, request.path_params.get("version"))
        outputs = [out for m in loaded.methods for out in loaded.output_metadata(m)]
        return json_response(
            {
                "name": slot.name,
                "versions": [loaded.version],
                "platform": f"amber/{loaded.framework}",
                "inputs": loaded.schema.oip_metadata(),
                "outputs": outputs,
                "parameters": {
                    "object_type": loaded.object_type,
                    **({"classes": loaded.classes} if loaded.classes is not None else {}),
                    "batching": loaded.batching,
                    "source": slot.source.uri,
                },
            },
            200,
            {"x-amber-model": slot.name, "x-amber-model-version": loaded.version},
        )

    async def server_metadata(self, request: Request) -> Response:
        from amber import __version__

        return json_response({"name": "amber", "version": __version__, "extensions": []})

    async def version(self, request: Request) -> Response:
        from amber import __version__

        return json_response({"amber": __version__})

    async def prometheus(self, request: Request) -> Response:
        if not self.config.public_metrics:  # its labels name every model and version
            self._authorize(request, self.config.token, _METRICS_HINT)
        return Response(self.metrics.render(), 200, media_type=CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        if not self.config.public_docs:  # every model's name, inputs and an example
            self._authorize(request, self.config.token, _OPENAPI_HINT)
        return json_response(build_spec(self))

    async def docs(self, request: Request) -> Response:
        """The Swagger UI page. With a token (and no ``public_docs``) it is refused like the
        document it shows: the page's own fetch of ``openapi.json`` cannot send the header, so
        it would only render an error."""
        if not self.config.public_docs:
            self._authorize(request, self.config.token, _DOCS_HINT)
        return HTMLResponse(DOCS_HTML)

    async def reload(self, request: Request) -> Response:
        """Re-resolve the configured sources now. Takes no source from the request."""
        try:
            if not self.config.reload_token:
                raise RequestError(
                    404,
                    "reloading is off: start the server with a reload "
                    "token (--reload-token-file or AMBER_RELOAD_TOKEN)",
                )
            self._authorize(request, self.config.reload_token)
            name = request.path_params.get("name")
            slots = [self._slot(name)] if name else list(self.slots.values())
        except RequestError as exc:
            return json_response(exc.body(), exc.status, exc.headers)
        wait = request.query_params.get("wait", "").lower() in ("1", "true", "yes")
        jobs = [slot.refresh(force=True) for slot in slots]
        if not wait:
            for job in jobs:
                asyncio.get_running_loop().create_task(job)
            return json_response({"status": "started", "models": [s.name for s in slots]}, 202)
        results = await asyncio.gather(*jobs)
        return json_response({"status": "done", "models": results})
