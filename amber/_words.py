"""Counted nouns in messages: "1 entry", "2 entries", never "1 entries" or "entry(s)"."""

from __future__ import annotations

__all__ = ["counted"]


def counted(n: int, one: str, many: str | None = None) -> str:
    """``n`` and the noun that agrees with it: ``counted(3, "version")`` is ``"3 versions"``.

    Examples
    --------
    >>> counted(1, "entry", "entries"), counted(2, "entry", "entries")
    ('1 entry', '2 entries')
    """
    return f"{n:,} {one if n == 1 else (many or one + 's')}"
