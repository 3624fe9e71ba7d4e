"""The ``amber`` command: one module per subcommand, each with ``add_parser`` and ``run``.

Exit status: 0 when the command did what it was asked, 1 when a check failed (an artifact that is
damaged, tampered with, unsafe or does not reproduce its probe; ``scan``'s verdict is not
safe), 2 for bad usage or an input/output error (no such file, permission denied, a bad option,
a pipe longer than Amber reads, output that cannot be written). SIGTERM, like SIGINT, ends a
command after its temporary files are removed, and by the signal (143 in a shell; 130 for
SIGINT).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import shlex
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

from amber.cli._output import OutputError, Tolerant, one_line
from amber.cli._signals import Terminated, end_by_signal, terminable
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
        epilog="Exit status: 0 ok, 1 a check failed (or scan's verdict is unsafe), "
        "2 bad usage or an input/output error.",
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
    """Run the command line; returns the exit status (0 ok, 1 a check failed, 2 bad usage).

    Output the terminal's encoding cannot show is written with ``?`` in its place; a reader of
    standard output that goes away (``amber scan FILE | head -1``) ends the output quietly and
    a standard error that goes away drops the warnings and messages, and neither changes what
    the command does or its exit status. A standard output that cannot be written (a full
    disk) is an error, status 2, that says so. SIGTERM and SIGINT (Ctrl-C) end the process, by
    that signal and without a traceback, once the command's temporary files are removed.
    """
    out, err = Tolerant(sys.stdout, name="standard output"), Tolerant(sys.stderr)
    saved: tuple[TextIO, TextIO] = (sys.stdout, sys.stderr)
    sys.stdout, sys.stderr = out, err
    # the command has unwound, its temporary files removed: end as the signal would have
    try:
        return _main(argv)
    except Terminated:
        signum = signal.SIGTERM
    except KeyboardInterrupt:
        signum = signal.SIGINT
    finally:
        out.restore()
        err.restore()
        sys.stdout, sys.stderr = saved
    return end_by_signal(signum)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # refused with the usage of the command they were given to, not amber's
        _innermost(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    # the server stops gracefully on SIGTERM by itself
    signals = contextlib.nullcontext() if args.command == "serve" else terminable()
    with warnings.catch_warnings(), signals:
        warnings.simplefilter("default")
        warnings.showwarning = _warning_shower(args)
        try:
            status = int(args.run(args))
            sys.stdout.flush()  # output that cannot be written fails here, not after main()
            return status
        except OutputError as exc:
            _error(args, f"error: {exc}")  # of the output, not of the input the command read
            return 2
        except AmberError as exc:
            _error(args, f"{type(exc).__name__}: {_with_subject(exc, args)}")
            return 2 if _refused_input(exc) else 1
        except OSError as exc:
            _error(args, f"error: {_os_message(exc, args)}")
            return 2
        except (ValueError, TypeError) as exc:
            _error(args, f"error: {_with_subject(exc, args)}")
            return 2
        except MemoryError:
            subject = _subject(args)
            _error(
                args,
                f"error: ran out of memory{f' reading {subject!r}' if subject else ''}: it "
                f"needs more than this machine (or its memory limit, ulimit -v) allows",
            )
            return 2


def _innermost(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` was parsed for: ``amber models alias``'s for
    ``amber models alias ...``."""
    while True:
        chosen = [
            action.choices[getattr(args, action.dest)]
            for action in parser._actions
            if isinstance(action, argparse._SubParsersAction)
            and getattr(args, action.dest, None) in action.choices
        ]
        if not chosen:
            return parser
        parser = chosen[0]


def _refused_input(exc: AmberError) -> bool:
    """Whether ``exc`` refuses the input for what it is, not for what it holds: an input error,
    status 2, not a failed check. That is a pipe longer than Amber reads, a malformed registry
    reference or one naming nothing (as a missing file is), and a catalog or blob store that
    cannot be reached or written (as a file that cannot be read or written is)."""
    from amber.errors import ModelNotFound
    from amber.security._foreign import StreamLimitError

    if isinstance(exc, StreamLimitError | ModelNotFound):
        return True
    if "amber.registry" in sys.modules:  # (never imported for a plain file's command)
        from amber.registry import CatalogUnavailable, InvalidURI, StorageUnavailable

        # (CatalogUnavailable includes CatalogReadOnly: as a file that cannot be written)
        return isinstance(exc, InvalidURI | CatalogUnavailable | StorageUnavailable)
    return False


