"""LZ4 blocks as Amber stores them (no frame, no size prefix: the size is recorded beside them),
for the ``lz4`` codec and inside ``nodes-lz4`` (:mod:`amber.artifact._treecodec`).

The python-lz4 package makes the blocks; Amber decodes them itself (``lz4_block`` in _nodes.c),
straight into the buffer the entry is loaded into, and on a thread of its own when a load
decodes many entries ahead of the unpickler (:class:`amber.artifact._reader.DecodeAhead`).
"""

from __future__ import annotations

from typing import Any

import lz4.block

from amber.artifact import _nodes

__all__ = ["MAX_RATIO", "MAX_SIZE", "check_size", "compress", "decompress"]

MAX_RATIO = 255  # a block never expands its input more than this
MAX_SIZE = 0x7E000000  # LZ4_MAX_INPUT_SIZE: the largest block it can decode
_HIGH_LEVEL = 9  # high compression: 12 takes twice as long for 1% less


def compress(data: memoryview | bytes, *, high: bool = False) -> bytes:
    """One block: the fast mode, or with ``high`` the high-compression mode (which decodes as
    fast)."""
    if high:
        return lz4.block.compress(
            data, mode="high_compression", compression=_HIGH_LEVEL, store_size=False
        )
    return lz4.block.compress(data, mode="default", store_size=False)


def check_size(block: memoryview, size: int) -> None:
    """ValueError for a ``size`` that ``block`` cannot decode to (checked before memory is
    reserved for it)."""
    if size > min(MAX_SIZE, MAX_RATIO * block.nbytes + 16):
        raise ValueError(f"{block.nbytes} bytes of LZ4 cannot decode to {size}")


def decompress(block: memoryview, size: int, out: Any = None) -> Any:
    """The ``size`` bytes ``block`` decodes to, in ``out`` (a writable buffer of that size) or a
    new bytearray; ValueError for a size it cannot hold (checked before memory is reserved) or a
    block that is damaged or does not decode to exactly ``size`` bytes."""
    check_size(block, size)
    if out is None:
        out = bytearray(size)
    _nodes.lz4_decode(block, out)
    return out
