"""A minimal, strict ZIP container: stored entries only, 64-byte aligned data, ZIP64 when needed.

Python's :mod:`zipfile` tolerates junk before the archive, cannot align entry data and parses
more than Amber needs. This module writes exactly the subset of ZIP that Amber uses (every entry
*stored*, its data aligned with a padding extra field as Android's ``zipalign`` does) and reads it
back refusing anything else: data before the first entry or after the end record, overlapping or
duplicate entries, encrypted or deflated entries, unsafe names. Any zip tool can list and extract
an Amber file; Amber reads only Amber-shaped zips.
"""

from __future__ import annotations

import os
import re
import struct
import time
from collections.abc import Callable, Mapping
from typing import BinaryIO, NamedTuple

from amber.artifact import _writeback
from amber.errors import FormatError, IntegrityError

__all__ = [
    "ALIGNMENT",
    "ZipEntry",
    "ZipWriter",
    "check_layout",
    "check_name",
    "data_offset",
    "read_data_offset",
    "read_directory",
]

ALIGNMENT = 64
_LOCAL = struct.Struct("<IHHHHHIIIHH")  # 30 bytes
_CRC_AT = 14  # where a local header holds the CRC-32
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # 46 bytes
_EOCD = struct.Struct("<IHHHHIIH")  # 22 bytes
_EOCD64 = struct.Struct("<IQHHIIQQQQ")  # 56 bytes
_LOCATOR64 = struct.Struct("<IIQI")  # 20 bytes
_SIG_LOCAL = 0x04034B50
_SIG_CENTRAL = 0x02014B50
_SIG_EOCD = 0x06054B50
_EOCD_MAGIC = struct.pack("<I", _SIG_EOCD)
_SIG_EOCD64 = 0x06064B50
_SIG_LOCATOR64 = 0x07064B50
_ZIP64_EXTRA = 0x0001
_ALIGN_EXTRA = 0xD935  # the id zipalign uses for its padding field
_FLAG_UTF8 = 0x0800
_U32 = 0xFFFFFFFF
_U16 = 0xFFFF
_MAX_ENTRIES = 1_000_000
# A file's bytes go to disk in chunks of this size while the rest is still being written (see
# ZipWriter._written): the copy into the page cache and the disk's write overlap, and the final
# fsync waits for the last chunk only. 8-16 MB chunks took a 264 MB write + fsync from 172-193 ms
# to 124-136 ms on the reference machine; 64 MB chunks were no better than none.
WRITEBACK_CHUNK = 16 << 20
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*")


def check_name(name: str) -> str:
    """Refuse entry names that could escape a folder when extracted or confuse a reader."""
    # (every part starts with a letter, a digit or '_', so none is '.' or '..')
    if len(name) > 512 or not _NAME_RE.fullmatch(name):
        raise FormatError(
            f"unsafe or malformed entry name {name!r}: entry names are relative paths of letters, "
            f"digits, '_', '.', '-' and '/', without '..'. The file was not written by Amber or "
            f"has been altered."
        )
    return name


def _dos_time(ts: float) -> tuple[int, int]:
    t = time.localtime(ts)
    year = max(t.tm_year, 1980)
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), ((year - 1980) << 9) | (
        t.tm_mon << 5
    ) | t.tm_mday


class ZipEntry(NamedTuple):
    """One entry as the central directory records it (and as the local header confirmed)."""

    name: str
    header_offset: int
    size: int
    crc32: int
    limit: int  # where the next entry (or the central directory) begins


def _local_header(name: bytes, offset: int, size: int, crc32: int, when: tuple[int, int]) -> bytes:
    """The local header this writer puts before an entry's data at ``offset`` (its name and
    extra fields included: ZIP64 sizes when needed, then zero padding to a 64-byte boundary)."""
    zip64 = size >= _U32
    extra = struct.pack("<HHQQ", _ZIP64_EXTRA, 16, size, size) if zip64 else b""
    extra += _padding(_pad(offset, len(name), size))
    field = _U32 if zip64 else size
    version = 45 if zip64 else 20
    fixed = _LOCAL.pack(
        _SIG_LOCAL, version, _FLAG_UTF8, 0, *when, crc32, field, field, len(name), len(extra)
    )
    return fixed + name + extra


