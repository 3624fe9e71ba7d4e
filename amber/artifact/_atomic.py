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
import stat
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["atomic_writer", "fsync_dir", "temp_beside"]


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


_TMP_NAME_BYTES = 200  # of the target's name in the temporary file's (names end at 255 bytes)


def _existing(target: str) -> tuple[str, os.stat_result | None]:
    """The file a save to ``target`` replaces (a symlink is followed, as ``open(target, "wb")``
    would, so that the file it points to is updated) and its status, or None if none exists."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return target, None
    except NotADirectoryError:
        return target, None  # a path through a file: opening the temporary file says so
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(target)
        try:
            st = os.stat(target)
        except FileNotFoundError:
            return target, None  # a dangling link: the file is created where it points
    return target, st


def temp_beside(
    path: str, *, verb: str = "save", suffix: str = ".tmp"
) -> tuple[str, str, os.stat_result | None, str, int]:
    """A fresh temporary file beside the file a ``verb`` to ``path`` replaces.

    Returns the target (a symlink followed), its folder, its status (None: a new file), the
    temporary file's path and an open descriptor of it. A folder or a file this process could
    not write is refused, as ``open`` would refuse it, although the rename would only need the
    folder to be writable. The temporary file is created with the replaced file's permission
    bits (and, for root, its owner), so that a private model is never readable by others, even
    for a moment.
    """
    if not path:
        raise FileNotFoundError(f"cannot {verb}: the path is empty; give a file name")
    target, old = _existing(path)
    folder, name = os.path.split(target)
    folder = folder or os.curdir
    if not name or (old is not None and stat.S_ISDIR(old.st_mode)):
        raise IsADirectoryError(
            f"cannot {verb} to {target!r}: it is a folder; give a file name such as "
            f"{os.path.join(target, 'model.amber')!r}"
        )
    if old is not None and not stat.S_ISREG(old.st_mode):
        # the rename would put a regular file in place of a device or a pipe (as root, of
        # /dev/null itself): a model is only ever written to a file
        raise FileExistsError(
            f"cannot {verb} to {target!r}: it is {_special_kind(old.st_mode)}, not a regular "
            f"file, and Amber replaces only files; {verb} to a file path"
        )
    if old is not None and not os.access(target, os.W_OK):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(
                f"cannot {verb} to {target!r}: neither the file nor its folder {folder!r} is "
                f"writable; {verb} into a folder you can write to"
            )
        raise PermissionError(
            f"cannot {verb} to {target!r}: the file is read-only; make it writable first "
            f"(chmod u+w) or {verb} to another name"
        )
    short = os.fsencode(name)[:_TMP_NAME_BYTES].decode("utf-8", "ignore")
    tmp = os.path.join(folder, f".{short}.{secrets.token_hex(6)}{suffix}")
    mode = stat.S_IMODE(old.st_mode) if old is not None else 0o666
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(
            f"cannot save to {target!r}: the folder {folder!r} does not exist (or is not a "
            f"folder); create it first"
        ) from None
    except PermissionError:
        raise PermissionError(
            f"cannot save to {target!r}: the folder {folder!r} is not writable (Amber writes a "
            f"temporary file beside the target and renames it over the target, so that a "
            f"failed {verb} leaves the previous file intact); {verb} into a writable folder"
        ) from None
    if old is not None and hasattr(os, "fchmod"):
        try:
            os.fchmod(fd, mode)  # the umask narrowed what os.open was given
            if hasattr(os, "fchown") and os.geteuid() == 0:
                with contextlib.suppress(OSError):
                    os.fchown(fd, old.st_uid, old.st_gid)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
    return target, folder, old, tmp, fd


def _special_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "a special file"


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary file whose content replaces ``path`` only if the block finishes.

    A file that is replaced keeps its permission bits (and, for root, its owner); a symlink
    is followed (see :func:`temp_beside`).
    """
    # Plain strings and os.path: pathlib's parsing costs a tenth of a tiny model's save.
    target, folder, _, tmp, fd = temp_beside(os.fspath(path))
    f = os.fdopen(fd, "wb")
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