def _error(args: argparse.Namespace, message: str) -> None:
    message = _for_command_line(message, args)
    print(f"amber {args.command}: {one_line(message)}", file=sys.stderr)


_UNSAFE_FLAG = "--allow-arbitrary-code"
# the library's words for the option, longest first, as the command line spells them
_UNSAFE_WORDS = (
    ("amber.load(..., allow_arbitrary_code=True)", _UNSAFE_FLAG),
    ("because allow_arbitrary_code=True", f"because of {_UNSAFE_FLAG}"),
    ("allow_arbitrary_code=True", _UNSAFE_FLAG),
)


def _for_command_line(message: str, args: argparse.Namespace) -> str:
    """``message`` in the command line's words where the library's text names a Python
    argument the command has as an option: ``allow_arbitrary_code=True`` as
    ``--allow-arbitrary-code``, ``trusted=['pkg.Name']`` as ``--trust pkg.Name``,
    ``sample=`` as ``--sample`` (a message that names the flag already is left as it is)."""
    if hasattr(args, "allow_arbitrary_code") and _UNSAFE_FLAG not in message:
        for words, flag in _UNSAFE_WORDS:
            message = message.replace(words, flag)
    if hasattr(args, "trust"):
        message = message.replace(" (or --trust NAME on the command line)", "")
        message = _TRUSTED.sub(_trust_options, message)
        message = message.replace("amber.scan()", "amber scan")
    if hasattr(args, "sample"):
        for words, option in _SAMPLE_WORDS:
            message = message.replace(words, option)
    return message


# ``trusted=['a.B', 'c.D']`` as the library writes it (names repr'd, comma-separated)
_TRUSTED = re.compile(r"trusted=\[((?:'[^'\\]*'(?:, )?)*|\.\.\.)\]")
# the library's words for a sample, longest first, as ``amber convert`` spells them
_SAMPLE_WORDS = (
    (
        "pass several rows, X[:32] (2-d), or this one row as sample.reshape(1, -1)",
        "give several rows as a 2-d array (numpy.save(path, X[:32])), or this one row as a "
        "2-d array of one row (numpy.save(path, x.reshape(1, -1)))",
    ),
    (
        "pass several rows, X[:32] (2-d)",
        "give several rows as a 2-d array (numpy.save(path, X[:32]))",
    ),
    ("pass a sample the model accepts, or none", "give a sample the model accepts, or none"),
    ("save it without sample=", "convert it without --sample"),
    ("save without sample=", "convert without --sample"),
    ("sample=X[:32]", "--sample of 32 rows"),
    ("on sample=", "on --sample"),
    ("(sample= and", "(--sample and"),
    ("sample= ", "--sample "),
)


def _trust_options(match: re.Match[str]) -> str:
    names = re.findall(r"'([^']*)'", match.group(1))
    return " ".join(f"--trust {shlex.quote(n)}" for n in names) or "--trust NAME"


def _subject(args: argparse.Namespace) -> str | None:
    """The file the command is about (``FILE``, or ``convert``'s ``SOURCE``)."""
    value = _argument(args)
    return value if value is not None and not value.startswith("models:") else None


def _argument(args: argparse.Namespace) -> str | None:
    """``FILE`` or ``SOURCE`` as given: a path or a registry URI (``models:/iris/1``); for
    ``export``, whose ``FILE`` is what it writes, the URI it reads."""
    if args.command == "export":
        value = getattr(args, "uri", None)
    else:
        value = getattr(args, "file", None) or getattr(args, "source", None)
    return value if isinstance(value, str) else None


