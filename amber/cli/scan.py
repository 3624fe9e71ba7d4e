"""``amber scan FILE``: list what a file would import, with a verdict, loading nothing."""

from __future__ import annotations

import argparse
from typing import Any

from amber.cli._output import echo


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "scan",
        help="list the globals a pickle, joblib or .amber file would import (exit 1 if unsafe)",
    )
    p.add_argument("file", help="a pickle, joblib or .amber file")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import amber

    report = amber.scan(args.file)
    echo(report)
    return 0 if report.safe else 1
