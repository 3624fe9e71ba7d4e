"""``amber.serving``: an ASGI app serving Amber models over HTTP.

Open Inference Protocol v2 (``/v2/models/<name>/infer``) and MLflow-compatible
``/invocations``; every request is checked against the artifact's signature before the model
sees it; micro-batching; hot swap when a registry alias moves; health, readiness, Prometheus
``/metrics`` and an OpenAPI document with per-model schemas.

>>> app = amber.serving.create_app(["iris.amber"])   # doctest: +SKIP

Needs the ``serve`` extra: ``pip install "amber[serve]"``.
"""

from amber.serving._asgi import create_app
from amber.serving._config import ModelSpec, ServeConfig
from amber.serving._server import serve

__all__ = ["ModelSpec", "ServeConfig", "create_app", "serve"]
