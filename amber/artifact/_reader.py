"""Reading an artifact: directory and manifest are vetted first, every entry read is verified."""

from __future__ import annotations

import contextlib
import io
import math
import mmap as _mmap
import os
import threading
import zlib
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from amber.artifact import _codec, _lz4, _nodes, _treecodec, _writeback, _zip
from amber.artifact._digest import (
    blake3_hex,
    crc32,
    xxh3_hasher,
    xxh3_hex,
    xxh3_library,
    xxh3_many,
)
from amber.artifact._manifest import MANIFEST_NAME, PARTS_KEY, SIGNATURE_NAME, decode
from amber.errors import FormatError, IntegrityError

__all__ = [
    "ROOM_FROM",
    "ArtifactReader",
    "NotAnArtifact",
    "ReadAhead",
    "aligned_empty",
    "read_with_room",
]

_ZIP_MAGIC = b"PK\x03\x04"
_MAX_PREAD = 0x7FFFF000  # Linux transfers at most this much per read call
# Files up to this size are read whole with one call: fewer system calls for small models, and
# their arrays are views of that one writable buffer.
_READ_WHOLE_MAX = 4 << 20


# Buffers from this size up are anonymous memory maps of their own: page-aligned, so no slack
# for alignment and no allocator header, and no more pages than the bytes need (a buffer from
# malloc, padded for alignment, takes one page more than pickle's copy of the same array).
_MAP_FROM = 1 << 20
# Streams from this size up are read with room to be rewritten in place (read_with_room): below
# it, a map's system calls cost more than a copy of the stream.
ROOM_FROM = 64 << 10
# Entries from this size up, read into a fresh buffer, are checked a part at a time as they
# arrive, while each part is still in the cache: 264 MB read and checked in 99-101 ms instead of
# 117-126 (read whole, then hashed from memory at 8.8 GB/s).
_CHECK_AS_READ_FROM = 1 << 20
_CHECK_STEP = 256 << 10
# Memory-mapped entries checked ahead (check_ahead) on two threads when they add up to this much
_CHECK_AHEAD_FROM = 8 << 20
# Pages are faulted in ahead of the read (MADV_POPULATE_WRITE) below this size only: larger
# buffers get huge pages, which the read faults in faster than the advice does (264 MB: 99 ms
# read in 256 kB parts with no advice, 105-107 ms with it; 1-3 MB: 0.33-0.75 ms with, 0.5-0.85
# without).
_POPULATE_BELOW = 8 << 20
_PRIVATE_MAP = getattr(_mmap, "MAP_PRIVATE", None)
_HUGEPAGE = getattr(_mmap, "MADV_HUGEPAGE", None)
_POPULATE_WRITE = getattr(_mmap, "MADV_POPULATE_WRITE", 23)
# A load reads its buffer entries (and decodes LZ4 and nodes-lz4 ones) on a thread of its own,
# ahead of the unpickler (ReadAhead), when there are at least this many of them holding at least
# this much (a thread takes about 0.1 ms to start), at most _AHEAD_WINDOW bytes ahead of it: a
# decision tree copies its node array, so an entry read ahead is held twice until it is taken.
_AHEAD_MIN_ENTRIES = 4
_AHEAD_FROM = 1 << 20
_AHEAD_WINDOW = 4 << 20


def aligned_empty(size: int, alignment: int = _zip.ALIGNMENT, *, spare: int = 0) -> memoryview:
    """A writable, uninitialised byte buffer of ``size`` bytes whose start is aligned.

    Large buffers are private anonymous maps (huge pages where the kernel grants them, as numpy
    asks for its own large arrays), with ``spare`` bytes reserved after them (address space
    only until written: the view covers ``size``, the map ``size + spare``); smaller ones are
    bytearrays. Either is freed when the last view of it goes.
    """
    if (size >= _MAP_FROM or spare) and _PRIVATE_MAP is not None and alignment <= _mmap.PAGESIZE:
        block = _mmap.mmap(-1, size + spare, flags=_PRIVATE_MAP)
        if _HUGEPAGE is not None:
            # the bytes only: a huge page reaching into the spare room would count 2 MB resident
            # for the few bytes of it that are used
            with contextlib.suppress(OSError):
                block.madvise(_HUGEPAGE, 0, size - size % _mmap.PAGESIZE)
        # the pages the read will fill, faulted in by one call rather than one trap each
        # (Linux 5.14+; elsewhere the read faults them): see _POPULATE_BELOW
        if size < _POPULATE_BELOW:
            with contextlib.suppress(OSError, OverflowError):
                block.madvise(_POPULATE_WRITE, 0, size)
        return memoryview(block)[:size]
    # a bytearray, uninitialised: numpy.empty would take a page of numpy's own memory (its
    # small-allocation cache) the first time a small size is used, a page pickle never takes
    return _writeback.aligned(size, alignment)


