"""Type stubs for the C extension ``amber.security._pickle_scan`` (see _pickle_scan.c)."""

from typing import Any

class ScanError(ValueError): ...

def scan(
    data: Any,
    n_buffers: int,
    max_memo: int,
    hooks: Any = None,
    max_stack: int = 16777216,
    max_marks: int = 10000,
) -> tuple[Any, ...]: ...
def tree_depth(left: Any, right: Any, inner: Any) -> int: ...
