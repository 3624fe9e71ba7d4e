"""``amber models list|show|versions|alias|delete|gc``: browse and manage a registry.

The registry is ``--registry URL`` (or ``$AMBER_REGISTRY``, default ``./amber-models``); a remote
one also needs ``--catalog URL`` (or ``$AMBER_CATALOG``). Shared by ``push``, ``export`` and
``import``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from amber.cli._output import echo, reporting


def registry_options() -> argparse.ArgumentParser:
    """The options every registry command takes (an argparse parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry", metavar="URL", default=None,
        help="registry folder or fsspec URL (default: $AMBER_REGISTRY, else ./amber-models)",
    )  # fmt: skip
    common.add_argument(
        "--catalog", metavar="URL", default=None,
        help="catalog database URL, e.g. postgresql://user@host/db (default: $AMBER_CATALOG; "
        "a folder registry uses its own SQLite file)",
    )  # fmt: skip
    return common


#: ``FILE``'s help for the commands that also take a registry version
FILE_OR_VERSION = "an .amber artifact, or a registry version: models:/NAME/VERSION, @ALIAS"


@contextlib.contextmanager
def registry_environment(args: argparse.Namespace) -> Iterator[None]:
    """``--registry`` and ``--catalog`` for a command that hands a ``models:/`` URI to the
    library, which finds the registry through ``$AMBER_REGISTRY`` and ``$AMBER_CATALOG``: set
    for the command, then restored (``main`` also runs in-process)."""
    _refuse_empty_options(args)
    given = {"AMBER_REGISTRY": args.registry, "AMBER_CATALOG": args.catalog}
    before = {key: os.environ.get(key) for key in given}
    try:
        for key, value in given.items():
            if value is not None:
                os.environ[key] = value
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _refuse_empty_options(args: argparse.Namespace) -> None:
    """An empty ``--registry`` or ``--catalog`` is a mistake, not a request for the default."""
    for option in ("registry", "catalog"):
        if getattr(args, option) == "":
            raise ValueError(
                f"--{option} is empty; give a folder or URL, or leave the option out for the "
                f"default ($AMBER_{option.upper()}"
                + (", else ./amber-models)" if option == "registry" else ")")
            )


def open_registry(args: argparse.Namespace) -> Any:
    from amber.registry import Registry

    _refuse_empty_options(args)
    return Registry(args.registry or os.environ.get("AMBER_REGISTRY"), catalog=args.catalog)


def add_parser(sub: Any) -> None:
    common = registry_options()
    p = sub.add_parser("models", help="list, show and manage the models of a registry")
    inner = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    q = inner.add_parser("list", parents=[common], help="every model: versions, latest, aliases")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(run=run_list)

    q = inner.add_parser("show", parents=[common], help="one version (default: the latest)")
    q.add_argument("ref", help="a name or URI: iris, iris/3, iris@production, models:/iris/3")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(run=run_show)

    q = inner.add_parser("versions", parents=[common], help="the versions of a model")
    q.add_argument("name")
    q.add_argument("--limit", type=int, default=None, help="only the newest N")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(run=run_versions)

    q = inner.add_parser(
        "alias", parents=[common],
        help="show aliases (NAME), set one (NAME ALIAS VERSION) or remove one (--remove)",
    )  # fmt: skip
    q.add_argument("name")
    q.add_argument("alias", nargs="?")
    q.add_argument("version", nargs="?", type=int)
    q.add_argument("--remove", action="store_true", help="remove the alias")
    q.add_argument("--history", action="store_true", help="show every move of the alias(es)")
    q.set_defaults(run=run_alias)

    q = inner.add_parser("delete", parents=[common], help="delete one version")
    q.add_argument("name")
    q.add_argument("version", type=int)
    q.add_argument("--force", action="store_true", help="also remove aliases pointing to it")
    q.set_defaults(run=run_delete)

    q = inner.add_parser("gc", parents=[common], help="remove blobs no version refers to")
    q.add_argument(
        "--grace", type=float, default=3600.0, metavar="SECONDS",
        help="keep blobs of pushes in flight touched, and of versions deleted, this recently "
        "(default 3600)",
    )  # fmt: skip
    q.set_defaults(run=run_gc)
    p.set_defaults(run=None)


def run_list(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        models = reg.models()
        if args.json:
            echo(json.dumps([m.__dict__ for m in models], indent=2))
        elif not models:
            absent = not reg._store.remote and not os.path.isdir(reg.location)
            echo(
                f"no models in {reg.location}"
                + (
                    " (no registry there yet: check --registry or $AMBER_REGISTRY)"
                    if absent
                    else ""
                )
            )
        for m in models if not args.json else ():
            echo(m)
    return 0


def run_show(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        v = reg.get(args.ref)
        echo(json.dumps(v.to_dict(), indent=2) if args.json else v)
    return 0


def run_versions(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        versions = reg.versions(args.name, limit=args.limit)
        if args.json:
            echo(json.dumps([v.to_dict() for v in versions], indent=2))
            return 0
        for v in versions:
            alias = f"  @{', @'.join(v.aliases)}" if v.aliases else ""
            metrics = " ".join(f"{k}={val}" for k, val in sorted(v.metrics.items()))
            when = v.created[:19].replace("T", " ")
            echo(f"{v.version:>6}  {when}  {v.size:>12,}  {metrics}{alias}")
    return 0


def run_alias(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        for flag, given in (("--history", args.history), ("--remove", args.remove)):
            if given and args.version is not None:
                raise ValueError(
                    f"{flag} takes no VERSION (got {args.version}); to point the alias at a "
                    f"version: amber models alias NAME ALIAS VERSION"
                )
        if args.history:
            changes = reg.alias_history(args.name, args.alias)
            for change in changes:
                echo(change)
            if not changes:
                which = f"{args.name}@{args.alias} was" if args.alias else f"{args.name}'s were"
                echo(f"no history: {which} never set")
            return 0
        if args.remove:
            if args.alias is None:
                raise ValueError("--remove needs the alias: amber models alias NAME ALIAS --remove")
            was = reg.remove_alias(args.name, args.alias)
            with reporting(f"removed {args.name}@{args.alias}"):
                echo(f"removed {args.name}@{args.alias} (was version {was})")
            return 0
        if args.alias is None:
            for alias, version in reg.aliases(args.name).items():
                echo(f"@{alias} -> {version}")
            return 0
        if args.version is None:
            echo(reg.get(f"models:/{args.name}@{args.alias}").version)
            return 0
        was = reg.set_alias(args.name, args.alias, args.version)
        moved = f" (was {was})" if was is not None else ""
        with reporting(f"pointed {args.name}@{args.alias} at version {args.version}"):
            echo(f"{args.name}@{args.alias} -> {args.version}{moved}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        v = reg.delete(args.name, args.version, force=args.force)
        with reporting(f"deleted {v.uri}"):
            echo(f"deleted {v.uri}; its blob goes at the next `amber models gc`")
    return 0


def run_gc(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        collected = reg.gc(grace=args.grace)
        with reporting("collected the registry's garbage"):
            echo(collected)
    return 0