def _room(size: int) -> int:
    """The spare bytes reserved after a stream of ``size`` bytes that its validation hooks are
    spliced into in place (address space only, until written)."""
    return size // 2 + _MAP_FROM


def read_with_room(fd: int, size: int) -> memoryview:
    """The first ``size`` bytes of ``fd`` in a private map of their own with room after them,
    as :meth:`ArtifactReader.read_with_room` reads an artifact's stream."""
    out = aligned_empty(size, spare=_room(size))
    _pread_into(fd, out, 0)
    return out


def _pread_into(fd: int, out: memoryview, offset: int) -> None:
    """Fill ``out`` from ``fd`` at ``offset``.

    One thread: a helper thread reading half of a large buffer saved a quarter of the time
    (264 MB in 31-36 ms instead of 40-42), but its stack and malloc arena stay in the process,
    three pages that made the first load's peak memory exceed pickle's.
    """
    done = 0
    total = out.nbytes
    while done < total:
        n = os.preadv(fd, [out[done : done + _MAX_PREAD]], offset + done)
        if n <= 0:
            raise IntegrityError(
                f"file ended while reading bytes {offset + done}..{offset + total}: it is "
                f"truncated; restore it from its source"
            )
        done += n


class NotAnArtifact(FormatError):
    """The file does not start like a zip: it may be a pickle or joblib file."""


