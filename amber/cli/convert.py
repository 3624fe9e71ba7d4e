"""``amber convert OLD NEW``: turn a pickle or joblib file into a verified artifact.

The artifact is saved to a temporary file beside the target and verified there; only a file
that passed is renamed over the target. A failed convert leaves the target as it was (or
absent) and no new file behind.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from amber.cli import add_unsafe_option
from amber.cli._output import echo, reporting
from amber.cli._sample import as_fitted, read_sample


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "convert", help="load a pickle/joblib file safely and save it as a verified .amber artifact"
    )
    p.add_argument("source", help="a pickle or joblib file")
    p.add_argument("target", help="the .amber file to write")
    p.add_argument(
        "--sample", metavar="FILE",
        help="sample inputs for the probe: a .npy array or a .csv table (header row)",
    )  # fmt: skip
    p.add_argument(
        "--trust", action="append", default=[], metavar="NAME",
        help="admit an extra type found by `amber scan` (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--compress", default="none",
        choices=["none", "auto", "zlib", "lzma", "lz4", "zstd"],
        help="compress the artifact's entries: none (the default; large arrays can then be "
        "memory-mapped), a codec, or auto (chosen per entry by measuring size and speed)",
    )  # fmt: skip
    add_unsafe_option(p, "the source file")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import amber

    source, target = args.source, args.target
    if not target:
        raise ValueError(
            f"the target path is empty; give the .amber file to write {source!r} to, e.g. "
            f"{_suggested(source)!r}"
        )
    _check_source(source, target)
    sample = read_sample(args.sample) if args.sample else None
    unsafe = args.allow_arbitrary_code
    with _verified_replacement(target) as tmp:  # a target that cannot be written fails first
        model = amber.load(source, trusted=args.trust, allow_arbitrary_code=unsafe)
        info = amber.save(model, tmp, sample=as_fitted(sample, model), compress=args.compress)
        amber.verify(tmp, trusted=args.trust, allow_arbitrary_code=unsafe)
    with reporting(f"converted {source!r} to {target!r} (verified)"):
        echo(f"converted {source} -> {target} (verified)")
        echo(dataclasses.replace(info, path=Path(target)))
    return 0


def _suggested(source: str) -> str:
    from amber.security._foreign import converted_name

    return str(converted_name(source or "model"))


def _check_source(source: str, target: str) -> None:
    """Refuse an artifact (convert would drop its metadata, probe and signature) and a target
    that is the source itself (the pickle would be overwritten)."""
    from amber._api import _is_artifact
    from amber._paths import is_stream

    if source and not is_stream(source) and _is_artifact(Path(source)):
        import amber

        amber.inspect(source)  # a zip that is not an artifact says so here
        raise ValueError(
            f"{source!r} is already an Amber artifact; convert makes one from a pickle or "
            f"joblib file. Check it with `amber verify {source}`; to store it with another "
            f"compression or sample, load it with amber.load() and save it again with "
            f"amber.save(..., sample=..., compress=..., metadata=amber.inspect(path).metadata) "
            f"in Python (converting it would drop its metadata, probe and signature)"
        )
    with contextlib.suppress(OSError):
        if os.path.samefile(source, target):
            raise ValueError(
                f"the target {target!r} is the source file itself; convert keeps the pickle "
                f"and writes a new artifact: give another target, e.g. {_suggested(source)!r}"
            )


@contextlib.contextmanager
def _verified_replacement(target: str) -> Iterator[str]:
    """A temporary file beside ``target`` to save and verify; renamed over ``target`` only if
    the block succeeds, removed otherwise. As a save would, it follows a symlink, refuses a
    read-only target and gives the new file the permission bits of the one it replaces. The
    block's errors and warnings name ``target``, not the temporary file."""
    from amber.artifact._atomic import fsync_dir, temp_beside

    final, folder, old, tmp, fd = temp_beside(target, verb="convert", suffix=".convert")
    os.close(fd)  # amber.save replaces it, as it would any file
    tmp = str(Path(tmp))  # spelt as Path spells it, as the messages of save and verify will
    shown = warnings.showwarning

    def renamed(message: Any, *rest: Any, **kw: Any) -> None:
        shown(str(message).replace(tmp, target), *rest, **kw)

    warnings.showwarning = renamed
    try:
        yield tmp
        os.replace(tmp, final)
        fsync_dir(folder)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, Exception) and exc.args and isinstance(exc.args[0], str):
            what = "left as it was" if old is not None else "not written"
            exc.args = (f"{str(exc).replace(tmp, target)} ({target!r} was {what})",)
        raise
    finally:
        warnings.showwarning = shown
