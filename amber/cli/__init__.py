"""The ``amber`` command: one module per subcommand, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from amber.errors import AmberError

__all__ = ["main"]

_SUBCOMMANDS = ("inspect", "verify", "scan", "convert", "serve")
_REGISTRY_SUBCOMMANDS = ("models", "push", "export", "import", "keygen", "sign")


def build_parser() -> argparse.ArgumentParser:
    from amber import __version__
    from amber.cli import convert, inspect, scan, serve, verify

    parser = argparse.ArgumentParser(
        prog="amber",
        description="Persist trained models and reload them: identical, safe, fast.",
    )
    parser.add_argument("--version", action="version", version=f"amber {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (inspect, verify, scan, convert, serve):
        module.add_parser(sub)
    from amber.cli import export, import_, keygen, models, push, sign

    for module in (models, push, export, import_, keygen, sign):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 a check failed, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        try:
            return int(args.run(args))
        except BrokenPipeError:
            # the reader went away (amber scan FILE | head -1): not an error of the command;
            # stdout is pointed at /dev/null so that flushing it at exit cannot fail again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 0
        except AmberError as exc:
            print(f"amber {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        except (OSError, ValueError, TypeError) as exc:
            print(f"amber {args.command}: error: {exc}", file=sys.stderr)
            return 2


def add_unsafe_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--allow-arbitrary-code``: ``amber.load(allow_arbitrary_code=True)`` for ``what``."""
    parser.add_argument(
        "--allow-arbitrary-code",
        action="store_true",
        help=f"run {what}'s pickle code unchecked and lift Amber's size bounds: only for files "
        f"you made yourself (warns)",
    )


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"amber: {category.__name__}: {message}", file=sys.stderr)
