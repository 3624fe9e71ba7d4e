"""Atomic file replacement: a temporary file beside the target, fsync, rename, fsync the folder.

A crash or an error at any point leaves either the previous file or the new one, never a mix,
and never a file that an earlier memory map still points into (a rename gives the new bytes a
new inode; the old one lives on until its last reader closes it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_writer"]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # some platforms cannot open folders; the rename is still atomic
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary file whose content replaces ``path`` only if the block finishes."""
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"cannot save to {str(target)!r}: the folder {str(folder)!r} does not exist; "
            f"create it first"
        )
    if target.is_dir():
        raise IsADirectoryError(
            f"cannot save to {str(target)!r}: it is a folder; give a file name such as "
            f"{str(target / 'model.amber')!r}"
        )
    tmp = folder / f".{target.name}.{secrets.token_hex(6)}.tmp"
    f = open(tmp, "xb")  # noqa: SIM115 - closed below on every path
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, target)
        _fsync_dir(folder)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