def _pad(offset: int, name_len: int, size: int) -> int:
    """Bytes of padding field in the local header at ``offset`` (0, or 4 to 67)."""
    pad = (-(offset + _LOCAL.size + name_len + (20 if size >= _U32 else 0))) % ALIGNMENT
    return pad + ALIGNMENT if 0 < pad < 4 else pad  # a field needs at least its 4-byte header


def _padding(pad: int) -> bytes:
    return struct.pack("<HH", _ALIGN_EXTRA, pad - 4) + b"\0" * (pad - 4) if pad else b""


def _central_record(entry: ZipEntry, pad: int, when: tuple[int, int]) -> bytes:
    """The central directory record of ``entry`` whose local header holds ``pad`` bytes of
    padding."""
    encoded = entry.name.encode("ascii")
    size_field, off_field = entry.size, entry.header_offset
    values = []
    if entry.size >= _U32:
        values += [entry.size, entry.size]
        size_field = _U32
    if entry.header_offset >= _U32:
        values.append(entry.header_offset)
        off_field = _U32
    z64 = b""
    if values:
        z64 = struct.pack(f"<HH{len(values)}Q", _ZIP64_EXTRA, 8 * len(values), *values)
    extra = z64 + _padding(pad)
    fixed = _CENTRAL.pack(
        _SIG_CENTRAL, (3 << 8) | 45, 45 if z64 else 20, _FLAG_UTF8, 0, *when, entry.crc32,
        size_field, size_field, len(encoded), len(extra), 0, 0, 0, 0o100644 << 16, off_field,
    )  # fmt: skip
    return fixed + encoded + extra


def _end_records(n: int, cd_start: int, cd_size: int) -> bytes:
    """The end records after a central directory of ``n`` entries (ZIP64 ones when needed)."""
    end = cd_start + cd_size
    out = b""
    if n >= _U16 or cd_start >= _U32 or cd_size >= _U32:
        out += _EOCD64.pack(_SIG_EOCD64, 44, (3 << 8) | 45, 45, 0, 0, n, n, cd_size, cd_start)
        out += _LOCATOR64.pack(_SIG_LOCATOR64, 0, end, 1)
    return out + _EOCD.pack(
        _SIG_EOCD, 0, 0, min(n, _U16), min(n, _U16), min(cd_size, _U32), min(cd_start, _U32), 0
    )


