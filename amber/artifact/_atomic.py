"""Atomic file replacement: a temporary file beside the target, fsync, rename, fsync the folder.

A crash or an error at any point leaves either the previous file or the new one, never a mix,
and never a file that an earlier memory map still points into (a rename gives the new bytes a
new inode; the old one lives on until its last reader closes it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["atomic_writer", "fsync_dir"]


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make the names in ``folder`` durable (a new or renamed file's name is only durable once
    its folder is synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # some platforms cannot open folders; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise  # a failing disk; file systems that cannot sync a folder say EINVAL
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary file whose content replaces ``path`` only if the block finishes."""
    # Plain strings and os.path: pathlib's parsing costs a tenth of a tiny model's save.
    target = os.fspath(path)
    folder, name = os.path.split(target)
    folder = folder or os.curdir
    if not name or os.path.isdir(target):
        raise IsADirectoryError(
            f"cannot save to {target!r}: it is a folder; give a file name such as "
            f"{os.path.join(target, 'model.amber')!r}"
        )
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        f = open(tmp, "xb")  # noqa: SIM115 - closed below on every path
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(
            f"cannot save to {target!r}: the folder {folder!r} does not exist (or is not a "
            f"folder); create it first"
        ) from None
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, target)
        fsync_dir(folder)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
