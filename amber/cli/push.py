"""``amber push FILE --name N``: publish an artifact file as the next version of a model."""

from __future__ import annotations

import argparse
from typing import Any

from amber.cli._output import echo, reporting
from amber.cli.models import open_registry, registry_options


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--{what} {item!r}: write KEY=VALUE, e.g. --{what} team=risk")
        out[key] = value
    return out


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "push", parents=[registry_options()],
        help="publish an .amber file as the next version of a model",
    )  # fmt: skip
    p.add_argument("file", help="an .amber artifact")
    p.add_argument("--name", required=True, help="the model's name in the registry")
    p.add_argument("--alias", help="point this alias at the new version (e.g. staging)")
    p.add_argument("--metric", action="append", default=[], metavar="K=V", help="repeatable")
    p.add_argument("--tag", action="append", default=[], metavar="K=V", help="repeatable")
    p.add_argument("--description", default=None)
    p.add_argument("--key", metavar="FILE", help="sign it with this Ed25519 private key")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    metrics: dict[str, float] | None = None
    if args.metric:
        metrics = {}
        for key, value in _pairs(args.metric, "metric").items():
            try:
                metrics[key] = float(value)
            except ValueError:
                raise ValueError(f"--metric {key}={value!r}: the value must be a number") from None
    tags = _pairs(args.tag, "tag") if args.tag else None
    with open_registry(args) as reg:
        v = reg.push(
            args.name,
            args.file,
            metrics=metrics,
            tags=tags,
            description=args.description,
            alias=args.alias,
            signing_key=args.key,
        )
        with reporting(f"pushed {args.file!r} as {v.uri}"):
            echo(f"pushed {args.file} as {v.uri}" + (f" (@{args.alias})" if args.alias else ""))
            echo(v)
    return 0
