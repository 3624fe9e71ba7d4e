"""What the command writes: escaped, in any encoding, and never failing the command.

A file's names (a hostile pickle's globals, a file name) are written with their control
characters escaped, so that they cannot move the cursor or erase a line on the terminal; a
character the output's encoding cannot show is replaced; a reader that goes away
(``amber scan FILE | head -1``) ends the output, not the command. Output that cannot be written
(a full disk, ``/dev/full``) is an :class:`OutputError`, which names standard output, not the
command's input, and says what the command had done before (:func:`reporting`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from amber._info import printable_line

__all__ = ["OutputError", "Tolerant", "echo", "one_line", "reporting"]


def one_line(text: str) -> str:
    """``text`` with every control character escaped (newlines too): one line of output."""
    return printable_line(text)


def echo(text: object = "") -> None:
    """Print ``text`` to standard output, each of its lines with control characters escaped."""
    print("\n".join(printable_line(line) for line in str(text).split("\n")))


_ADVICE = {
    errno.ENOSPC: "the disk or device it goes to is full; free some space or send the output "
    "elsewhere",
    errno.EIO: "the device it goes to failed; send the output elsewhere",
}


class OutputError(OSError):
    """Writing the command's output failed (a full disk, ``/dev/full``, a failing device): the
    input was read, the output is what was lost. ``done``: what the command had done before
    (``wrote 'k.key' and 'k.pub'``), so that the message does not pass it off as a failure."""

    def __init__(self, stream: str, cause: OSError, done: str = "") -> None:
        super().__init__(cause.errno, cause.strerror)
        self.stream, self.cause, self.done = stream, cause, done

    def after(self, done: str) -> OutputError:
        """The same failure, saying that the command had done ``done`` before it."""
        return OutputError(self.stream, self.cause, done)

    def __str__(self) -> str:
        reason = (self.cause.strerror or str(self.cause)).lower()
        advice = _ADVICE.get(self.cause.errno or 0, "check where it goes (a redirection, a pipe)")
        what = f"{self.done}, but writing" if self.done else "writing"
        return f"{what} to {self.stream} failed: {reason}; {advice}"


@contextlib.contextmanager
def reporting(done: str) -> Iterator[None]:
    """Output written in the block is flushed at its end; should writing it fail, the
    :class:`OutputError` says that the command had done ``done`` (its work is not undone)."""
    try:
        yield
        sys.stdout.flush()
    except OutputError as exc:
        raise exc.after(done) from None


class Tolerant:
    """A text stream (standard output or error) that replaces what its encoding cannot show
    and, once its reader has gone (``BrokenPipeError``), drops what is written to it.

    A reader that went away is no failure of the command: the command goes on and ends with
    its own exit status (``amber scan unsafe.pkl | head -1`` still exits 1). Any other failed
    write (a full disk) raises :class:`OutputError` naming the stream, ``name``; without a
    name (standard error, where there is nowhere to say it failed) the output is dropped. The
    stream's file descriptor is then pointed at ``/dev/null``, so that the interpreter's last
    flush of it cannot fail again.
    """

    def __init__(self, stream: TextIO | None, *, name: str | None = None) -> None:
        self._stream = stream
        self._name = name
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
        except OSError as exc:
            self._failed(exc)
            return len(text)

    def flush(self) -> None:
        if self._broken or self._stream is None:
            return
        try:
            self._stream.flush()
        except OSError as exc:
            self._failed(exc)

    def restore(self) -> None:
        """Flush (what cannot be written now is dropped: it is too late to say so), and give
        the stream back its own error handling."""
        with contextlib.suppress(OutputError):
            self.flush()
        if self._errors is not None and not self._broken:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                self._stream.reconfigure(errors=self._errors)  # type: ignore[union-attr]

    def _failed(self, exc: OSError) -> None:
        self._gone()
        if self._name is not None and not isinstance(exc, BrokenPipeError):
            raise OutputError(self._name, exc) from None

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
