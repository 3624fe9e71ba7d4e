"""Type stubs for the C extension ``amber.security._pickle_scan`` (see _pickle_scan.c)."""

from collections.abc import Sequence
from typing import Any

class ScanError(ValueError): ...

ALREADY_VIEWED: str  # the refusal of a second array on one buffer

def scan(
    data: Any,
    n_buffers: int,
    max_memo: int,
    hooks: Any = None,
    max_stack: int = 16777216,
    max_marks: int = 10000,
) -> tuple[Any, ...]: ...
def index_map(d: dict[Any, Any], n: int) -> None: ...
def tree_nodes(
    nodes: Any,
    itemsize: int,
    left_off: int,
    right_off: int,
    link_bytes: int,
    leaf_off: int,
    feature_off: int,
    cat_off: int,
    bitset_off: int,
) -> tuple[int, int, int, int, int]: ...
def splice_hooks(
    data: Any,
    sites: Sequence[Any],
    numbers: Sequence[int],
    frames: Sequence[int],
    module: bytes,
    forget: bytes = b"",
    room: Any = None,
) -> Any: ...
def frombuffer(buf: Any, dtype: Any, shape: Any, order: Any, *rest: Any, **kw: Any) -> Any: ...
def predictor_check(spec: tuple[Any, ...], predictor: Any) -> Any: ...
def alias_dtype(unpickled: Any, own: Any) -> None: ...
def claim_bytes(data: bytes) -> bool: ...
def release_claims() -> None: ...
