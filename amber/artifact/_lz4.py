"""LZ4 blocks as Amber stores them (no frame, no size prefix: the size is recorded beside them),
for the ``lz4`` codec and inside ``nodes-lz4`` (:mod:`amber.artifact._treecodec`)."""

from __future__ import annotations

import lz4.block

__all__ = ["MAX_RATIO", "MAX_SIZE", "compress", "decompress"]

MAX_RATIO = 255  # a block never expands its input more than this
MAX_SIZE = 0x7E000000  # LZ4_MAX_INPUT_SIZE: the largest block it can decode
_HIGH_LEVEL = 9  # high compression: 12 takes twice as long for 1% less

Error = lz4.block.LZ4BlockError


def compress(data: memoryview | bytes, *, high: bool = False) -> bytes:
    """One block: the fast mode, or with ``high`` the high-compression mode (which decodes as
    fast)."""
    if high:
        return lz4.block.compress(
            data, mode="high_compression", compression=_HIGH_LEVEL, store_size=False
        )
    return lz4.block.compress(data, mode="default", store_size=False)


def decompress(block: memoryview, size: int) -> bytearray:
    """The ``size`` bytes ``block`` decodes to; ValueError for a size it cannot hold (checked
    before memory is reserved), ``Error`` for a damaged block. The caller checks the length."""
    if size > min(MAX_SIZE, MAX_RATIO * block.nbytes + 16):
        raise ValueError(f"{block.nbytes} bytes of LZ4 cannot decode to {size}")
    return lz4.block.decompress(block, uncompressed_size=size, return_bytearray=True)
