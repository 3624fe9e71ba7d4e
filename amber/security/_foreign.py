"""Existing pickle and joblib files: recognise, decompress (bounded), scan and load safely.

``amber.load("model.pkl")`` and ``amber.scan("model.pkl")`` land here. A plain pickle goes
through the allowlist unpickler (:func:`amber.security._unpickler.safe_loads`); a joblib file
through Amber's own joblib reader (:mod:`amber.security._joblib`), which never runs joblib.
Both apply exactly the allowlist of Amber's own artifacts, then the post-load validators.

Example
-------
>>> report = scan_file("model.joblib")  # doctest: +SKIP
>>> report.verdict  # doctest: +SKIP
'safe'
>>> model = load_foreign("model.joblib", LoadPolicy.make())  # doctest: +SKIP
"""

from __future__ import annotations

import bz2
import itertools
import lzma
import mmap
import os
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from amber._paths import is_stream
from amber._words import counted
from amber.errors import AmberError, FormatError, UntrustedTypeError
from amber.security._allowlist import is_allowed
from amber.security._joblib import (
    is_any_wrapper_name,
    is_wrapper_name,
    load_joblib,
    pickle_budget,
    scan_joblib,
)
from amber.security._policy import LoadPolicy, trust_name
from amber.security._scanner import PickleScan, scan_pickle
from amber.security._unpickler import safe_loads
from amber.security._validators import validate_loaded

__all__ = [
    "ScanReport",
    "StreamLimitError",
    "default_decompression_limit",
    "load_foreign",
    "load_joblib_file",
    "load_pickle_file",
    "read_stream",
    "scan_artifact_names",
    "scan_artifact_stream",
    "scan_file",
    "sniff",
]

Source = str | os.PathLike[str] | bytes

MIB: Final = 1 << 20
#: A compressed file may expand to this many times its size ...
DECOMPRESSION_RATIO: Final = 64
#: ... but always to at least this much (small models compress very well) ...
DECOMPRESSION_FLOOR: Final = 256 * MIB
#: ... and never to more than this unless the caller says so.
DECOMPRESSION_CAP: Final = 4096 * MIB
_STEP: Final = 16 * MIB  # most output taken from a decompressor at once
_FEED: Final = 1 * MIB  # most input given to a decompressor at once
#: The most bytes read from a pipe or a device (``<(curl ...)``, ``/dev/stdin``), which has no
#: size to check first and may never end (``/dev/zero``): the decompression cap.
STREAM_LIMIT: Final = DECOMPRESSION_CAP

_ACCEPTS: Final = (
    "Amber loads .amber artifacts, pickle files written by pickle.dump and joblib files "
    "written by joblib.dump (uncompressed or compressed with zlib, gzip, bz2, lzma, xz or lz4)"
)
_MAGIC: Final = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x5d\x00", "lzma"),
    (b"\x04\x22\x4d\x18", "lz4"),
)
_LOOKS_LIKE: Final = (
    (b"\x93NUMPY", "a NumPy .npy array file (load it with numpy.load(..., allow_pickle=False))"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras .h5 models are loaded by the Keras handler)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x28\xb5\x2f\xfd", "a Zstandard-compressed file (joblib never writes those)"),
    (b"{", "a JSON or text file"),
)
# Opcodes a protocol 0 or 1 pickle (which has no PROTO header) can start with.
_PROTO01_FIRST: Final = frozenset(b"(]})cIJKLMFGSTUVXN")
_ZFILE_LENGTH: Final = len(hex(2**64))  # joblib < 0.10 writes "ZF" + this many hex/space chars


def default_decompression_limit(compressed_size: int) -> int:
    """The most bytes a compressed file of this size may expand to by default.

    ``64 * compressed_size``, at least 256 MiB and at most 4 GiB; pass
    ``max_decompressed_size=`` to the loaders to allow more (or less).
    """
    return min(max(DECOMPRESSION_RATIO * compressed_size, DECOMPRESSION_FLOOR), DECOMPRESSION_CAP)


# --------------------------------------------------------------------------- opening


