"""``amber export URI FILE``: one self-contained, optionally signed file of a registry version."""

from __future__ import annotations

import argparse
from typing import Any

from amber.cli._output import echo, reporting
from amber.cli.models import open_registry, registry_options


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export", parents=[registry_options()],
        help="write a registry version to one .amber file carrying its registry metadata",
    )  # fmt: skip
    p.add_argument("uri", help="models:/NAME/VERSION, models:/NAME@ALIAS or models:/NAME/latest")
    p.add_argument("file", help="the .amber file to write")
    p.add_argument("--key", metavar="FILE", help="sign it with this Ed25519 private key")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        v = reg.export(args.uri, args.file, signing_key=args.key)
        with reporting(f"exported {v.uri} to {args.file!r}"):
            echo(f"exported {v.uri} to {args.file}")
    return 0