class ArtifactReader:
    """An open artifact. ``mmap=True`` maps the file and hands out views into it.

    The map is private and copy-on-write (``MAP_PRIVATE``): pages are shared with the page cache
    (and with every other process mapping the file) until someone writes to them; a write (a
    model updated in place, ``partial_fit``) lands in a private copy of that page and never in
    the file. Compiled code that writes through raw pointers therefore cannot crash the process
    or corrupt the artifact, and libraries that insist on writable buffers work unchanged.

    Every :meth:`read` verifies the entry's xxh3-128 checksum (``strong=True``: its blake3
    digest) before returning it; nothing unverified reaches a decoder or the unpickler.
    """

    def __init__(self, path: str | os.PathLike[str], *, mmap: bool = False) -> None:
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no such file: {str(self.path)!r}; check the path and the working folder"
            ) from None
        except IsADirectoryError:
            raise IsADirectoryError(f"{str(self.path)!r} is a folder, not a model file") from None
        try:
            self._open(mmap)
        except BaseException:
            os.close(self._fd)
            raise

    def _open(self, use_mmap: bool) -> None:
        size = os.fstat(self._fd).st_size
        self.file_size = size
        self._map: _mmap.mmap | None = None
        # entries check_ahead has checked, until read: their stored bytes
        self._checked: dict[str, memoryview] = {}
        self._mapview: memoryview | None = None  # the whole file: a map, or one read buffer
        if use_mmap and size:
            self._map = _mmap.mmap(self._fd, 0, access=_mmap.ACCESS_COPY)
            self._mapview = memoryview(self._map)
        elif size <= _READ_WHOLE_MAX:
            # from the heap even above _MAP_FROM: the allocator keeps a freed block of this size
            # for the next one, where a fresh map's pages are faulted in at every load (a 3.3
            # MB file: 0.15 ms read into the heap's block, 1.35 ms into a new map)
            self._mapview = memoryview(_writeback.aligned(size, _zip.ALIGNMENT))
            _pread_into(self._fd, self._mapview, 0)
        if self._slice(4, 0) != _ZIP_MAGIC:
            raise NotAnArtifact(
                f"{str(self.path)!r} is not an Amber artifact (it does not start with a zip "
                f"header). Pickle and joblib files are loaded with amber.load too; anything "
                f"else must be converted first."
            )
        self.zip_entries = _zip.read_directory(self._slice, size)
        entry = self.zip_entries.get(MANIFEST_NAME)
        if entry is None:  # (before any rule of Amber's own zips: another library's zip)
            raise FormatError(
                f"{str(self.path)!r} is a zip file but has no {MANIFEST_NAME}: it is not an Amber "
                f"artifact"
            )
        # the last entry ends where the directory begins (no hidden bytes); reading the
        # manifest below checks that when the manifest is last, as Amber writes it unsigned
        # (read_directory keeps the entries in file order)
        last = next(reversed(self.zip_entries.values()), None)
        if last is not None and last.name != MANIFEST_NAME:
            if self._mapview is not None:
                _zip.data_offset(self._mapview[last.header_offset : last.limit], last)
            else:
                _zip.read_data_offset(self._fd, last)
        raw = self._raw(entry)
        if zlib.crc32(raw) != entry.crc32:
            raise IntegrityError(
                f"the manifest of {str(self.path)!r} fails its CRC-32 check: the file is "
                f"corrupted; restore it from its source"
            )
        self.manifest_bytes = bytes(raw)
        self.manifest: dict[str, Any] = decode(self.manifest_bytes)
        self.entries: dict[str, dict[str, Any]] = self.manifest["entries"]
        parts = self.manifest.get(PARTS_KEY)
        #: the XXH3-128 digests of large entries' parts, and the parts' size
        self.parts: dict[str, list[str]] = parts["digests"] if parts else {}
        self.part_size: int = parts["part_size"] if parts else 0
        extra = self.zip_entries.keys() - self.entries.keys() - {MANIFEST_NAME, SIGNATURE_NAME}
        missing = self.entries.keys() - self.zip_entries.keys()
        if extra or missing:
            raise IntegrityError(
                f"{str(self.path)!r}: the zip holds entries the manifest does not list "
                f"({sorted(extra)}) or lacks entries it lists ({sorted(missing)}); the file was "
                f"altered after it was saved"
            )
        for name, rec in self.entries.items():
            if self.zip_entries[name].size != rec["stored_size"]:
                raise IntegrityError(
                    f"entry {name!r} is {self.zip_entries[name].size} bytes in the zip but "
                    f"{rec['stored_size']} in the manifest; the file was altered"
                )

    # -- raw access -------------------------------------------------------------------------
    def _slice(self, n: int, offset: int) -> bytes | memoryview:
        if self._mapview is not None:
            return self._mapview[offset : offset + n]
        return os.pread(self._fd, n, offset)

    def _raw(self, entry: _zip.ZipEntry, spare: int = 0) -> memoryview:
        """The stored bytes of one zip entry: a view into the map, or a fresh aligned buffer.

        ``spare`` reserves that many bytes after a fresh buffer (see :meth:`read_with_room`).
        """
        if self._mapview is not None:
            start = _zip.data_offset(self._mapview[entry.header_offset : entry.limit], entry)
            return self._mapview[start : start + entry.size]
        out = aligned_empty(entry.size, spare=spare)
        # (one call moves at most _MAX_PREAD bytes: a larger entry is read in parts)
        if entry.size >= _MAX_PREAD // 2 or not _zip.read_packed(self._fd, entry, out):
            _pread_into(self._fd, out, _zip.read_data_offset(self._fd, entry))
        return out

    def _record(self, name: str) -> dict[str, Any]:
        """The manifest's record of a listed entry (a name from the manifest: vetted here)."""
        rec = self.entries.get(name) if isinstance(name, str) else None
        if rec is None:
            raise FormatError(f"{str(self.path)!r} has no entry {name!r:.100}")
        return rec

    def raw_entry(self, name: str) -> memoryview:
        """The stored (possibly compressed) bytes of a listed entry, unverified."""
        self._record(name)
        return self._raw(self.zip_entries[name])

    def raw_signature(self) -> bytes | None:
        entry = self.zip_entries.get(SIGNATURE_NAME)
        return None if entry is None else bytes(self._raw(entry))

    # -- verified access --------------------------------------------------------------------
    def _check(self, name: str, stored: memoryview, strong: bool) -> None:
        if not strong and name in self.parts:  # (on two threads: bytes already in memory)
            self._check_pieces(self._pieces(name, stored))
        else:
            self._check_whole(name, stored, strong)

    def _check_whole(self, name: str, stored: memoryview, strong: bool) -> None:
        self._compare(name, blake3_hex(stored) if strong else xxh3_hex(stored), strong)

    def _check_pieces(self, pieces: list[tuple[str, memoryview, str]]) -> None:
        digests = xxh3_many([view for _, view, _ in pieces])
        for (name, _, expected), digest in zip(pieces, digests, strict=True):
            if digest != expected:
                self._mismatch(name, strong=False)

    def _compare(self, name: str, digest: str, strong: bool) -> None:
        if digest != self.entries[name]["blake3" if strong else "xxh3_128"]:
            self._mismatch(name, strong)

    def _mismatch(self, name: str, strong: bool) -> NoReturn:
        raise IntegrityError(
            f"entry {name!r} of {str(self.path)!r} fails its "
            f"{'blake3' if strong else 'xxh3-128'} check: the bytes differ from the ones "
            f"saved (corruption or tampering); restore the file from its source"
        )

    def check_ahead(self, names: list[str]) -> None:
        """Check these entries' xxh3-128 now, on two threads, so that :meth:`read` need not.

        Memory-mapped artifacts only, where checking reads the bytes in place (the page cache):
        hashing is most of such a load, and the entries are otherwise checked one at a time, as
        the unpickler reaches them. A fresh read checks each part as it arrives instead.
        """
        if self._map is None:
            return
        names = [n for n in names if n not in self._checked]
        for name in names:
            self._record(name)  # (a name the manifest lists)
        views = [self._raw(self.zip_entries[n]) for n in names]
        if sum(v.nbytes for v in views) < _CHECK_AHEAD_FROM:
            return
        # a large entry's parts, when the manifest has their digests, go to either thread
        self._check_pieces(
            [
                piece
                for name, view in zip(names, views, strict=True)
                for piece in self._pieces(name, view)
            ]
        )
        for name, view in zip(names, views, strict=True):
            self._checked[name] = view

    def _pieces(self, name: str, stored: memoryview) -> list[tuple[str, memoryview, str]]:
        """What checks ``stored`` with XXH3-128: its parts and their digests if the manifest
        has them, else the whole and its digest (name, bytes, expected digest)."""
        parts = self.parts.get(name)
        if parts is None:
            return [(name, stored, self.entries[name]["xxh3_128"])]
        step = self.part_size
        return [(name, stored[i * step : (i + 1) * step], d) for i, d in enumerate(parts)]

    def _stored(self, name: str, strong: bool, spare: int = 0) -> memoryview:
        """The stored bytes of a listed entry, verified (see :meth:`_raw` for ``spare``)."""
        checked = None if strong else self._checked.pop(name, None)
        if checked is not None:
            return checked
        entry = self.zip_entries[name]
        if strong or self._mapview is not None or entry.size < _CHECK_AS_READ_FROM:
            stored = self._raw(entry, spare)
            self._check(name, stored, strong)
            return stored
        out = aligned_empty(entry.size, spare=spare)
        start = _zip.read_data_offset(self._fd, entry)
        hasher = xxh3_hasher()
        for done in range(0, entry.size, _CHECK_STEP):
            part = out[done : done + _CHECK_STEP]
            _pread_into(self._fd, part, start + done)
            hasher.update(part)
        self._compare(name, hasher.hexdigest(), strong=False)
        return out

    def read(self, name: str, *, strong: bool = False) -> memoryview:
        """Verified, decompressed bytes of one entry.

        When the artifact is memory-mapped and the entry is stored uncompressed, the view points
        into the copy-on-write map (no copy); otherwise it is a fresh buffer.
        """
        rec = self._record(name)
        stored = self._stored(name, strong)
        codec = rec["compression"]
        if codec == "none":
            return stored
        if codec not in _codec.CODECS:
            raise FormatError(
                f"entry {name!r} of {str(self.path)!r} is compressed with {codec!r}, a codec "
                f"this version of Amber does not know: the file was written by a newer Amber. "
                f"Upgrade Amber (pip install -U amber) to read it"
            )
        return _codec.decompress(codec, stored, rec["size"], name)

    def read_with_room(self, name: str) -> tuple[memoryview, _mmap.mmap | None]:
        """:meth:`read`, into a private map of its own with room reserved after the bytes.

        Returns the verified bytes and, when they are the start of such a map, the map (its
        spare pages, half the entry's size plus 1 MiB, cost nothing until written), so that a
        caller can rewrite the entry in place and give pages back as it consumes them; else
        ``None`` (a memory-mapped artifact, a small or compressed entry, a small file read
        whole).
        """
        rec = self._record(name)
        entry = self.zip_entries[name]
        if rec["compression"] != "none" or self._mapview is not None or entry.size < ROOM_FROM:
            return self.read(name), None
        stored = self._stored(name, False, _room(entry.size))
        block = stored.obj
        return stored, block if isinstance(block, _mmap.mmap) else None

    def read_array(self, name: str) -> np.ndarray:
        """A ``.npy`` entry as an array: a plain dtype whose header's shape accounts for exactly
        the bytes that follow it (pickled object arrays, and shapes the data does not fill,
        such as 300 million zero-byte items, are refused)."""
        data = self.read(name)
        fmt = np.lib.format
        try:
            stream = io.BytesIO(data)
            version = fmt.read_magic(stream)
            read_header = (
                fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            )
            shape, _fortran, dtype = read_header(stream)
            count = math.prod(shape)
            if (
                dtype.hasobject
                or dtype.itemsize == 0
                or count * dtype.itemsize != len(data) - stream.tell()
            ):
                raise ValueError(
                    f"its header promises {shape} of {dtype} but {len(data) - stream.tell()} "
                    f"bytes follow"
                )
            stream.seek(0)
            array: np.ndarray = fmt.read_array(stream, allow_pickle=False)
            return array
        except (ValueError, OSError, TypeError) as exc:
            raise FormatError(f"entry {name!r} is not a plain .npy array: {exc}") from exc

    def verify_all(self, *, strong: bool = True) -> None:
        """Check every entry's digest, reading each once (which checks its local header, its
        alignment and its extent too); ``strong`` also checks the CRC-32 the zip layer records,
        so that what passes here passes any zip tool's test, and that every byte outside the
        entries' data is what Amber writes (:func:`~amber.artifact._zip.check_layout`), so that
        a signature, which covers the manifest and through it every digest, leaves no byte of
        the file free to change but the DOS time stamp."""
        for name in self.entries:
            entry = self.zip_entries[name]
            stored = self._raw(entry)
            # the whole entry's digest, and its parts' (what a load checks instead) if any
            self._check_whole(name, stored, strong)
            if name in self.parts:
                self._check_pieces(self._pieces(name, stored))
            if strong and crc32(stored) != entry.crc32:
                raise IntegrityError(
                    f"entry {name!r} of {str(self.path)!r} fails the CRC-32 check of its zip "
                    f"header although its digests match: the file was altered after it was "
                    f"saved; restore it from its source"
                )
        if strong:  # (after the entries: a damaged header gets its own message first)
            signature = self.zip_entries.get(SIGNATURE_NAME)
            # (the manifest's CRC-32 is checked on opening; the signature's, by nothing else)
            if signature is not None and crc32(self._raw(signature)) != signature.crc32:
                raise IntegrityError(
                    f"the signature entry ({SIGNATURE_NAME}) of {str(self.path)!r} fails the "
                    f"CRC-32 check of its zip header: the file was altered after it was "
                    f"signed; restore it from its source"
                )
            _zip.check_layout(self._slice, self.zip_entries, self.file_size)

    def read_ahead(self, names: list[str]) -> ReadAhead | None:
        """Start reading and decoding the entries ``names`` on a thread of their own.

        Entries are read there when this reader reads them one at a time (a file larger than
        ``_READ_WHOLE_MAX``, not memory-mapped) and are under ``_CHECK_AS_READ_FROM`` bytes; LZ4
        and nodes-lz4 entries are decoded there. Each is then handed out by
        :meth:`ReadAhead.read`, verified, when the unpickler reaches it. ``None`` when too few
        qualify to be worth a thread, and for a memory-mapped artifact (whose bytes are checked
        where they lie, in the page cache, and decoded right after).
        """
        if self._map is not None:
            return None
        chosen: list[tuple[str, dict[str, Any], _zip.ZipEntry, int | None]] = []
        total = 0
        for name in dict.fromkeys(names):
            rec = self._record(name)
            codec = rec["compression"]
            entry = self.zip_entries[name]
            head = None
            if codec == "none":
                if self._mapview is not None or entry.size >= _CHECK_AS_READ_FROM:
                    continue  # (a view of the file read whole; a large entry, checked as read)
                head = _zip.packed_head(entry)
                if head is None:
                    continue
            elif codec not in _AHEAD_CODECS:
                continue
            chosen.append((name, rec, entry, head))
            total += rec["size"]
        if len(chosen) < _AHEAD_MIN_ENTRIES or total < _AHEAD_FROM:
            return None
        jobs: list[tuple[Any, ...]] = []
        slots: dict[str, tuple[int, memoryview, bytearray | None]] = {}
        for name, rec, entry, head in chosen:
            codec, size = rec["compression"], rec["size"]
            out = _codec.output(size)
            # the thread checks the bytes it reads or decodes (XXH3-128), unless the manifest
            # has digests of the entry's parts, which ReadAhead.read checks instead
            hashed = _THREAD_HASHES and name not in self.parts
            header = None
            if head is not None:
                header = bytearray(head)
                job: tuple[Any, ...] = (
                    _READ_JOB, self._fd, entry.header_offset, header, out, 2 if hashed else 0
                )  # fmt: skip
            else:
                # (from a file read whole, a view: its digest is checked before it is decoded,
                # by the thread or here)
                stored = self._raw(entry) if hashed else self._stored(name, False)
                try:
                    if codec == "lz4":
                        _lz4.check_size(stored, size)
                        job = (_LZ4_JOB, stored, out, int(hashed))
                    else:
                        job = (*_treecodec.job(stored, out), int(hashed))
                except ValueError as exc:
                    if hashed:
                        self._check(name, stored, False)  # (damaged: say so in those words)
                    raise _codec.failure(name, codec, exc) from exc
            slots[name] = (len(jobs), out, header)
            jobs.append(job)
        return ReadAhead(self, _nodes.Batch(jobs, _AHEAD_WINDOW), slots)

    @property
    def mmapped(self) -> bool:
        return self._map is not None

    def close(self) -> None:
        # The map stays alive as long as arrays view it; only the descriptor is released here.
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ArtifactReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LZ4_JOB, _READ_JOB = 0, 2  # kinds of job in _nodes.Batch (a nodes-lz4 entry's: _treecodec.JOB)
_AHEAD_CODECS = frozenset({"lz4", _treecodec.CODEC})
# whether a Batch's thread can hash what it reads: XXH3-128 from the xxhash package's extension,
# if it is there and gives what the package gives
_THREAD_HASHES = _nodes.use_xxh3(xxh3_library()) and all(
    _nodes.xxh3_hex(b) == xxh3_hex(b) for b in (b"", b"amber", bytes(range(256)) * 5)
)