@dataclass(frozen=True)
class _Opened:
    kind: str
    compression: str | None
    data: bytes | memoryview
    source: str
    room: mmap.mmap | None = None  # ``data`` is the start of this private map (_read_with_room)
    budget: int | None = None  # a compressed stream's bound on opcodes, memo and checks

    def whole(self) -> bytes:
        """``data`` as bytes (only a plain pickle is ever held in a map)."""
        return self.data if isinstance(self.data, bytes) else bytes(self.data)


def _read(source: Source, name: str | None = None) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), name or "the given bytes"
    path = Path(source)
    shown = name or str(path)
    if is_stream(path):  # a pipe or device: read once, and bounded (it may never end)
        return read_stream(path, name=shown), shown
    return path.read_bytes(), shown


def converted_name(source: str | os.PathLike[str]) -> Path:
    """The artifact a pickle or joblib file converts to, by default, as a name that no file
    has yet (a suggestion must not lead to overwriting a file): ``model.pkl`` ->
    ``model.amber``, or ``model-converted.amber`` when that exists (or is the source itself),
    then ``model-converted-2.amber``, ``-3``..."""
    path = Path(source)
    names = itertools.chain(
        (f"{path.stem}.amber", f"{path.stem}-converted.amber"),
        (f"{path.stem}-converted-{n}.amber" for n in itertools.count(2)),
    )
    candidates = map(path.with_name, names)
    return next(out for out in candidates if out != path and not os.path.lexists(out))


class StreamLimitError(FormatError):
    """A pipe or device gave more than the most Amber reads from one (:data:`STREAM_LIMIT`):
    refused for its length, not for what it holds (the command line's status 2, as for a
    file that cannot be read)."""


def read_stream(
    path: str | os.PathLike[str], *, name: str | None = None, limit: int | None = None
) -> bytes:
    """All of a pipe or device, read once, at most ``limit`` bytes (default
    :data:`STREAM_LIMIT`; it may never end), else :class:`StreamLimitError`.

    What is neither a zip, a compressed file nor a pickle is refused from its first bytes:
    ``/dev/zero`` is not read for gigabytes before it is refused.
    """
    chunks: list[bytes] = []
    copy_stream(path, chunks.append, name=name, limit=limit)
    return b"".join(chunks)


def copy_stream(
    path: str | os.PathLike[str],
    write: Callable[[bytes], object],
    *,
    name: str | None = None,
    limit: int | None = None,
) -> None:
    """:func:`read_stream`, handing each chunk to ``write`` as it comes (a file: the stream
    is then held once, on disk, not twice in memory)."""
    shown = name or str(path)
    limit = STREAM_LIMIT if limit is None else limit
    total = 0
    head = b""
    with open(path, "rb", buffering=0) as f:
        while True:
            chunk = f.read(min(_FEED, limit + 1 - total))
            if not chunk:
                break
            total += len(chunk)
            if len(head) < 8:
                head = (head + chunk)[:8]
                if len(head) == 8 and not _plausible(head):
                    raise _unknown(head, shown)
            if total > limit:
                raise StreamLimitError(
                    f"{shown} is a pipe or device that gave more than {limit} bytes, the most "
                    f"Amber reads from one (it may never end); save what it holds to a file "
                    f"and give that file instead"
                )
            write(chunk)


def _plausible(head: bytes) -> bool:
    """Whether a file starting with ``head`` could be an artifact, a pickle or a joblib file."""
    return head.startswith(b"PK\x03\x04") or _compression(head) is not None or _is_pickle(head)


def _decompressor(method: str) -> Any:
    if method in ("zlib", "zfile"):
        return zlib.decompressobj(zlib.MAX_WBITS)
    if method == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if method == "bz2":
        return bz2.BZ2Decompressor()
    if method in ("xz", "lzma"):
        return lzma.LZMADecompressor(lzma.FORMAT_AUTO)
    try:
        import lz4.frame
    except ImportError as exc:  # pragma: no cover - lz4 is a dependency of amber
        raise FormatError("this file is lz4-compressed; install lz4 to read it") from exc
    return lz4.frame.LZ4FrameDecompressor()


