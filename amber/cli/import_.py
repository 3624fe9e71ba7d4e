"""``amber import FILE``: register an exported file (its version number is kept when it can be)."""

from __future__ import annotations

import argparse
from typing import Any

from amber.cli._output import echo, reporting
from amber.cli.models import open_registry, registry_options


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "import", parents=[registry_options()],
        help="register an exported .amber file in this registry",
    )  # fmt: skip
    p.add_argument("file", help="an .amber file, typically made by `amber export`")
    p.add_argument("--name", help="the name here (default: the name the file carries)")
    p.add_argument("--alias", help="point this alias at the imported version")
    p.add_argument(
        "--key", metavar="FILE",
        help="also sign it here with this private key (a version already holding the model is "
        "signed too, if unsigned here)",
    )  # fmt: skip
    p.add_argument(
        "--new-version", action="store_true",
        help="take the next version number here instead of the one the file carries",
    )  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        v = reg.import_(
            args.file,
            name=args.name,
            alias=args.alias,
            signing_key=args.key,
            keep_version=not args.new_version,
        )
        with reporting(f"imported {args.file!r} as {v.uri}"):
            echo(f"imported {args.file} as {v.uri}")
    return 0