def _with_subject(exc: BaseException, args: argparse.Namespace) -> str:
    """The message, led by the file it concerns when it names none (a truncated zip's "no
    end-of-central-directory record found" says nothing of which file it read). For a
    registry URI, by the URI and then its local file, whichever the message lacks: ``amber
    verify`` and ``amber inspect`` of one damaged version then name it alike."""
    message = str(exc)
    if any(_names(message, n) for n in _option_files(args)):
        return message  # about a file an option named (a key, the target): not the subject
    subject = _subject(args)
    if subject is None:
        uri = _argument(args)
        if uri is None:
            return message
        message = message.removeprefix(f"{uri!r}: ")  # (amber.load and verify name it)
        blob = _registry_file(uri)
        if blob is not None and not _names(message, blob):
            message = f"{blob!r}: {message}"
        return message if _names(message, uri) else f"{uri!r}: {message}"
    return message if _names(message, subject) else f"{subject!r}: {message}"


def _option_files(args: argparse.Namespace) -> list[str]:
    """The files named beside the subject: ``convert``'s target and sample, the keys of
    ``sign``, ``push``, ``export`` and ``verify``, ``sign --out``."""
    names = [getattr(args, a, None) for a in ("target", "sample", "key", "out")]
    names += getattr(args, "pubkey", None) or []
    return [n for n in names if isinstance(n, str) and n]


def _names(message: str, name: str) -> bool:
    """Whether ``message`` names the file ``name``: quoted, as Amber quotes a path, or, when
    the name looks like a path (a folder or a suffix in it), standing on its own. A file called
    ``model`` is not named by the words "re-save the model", nor ``m.amber`` by
    "'/data/m.amber'"."""
    shown = repr(name)[1:-1]
    if f"'{shown}'" in message or f'"{shown}"' in message:
        return True
    if not any(c in shown for c in "/.\\"):
        return False
    alone = rf"(?<![\w./\\-]){re.escape(shown)}(?![\w/\\-]|\.\w)"
    return re.search(alone, message) is not None


def _registry_file(uri: str) -> str | None:
    """The local file of the registry version ``uri`` names (in the registry the command
    used, ``$AMBER_REGISTRY``), or None where it cannot be found."""
    try:
        from amber.registry._default import default_registry

        return str(default_registry().path(uri))
    except Exception:  # the version is missing, or the registry unreadable: name the URI
        return None


_OS_ADVICE = {
    errno.EACCES: "check its permissions and its folder's (ls -l), or run as a user who may",
    errno.EPERM: "check its permissions and its folder's (ls -l), or run as a user who may",
    errno.ENOENT: "check the path and the working folder",
    errno.EISDIR: "give a file, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.ENOSPC: "the disk is full; free some space and run it again",
    errno.EROFS: "the file system is mounted read-only; write somewhere else",
    errno.ELOOP: "the path is a loop of symbolic links; check it",
    errno.ENAMETOOLONG: "the name is too long for the file system; choose a shorter one",
}


def _os_message(exc: OSError, args: argparse.Namespace) -> str:
    """An operating-system error as a sentence naming the file and what to do: Python's own
    text (``[Errno 13] Permission denied: 'model.amber'``) says neither."""
    if exc.errno is None or exc.strerror is None or not str(exc).startswith("[Errno"):
        return _with_subject(exc, args)  # a message Amber wrote, with its own advice
    name = exc.filename if exc.filename is not None else _subject(args)
    where = f"{os.fsdecode(name)!r}: " if name is not None else ""
    advice = _OS_ADVICE.get(exc.errno)
    return f"{where}{exc.strerror.lower()}" + (f"; {advice}" if advice else "")


def add_unsafe_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--allow-arbitrary-code``: ``amber.load(allow_arbitrary_code=True)`` for ``what``."""
    parser.add_argument(
        "--allow-arbitrary-code",
        action="store_true",
        help=f"run {what}'s pickle code unchecked and lift Amber's size bounds: only for files "
        f"you made yourself (warns)",
    )


def _warning_shower(args: argparse.Namespace) -> Any:
    """``warnings.showwarning`` for the command: its options named as the command line
    spells them."""

    def show(message: Any, category: Any, filename: Any, lineno: Any, file=None, line=None):
        _show_warning(_for_command_line(str(message), args), category, filename, lineno)

    return show


def _show_warning(message: Any, category: Any, filename: Any, lineno: Any, file=None, line=None):
    # one line per line of the message, each escaped: names from a file cannot drive the terminal
    text = "\n".join(one_line(part) for part in str(message).split("\n"))
    print(f"amber: {category.__name__}: {text}", file=sys.stderr)