def _decompress(body: bytes, method: str, limit: int, source: str) -> bytes:
    """Inflate ``body`` without ever producing more than ``limit`` bytes.

    Input is fed in slices of ``_FEED`` bytes and output taken in steps of at most
    ``_STEP`` bytes, so neither side is ever copied whole.
    """
    engine = _decompressor(method)
    zlib_like = hasattr(engine, "unconsumed_tail")
    chunks: list[bytes] = []
    total = pos = 0
    force = False
    try:
        while not engine.eof:
            feed = engine.unconsumed_tail if zlib_like else b""
            starving = not feed if zlib_like else engine.needs_input
            if (starving or force) and not feed and pos < len(body):
                feed = body[pos : pos + _FEED]
                pos += len(feed)
            want = min(_STEP, limit + 1 - total)
            chunk = engine.decompress(feed, want)
            total += len(chunk)
            if total > limit:
                raise FormatError(
                    f"{source} is {method}-compressed and expands beyond {limit} bytes "
                    f"({len(body)} bytes compressed): refusing it as a possible decompression "
                    f"bomb. If you trust it, pass a larger max_decompressed_size"
                )
            chunks.append(chunk)
            force = not chunk and not feed
            if force and pos >= len(body):
                break  # no input left and no output coming: truncated
    except FormatError:
        raise
    except (zlib.error, OSError, EOFError, lzma.LZMAError, RuntimeError, ValueError) as exc:
        raise FormatError(f"{source} is not valid {method} data: {exc}") from exc
    if not engine.eof:
        raise FormatError(f"{source}: the {method} stream is truncated")
    trailing = len(engine.unused_data or b"") + len(body) - pos
    if trailing:
        raise FormatError(f"{source}: {trailing} bytes of trailing data follow the {method} stream")
    return b"".join(chunks)


def _zfile(raw: bytes, limit: int, source: str) -> bytes:
    """joblib < 0.10's compressed format: ``ZF``, the length in hex, then zlib data."""
    header = raw[2 : 2 + _ZFILE_LENGTH].strip()
    try:
        length = int(header, 16) if header.lower().startswith(b"0x") else -1
    except ValueError:
        length = -1
    if length < 0:
        raise FormatError(f"{source} starts like an old joblib zfile but its header is invalid")
    if length > limit:
        raise FormatError(
            f"{source} declares {length} bytes once decompressed, more than the limit of "
            f"{limit}: refusing it. If you trust it, pass a larger max_decompressed_size"
        )
    start = 2 + _ZFILE_LENGTH
    if raw[start : start + 1] == b" ":
        start += 1
    data = _decompress(raw[start:], "zfile", limit, source)
    if len(data) != length:
        raise FormatError(f"{source}: the zfile declares {length} bytes but holds {len(data)}")
    return data


def _compression(head: bytes) -> str | None:
    if head.startswith(b"ZF"):
        return "zfile"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] << 8 | head[1]) % 31 == 0:
        return "zlib"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def _is_pickle(data: bytes) -> bool:
    if data[:1] == b"\x80":
        return len(data) > 1 and data[1] <= 5
    return bool(data) and data[0] in _PROTO01_FIRST


def unconvertible(path: str | os.PathLike[str]) -> str | None:
    """Why ``path``, which is no artifact, is no pickle or joblib file either (empty, text, an
    image, ...), as a sentence without its final stop; None when it may be one, which ``amber
    convert`` can then make an artifact of. Commands that need an artifact advise converting
    only then."""
    with open(path, "rb") as f:
        head = f.read(8)
    if _plausible(head):
        return None
    return str(_unknown(head, repr(os.fspath(path)))).rstrip(".")


def _unknown(data: bytes, source: str, inside: str = "") -> FormatError:
    if not data:
        return FormatError(f"{source} is empty{inside}. {_ACCEPTS}.")
    looks = next((what for magic, what in _LOOKS_LIKE if data.startswith(magic)), None)
    what = f"it looks like {looks}" if looks else f"it starts with {data[:8]!r}"
    return FormatError(
        f"{source}{inside} is not a pickle, joblib or Amber file: {what}. {_ACCEPTS}."
    )


