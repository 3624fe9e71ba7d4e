"""Per-entry compression: the codecs, bounded decompression, and the measured ``"auto"`` choice.

Amber compresses entries itself (the zip layer always *stores*), so that every codec decodes
straight into a buffer of the size the manifest records, and a damaged or hostile entry can never
expand past it.

``"auto"`` chooses per entry by measurement on a sample of the entry: it compresses the sample
with each fast-decoding candidate, times the decode, and keeps the candidate that gives the
smallest file among those that decode at least as fast as a fast local disk reads
(``AUTO_MIN_DECODE_MBPS``, timed in the thread's CPU time, so that a busy machine does not
change the choice) and save at least 10% of the bytes, unless a file at most 10% larger decodes
more than twice as fast: then that one. Incompressible data (random floats) stays uncompressed,
and so memory-mappable.

``"auto"`` runs zstd at level 9 (``compress="zstd"`` at its usual level 3) and LZ4 in its high
compression mode (``compress="lz4"``: its fast mode): each decodes as fast at either setting, and
on the benchmark's forest zstd level 9 stores 17% of the bytes where level 3 stores 20%, at about
70 MB/s of compression instead of 400 (0.3 s for the forest's 21 MB). (The forest's class
fractions: LZ4 stores 28% of their bytes and decodes at 1.7 GB/s, zstd 25% at 0.7 GB/s; "auto"
keeps LZ4's.) And ``"auto"`` first tries a codec of its own, ``nodes-lz4``
(:mod:`amber.artifact._treecodec`), on entries that may be decision trees' node arrays: it
stores the fields a tree cannot derive and, where it applies, is kept without trying the others
(on the forest it takes 12% of the node arrays' bytes, decoding at about 3 GB/s).
"""

from __future__ import annotations

import lzma
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import zstandard

from amber.artifact import _lz4, _treecodec
from amber.errors import IntegrityError

__all__ = ["CODECS", "choose_codec", "compress", "decompress", "failure", "output"]

#: what compress= takes besides "auto"
CHOICES = ("none", "zlib", "lzma", "lz4", "zstd")
AUTO_CHOICES = ("none", "auto", *CHOICES[1:])
#: what an entry may be stored with: the choices, and what only "auto" picks
CODECS = (*CHOICES, _treecodec.CODEC)
AUTO_MIN_DECODE_MBPS = 800.0
_AUTO_MIN_SIZE = 4096
_AUTO_SAMPLE = 1 << 20
_AUTO_MIN_SAVING = 0.10
_ZSTD_LEVEL = 3
_ZSTD_AUTO_LEVEL = 9
# "auto" keeps a result at most this much larger than the smallest that decodes this much faster
_AUTO_NEAR_SIZE = 1.10
_AUTO_NEAR_SPEEDUP = 2.0


def _zstd_c(data: memoryview, level: int = _ZSTD_LEVEL) -> bytes:
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)


_COMPRESS: dict[str, Callable[[memoryview], bytes]] = {
    "zlib": lambda d: zlib.compress(d, 6),
    "lzma": lambda d: lzma.compress(d, preset=6),
    "lz4": _lz4.compress,
    "zstd": _zstd_c,
}


def compress(codec: str, data: memoryview, *, auto: bool = False) -> bytes:
    """``data`` encoded with ``codec``; ``auto``: at the level ``"auto"`` uses for it."""
    if codec == _treecodec.CODEC:
        packed = _treecodec.encode(data)
        if packed is None:
            raise ValueError(f"these {data.nbytes} bytes are not a tree's nodes for {codec}")
        return packed
    if auto and codec == "zstd":
        return _zstd_c(data, _ZSTD_AUTO_LEVEL)
    if auto and codec == "lz4":
        return _lz4.compress(data, high=True)
    return _COMPRESS[codec](data)


_local = threading.local()


def output(size: int) -> memoryview:
    """A buffer for ``size`` decoded bytes whose pages cost nothing until written (a private
    map from 1 MiB up), so that a size the manifest merely claims takes no memory before the
    decoder proves it."""
    from amber.artifact._reader import aligned_empty

    try:
        return aligned_empty(size)
    except (OSError, OverflowError, MemoryError) as exc:  # more than the address space
        raise ValueError(f"no memory for the recorded {size} bytes ({exc})") from None


def _zstd_into(stored: memoryview, size: int) -> memoryview:
    frame_size = zstandard.frame_content_size(stored)  # the writer always records it
    if frame_size != size:
        held = "does not record its size" if frame_size < 0 else f"holds {frame_size} bytes"
        raise ValueError(f"the frame {held}, the manifest records {size}")
    decompressor = getattr(_local, "zstd", None)
    if decompressor is None:
        decompressor = _local.zstd = zstandard.ZstdDecompressor()
    view = output(size)
    done = 0
    with decompressor.stream_reader(stored) as reader:
        while done < size:
            n = reader.readinto(view[done:])
            if n <= 0:
                break
            done += n
        if done != size or reader.read(1):
            raise ValueError(f"decoded size differs from the recorded {size} bytes")
    return view