class ZipWriter:
    """Append stored entries to a binary file and finish with a central directory.

    The caller computes each entry's CRC-32 (it already walks the bytes to hash them), so data
    is written once, straight from the caller's buffer, with no copy.
    """

    def __init__(self, fileobj: BinaryIO) -> None:
        self._f = fileobj
        self._offset = 0
        try:  # a real file: its bytes are sent to disk as they are written
            self._fd: int | None = fileobj.fileno()
            self._base = fileobj.tell()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: a BytesIO
            self._fd = None
            self._base = 0
        self._sent = 0  # bytes up to this offset have been handed to the disk
        self._entries: list[tuple[ZipEntry, int]] = []  # with the padding its header holds
        self._index: dict[str, int] = {}  # entry name -> its position in _entries
        self._when = _dos_time(time.time())  # (time, date) of every header

    @property
    def offset(self) -> int:
        return self._offset

    def add(self, name: str, data: memoryview | bytes, crc32: int) -> ZipEntry:
        """Write one stored entry whose data starts on a 64-byte boundary."""
        check_name(name)
        if name in self._index:
            raise ValueError(f"duplicate entry name {name!r}")
        mv = memoryview(data).cast("B")
        size = mv.nbytes
        encoded = name.encode("ascii")
        header = _local_header(encoded, self._offset, size, crc32, self._when)
        self._f.write(header)
        data_offset = self._offset + len(header)
        entry = ZipEntry(name, self._offset, size, crc32, data_offset + size)
        if self._fd is None or size < WRITEBACK_CHUNK:
            if size:
                self._f.write(mv)
            self._written(data_offset + size)
        else:
            for start in range(0, size, WRITEBACK_CHUNK):
                self._f.write(mv[start : start + WRITEBACK_CHUNK])
                self._written(data_offset + min(size, start + WRITEBACK_CHUNK))
        self._offset = data_offset + size
        self._index[name] = len(self._entries)
        self._entries.append((entry, _pad(entry.header_offset, len(encoded), size)))
        return entry

    def _written(self, end: int) -> None:
        """Bytes up to ``end`` are written: start sending the last full chunk to disk."""
        if self._fd is None or end - self._sent < WRITEBACK_CHUNK:
            return
        self._f.flush()
        _writeback.start(self._fd, self._base + self._sent, end - self._sent)
        self._sent = end

    def set_crc32(self, crcs: Mapping[str, int]) -> None:
        """Record the CRC-32s of entries written with a placeholder (computed meanwhile)."""
        for name, crc32 in crcs.items():
            k = self._index[name]
            entry, pad = self._entries[k]
            self._f.seek(entry.header_offset + _CRC_AT)
            self._f.write(struct.pack("<I", crc32))
            self._entries[k] = (entry._replace(crc32=crc32), pad)
        self._f.seek(self._offset)

    def close(self) -> int:
        """Write the central directory and the end records (ZIP64 ones when needed).

        Returns the length of the whole zip file.
        """
        cd_start = self._offset
        directory = b"".join(_central_record(e, pad, self._when) for e, pad in self._entries)
        self._f.write(directory)
        tail = _end_records(len(self._entries), cd_start, len(directory))
        self._f.write(tail)
        self._offset = -1
        return cd_start + len(directory) + len(tail)


def corrupt(msg: str) -> FormatError:
    return FormatError(
        f"{msg}. The file is not an intact Amber artifact (truncated, corrupted, or not made by "
        f"Amber); restore it from its source or re-save the model."
    )


