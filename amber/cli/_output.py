"""What the command writes: escaped, in any encoding, and never failing the command.

A file's names (a hostile pickle's globals, a file name) are written with their control
characters escaped, so that they cannot move the cursor or erase a line on the terminal; a
character the output's encoding cannot show is replaced; a reader that goes away
(``amber scan FILE | head -1``) ends the output, not the command.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, TextIO

from amber._info import printable_line

__all__ = ["Tolerant", "echo", "one_line"]


def one_line(text: str) -> str:
    """``text`` with every control character escaped (newlines too): one line of output."""
    return printable_line(text)


def echo(text: object = "") -> None:
    """Print ``text`` to standard output, each of its lines with control characters escaped."""
    print("\n".join(printable_line(line) for line in str(text).split("\n")))


class Tolerant:
    """A text stream (standard output or error) that replaces what its encoding cannot show
    and, once its reader has gone (``BrokenPipeError``), drops what is written to it.

    A reader that went away is no failure of the command: the command goes on and ends with
    its own exit status (``amber scan unsafe.pkl | head -1`` still exits 1). The stream's file
    descriptor is then pointed at ``/dev/null``, so that the interpreter's last flush of it
    cannot fail again.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._broken = stream is None
        self._errors: str | None = None
        errors = getattr(stream, "errors", None)
        if stream is not None and errors == "strict" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
                self._errors = errors
            except BrokenPipeError:
                self._gone()
            except (OSError, ValueError, AttributeError):
                pass  # a stream that cannot change: write() replaces instead

    def write(self, text: str) -> int:
        if self._broken or self._stream is None:
            return len(text)
        try:
            return self._stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(self._stream, "encoding", None) or "ascii"
            shown = text.encode(encoding, "replace").decode(encoding, "replace")
            self.write(shown)
            return len(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        if self._broken or self._stream is None:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    def restore(self) -> None:
        """Flush, and give the stream back its own error handling."""
        self.flush()
        if self._errors is not None and not self._broken:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                self._stream.reconfigure(errors=self._errors)  # type: ignore[union-attr]

    def _gone(self) -> None:
        self._broken = True
        try:
            fd = self._stream.fileno()  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError):
            return
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
