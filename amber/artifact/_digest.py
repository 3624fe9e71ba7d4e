"""Entry digests: a fast checksum checked on every load, a cryptographic hash for verify, signing.

Measured on the 2-core reference machine (256 MB of float64, page cache warm): sha256 1.7 GB/s,
blake2b 0.9 GB/s, blake3 4.2 GB/s on one thread and 8.7 GB/s on two, xxh3-128 26 GB/s; the zip's
CRC-32 runs at 3.5 GB/s in Python's zlib and 25 GB/s in zlib-ng (used when installed). Reading
those bytes into a fresh buffer runs at about 4.8 GB/s, so on every load Amber checks xxh3-128
(corruption: flipped bits, truncation, a wrong file), which costs about 15% of the read. (The
later 2-core machines of 2026-12 hash 264 MB with xxh3-128 at about 9.7 GB/s on one thread, the
speed of their memory: hence the parts' digests, which two threads check in 16 ms, not 28.) An
attacker who can rewrite a file can rewrite its manifest too, so without a signature no hash
stops tampering; with a signature the manifest is signed and every entry's blake3 digest is
checked, which ``amber.verify`` and signature-checking loads do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import blake3
import xxhash

try:
    from zlib_ng.zlib_ng import crc32
except ImportError:  # a platform without zlib-ng wheels: the same function, slower
    from zlib import crc32

__all__ = [
    "Digests",
    "blake3_hasher",
    "blake3_hex",
    "crc32",
    "digest_all",
    "digest_many",
    "part_digests",
    "split_digests",
    "xxh3_hasher",
    "xxh3_hex",
    "xxh3_many",
]

_THREADED_FROM = 1 << 20

#: Entries from PARTS_FROM bytes up also get an XXH3-128 digest of each PART_SIZE part (the last
#: one shorter), so that a memory-mapped load checks one large entry on two threads: xxh3 runs
#: at the speed of memory here (264 MB mapped: 28 ms on one thread, 16 ms on two).
PART_SIZE = 8 << 20
PARTS_FROM = 2 * PART_SIZE

# Threads do not survive fork(): a child inherits the parent's worker pools without their
# threads, and work handed to them waits forever (a server that saved a model, then forked its
# workers). The child therefore starts a digest pool of its own, and, since blake3's threads
# come from one pool per process that cannot be restarted, hashes blake3 on the calling thread
# if the parent's blake3 pool had started.
_blake3_pool_started = False
_blake3_pool_lost = False


def _blake3_threads() -> int:
    global _blake3_pool_started
    if _blake3_pool_lost:
        return 1
    _blake3_pool_started = True
    return blake3.blake3.AUTO


def blake3_hasher() -> blake3.blake3:
    """A BLAKE3 hasher for large inputs: on all cores, unless that cannot work after a fork."""
    return blake3.blake3(max_threads=_blake3_threads())


def xxh3_hex(data: memoryview | bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def xxh3_library() -> str:
    """The path of the xxhash package's compiled extension (loaded by its import), which
    exports XXH3_128bits for C code to call (amber.artifact._nodes.use_xxh3)."""
    import xxhash._xxhash  # type: ignore[import-not-found,unused-ignore]

    return str(getattr(xxhash._xxhash, "__file__", ""))


def xxh3_hasher() -> xxhash.xxh3_128:
    """An incremental xxh3-128: fed in parts, the same digest as :func:`xxh3_hex` of the whole."""
    return xxhash.xxh3_128()


def blake3_hex(data: memoryview | bytes) -> str:
    threads = _blake3_threads() if len(data) >= _THREADED_FROM else 1
    return blake3.blake3(data, max_threads=threads).hexdigest()


class Digests(NamedTuple):
    """The digests of one entry (a named tuple: a small model's save makes a few)."""

    xxh3_128: str
    blake3: str
    crc32: int
    parts: tuple[str, ...] = ()  # see part_digests


def split_digests(data: memoryview | bytes, part_size: int) -> tuple[str, ...]:
    """The XXH3-128 digest of each ``part_size`` part of ``data`` (the last one shorter)."""
    view = memoryview(data)
    return tuple(xxh3_hex(view[i : i + part_size]) for i in range(0, len(view), part_size))


def part_digests(data: memoryview | bytes) -> tuple[str, ...]:
    """The XXH3-128 digest of each PART_SIZE part of an entry of PARTS_FROM bytes or more;
    none for a smaller one."""
    return split_digests(data, PART_SIZE) if len(data) >= PARTS_FROM else ()


def digest_all(data: memoryview | bytes, *, parts: bool = True) -> Digests:
    """All the digests of one entry's stored bytes (CRC-32 is what the zip layer records);
    ``parts=False``: without the parts' digests."""
    made = part_digests(data) if parts else ()
    return Digests(xxh3_hex(data), blake3_hex(data), crc32(data), made)


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(2, thread_name_prefix="amber-digest")
    return _POOL


def _after_fork_in_child() -> None:
    global _POOL, _blake3_pool_lost
    _POOL = None  # its threads stayed in the parent; the next save starts a pool here
    _blake3_pool_lost = _blake3_pool_lost or _blake3_pool_started


os.register_at_fork(after_in_child=_after_fork_in_child)


def _strong(data: memoryview | bytes) -> tuple[str, str]:
    return xxh3_hex(data), blake3.blake3(data, max_threads=1).hexdigest()


def digest_many(items: list[memoryview]) -> Callable[[], list[Digests]]:
    """Start computing the digests of several buffers on two worker threads (CRC-32 and the
    parts' XXH3 on one, XXH3 and BLAKE3 on the other: each releases the GIL), so that the caller
    can write meanwhile; call the result to collect them, in order. The buffers must not change
    until they are collected."""
    try:
        crcs = _pool().submit(lambda: [(crc32(b), part_digests(b)) for b in items])
        strong = _pool().submit(lambda: [_strong(b) for b in items])
    except RuntimeError:  # no new threads once the interpreter is exiting (an atexit save)
        done = [Digests(*_strong(b), crc32(b), part_digests(b)) for b in items]
        return lambda: done

    def collect() -> list[Digests]:
        return [
            Digests(x, b, c, p)
            for (x, b), (c, p) in zip(strong.result(), crcs.result(), strict=True)
        ]

    return collect


def xxh3_many(items: list[memoryview]) -> list[str]:
    """The xxh3-128 digests of several buffers, in order, split by size between the calling
    thread and a worker (xxh3 releases the GIL): an MLP's 84 MB of weights, memory-mapped, in
    5-6 ms instead of 10. For bytes already in memory; a fresh read is checked as it arrives."""
    mine: list[int] = []
    theirs: list[int] = []
    load = [0, 0]
    for i in sorted(range(len(items)), key=lambda k: -items[k].nbytes):
        side = 0 if load[0] <= load[1] else 1
        (mine if side == 0 else theirs).append(i)
        load[side] += items[i].nbytes
    out = [""] * len(items)
    try:
        done = _pool().submit(lambda: [xxh3_hex(items[i]) for i in theirs])
    except RuntimeError:  # no new threads once the interpreter is exiting
        mine += theirs
        theirs = []
        done = None
    for i in mine:
        out[i] = xxh3_hex(items[i])
    if done is not None:
        for i, digest in zip(theirs, done.result(), strict=True):
            out[i] = digest
    return out