def read_directory(
    read: Callable[[int, int], bytes | memoryview], file_size: int
) -> dict[str, ZipEntry]:
    """Parse and vet the central directory of an Amber zip; ``read(n, offset)`` reads the file.

    The end-of-central-directory record must end the file exactly, the central directory must
    start where the entries end, and every entry must be stored, unencrypted, safely named,
    unique, and lie inside the data area without overlapping another.
    """
    if file_size < _EOCD.size:
        raise corrupt(f"file is {file_size} bytes, too short for a zip end record")
    # Amber writes no archive comment, so the end record is the last 22 bytes (plus the ZIP64
    # records before it); search further back only to explain what is wrong.
    tail_len = min(file_size, _EOCD.size + _LOCATOR64.size + _EOCD64.size)
    tail = bytes(read(tail_len, file_size - tail_len))
    pos = tail_len - _EOCD.size
    if len(tail) != tail_len:
        raise corrupt("file shrank while being read")
    if tail[pos : pos + 4] != _EOCD_MAGIC:
        tail_len = min(file_size, _EOCD.size + _LOCATOR64.size + _EOCD64.size + _U16)
        tail = bytes(read(tail_len, file_size - tail_len))
        pos = tail.rfind(_EOCD_MAGIC, 0, tail_len - _EOCD.size + 4)
    if pos < 0:
        raise corrupt(
            "no zip end-of-central-directory record found (the end of the file is missing)"
        )
    (_, disk, cd_disk, n_disk, n, cd_size, cd_start, comment_len) = _EOCD.unpack_from(tail, pos)
    if comment_len and file_size - (file_size - tail_len + pos + _EOCD.size) == comment_len:
        # bytes no digest and no signature covers: Amber writes no archive comment
        raise corrupt(f"the archive carries a {comment_len}-byte comment, which Amber never writes")
    eocd_offset = file_size - tail_len + pos
    trailing = file_size - (eocd_offset + _EOCD.size + comment_len)
    if trailing != 0:
        raise corrupt(
            f"{abs(trailing)} bytes of unexpected data "
            + ("after the end of the archive" if trailing > 0 else "missing at the end")
        )
    if disk or cd_disk or n_disk != n:
        raise corrupt("multi-disk zip archives are not supported")
    cd_end = eocd_offset
    if n == _U16 or cd_size == _U32 or cd_start == _U32:
        loc_pos = pos - _LOCATOR64.size
        if loc_pos < 0:
            raise corrupt("ZIP64 locator missing")
        sig, _, eocd64_offset, _ = _LOCATOR64.unpack_from(tail, loc_pos)
        if sig != _SIG_LOCATOR64 or eocd64_offset != eocd_offset - _LOCATOR64.size - _EOCD64.size:
            raise corrupt("ZIP64 locator malformed")
        rec = read(_EOCD64.size, eocd64_offset)
        if len(rec) != _EOCD64.size:
            raise corrupt("ZIP64 end record truncated")
        (sig, _, _, _, _, _, n_disk64, n, cd_size, cd_start) = _EOCD64.unpack(rec)
        if sig != _SIG_EOCD64 or n_disk64 != n:
            raise corrupt("ZIP64 end record malformed")
        cd_end = eocd64_offset
    if cd_start + cd_size != cd_end:
        raise corrupt(
            f"central directory ends at byte {cd_start + cd_size} but the end record is at byte "
            f"{cd_end}: there is unexpected data before or inside the archive"
        )
    if n > _MAX_ENTRIES or cd_size > n * (_CENTRAL.size + 512 + 128) + 1:
        raise corrupt(f"central directory claims {n} entries in {cd_size} bytes")
    directory = read(cd_size, cd_start)
    if len(directory) != cd_size:
        raise corrupt("central directory truncated")
    found: list[tuple[str, int, int, int]] = []  # (name, header offset, size, CRC-32)
    names: set[str] = set()
    off = 0
    unpack = _CENTRAL.unpack_from
    for _ in range(n):
        if off + _CENTRAL.size > cd_size:
            raise corrupt("central directory truncated")
        (sig, _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len, comment_len,
         disk_start, _, _, header_offset) = unpack(directory, off)  # fmt: skip
        if sig != _SIG_CENTRAL:
            raise corrupt(f"bad central directory record at byte {cd_start + off}")
        off += _CENTRAL.size
        end = off + name_len + extra_len + comment_len
        if end > cd_size:
            raise corrupt("central directory record runs past its end")
        raw_name = bytes(directory[off : off + name_len])
        extra_at = off + name_len
        off = end
        try:
            name = check_name(raw_name.decode("ascii"))
        except UnicodeDecodeError:
            raise corrupt(f"entry name {raw_name!r} is not ASCII") from None
        if method != 0 or flags & ~_FLAG_UTF8 or disk_start != 0:
            raise corrupt(
                f"entry {name!r} is compressed, encrypted or split by the zip layer "
                f"(method {method}, flags {flags:#x}); Amber stores every zip entry as-is"
            )
        if comment_len:
            raise corrupt(f"entry {name!r} carries a comment, which Amber never writes")
        if csize != usize:
            raise corrupt(f"entry {name!r} has different stored and real sizes")
        if usize == _U32 or header_offset == _U32:
            extra = directory[extra_at : extra_at + extra_len]
            usize, header_offset = _zip64_fields(extra, name, usize, header_offset)
        if name in names:
            raise corrupt(f"duplicate entry {name!r}")
        names.add(name)
        found.append((name, header_offset, usize, crc))
    if off != cd_size:
        raise corrupt("central directory has trailing bytes")
    # Entries tile the data area in directory order: the first at byte 0, each ending before
    # the next one's header (or the directory) begins. (Each entry is built once, here, with
    # its bound: a forest's 200 entries are read on every load.)
    first = found[0][1] if found else cd_start
    if first != 0:
        where = "first entry" if found else "central directory"
        raise corrupt(f"{first} bytes of unexpected data before the {where}")
    entries: dict[str, ZipEntry] = {}
    limits = [entry[1] for entry in found[1:]]
    if found:  # (no entries: no bounds, and the caller finds no manifest)
        limits.append(cd_start)
    new = tuple.__new__
    for (name, header_offset, size, crc), limit in zip(found, limits, strict=True):
        if header_offset + _LOCAL.size + len(name) + size > limit:
            raise corrupt(
                f"entry {name!r} overlaps the next entry or the directory (entries must be "
                f"laid out in directory order)"
            )
        entries[name] = new(ZipEntry, (name, header_offset, size, crc, limit))
    return entries