class ReadAhead:
    """Entries read and decoded on a thread of their own (:meth:`ArtifactReader.read_ahead`).

    The thread works through them in order, without the GIL, while the unpickler builds the
    objects that come before them. :meth:`close` stops it (after the entry in hand) and waits
    for it: call it before the reader is closed, whatever happened.
    """

    def __init__(
        self,
        reader: ArtifactReader,
        batch: Any,
        slots: dict[str, tuple[int, memoryview, bytearray | None]],
    ) -> None:
        self._reader = reader
        self._batch = batch
        self._slots = slots
        self._thread = threading.Thread(target=batch.run, name="amber-read", daemon=True)
        self._thread.start()

    def __contains__(self, name: str) -> bool:
        return name in self._slots

    def read(self, name: str) -> memoryview:
        """The verified, decoded bytes of ``name`` (an entry given to the batch), once only."""
        index, out, header = self._slots.pop(name)
        reader = self._reader
        batch = self._batch
        try:
            batch.wait(index)
        except ValueError as exc:
            if header is not None:
                return reader.read(name)  # (a short or failed read: as read() finds and says it)
            digest = batch.digest(index)
            if digest is not None:  # (damaged: an IntegrityError says it in the usual words)
                reader._compare(name, digest, strong=False)
            raise _codec.failure(name, reader.entries[name]["compression"], exc) from None
        if header is not None and not _zip.packed_header_ok(header, reader.zip_entries[name]):
            return reader.read(name)
        digest = batch.digest(index)
        if digest is not None:
            reader._compare(name, digest, strong=False)
        elif header is not None:
            reader._check(name, out, False)
        return out

    def close(self) -> None:
        """Stop the thread, and wait for it unless it is past its last job: then it no longer
        uses the file or the buffers, and only has to take the GIL to return."""
        batch = self._batch
        if not batch.finished:
            batch.cancel()
            self._thread.join()
        self._slots.clear()
