"""The safetensors layout, read straight from an artifact entry (no copy, no pickle).

An 8-byte little-endian header length, a JSON header (name -> dtype, shape, data offsets), then
the raw tensor bytes. Reading builds tensors with ``torch.frombuffer`` on the entry's buffer, so
tensors view it: a memory map of the artifact under ``mmap=True``, one fresh buffer otherwise.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch

from amber.errors import FormatError

__all__ = ["DTYPES", "dense_order", "dump", "parse", "restore_layouts"]

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "C64": torch.complex64,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
_MAX_HEADER = 100 << 20
_INT64 = 2**63 - 1
_MAX_DIMS = 64


def parse(buf: memoryview, name: str) -> dict[str, torch.Tensor]:
    """Tensors viewing ``buf`` (a safetensors file's bytes); every offset is bounds-checked."""
    if buf.nbytes < 8:
        raise FormatError(f"{name}: too short for a safetensors file")
    n = int.from_bytes(buf[:8], "little")
    if n > min(_MAX_HEADER, buf.nbytes - 8):
        raise FormatError(f"{name}: safetensors header length {n} exceeds the entry")
    try:
        header = json.loads(bytes(buf[8 : 8 + n]))
    except ValueError as exc:
        raise FormatError(f"{name}: malformed safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise FormatError(f"{name}: malformed safetensors header")
    start = 8 + n
    size = buf.nbytes - start
    tensors: dict[str, torch.Tensor] = {}
    for key, spec in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = DTYPES[spec["dtype"]]
            shape = [int(d) for d in spec["shape"]]
            begin, end = (int(o) for o in spec["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{name}: malformed safetensors entry {key!r}: {exc}") from exc
        count = math.prod(shape)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= size:
            raise FormatError(f"{name}: tensor {key!r} lies outside the data")
        if end - begin != count * itemsize:
            raise FormatError(f"{name}: tensor {key!r} has {end - begin} bytes for shape {shape}")
        if count == 0:
            tensors[key] = torch.empty(shape, dtype=dtype)
            continue
        flat = torch.frombuffer(buf, dtype=dtype, count=count, offset=start + begin)
        tensors[key] = flat.view(shape)
    return tensors


def dense_order(shape: list[int], stride: list[int]) -> list[int] | None:
    """The dimensions from outermost to innermost when ``(shape, stride)`` lays the elements out
    without gaps or overlaps (a permutation of a contiguous layout, such as a transpose), else
    None. Size-1 dimensions are free: any stride fits them."""
    if (
        len(shape) != len(stride)
        or len(shape) > _MAX_DIMS
        or not all(0 <= n <= _INT64 for n in shape)
        or not all(0 <= s <= _INT64 for s in stride)
    ):
        return None
    order = sorted(range(len(shape)), key=lambda d: (-stride[d], -d))
    expected = 1
    for d in reversed(order):
        if shape[d] != 1 and stride[d] != expected:
            return None
        expected *= shape[d]
    return order


def dump(tensors: dict[str, torch.Tensor]) -> tuple[bytes, dict[str, list[list[int]]]]:
    """Bytes of a safetensors file holding ``tensors``, and the layouts to restore.

    A tensor laid out densely but not in row-major order (a transposed weight) is stored in its
    memory order, and its ``[shape, stride]`` returned, so that a reader views it exactly as it
    was: the same strides, so the same kernels and bit-identical outputs. Other tensors are
    stored as contiguous CPU copies.
    """
    from safetensors.torch import save

    ready: dict[str, torch.Tensor] = {}
    layouts: dict[str, list[list[int]]] = {}
    storages: set[int] = set()
    for key, t in tensors.items():
        t = t.detach().to("cpu")
        if not t.is_contiguous() and t.numel():
            order = dense_order(list(t.shape), list(t.stride()))
            if order is not None:
                layouts[key] = [list(t.shape), list(t.stride())]
                t = t.permute(order)  # the same memory, now in row-major order
        t = t.contiguous()
        ptr = t.untyped_storage().data_ptr()
        if t.numel() and ptr in storages:  # a view of a tensor already written: its own copy
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        ready[key] = t
    data: bytes = save(ready)
    return data, layouts


def restore_layouts(tensors: dict[str, torch.Tensor], layouts: Any, name: str) -> None:
    """View each tensor named in ``layouts`` with its recorded shape and strides (checked to be a
    dense layout of exactly the stored elements: nothing outside the tensor can be reached)."""
    if not isinstance(layouts, dict):
        raise FormatError(f"{name}: malformed tensor layouts")
    for key, layout in layouts.items():
        t = tensors.get(key)
        try:
            shape, stride = ([int(n) for n in part] for part in layout)
        except (TypeError, ValueError):
            raise FormatError(f"{name}: malformed layout of tensor {key!r:.80}") from None
        if (
            t is None
            or dense_order(shape, stride) is None
            or math.prod(shape) != t.numel()
            or t.numel() == 0  # never written for an empty tensor
            or not t.is_contiguous()
        ):
            raise FormatError(f"{name}: layout {layout!r:.80} does not fit tensor {key!r}")
        tensors[key] = t.as_strided(shape, stride, t.storage_offset())


def header_of(data: Any) -> dict[str, Any]:
    mv = memoryview(data)
    n = int.from_bytes(mv[:8], "little")
    header: dict[str, Any] = json.loads(bytes(mv[8 : 8 + n]))
    return header