def check_layout(
    read: Callable[[int, int], bytes | memoryview], entries: Mapping[str, ZipEntry], file_size: int
) -> None:
    """Require every byte outside the entries' data to be what :class:`ZipWriter` writes.

    The digests cover the data and the manifest; the zip layer's own bytes (versions, time
    stamps, attributes, padding) are covered by nothing else. Each local header, the central
    directory and the end records are rebuilt from the directory's entries and compared byte
    for byte; the one free value is the DOS time stamp, which must be the same in every header.
    ``entries`` is :func:`read_directory`'s result (vetted, in file order).
    """
    listed = list(entries.values())
    when = _LOCAL.unpack_from(bytes(read(_LOCAL.size, 0)))[4:6] if listed else (0, 0)
    records = []
    for entry in listed:
        name = entry.name.encode("ascii")
        want = _local_header(name, entry.header_offset, entry.size, entry.crc32, when)
        _same(read(len(want), entry.header_offset), want, entry.header_offset, entry.name)
        pad = _pad(entry.header_offset, len(name), entry.size)
        records.append(_central_record(entry, pad, when))
    directory = b"".join(records)
    cd_start = listed[-1].limit if listed else 0
    want = directory + _end_records(len(listed), cd_start, len(directory))
    _same(read(file_size - cd_start, cd_start), want, cd_start, None)


def _same(got: bytes | memoryview, want: bytes, offset: int, name: str | None) -> None:
    if got == want:
        return
    got = bytes(got)
    at = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), len(want))
    where = f"the local header of entry {name!r}" if name else "the central directory"
    raise IntegrityError(
        f"{where} differs from what Amber writes at byte {offset + at} (zip fields that no "
        f"digest or signature covers: versions, time stamps, attributes, padding): the file "
        f"was altered after it was saved; restore it from its source"
    )


def _zip64_fields(extra: bytes | memoryview, name: str, size: int, offset: int) -> tuple[int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        hid, hlen = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + hlen]
        if hid == _ZIP64_EXTRA:
            values = list(struct.unpack_from(f"<{len(body) // 8}Q", body))
            if size == _U32:
                if len(values) < 2:
                    break
                size = values.pop(0)
                values.pop(0)  # compressed size, equal for stored entries
            if offset == _U32:
                if not values:
                    break
                offset = values.pop(0)
            return size, offset
        pos += 4 + hlen
    raise corrupt(f"entry {name!r} lacks the ZIP64 sizes its header promises")


