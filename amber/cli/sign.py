"""``amber sign FILE --key K``: sign an artifact (in place, or into --out)."""

from __future__ import annotations

import argparse
from typing import Any

from amber.cli._output import echo, reporting


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "sign", help="sign an .amber file with an Ed25519 key, binding a model name and version"
    )
    p.add_argument("file", help="an .amber artifact")
    p.add_argument("--key", required=True, metavar="FILE", help="the private key (.key)")
    p.add_argument("--name", help="the model name to bind (default: the file's registry name)")
    p.add_argument(
        "--version", dest="model_version", type=int, metavar="N",
        help="the version number to bind (default: the file's registry version)",
    )  # fmt: skip
    p.add_argument("--out", metavar="FILE", help="write the signed copy here instead")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from amber.security._signing import sign

    info = sign(args.file, args.key, name=args.name, version=args.model_version, target=args.out)
    signed = args.out or args.file
    with reporting(f"signed {signed!r} with key {info.key_id}"):
        echo(f"signed {signed} with key {info.key_id} ({info.bound})")
    return 0