def _read_with_room(source: Source, name: str | None) -> _Opened | None:
    """A regular, uncompressed pickle file of at least 64 kB read into a private map of its own
    with room after it (as an artifact's stream is: ``ArtifactReader.read_with_room``), so that
    the loader splices its validation hooks in place and gives pages back as the unpickler
    consumes them. Loading a 264 MB pickle so held one copy of it where ``bytes`` held three
    (the file, the spliced stream, the unpickler's own). None for anything else.

    It is not searched for joblib's array wrappers (a pass over every byte, 70 ms on 264 MB):
    a joblib file's arrays follow their wrappers as raw bytes, which the loader's scan refuses,
    and :func:`load_foreign` then reads the file again the usual way."""
    from amber.artifact._reader import ROOM_FROM, read_with_room

    if isinstance(source, bytes | bytearray | memoryview):
        return None
    path = Path(source)
    try:
        # a pipe or a device is not even opened here: a writer on a FIFO would lose what it
        # wrote to an open that reads nothing (and they cannot be read at an offset)
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None  # _read says what is wrong
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < ROOM_FROM:
            return None  # replaced by something else since, or a small file
        head = os.pread(fd, 8, 0)
        if _compression(head) is not None or not _is_pickle(head):
            return None
        view = read_with_room(fd, st.st_size)
    finally:
        os.close(fd)
    block = view.obj
    if not isinstance(block, mmap.mmap):
        return None  # not a map of its own (no MAP_PRIVATE on this system)
    return _Opened("pickle", None, view, name or str(path), room=block)


def _names_a_wrapper(data: bytes | mmap.mmap, size: int) -> bool:
    """Whether ``data`` names joblib's array wrappers: NumpyArrayWrapper, and the NDArrayWrapper
    and ZNDArrayWrapper of old joblib. One pass for what every name ends with: a plain pickle,
    the usual file, is searched once, not twice (70 ms a pass on a 264 MB one)."""
    return data.find(b"ArrayWrapper", 0, size) >= 0 and (
        data.find(b"NumpyArrayWrapper", 0, size) >= 0 or data.find(b"NDArrayWrapper", 0, size) >= 0
    )


def _open(source: Source, max_decompressed_size: int | None, name: str | None = None) -> _Opened:
    raw, name = _read(source, name)
    if raw.startswith(b"PK\x03\x04"):
        return _Opened("amber", None, raw, name)
    compression = _compression(raw[:8])
    data = raw
    if compression is not None:
        limit = max_decompressed_size
        if limit is None:
            limit = default_decompression_limit(len(raw))
        if compression == "zfile":
            data = _zfile(raw, limit, name)
        else:
            data = _decompress(raw, compression, limit, name)
        if not _is_pickle(data):
            raise _unknown(data, name, f" (once {compression}-decompressed)")
    elif not _is_pickle(data):
        raise _unknown(data, name)
    joblib = compression == "zfile" or _names_a_wrapper(data, len(data))
    budget = pickle_budget(len(raw), max_decompressed_size) if compression else None
    return _Opened("joblib" if joblib else "pickle", compression, data, name, budget=budget)


def sniff(source: Source, *, max_decompressed_size: int | None = None) -> str:
    """Classify a file: ``"amber"`` (a ZIP container), ``"pickle"`` or ``"joblib"``.

    Compressed files are decompressed (bounded by ``max_decompressed_size``, by default
    :func:`default_decompression_limit`) to tell a plain pickle from a joblib stream.
    Raises :class:`FormatError` saying what the file looks like for anything else.

    Example
    -------
    >>> sniff("model.joblib")  # doctest: +SKIP
    'joblib'
    """
    return _open(source, max_decompressed_size).kind


