"""Helpers to craft pickle streams by hand and to run code that may crash in a subprocess.

tests/ is not a package, so the test modules import these helpers as ``security_kit`` (this
module registers itself under that name; pytest imports it before collecting the tests).
"""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

from amber.security._policy import LoadPolicy

PROTO5 = b"\x80\x05"
STOP = b"."
MARK, TUPLE, EMPTY_TUPLE, TUPLE1, TUPLE2 = b"(", b"t", b")", b"\x85", b"\x86"
REDUCE, BUILD, NEWOBJ, STACK_GLOBAL, MEMOIZE = b"R", b"b", b"\x81", b"\x93", b"\x94"
EMPTY_DICT, EMPTY_LIST, NONE = b"}", b"]", b"N"


def sbu(text: str) -> bytes:
    """SHORT_BINUNICODE."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def glob(module: str, name: str) -> bytes:
    """GLOBAL (text form, any protocol)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def sglob(module: str, name: str) -> bytes:
    """STACK_GLOBAL with literal operands."""
    return sbu(module) + sbu(name) + STACK_GLOBAL


def binint(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def binput(i: int) -> bytes:
    return b"q" + bytes([i])


def binget(i: int) -> bytes:
    return b"h" + bytes([i])


def call(module: str, name: str, *args: bytes) -> bytes:
    """``module.name(*args)`` as STACK_GLOBAL + MARK args TUPLE + REDUCE."""
    return sglob(module, name) + MARK + b"".join(args) + TUPLE + REDUCE


def shared_tuple_bomb(levels: int = 64, extra: bytes = b"") -> bytes:
    """A dict whose key is 64 levels of (t, t), each level two memo copies of the last: a
    kilobyte that takes 2**64 steps to hash. ``extra`` goes into the dict too."""
    data = PROTO5 + EMPTY_DICT + extra + sbu("leaf") + MEMOIZE + b"0"
    for level in range(levels):
        data += b"j" + struct.pack("<I", level) + b"j" + struct.pack("<I", level)
        data += TUPLE2 + MEMOIZE + (b"0" if level < levels - 1 else b"")  # POP all but the last
    return data + b"N" + b"s" + b"."  # NONE, SETITEM


class Forged:
    """Pickles as whatever ``__reduce__`` value it is given (to write hostile states)."""

    def __init__(self, *reduce_value: Any) -> None:
        self.reduce_value = reduce_value

    def __reduce__(self) -> tuple[Any, ...]:
        return self.reduce_value


def dumps5(obj: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Protocol 5 with out-of-band buffers, as Amber writes payloads."""
    buffers: list[pickle.PickleBuffer] = []
    return pickle.dumps(obj, protocol=5, buffer_callback=buffers.append), buffers


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter (for things that crash the process)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def crashed(proc: subprocess.CompletedProcess[str]) -> bool:
    """Killed by a signal (segfault, abort, bus error)."""
    return proc.returncode < 0


def crashed_unless_numpy(proc: subprocess.CompletedProcess[str], fixed: tuple[int, int]) -> bool:
    """:func:`crashed`, where the installed numpy is older than ``fixed``, the release that
    no longer crashes on the input (Amber still refuses it, as the tests go on to check)."""
    version = tuple(int(part) for part in np.__version__.split(".")[:2])
    return crashed(proc) or version >= fixed


@pytest.fixture
def policy() -> LoadPolicy:
    return LoadPolicy()


sys.modules.setdefault("security_kit", sys.modules[__name__])
