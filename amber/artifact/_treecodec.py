"""The ``nodes-lz4`` codec: a decision tree's node array stored as the fields it cannot derive.

scikit-learn's depth-first tree builder (every tree of a forest without ``max_leaf_nodes``)
lists nodes in preorder: a split's left child is the next node, its right child follows the
left subtree, and its sample count and weight are its children's sums. A node is 64 bytes
(children, feature, threshold, impurity, counts, the missing-value direction, padding); stored as
planes (one leaf bit a node, the splits' features and thresholds, every impurity, the leaves'
counts and weights, the directions and padding) and then LZ4 (high compression), the benchmark
forest's node arrays take 12% of their size, and decode at about 3 GB/s: zstd at level 9 on the
raw arrays gives 17.5% and decodes at about 1 GB/s.

The codec is lossless by construction and by check: :func:`encode` decodes what it made and
compares it with the input, byte for byte, and returns ``None`` (the entry takes another codec)
for any array that is not such a tree, or whose weights are not the sums of its leaves' in
floating point. ``compress="auto"`` tries it on every entry whose size is a multiple of 64 bytes
(a cheap look at the first node turns most other data away). Layout: docs/FORMAT.md.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from amber.artifact import _lz4, _nodes

__all__ = ["CODEC", "JOB", "decode", "encode", "job"]

CODEC = "nodes-lz4"
JOB = 1  # its kind of job in _nodes.Batch (an LZ4 block is 0)
NODE_SIZE = 64
_MAGIC = b"ATN1"
_HEADER = struct.Struct("<4sBBBBQQ")  # magic, feature width, count width, flags, 0, planes, nodes
_DERIVED = 1  # flags: split nodes' weights are their children's sums
_LEAF, _UNDEFINED = -1, -2

# sklearn.tree._tree.NODE_DTYPE (scikit-learn 1.3 and later), with its padding named
_FIELDS = np.dtype(
    {
        "names": ["left", "right", "feature", "threshold", "impurity", "n", "w", "mgl", "pad"],
        "formats": ["<i8", "<i8", "<i8", "<f8", "<f8", "<i8", "<f8", "u1", ("u1", 7)],
        "offsets": [0, 8, 16, 24, 32, 40, 48, 56, 57],
        "itemsize": NODE_SIZE,
    }
)


def _width(values: np.ndarray) -> int | None:
    """The bytes (1, 2, 4 or 8) that hold every value of ``values`` unsigned; None for negatives."""
    if values.size == 0:
        return 1
    if values.min() < 0:
        return None
    top = int(values.max())
    return next(w for w in (1, 2, 4, 8) if top < 1 << (8 * w))


def _uint(values: np.ndarray, width: int) -> bytes:
    return values.astype(f"<u{width}").tobytes()


def encode(data: memoryview) -> bytes | None:
    """``data`` (a node array's bytes) encoded, or ``None`` when it is not one this codec
    reproduces exactly."""
    size = data.nbytes
    if size == 0 or size % NODE_SIZE:
        return None
    first = int.from_bytes(data[:8], "little", signed=True)
    if first not in (1, _LEAF):  # the root's left child: the next node, or none
        return None
    nodes = np.frombuffer(data, dtype=_FIELDS)
    n = len(nodes)
    left = nodes["left"]
    leaf = left == _LEAF
    split = ~leaf
    index = np.flatnonzero(split)
    if not np.array_equal(left[split], index + 1):
        return None
    if not (
        (nodes["right"][leaf] == _LEAF).all()
        and (nodes["feature"][leaf] == _UNDEFINED).all()
        and (nodes["threshold"][leaf] == _UNDEFINED).all()
    ):
        return None
    feature_width = _width(nodes["feature"][split])
    samples_width = _width(nodes["n"][leaf])
    if feature_width is None or samples_width is None:
        return None
    common = [
        np.packbits(leaf).tobytes(),
        _uint(nodes["feature"][split], feature_width),
        nodes["threshold"][split].tobytes(),
        nodes["impurity"].tobytes(),
        _uint(nodes["n"][leaf], samples_width),
    ]
    tail = [nodes["mgl"].tobytes(), nodes["pad"].tobytes()]
    original = data.cast("B") if data.format != "B" else data
    for derived in (True, False):
        weights = nodes["w"][leaf] if derived else nodes["w"]
        planes = b"".join([*common, weights.tobytes(), *tail])
        out = bytearray(size)
        try:
            _nodes.decode(planes, out, n, feature_width, samples_width, derived)
        except ValueError:
            return None
        if out != original:
            continue
        header = _HEADER.pack(
            _MAGIC, feature_width, samples_width, _DERIVED if derived else 0, 0,
            len(planes), n,
        )  # fmt: skip
        packed = header + _lz4.compress(planes, high=True)
        # and the whole entry, through the decoder a load uses (Amber's own LZ4 decoder)
        out[:] = bytes(size)
        decode(memoryview(packed), memoryview(out))
        return packed if out == original else None
    return None


def job(stored: memoryview, out: memoryview) -> tuple[Any, ...]:
    """The decoding of ``stored`` into ``out`` (the size the manifest records) as a job of
    ``_nodes.Batch``, its header checked; ValueError when it cannot hold a tree of that size."""
    if stored.nbytes < _HEADER.size:
        raise ValueError(f"{stored.nbytes} bytes are too few for the codec's header")
    magic, fw, sw, flags, zero, planes_size, n = _HEADER.unpack_from(stored)
    if magic != _MAGIC or zero or flags & ~_DERIVED:
        raise ValueError("the codec's header is not one this version writes")
    if n * NODE_SIZE != out.nbytes:
        raise ValueError(f"the header counts {n} nodes, the manifest records {out.nbytes} bytes")
    if planes_size > out.nbytes:  # (the planes are smaller than the nodes)
        raise ValueError(f"cannot decode to {planes_size} bytes of planes, more than the nodes'")
    _lz4.check_size(stored[_HEADER.size :], planes_size)
    return (JOB, stored, out, _HEADER.size, planes_size, n, fw, sw, bool(flags & _DERIVED))


def decode(stored: memoryview, out: memoryview) -> None:
    """Decode ``stored`` into ``out`` (the size the manifest records); ValueError when it does
    not hold a tree of exactly that size."""
    _nodes.decode_lz4(*job(stored, out)[1:])
