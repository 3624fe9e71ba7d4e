"""``amber inspect FILE``: print an artifact's manifest without running any model code."""

from __future__ import annotations

import argparse
from typing import Any

from amber.cli._output import echo
from amber.cli.models import FILE_OR_VERSION, registry_environment, registry_options


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "inspect", parents=[registry_options()],
        help="show an artifact's manifest (runs no model code)",
    )  # fmt: skip
    p.add_argument("file", help=FILE_OR_VERSION)
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import amber

    with registry_environment(args):
        info = amber.inspect(args.file)
    echo(info.to_json() if args.json else info)
    return 0
