"""Vet a pickle stream without running it: the rules, the globals it names, its buffers.

The work is done by the C extension ``amber.security._pickle_scan``; this module turns its
result into a :class:`PickleScan` and its refusals into :class:`~amber.errors.FormatError`.
"""

from __future__ import annotations

import _compat_pickle
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from amber._words import counted
from amber.errors import FormatError
from amber.security import _pickle_scan

__all__ = [
    "CALL_ONLY",
    "DATA",
    "OBJECT",
    "STATE",
    "PickleScan",
    "StreamRefused",
    "effective_name",
    "scan_pickle",
]

OBJECT, STATE, CALL_ONLY, DATA = 1, 2, 16, 32
"""Hook modes: validate the object after its BUILD, or each BUILD state before it applies;
``CALL_ONLY``: the global may be called but not held as a value (the loader hands out a
stand-in that checks its arguments); ``DATA``: what it makes is bytes an array may view in
place, or an array on such bytes (numpy's ``_frombuffer``), which validators check where it
lies, so the stream may not modify it afterwards (nor a bytearray literal or a buffer)."""

_BufferLike = bytes | bytearray | memoryview


class StreamRefused(FormatError):
    """A pickle stream breaks one of the scanner's rules; ``reason`` says which."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PickleScan:
    """What a pickle stream would do, found without running it.

    Attributes
    ----------
    globals:
        The ``(module, name)`` pairs the stream imports, in order of first use, after the
        Python 2 name mapping that unpickling applies to protocols below 3.
    protocol:
        The declared protocol (``PROTO``), else the highest protocol among its opcodes.
    n_buffers_used:
        How many out-of-band buffers (``NEXT_BUFFER``) the stream consumes.
    called:
        The globals the stream calls directly (REDUCE, NEWOBJ, NEWOBJ_EX).
    reduced:
        Those of them that REDUCE calls (with arguments: ``cls(*args)`` runs ``__init__``,
        where NEWOBJ only runs ``__new__``).
    hook_sites:
        Internal: ``(start, end, (module, name), kind)`` where a validator call must wrap an
        object (kind 0) or a ``BUILD`` state (kind 1); see :func:`scan_pickle`'s ``hooks``.
    """

    globals: tuple[tuple[str, str], ...]
    protocol: int
    n_buffers_used: int
    called: frozenset[tuple[str, str]] = field(default=frozenset(), repr=False)
    reduced: frozenset[tuple[str, str]] = field(default=frozenset(), repr=False)
    hook_sites: tuple[tuple[int, int, tuple[str, str], int], ...] = field(default=(), repr=False)
    frames: tuple[int, ...] = field(default=(), repr=False)
    fix_imports: bool = field(default=False, repr=False)
    forget: bytes = field(default=b"", repr=False)

    @property
    def dotted_globals(self) -> tuple[str, ...]:
        """The globals as ``"module.name"`` strings."""
        return tuple(f"{m}.{n}" for m, n in self.globals)


# Modules a library release wrote under a wrong name. scikit-learn 1.6's Cython loss classes say
# their module is "_loss" (a build quirk), so its pickles of gradient boosting and of the GLMs
# name "_loss.CyHalfSquaredError"; no other release can import that (pickle: "No module named
# '_loss'"), and Amber refused it even in 1.6. The name is read as the module it means; the
# allowlist then decides as for any other name.
_MISNAMED_MODULES = {"_loss": "sklearn._loss._loss"}


def effective_name(module: str, name: str, fix_imports: bool) -> tuple[str, str]:
    """The global a stream's ``(module, name)`` means: Python 2 names mapped as ``pickle`` maps
    them below protocol 3, and modules a library release misnamed (``_MISNAMED_MODULES``)."""
    if fix_imports:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        if module in _compat_pickle.IMPORT_MAPPING:
            return _compat_pickle.IMPORT_MAPPING[module], name
    return _MISNAMED_MODULES.get(module, module), name


def scan_pickle(
    data: _BufferLike,
    *,
    n_buffers: int = 0,
    hooks: Mapping[tuple[str, str], int] | Collection[tuple[str, str]] = (),
    source: str = "the data",
    max_memo: int | None = None,
) -> PickleScan:
    """Check a pickle stream against Amber's rules without executing it.

    Parameters
    ----------
    data:
        The whole stream (bytes-like, contiguous).
    n_buffers:
        How many out-of-band buffers will be passed to ``pickle.loads(buffers=...)``. The
        stream must use exactly that many.
    hooks:
        Raw ``(module, name)`` pairs (as written in the stream) whose objects the caller wants
        to validate: a mapping to ``OBJECT`` (the object, right after its BUILD), ``STATE``
        (each BUILD state, right before it is applied) or both, possibly with ``CALL_ONLY``
        (the stream may call the global, never hold it as a value); a plain collection means
        ``OBJECT``. The sites are returned in ``hook_sites`` (and the offsets of the
        stream's FRAME opcodes in ``frames``). ``forget`` lists the memo stores that no
        ``GET`` reads back, of containers, objects, buffers and large literals (see
        ``splice_hooks``).

    max_memo:
        The most memo entries the stream may store (default: its length in bytes). A stream
        decompressed from a small file gets a smaller bound: the scan keeps 24 bytes an entry.

    Raises
    ------
    FormatError
        The stream breaks a rule (forbidden opcode, bad length, memo abuse, calling or
        modifying something that is not allowed, trailing data, ...).

    Examples
    --------
    >>> import pickle
    >>> scan_pickle(pickle.dumps(slice(1, 2), protocol=5)).globals
    (('builtins', 'slice'),)
    """
    if n_buffers < 0:
        raise ValueError(f"n_buffers must be >= 0, got {n_buffers}")
    view = memoryview(data)
    if not view.c_contiguous:
        raise FormatError(f"{source} must be a contiguous buffer")
    view = view.cast("B")
    size = view.nbytes
    try:
        if type(hooks) is dict:
            modes = hooks  # read, never changed: no copy (the loader's is cached)
        else:
            modes = dict(hooks) if isinstance(hooks, Mapping) else dict.fromkeys(hooks, OBJECT)
        raw, declared, max_proto, used, sites, called, frames, forget = _pickle_scan.scan(
            view, n_buffers, max(size if max_memo is None else min(size, max_memo), 16), modes
        )
    except MemoryError:
        # (a memo of hundreds of millions of entries, inflated from a small compressed file)
        raise StreamRefused(
            f"{source} is not a safe pickle stream: checking it needs more memory than is "
            f"available ({size:,} bytes of opcodes, each memo store kept). It is damaged or "
            f"crafted; nothing from it was run.",
            reason="it needs more memory to check than is available",
        ) from None
    except _pickle_scan.ScanError as exc:
        message, offset = exc.args
        raise StreamRefused(
            f"{source} is not a safe pickle stream: {message} (at byte {offset} of {size}). "
            f"It is damaged, truncated or crafted to attack the loader; nothing from it was "
            f"run. Re-create it from the original object with amber.save().",
            reason=message,
        ) from None
    if used != n_buffers:
        raise FormatError(
            f"{source} uses {counted(used, 'out-of-band buffer')}, and "
            f"{counted(n_buffers, 'buffer was', 'buffers were')} supplied; the stream and its "
            f"buffers do not belong together. Re-create the file with amber.save()."
        )
    fix = declared < 3
    names = tuple(effective_name(m, n, fix) for m, n in raw)
    seen: dict[tuple[str, str], None] = dict.fromkeys(names)
    return PickleScan(
        globals=tuple(seen),
        protocol=declared if declared >= 0 else max_proto,
        n_buffers_used=used,
        called=frozenset(names[k] for k, _ in called),
        reduced=frozenset(names[k] for k, by_reduce in called if by_reduce),
        hook_sites=tuple((start, end, raw[g], kind) for start, end, g, kind in sites),
        frames=tuple(frames),
        fix_imports=fix,
        forget=forget,
    )