def decompress(codec: str, stored: memoryview, size: int, name: str) -> memoryview:
    """Decode ``stored`` into a new writable buffer of exactly ``size`` bytes; refuse mismatches."""
    got: bytes | bytearray | memoryview
    try:
        if codec == "zstd":
            got = _zstd_into(stored, size)
        elif codec == _treecodec.CODEC:
            got = output(size)
            _treecodec.decode(stored, got)
        elif codec == "lz4":
            _lz4.check_size(stored, size)
            got = _lz4.decompress(stored, size, output(size))
        elif codec == "zlib":
            d = zlib.decompressobj()
            got = d.decompress(stored, max(size, 1))  # 0 would mean "no limit" to zlib
            if d.unconsumed_tail or not d.eof:
                raise ValueError("zlib stream longer than recorded or unterminated")
            if d.unused_data:  # bytes after the stream: no encoder wrote them
                raise ValueError(f"{len(d.unused_data)} bytes follow the end of the zlib stream")
        elif codec == "lzma":
            ld = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)  # as written, not legacy .lzma
            got = ld.decompress(stored, size)
            if not ld.eof:
                raise ValueError("lzma stream longer than recorded or unterminated")
            if ld.unused_data:
                raise ValueError(f"{len(ld.unused_data)} bytes follow the end of the xz stream")
        else:
            raise ValueError(f"unknown codec {codec!r}")
    except (
        ValueError,
        MemoryError,  # a size no machine has: the manifest lies
        OverflowError,
        zstandard.ZstdError,
        lzma.LZMAError,
        zlib.error,
    ) as exc:
        raise failure(name, codec, exc) from exc
    if len(got) != size:
        raise IntegrityError(
            f"entry {name!r} decompressed to {len(got)} bytes, the manifest records {size}. "
            f"The file is corrupted; restore it from its source."
        )
    if isinstance(got, memoryview):
        return got
    return memoryview(got if isinstance(got, bytearray) else bytearray(got))


def failure(name: str, codec: str, exc: BaseException) -> IntegrityError:
    """The error for an entry that does not decode (``exc`` says why)."""
    return IntegrityError(
        f"entry {name!r} does not decompress with {codec}: {exc}. The file is corrupted; "
        f"restore it from its source."
    )


@dataclass(frozen=True)
class CodecTrial:
    codec: str
    ratio: float
    decode_mbps: float


def _trial(
    codec: str, sample: memoryview, packed_bytes: bytes | None = None
) -> tuple[CodecTrial, bytes]:
    if packed_bytes is None:
        packed_bytes = compress(codec, sample, auto=True)
    packed = memoryview(packed_bytes)
    # once untimed: a first call also pays for paging in the codec's code and tables
    decompress(codec, packed, sample.nbytes, "<sample>")
    best = float("inf")
    for _ in range(5):
        # the thread's CPU time: another process taking the core mid-trial does not count (a
        # process sharing the core's caches still slows a trial: the best of five decides)
        t0 = time.thread_time()
        decompress(codec, packed, sample.nbytes, "<sample>")
        best = min(best, time.thread_time() - t0)
    mbps = sample.nbytes / max(best, 1e-9) / 1e6
    return CodecTrial(codec, len(packed) / max(sample.nbytes, 1), mbps), packed_bytes


def _sample(data: memoryview) -> memoryview:
    if data.nbytes <= _AUTO_SAMPLE:
        return data
    # Four slices spread across the entry: headers, middles and tails often differ.
    step = (data.nbytes - _AUTO_SAMPLE // 4) // 3
    parts = [bytes(data[i * step : i * step + _AUTO_SAMPLE // 4]) for i in range(4)]
    return memoryview(b"".join(parts))


def choose_codec(data: memoryview) -> tuple[str, bytes | None]:
    """Pick the codec for one entry by measuring candidates on a sample of it.

    Returns the codec and, when the sample was the whole entry, the entry compressed with it
    (so that it is not compressed twice), else ``None``.
    """
    if data.nbytes < _AUTO_MIN_SIZE:
        return "none", None
    nodes = _treecodec.encode(data)  # (a whole tree, never a sample: None for other data)
    if nodes is not None:
        trial, packed = _trial(_treecodec.CODEC, data, nodes)
        if trial.decode_mbps >= AUTO_MIN_DECODE_MBPS and trial.ratio < 1.0 - _AUTO_MIN_SAVING:
            # what the generic codecs find in a node array, it mostly finds in the planes
            # (the benchmark forest's node arrays: 12% of their bytes, where zstd at level 9
            # leaves 17% and LZ4 20%), and it decodes as fast as LZ4: not worth their trials
            return trial.codec, packed
    sample = _sample(data)
    trials: list[tuple[CodecTrial, bytes | None]] = []
    for codec in ("lz4", "zstd"):
        trial, packed = _trial(codec, sample)
        trials.append((trial, packed if sample is data else None))
    fast = [
        t
        for t in trials
        if t[0].decode_mbps >= AUTO_MIN_DECODE_MBPS and t[0].ratio < 1.0 - _AUTO_MIN_SAVING
    ]
    if not fast:
        return "none", None
    smallest = min(t[0].ratio for t in fast)
    near = [t for t in fast if t[0].ratio <= smallest * _AUTO_NEAR_SIZE]
    fastest = max(t[0].decode_mbps for t in near)
    chosen, kept = min(
        (t for t in near if t[0].decode_mbps * _AUTO_NEAR_SPEEDUP > fastest),
        key=lambda t: t[0].ratio,
    )
    return chosen.codec, kept
