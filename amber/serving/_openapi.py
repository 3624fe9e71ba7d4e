"""The OpenAPI 3.1 document, with request schemas generated from each model's signature."""

from __future__ import annotations

from typing import Any

__all__ = ["DOCS_HTML", "build_spec"]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _responses(*codes: int, ok: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": ok or {}}}}
    }
    text = {
        400: "Invalid input: the body names the field, what was expected and what came",
        401: "Missing or wrong bearer token",
        404: "No such model, version or route",
        413: "Body larger than the server's limit",
        415: "Unsupported content type",
        422: "The model refused an input that passed validation",
        503: "Not ready (model still loading, or failed to load)",
        504: "Request timed out",
    }
    for code in codes:
        out[str(code)] = {
            "description": text[code],
            "content": {"application/json": {"schema": _ERROR}},
        }
    return out


def _tensor_out() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string"},
            "data": {"type": "array"},
        },
    }


def _infer_op(name: str, model: Any, secured: bool) -> dict[str, Any]:
    if model is None:
        request: dict[str, Any] = {"type": "object", "required": ["inputs"]}
        example: dict[str, Any] | None = None
    else:
        methods = list(model.methods)
        request = {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": model.schema.json_schema_oip(),
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string", "enum": methods}},
                    },
                },
            },
        }
        example = model.schema.examples(model.sample)[0]
    body: dict[str, Any] = {"schema": request}
    if example is not None:
        body["example"] = example
    op: dict[str, Any] = {
        "summary": f"Predict with {name} (Open Inference Protocol v2)",
        "operationId": f"infer_{name}",
        "tags": [name],
        "requestBody": {"required": True, "content": {"application/json": body}},
        "responses": _responses(
            400,
            401,
            404,
            413,
            415,
            422,
            503,
            504,
            ok={"$ref": "#/components/schemas/InferResponse"},
        ),
    }
    if secured:
        op["security"] = [{"bearer": []}]
    return op


def _invocations_op(name: str, model: Any, secured: bool, op_id: str) -> dict[str, Any]:
    if model is None:
        schema: dict[str, Any] = {"type": "object"}
        example: dict[str, Any] | None = None
    else:
        forms = model.schema.json_schema_mlflow()
        schema = {
            "type": "object",
            "properties": {**forms, "params": {"type": "object"}},
            "oneOf": [{"required": [key]} for key in forms],
        }
        example = model.schema.examples(model.sample)[1]
    body: dict[str, Any] = {"schema": schema}
    if example is not None:
        body["example"] = example
    content: dict[str, Any] = {"application/json": body}
    csv = model is None or getattr(model.schema, "csv", True)
    if csv:
        content["text/csv"] = {"schema": {"type": "string"}}
    op: dict[str, Any] = {
        "summary": f"Predict with {name} (MLflow scoring protocol: JSON{' or CSV' if csv else ''})",
        "operationId": op_id,
        "tags": [name],
        "requestBody": {"required": True, "content": content},
        "responses": _responses(
            400,
            401,
            404,
            413,
            415,
            422,
            503,
            504,
            ok={
                "type": "object",
                "required": ["predictions"],
                "properties": {"predictions": {"type": "array"}},
            },
        ),
    }
    if secured:
        op["security"] = [{"bearer": []}]
    return op


def _get(
    summary: str, op_id: str, *codes: int, tag: str = "server", secured: bool = False
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": op_id,
        "tags": [tag],
        "responses": _responses(*(sorted({*codes, 401}) if secured else codes)),
    }
    if secured:
        op["security"] = [{"bearer": []}]
    return {"get": op}


def build_spec(server: Any) -> dict[str, Any]:
    """The OpenAPI document for ``server`` as it is now (schemas follow the served versions)."""
    from amber import __version__

    secured = server.config.token is not None
    paths: dict[str, Any] = {
        "/v2": _get("Server metadata", "server_metadata"),
        "/v2/health/live": _get("Liveness", "live"),
        "/v2/health/ready": _get("Readiness, with each model's state", "ready", 503),
        "/ping": _get("Readiness (MLflow, SageMaker)", "ping", 503),
        "/health": _get("Readiness (MLflow)", "health", 503),
        "/version": _get("Amber version", "version"),
    }
    for name, slot in server.slots.items():
        model = slot.current
        paths[f"/v2/models/{name}"] = _get(
            f"{name}: metadata", f"metadata_{name}", 404, 503, tag=name, secured=secured
        )
        paths[f"/v2/models/{name}/ready"] = _get(
            f"{name}: readiness", f"ready_{name}", 503, tag=name, secured=secured
        )
        paths[f"/v2/models/{name}/infer"] = {"post": _infer_op(name, model, secured)}
        paths[f"/models/{name}/invocations"] = {
            "post": _invocations_op(name, model, secured, f"invocations_{name}")
        }
    default = server.default_name
    paths["/invocations"] = {
        "post": _invocations_op(default, server.slots[default].current, secured, "invocations")
    }
    if server.config.reload_token:
        paths["/admin/reload"] = {
            "post": {
                "summary": "Re-resolve every model's source now (alias moves); never loads "
                "anything a request names",
                "operationId": "reload",
                "tags": ["admin"],
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "wait",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "boolean"},
                    }
                ],
                "responses": _responses(401),
            }
        }
    components: dict[str, Any] = {
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {
                    "error": {"type": "string"},
                    "message": {"type": "string"},
                    "error_code": {"type": "string"},
                    "field": {"type": "string"},
                    "expected": {"type": "string"},
                    "got": {"type": "string"},
                },
            },
            "InferResponse": {
                "type": "object",
                "required": ["model_name", "outputs"],
                "properties": {
                    "model_name": {"type": "string"},
                    "model_version": {"type": "string"},
                    "id": {"type": "string"},
                    "outputs": {"type": "array", "items": _tensor_out()},
                },
            },
        }
    }
    if secured or server.config.reload_token:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Amber model server",
            "version": __version__,
            "description": "Open Inference Protocol v2 and MLflow-compatible scoring for "
            + ", ".join(server.slots),
        },
        "paths": paths,
        "components": components,
    }


DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Amber model server: API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "./openapi.json", dom_id: "#ui"});</script>
<noscript>The API description is at <a href="./openapi.json">openapi.json</a>.</noscript>
</body></html>
"""
