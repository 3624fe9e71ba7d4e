"""``amber verify FILE``: check digests, payload and probe; exit 1 on any problem."""

from __future__ import annotations

import argparse
from typing import Any

from amber.cli import add_unsafe_option
from amber.cli._output import echo
from amber.cli.models import FILE_OR_VERSION, registry_environment, registry_options


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "verify", parents=[registry_options()],
        help="check every digest, load safely, re-run the probe (exit 1 on a problem)",
    )  # fmt: skip
    p.add_argument("file", help=FILE_OR_VERSION)
    p.add_argument(
        "--trust", action="append", default=[], metavar="NAME",
        help="admit an extra type, e.g. mypkg.models.MyEstimator (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--pubkey", action="append", default=None, metavar="FILE",
        help="require a valid signature by this Ed25519 public key (.pub; repeatable)",
    )  # fmt: skip
    add_unsafe_option(p, "the file")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import amber

    with registry_environment(args):
        report = amber.verify(
            args.file,
            trusted=args.trust,
            allow_arbitrary_code=args.allow_arbitrary_code,
            trusted_keys=args.pubkey,
        )
    echo(report)
    return 0
