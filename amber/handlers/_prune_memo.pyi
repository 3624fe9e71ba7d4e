"""Type stubs for the C extension ``amber.handlers._prune_memo`` (see _prune_memo.c)."""

from typing import Any

def prune(stream: Any, /) -> bytes | None: ...
