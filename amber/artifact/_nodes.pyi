"""Type stubs for the C extension ``amber.artifact._nodes`` (see _nodes.c)."""

from typing import Any

def decode(
    planes: Any,
    out: Any,
    n_nodes: int,
    feature_width: int,
    samples_width: int,
    weights_derived: bool,
    /,
) -> None: ...
