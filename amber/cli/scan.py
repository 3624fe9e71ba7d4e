"""``amber scan FILE``: list what a file would import, with a verdict, loading nothing."""

from __future__ import annotations

import argparse
from typing import Any

from amber.cli._output import echo
from amber.cli.models import registry_environment, registry_options


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "scan",
        parents=[registry_options()],
        help="list the globals a pickle, joblib or .amber file would import (exit 1 if unsafe)",
    )
    p.add_argument(
        "file", help="a pickle, joblib or .amber file, or a registry version: models:/NAME/VERSION"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import amber

    with registry_environment(args):
        report = amber.scan(args.file)
    echo(report)
    return 0 if report.safe else 1