# --------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class ScanReport:
    """What a foreign file would import, found without importing or constructing anything.

    ``verdict`` is ``"safe"`` when every global is on the allowlist and the stream vets
    cleanly; otherwise it starts with ``"unsafe: "``, ``"malformed: "`` or
    ``"unsupported: "`` (the multi-file joblib format of joblib < 0.10).
    """

    kind: str
    compression: str | None
    protocol: int | None
    globals: tuple[str, ...]
    untrusted: tuple[str, ...]
    verdict: str
    source: str = ""
    n_arrays: int = 0
    payload: str = ""
    """An artifact's payload format when it is not a pickle (``"torch"``, ``"keras"``...):
    its names are then the ones its manifest lists, which a load checks again."""

    @property
    def safe(self) -> bool:
        return self.verdict == "safe"

    def __str__(self) -> str:
        from amber._info import _printable

        parts = [f"{self.kind} file"]
        if self.compression:
            parts.append(f"{self.compression}-compressed")
        if self.protocol is not None:
            parts.append(f"pickle protocol {self.protocol}")
        elif self.payload:
            parts.append(
                f"{self.payload} payload (no pickle): the names its manifest lists, which "
                f"loading and `amber verify` check against the payload"
            )
        elif self.kind != "amber":
            parts.append("pickle protocol 0 or 1")
        if self.kind == "joblib":
            parts.append(f"{counted(self.n_arrays, 'array')} read by Amber itself")
        lines = [
            f"{self.source or 'file'}: {', '.join(parts)}",
            f"verdict: {self.verdict}",
            f"globals ({len(self.globals)}):",
        ]
        # a nested class is untrusted as "mod:Outer.Inner" (the form trusted= takes); a list
        # of globals may spell it "mod.Outer.Inner"
        bad = set(self.untrusted) | {_dotted(name) for name in self.untrusted}
        for name in self.globals:
            flag = "UNTRUSTED" if name in bad or _dotted(name) in bad else "ok"
            lines.append(f"  {flag:<10} {name}")
        # escaped: a hostile file's names must not move the cursor or erase the verdict
        return _printable(lines)


def _dotted(name: str) -> str:
    """``"mod:Outer.Inner"`` as ``"mod.Outer.Inner"``; a dotted name as it is."""
    module, colon, qualname = name.partition(":")
    return f"{module}.{qualname}" if colon else name


def _verdict(untrusted: tuple[str, ...], error: str | None, legacy: bool) -> str:
    if untrusted:
        also = f" (and the stream is malformed: {error})" if error else ""
        names = ", ".join(untrusted)
        return f"unsafe: {counted(len(untrusted), 'name')} outside the allowlist: {names}{also}"
    if error is not None:
        return f"malformed: {error}"
    if legacy:
        return "unsupported: written by joblib < 0.10, with arrays in companion files"
    return "safe"


def scan_file(
    path: Source,
    *,
    policy: LoadPolicy | None = None,
    max_decompressed_size: int | None = None,
    name: str | None = None,
) -> ScanReport:
    """Report what a pickle or joblib file references, without running any of it.

    Raises :class:`FormatError` when the file is not a pickle or joblib file at all (or an
    Amber artifact: use ``amber.inspect`` for those) or cannot be decompressed within the limit.
    ``name`` is how messages and the report name the file (default: its path). A pipe or
    device is read once, at most :data:`STREAM_LIMIT` bytes.

    Example
    -------
    >>> print(scan_file("model.pkl"))  # doctest: +SKIP
    model.pkl: pickle file, pickle protocol 4
    verdict: safe
    ...
    """
    policy = policy or LoadPolicy()
    opened = _open(path, max_decompressed_size, name)
    if opened.kind == "amber":
        raise FormatError(
            f"{opened.source} is an Amber artifact (a ZIP container), not a pickle; "
            f"use amber.inspect() to list what it references"
        )
    if opened.kind == "joblib":
        scan = scan_joblib(opened.whole(), budget=opened.budget)
        untrusted = scan.untrusted(policy)
        return ScanReport(
            kind="joblib",
            compression=opened.compression,
            protocol=scan.protocol,
            globals=tuple(trust_name(m, n) for m, n in scan.globals),
            untrusted=untrusted,
            verdict=_verdict(untrusted, scan.error, scan.legacy),
            source=opened.source,
            n_arrays=scan.n_arrays,
        )
    error: str | None = None
    pairs: tuple[tuple[str, str], ...] = ()
    protocol: int | None = None
    try:
        result = scan_pickle(opened.data, source=opened.source, max_memo=opened.budget)
        pairs, protocol = tuple(result.globals), result.protocol
    except FormatError as exc:
        error = str(exc)
        data = opened.data
        if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
            protocol = data[1]  # its PROTO header, though the rest could not be read
    return _pickle_report(
        "pickle", opened.compression, pairs, protocol, error, opened.source, policy
    )


