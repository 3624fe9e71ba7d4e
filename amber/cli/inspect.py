"""``amber inspect FILE``: print an artifact's manifest without running any model code."""

from __future__ import annotations

import argparse
from typing import Any

from amber.cli._output import echo


def add_parser(sub: Any) -> None:
    p = sub.add_parser("inspect", help="show an artifact's manifest (runs no model code)")
    p.add_argument("file", help="an .amber artifact")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import amber

    info = amber.inspect(args.file)
    echo(info.to_json() if args.json else info)
    return 0
