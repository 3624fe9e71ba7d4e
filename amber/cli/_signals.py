"""SIGTERM ends a command as Ctrl-C does: after its temporary files are removed.

Python's default for SIGTERM ends the process at once, leaving behind what a ``finally`` clause
would have removed (convert's temporary target, the copy of a pipe that scan or inspect read).
While a command runs, SIGTERM raises :class:`Terminated` in the main thread instead, which
unwinds the command as ``KeyboardInterrupt`` does; the process then ends by SIGTERM itself
(:func:`end_by_signal`), so that its parent sees what it sent (status 143 in a shell), as an
interrupted command ends by SIGINT (130), without a traceback either way.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

__all__ = ["Terminated", "end_by_signal", "terminable"]


class Terminated(BaseException):
    """SIGTERM arrived while a command ran (a ``BaseException``: ``except Exception`` lets it
    through, as it lets ``KeyboardInterrupt`` through)."""


@contextlib.contextmanager
def terminable() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (once: a second one while the
    command unwinds is ignored, so that its cleanup finishes).

    Nothing changes where SIGTERM already has a handler or is ignored (a program that runs
    ``main()`` and handles it itself, ``nohup``-like parents) or outside the main thread,
    where no handler can be installed.
    """
    raised = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Terminated(signum)

    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def end_by_signal(signum: int) -> int:
    """End the process by ``signum`` (SIGTERM, SIGINT), as its default action would have;
    128 + ``signum`` (143, 130) where the signal cannot end it (it is blocked in this thread)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum
