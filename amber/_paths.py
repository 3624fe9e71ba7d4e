"""What kind of file a path names, told without importing any reader (every load asks)."""

from __future__ import annotations

import os
import stat

__all__ = ["is_stream"]


def is_stream(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a pipe, a device or a socket: something that can be read once only,
    and may not end (a missing path or a folder is not: opening it says what is wrong)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