def _pickle_report(
    kind: str,
    compression: str | None,
    pairs: tuple[tuple[str, str], ...],
    protocol: int | None,
    error: str | None,
    source: str,
    policy: LoadPolicy,
) -> ScanReport:
    untrusted = tuple(trust_name(m, n) for m, n in pairs if not is_allowed(m, n, policy))
    return ScanReport(
        kind=kind,
        compression=compression,
        protocol=protocol,
        globals=tuple(trust_name(m, n) for m, n in pairs),
        untrusted=untrusted,
        verdict=_verdict(untrusted, error, False),
        source=source,
    )


def scan_artifact_names(
    path: Source, payload: str, globals: list[str], untrusted: list[str]
) -> ScanReport:
    """Report on an artifact whose payload is not a pickle (a torch program or class, a Keras
    archive, a booster): the globals and untrusted names its manifest lists, as
    ``amber.inspect`` shows them and a load refuses them.

    Example
    -------
    >>> scan_artifact_names("net.amber", "torch", ["mymods.Net"], ["mymods.Net"]).safe
    False
    """
    names, bad = tuple(globals), tuple(untrusted)
    return ScanReport(
        "amber", None, None, names, bad, _verdict(bad, None, False), str(path), payload=payload
    )


def scan_artifact_stream(
    path: Source,
    stream: bytes | bytearray | memoryview | None,
    n_buffers: int,
    *,
    policy: LoadPolicy | None = None,
) -> ScanReport:
    """Report on the pickle stream of an Amber artifact (``stream=None``: no pickle payload).

    Example
    -------
    >>> scan_artifact_stream("iris.amber", stream, 3).verdict  # doctest: +SKIP
    'safe'
    """
    policy = policy or LoadPolicy()
    if stream is None:
        return ScanReport("amber", None, None, (), (), "safe", source=str(path))
    error: str | None = None
    pairs: tuple[tuple[str, str], ...] = ()
    protocol: int | None = None
    try:
        result = scan_pickle(stream, n_buffers=n_buffers, source=str(path))
        pairs, protocol = tuple(result.globals), result.protocol
    except FormatError as exc:
        error = str(exc)
    return _pickle_report("amber", None, pairs, protocol, error, str(path), policy)


# --------------------------------------------------------------------------- loading


def _validated(obj: Any, pairs: tuple[tuple[str, str], ...], source: str) -> Any:
    try:
        validate_loaded(obj, pairs)
    except (AmberError, OSError):  # clear already (as safe_loads passes them)
        raise
    except RecursionError as exc:
        raise FormatError(f"{source}: the loaded object nests too deeply to validate") from exc
    except Exception as exc:
        raise FormatError(f"{source}: validation failed: {type(exc).__name__}: {exc}") from exc
    return obj


def _guarded(source: str, step: Callable[[], Any]) -> Any:
    """Run one load step, turning any stray exception into a :class:`FormatError`."""
    try:
        return step()
    except (AmberError, OSError):  # clear already (as safe_loads passes them)
        raise
    except RecursionError as exc:
        raise FormatError(f"{source}: the pickle stream nests too deeply") from exc
    except Exception as exc:
        raise FormatError(f"{source}: cannot load: {type(exc).__name__}: {exc}") from exc


class _JoblibStream(FormatError):
    """A stream read as a plain pickle that names joblib's array wrappers."""


def _not_joblib(scan: PickleScan) -> None:
    """Refuse, as a pickle, a stream that names joblib's wrappers: a joblib file whose arrays
    are all empty, written without alignment padding (joblib before 1.2), is a valid pickle of
    wrapper objects, which only the joblib reader turns into arrays."""
    if any(is_any_wrapper_name(m, n) for m, n in scan.globals):
        raise _JoblibStream("the stream names joblib's array wrappers: it is a joblib file")


