"""Keeping what a server loaded out of the cyclic garbage collector's passes (``gc.freeze``).

A serving process holds a few hundred thousand long-lived objects (the frameworks' modules, the
models) and allocates a few short-lived ones per request. Python's collector keeps walking the
long-lived ones: measured on ``amber serve`` with a cheap model, 20 us of each request's 200 us
of CPU. ``gc.freeze`` moves every object alive now into a generation the collector never walks;
reference counting still frees them as usual, so the only thing frozen objects cannot do is be
collected *as a cycle*.

So: once a slot's first version is in place, what was loaded is frozen. When a version is
swapped, everything is unfrozen (the retired version's cycles, if any, become collectable), and
once the retired version has finished its last request one full collection runs and the heap
is frozen again. Only ``amber serve`` does this (``ServeConfig.freeze_heap``): a process that
mounts the app keeps its collector as it set it.
"""

from __future__ import annotations

import asyncio
import gc

__all__ = ["after_swap", "loaded_first", "retired"]


def loaded_first() -> None:
    """A slot's first version serves: freeze what is alive (no collection: it costs ~100 ms
    of cold start, and what loading left for the collector is little)."""
    gc.freeze()


def after_swap() -> None:
    """A version replaced another: let the collector reach everything again."""
    gc.unfreeze()


def retired() -> None:
    """A replaced version finished its last request: collect its cycles, then freeze again
    (on the event loop, after the current request's response)."""

    def settle() -> None:
        gc.collect()
        gc.freeze()

    try:
        asyncio.get_running_loop().call_soon(settle)
    except RuntimeError:  # no loop (closing at shutdown): nothing left to serve
        settle()
