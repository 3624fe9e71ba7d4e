"""``amber serve FILE_OR_URI [...]``: an HTTP inference server (Open Inference Protocol v2 and
MLflow ``/invocations``) with validation, micro-batching, hot swap, metrics and OpenAPI."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from amber.cli import add_unsafe_option

_EPILOG = """\
examples:
  amber serve iris.amber
  amber serve models:/iris@production churn=models:/churn/7 --port 8080 --workers 2
  AMBER_SERVE_TOKEN=s3cret amber serve iris.amber --max-batch-size 32 --batching iris=on

tokens come from files or the environment (never the command line, which ps shows):
  --token-file / AMBER_SERVE_TOKEN        bearer token for every endpoint naming the models:
                                          inference, metadata, /metrics, /openapi.json, /docs
                                          (liveness and the readiness verdict stay open)
  --reload-token-file / AMBER_RELOAD_TOKEN  enables and guards POST /admin/reload
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve models over HTTP (Open Inference Protocol v2, MLflow /invocations)",
        description=__doc__,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "models",
        nargs="+",
        metavar="[NAME=]FILE_OR_URI",
        help="an .amber file or a registry URI (models:/iris@production, models:/iris/3); "
        "NAME= sets the name in URLs (default: the file's stem or the registry name)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--registry", default=None, help="registry location for models:/ URIs")
    p.add_argument(
        "--token-file",
        type=Path,
        help="file holding the bearer token for inference, metadata, /metrics and the API docs",
    )
    p.add_argument("--reload-token-file", type=Path, help="file holding the reload token")
    p.add_argument(
        "--public-metrics",
        action="store_true",
        help="with a token, leave /metrics open to scrapers without it (its labels name the "
        "models and versions)",
    )
    p.add_argument(
        "--public-docs",
        action="store_true",
        help="with a token, leave /openapi.json and /docs open to clients without it (they "
        "list every model's name and inputs)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how often aliases (and files) are checked for a new version; 0: never (30)",
    )
    p.add_argument(
        "--request-timeout", type=float, default=30.0, metavar="SECONDS",
        help="answer 504 to a request not done in this time (30)",
    )  # fmt: skip
    p.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long requests in flight may take to finish (30)",
    )
    p.add_argument("--max-body-mb", type=float, default=16.0, help="request body limit (16 MB)")
    p.add_argument(
        "--batching",
        action="append",
        default=[],
        metavar="[NAME=]auto|on|off",
        help="micro-batching: auto (measured at load; default), on or off; NAME= for one model",
    )
    p.add_argument(
        "--max-batch-size",
        action="append",
        default=[],
        metavar="[NAME=]ROWS",
        help="most rows per prediction call (1024)",
    )
    p.add_argument(
        "--max-latency-ms",
        action="append",
        default=[],
        metavar="[NAME=]MS",
        help="longest a request waits for others to join its batch (2)",
    )
    p.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="TYPE",
        help="admit an extra type when loading, e.g. mypkg.models.MyEstimator (repeatable)",
    )
    add_unsafe_option(p, "every model and every new version")
    p.add_argument("--no-access-log", action="store_true", help="no per-request log lines")
    p.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"],
        help="least severe log lines shown on stderr (info)",
    )  # fmt: skip
    p.set_defaults(run=run)


def _per_model(values: list[str], option: str, convert: Any, default: Any) -> dict[str, Any]:
    """``["32", "iris=8"]`` -> ``{"": 32, "iris": 8}`` (``""``: every model)."""
    out: dict[str, Any] = {"": default}
    for value in values:
        name, sep, raw = value.rpartition("=")
        try:
            out[name if sep else ""] = convert(raw)
        except ValueError:
            raise ValueError(f"{option} {value!r}: {raw!r} is not valid") from None
    return out


def _batching(text: str) -> str:
    if text not in ("auto", "on", "off"):
        raise ValueError(text)
    return text


def _token(path: Path | None, env: str) -> str | None:
    if path is not None:
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"the token file {str(path)!r} is empty")
        return token
    return os.environ.get(env) or None


def build_config(args: argparse.Namespace) -> Any:
    from amber.serving import ModelSpec, ServeConfig
    from amber.serving._source import default_name

    batching = _per_model(args.batching, "--batching", _batching, "auto")
    sizes = _per_model(args.max_batch_size, "--max-batch-size", int, 1024)
    latency = _per_model(args.max_latency_ms, "--max-latency-ms", float, 2.0)
    specs = []
    for item in args.models:
        name, sep, source = item.partition("=")
        if not sep or name.startswith("models:"):
            name, source = "", item
        key = name or default_name(source)
        specs.append(
            ModelSpec(
                source=source,
                name=name or None,
                batching=batching.get(key, batching[""]),
                max_batch_size=sizes.get(key, sizes[""]),
                max_latency_ms=latency.get(key, latency[""]),
                trusted=tuple(args.trust),
                allow_arbitrary_code=args.allow_arbitrary_code,
            )
        )
    served = [spec.name or default_name(spec.source) for spec in specs]
    for option, values in (
        ("--batching", batching),
        ("--max-batch-size", sizes),
        ("--max-latency-ms", latency),
    ):
        unknown = sorted(set(values) - {"", *served})
        if unknown:
            raise ValueError(
                f"{option} names {', '.join(map(repr, unknown))}, and no model of that name is "
                f"served (the names: {', '.join(map(repr, served))}); write NAME=VALUE with one "
                f"of them, or VALUE alone for every model"
            )
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    return ServeConfig(
        models=tuple(specs),
        token=_token(args.token_file, "AMBER_SERVE_TOKEN"),
        reload_token=_token(args.reload_token_file, "AMBER_RELOAD_TOKEN"),
        public_metrics=args.public_metrics,
        public_docs=args.public_docs,
        poll_interval_s=args.poll_interval or None,
        request_timeout_s=args.request_timeout,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        registry=args.registry,
        access_log=not args.no_access_log,
        warning_filters="once",
        freeze_heap=True,
    )


def run(args: argparse.Namespace) -> int:
    try:
        from amber.serving import serve
    except ImportError as exc:
        raise ValueError(
            f'serving needs the serve extra ({exc}): pip install "amber[serve]"'
        ) from None
    config = build_config(args)
    serve(
        config,
        host=args.host,
        port=args.port,
        workers=args.workers,
        graceful_timeout_s=args.graceful_timeout,
        log_level=args.log_level,
    )
    return 0