def _few_checks(budget: int) -> Callable[[PickleScan], None]:
    """Refuse a decompressed stream with more validation sites than one per 8 bytes of its
    opcode budget (:func:`~amber.security._joblib.pickle_budget`): each site is a call into
    Python, and 5.6 million dtype calls through memo copies inflate from 49 kB (a 24 s load)."""

    def vet(scan: PickleScan) -> None:
        if len(scan.hook_sites) > budget // 8:
            raise FormatError(
                f"the stream asks for {len(scan.hook_sites):,} checked objects, more than "
                f"{budget // 8:,} from a compressed file of its size: a decompression bomb? A "
                f"file of your own converts where you trust it: amber.save(pickle.load(f), "
                f"'model.amber')"
            )

    return vet


def _load_pickle(opened: _Opened, policy: LoadPolicy) -> Any:
    # safe_loads vets the stream, refuses untrusted names at once, validates each object of a
    # checked type as soon as it is built and runs validate_loaded on the result.
    vet: Callable[[PickleScan], None] | None = None if opened.room is None else _not_joblib
    if opened.budget is not None:  # (a compressed stream is never read into a room)
        vet = _few_checks(opened.budget)
    return _guarded(
        opened.source,
        lambda: safe_loads(
            opened.data,
            policy=policy,
            source=opened.source,
            release=opened.room is not None,
            room=opened.room,
            vet=vet,
            max_memo=opened.budget,
        ),
    )


def _load_joblib(opened: _Opened, policy: LoadPolicy) -> Any:
    policy.warn_if_unsafe(opened.source)
    obj, scan = _guarded(
        opened.source,
        lambda: load_joblib(
            opened.whole(), policy=policy, source=opened.source, budget=opened.budget
        ),
    )
    pairs = tuple(p for p in scan.globals if not is_wrapper_name(*p))
    return _validated(obj, pairs, opened.source)


def _not_amber(opened: _Opened) -> None:
    if opened.kind == "amber":
        raise FormatError(
            f"{opened.source} is an Amber artifact (a ZIP container); load it with amber.load"
        )


def load_pickle_file(
    path: Source, policy: LoadPolicy | None = None, *, max_decompressed_size: int | None = None
) -> Any:
    """Load a file written by ``pickle.dump`` (optionally compressed) through the allowlist.

    Example
    -------
    >>> clf = load_pickle_file("model.pkl", LoadPolicy.make())  # doctest: +SKIP
    """
    opened = _open(path, max_decompressed_size)
    _not_amber(opened)
    if opened.kind == "joblib":
        raise FormatError(
            f"{opened.source} is a joblib file (its arrays follow the pickle stream); "
            f"load it with load_joblib_file or amber.load"
        )
    return _load_pickle(opened, policy or LoadPolicy())


def load_joblib_file(
    path: Source, policy: LoadPolicy | None = None, *, max_decompressed_size: int | None = None
) -> Any:
    """Load a file written by ``joblib.dump`` (any compressor) without running joblib.

    Plain pickles are accepted too, as ``joblib.load`` accepts them.

    Example
    -------
    >>> clf = load_joblib_file("model.joblib", LoadPolicy.make())  # doctest: +SKIP
    """
    opened = _open(path, max_decompressed_size)
    _not_amber(opened)
    return _load_joblib(opened, policy or LoadPolicy())


def load_foreign(
    path: Source, policy: LoadPolicy | None = None, *, max_decompressed_size: int | None = None
) -> Any:
    """Load a pickle or joblib file, whichever it is (see :func:`sniff`).

    Example
    -------
    >>> policy = LoadPolicy.make(trusted=["mylib.MyModel"])
    >>> clf = load_foreign("old_model.pkl", policy)  # doctest: +SKIP
    """
    opened = _read_with_room(path, None) or _open(path, max_decompressed_size)
    _not_amber(opened)
    policy = policy or LoadPolicy()
    if opened.kind == "joblib":
        return _load_joblib(opened, policy)
    if opened.room is None:
        return _load_pickle(opened, policy)
    try:
        return _load_pickle(opened, policy)
    except (FormatError, UntrustedTypeError):
        # read without the search for joblib's wrappers: if the file names them, it is a
        # joblib file (refused as a pickle at its first array), read again as one
        again = _open(path, max_decompressed_size)
        if again.kind != "joblib":
            raise
        return _load_joblib(again, policy)