def parse_local_header(header: bytes | bytearray | memoryview, entry: ZipEntry) -> int:
    """Check a local header against the central record; return the length of the header."""
    if len(header) < _LOCAL.size:
        raise corrupt(f"local header of {entry.name!r} truncated")
    (sig, _, flags, method, _, _, crc, csize, usize, name_len, extra_len) = _LOCAL.unpack_from(
        header
    )
    if sig != _SIG_LOCAL or method != 0 or flags & ~_FLAG_UTF8:
        raise corrupt(f"bad local header for entry {entry.name!r}")
    total = _LOCAL.size + name_len + extra_len
    if len(header) < _LOCAL.size + name_len:
        raise corrupt(f"local header of {entry.name!r} truncated")
    if bytes(header[_LOCAL.size : _LOCAL.size + name_len]) != entry.name.encode("ascii"):
        raise corrupt(f"local header name differs from the directory for {entry.name!r}")
    if crc != entry.crc32 or (usize != _U32 and usize != entry.size) or csize != usize:
        raise corrupt(f"local header of {entry.name!r} disagrees with the central directory")
    return total


def _aligned(entry: ZipEntry, start: int) -> int:
    if start % ALIGNMENT:
        # the format's rule (docs/FORMAT.md section 1), by which mmap=True hands numpy views
        raise corrupt(f"the data of entry {entry.name!r} is not {ALIGNMENT}-byte aligned")
    return start


def data_offset(header: bytes | memoryview, entry: ZipEntry) -> int:
    """Vet ``entry``'s local header (``header`` starts at it); return where its data begins.

    Entries tile the file: the data ends where the next header (or the directory) begins, so
    that no byte lies outside what the digests and a signature cover.
    """
    start = entry.header_offset + parse_local_header(header, entry)
    if start + entry.size > entry.limit:
        raise corrupt(f"entry {entry.name!r} overlaps the next entry or the directory")
    if start + entry.size < entry.limit:
        raise corrupt(
            f"{entry.limit - start - entry.size} bytes lie between entry {entry.name!r} and what "
            f"follows it, outside every digest"
        )
    return _aligned(entry, start)


def _header_room(entry: ZipEntry) -> int:
    """Bytes that hold any local header this writer makes for ``entry`` (ZIP64 and padding)."""
    return _LOCAL.size + len(entry.name) + 4 * ALIGNMENT


def read_packed(fd: int, entry: ZipEntry, out: memoryview) -> bool:
    """Read ``entry``'s local header and data with one system call, if the data ends where the
    next header (or the directory) begins, as this writer lays entries out.

    Returns False, with ``out`` holding nothing of use, when the entry is laid out otherwise or
    the read comes up short; :func:`read_data_offset` then finds the data (or says what is
    wrong). A forest's hundred small entries are each read this way.
    """
    head = packed_head(entry)
    if head is None:
        return False
    header = bytearray(head)
    if os.preadv(fd, [header, out], entry.header_offset) != head + out.nbytes:
        return False
    return packed_header_ok(header, entry)


def packed_head(entry: ZipEntry) -> int | None:
    """The length of ``entry``'s local header if its data ends where the next header (or the
    directory) begins, as this writer lays entries out (see :func:`read_packed`); else None."""
    head = entry.limit - entry.size - entry.header_offset
    return head if _LOCAL.size <= head <= _header_room(entry) else None


def packed_header_ok(header: bytearray, entry: ZipEntry) -> bool:
    """Whether ``header``, read with the data as :func:`read_packed` reads it, is ``entry``'s
    whole local header (FormatError for one that contradicts the directory)."""
    if parse_local_header(header, entry) != len(header):
        return False
    _aligned(entry, entry.header_offset + len(header))
    return True


def read_data_offset(fd: int, entry: ZipEntry) -> int:
    """Read and vet ``entry``'s local header from ``fd``; return where its data begins."""
    want = min(_header_room(entry), entry.limit - entry.header_offset)
    header = os.pread(fd, want, entry.header_offset)
    total = parse_local_header(header, entry)
    if total > len(header):
        header = os.pread(fd, total, entry.header_offset)
    return data_offset(header, entry)
