"""What a load is allowed to do: the options that travel together through every loader."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from amber.errors import UnsafeLoadWarning

__all__ = ["LoadPolicy", "parse_global_name"]


def parse_global_name(name: str) -> tuple[str, str]:
    """Split ``"pkg.mod:Class"`` or ``"pkg.mod.Class"`` into ``("pkg.mod", "Class")``.

    The colon form is exact (it allows nested qualified names such as ``"m:Outer.Inner"``);
    the dotted form takes the last component as the name.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"a trusted name must be a non-empty string like 'pkg.mod.Class', got {name!r}"
        )
    name = name.strip()
    if ":" in name:
        module, _, qualname = name.partition(":")
    else:
        module, _, qualname = name.rpartition(".")
    if not module or not qualname:
        raise ValueError(
            f"trusted name {name!r} has no module part; write it as 'pkg.module.Name' "
            f"or 'pkg.module:Name'"
        )
    return module, qualname


@dataclass(frozen=True)
class LoadPolicy:
    """Options of one load.

    Attributes
    ----------
    trusted:
        Extra ``(module, name)`` pairs admitted beyond the built-in allowlist.
    allow_arbitrary_code:
        Run any pickle code at all. Only for files you made yourself; warns every time.
    """

    trusted: frozenset[tuple[str, str]] = frozenset()
    allow_arbitrary_code: bool = False

    @classmethod
    def make(
        cls, trusted: Iterable[str] | None = None, *, allow_arbitrary_code: bool = False
    ) -> LoadPolicy:
        if isinstance(trusted, str):
            raise TypeError(
                f"trusted must be a list of names, not the string {trusted!r}; "
                f"write trusted=[{trusted!r}]"
            )
        if allow_arbitrary_code is not True and allow_arbitrary_code is not False:
            raise TypeError(
                f"allow_arbitrary_code must be True or False, got {allow_arbitrary_code!r}"
            )
        pairs = frozenset(parse_global_name(n) for n in (trusted or ()))
        return cls(trusted=pairs, allow_arbitrary_code=allow_arbitrary_code)

    def warn_if_unsafe(self, source: str) -> None:
        if self.allow_arbitrary_code:
            warnings.warn(
                f"loading {source} with allow_arbitrary_code=True: the pickle stream may run any "
                f"code with your privileges. Use this only for files you created yourself.",
                UnsafeLoadWarning,
                stacklevel=3,
            )
