"""Structural checks of a LightGBM model text before LightGBM's own parser sees it.

LightGBM trusts its model text: a child index past the tree, a cycle, a split on a feature the
model does not have, a categorical threshold past its category bitsets, ``tree_sizes`` that do
not match the trees (it locates each tree by them), or ``num_tree_per_iteration=0`` crashed the
process (segfault, floating-point exception, abort) at load or predict, or hung it. A forged
file (digests recomputed, no signature) could carry any of them, so the text is parsed here and
every tree checked as scikit-learn trees are: indices in range, every tree a tree. The header is
read here; the trees, which are most of the text, by ``lgb_trees`` in ``_treecheck.c`` (in
Python the check took 4-6x LightGBM's own load). Each tree must also be laid out as LightGBM's
reader reads it (at most 22 key=value lines, then an empty line), with every field it reads
present and well-formed: with ``tree_sizes`` it loads trees on several threads, where an error
it meets, even a number it cannot parse, ends the process.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from amber.errors import FormatError
from amber.handlers._common import SizeBounds, check_category_bits, check_depth
from amber.handlers._treecheck import lgb_tree_starts, lgb_trees
from amber.security._fitted import MAX_THREADS as _MAX_THREADS

__all__ = ["check_model_text", "check_threads"]

_INTEGER = re.compile(r"-?[0-9]{1,19}")
_INTEGER_CHARS = re.compile(r"[-0-9 ]*")
_INT32_MAX = 2**31 - 1


def _bad(what: str) -> FormatError:
    return FormatError(
        f"the LightGBM model is malformed: {what}. LightGBM would have crashed or misread it; "
        f"the file is damaged or crafted. Re-create it from the original model with amber.save()"
    )


def _fields(block: bytes, what: str) -> dict[str, str]:
    """The ``key=value`` lines of a block; a key given twice is refused (which of the two
    LightGBM's parser would keep is not a question the checks should depend on)."""
    out: dict[str, str] = {}
    for line in block.split(b"\n"):
        key, sep, value = line.partition(b"=")
        if sep:
            name = key.decode("ascii", "replace")
            if name in out:
                raise _bad(f"{what} gives {name} twice")
            out[name] = value.decode("utf-8", "replace")
    return out


def _int(fields: dict[str, str], key: str, what: str, low: int, high: int = _INT32_MAX) -> int:
    text = fields.get(key)
    if text is None:
        raise _bad(f"{what} has no {key}")
    if not _INTEGER.fullmatch(text):
        raise _bad(f"{what}'s {key} is {text[:40]!r}, not an integer")
    n = int(text)
    if not low <= n <= high:
        raise _bad(f"{what}'s {key} is {n}, outside {low}..{high}")
    return n


def _ints(fields: dict[str, str], key: str, what: str, length: int) -> np.ndarray:
    """The integers of one line: ASCII digits, minus signs and single spaces, what LightGBM's
    reader reads the same way (Python's int() also takes "0_1" and Arabic-Indic digits, which
    LightGBM reads as 0). The trees' lines are read in C (``lgb_trees``)."""
    text = fields.get(key, "")
    if not _INTEGER_CHARS.fullmatch(text) or (
        "  " in text or text.startswith(" ") or text.endswith(" ")
    ):
        raise _bad(f"{what}'s {key} is not a list of integers")
    parts = text.split(" ") if text else []
    if len(parts) != length:
        raise _bad(f"{what}'s {key} has {len(parts)} values, not {length}")
    try:
        return np.array(parts, dtype=np.int64)
    except (ValueError, OverflowError):
        raise _bad(f"{what}'s {key} holds values that are not integers") from None


def check_model_text(text: bytes, bounds: SizeBounds) -> None:
    """Refuse a LightGBM model text whose indices or counts LightGBM would trust to its harm."""
    if any(c in text for c in (b"\r", b"\t", b"\x0b", b"\x0c")):
        # LightGBM ends a line at \r too: a line the check reads as one could be two to it
        raise _bad("it holds a carriage return, tab or form feed")
    try:
        # every line starting with "Tree" must be a tree header
        starts, numbered, end = lgb_tree_starts(text)
    except ValueError as exc:
        raise _bad(str(exc)) from None
    if not starts or end < starts[-1]:
        raise _bad("it has no trees section ending in 'end of trees'")
    first = starts[0]
    head = _fields(text[:first], "the model's header")
    n_features = _int(head, "max_feature_idx", "the model", 0) + 1
    names = head.get("feature_names")
    if names is not None and len(names.split()) != n_features:
        raise _bad(f"max_feature_idx says {n_features} features, feature_names lists another")
    n_trees = len(starts)
    if not numbered:
        raise _bad("its trees are not numbered 0, 1, 2, ... in order")
    per_iteration = _int(head, "num_tree_per_iteration", "the model", 1, max(n_trees, 1))
    # predict sizes each row's output by num_class and writes a value per tree of an
    # iteration into it (fewer classes: heap overflow); LightGBM writes them equal
    num_class = _int(head, "num_class", "the model", per_iteration, per_iteration)
    objective = head.get("objective")
    if objective is not None and not objective.split():
        # LightGBM reads the objective's first word without looking: an empty one crashed it
        raise _bad("its objective is empty")
    _check_feature_infos(head.get("feature_infos"), n_features)
    # the objective carries its own class count ("multiclass num_class:3"), which predict
    # trusts to size its output: it must be the model's
    for token in (objective or "").split(" ")[1:]:
        name, _, value = token.partition(":")
        if name == "num_class" and value != str(num_class):
            raise _bad(f"the objective's num_class:{value[:20]} is not the model's {num_class}")
    if n_trees % per_iteration:
        raise _bad(f"{n_trees} trees do not make whole iterations of {per_iteration}")
    if "tree_sizes" in head:
        # LightGBM finds each tree by these sizes, without looking
        sizes = _ints(head, "tree_sizes", "the model", n_trees)
        # each size takes LightGBM from one tree's header line to the next's, the last to the
        # 'end of trees' line (non-negative sizes matching in turn cannot wrap around)
        offsets = first + np.concatenate([[0], np.cumsum(sizes)])
        if np.any(sizes < 0) or not np.array_equal(offsets, [*starts, end + 1]):
            raise _bad("tree_sizes do not match the trees")
    try:
        depth, category_bits = lgb_trees(text, [*starts, end + 1], n_features)
    except ValueError as exc:
        raise _bad(str(exc)) from None
    check_depth("LightGBM", depth, bounds)
    check_category_bits("LightGBM", category_bits, bounds)
    _check_parameters(text, end)


_RANGE = re.compile(r"\[[^:\[\]]+:[^:\[\]]+\]")  # a numerical feature's [min:max]
_CATEGORY_LIST = re.compile(r"-?[0-9]+(:-?[0-9]+)*")  # a categorical feature's categories


def _check_feature_infos(infos: str | None, n_features: int) -> None:
    """One entry per feature: ``none``, ``[min:max]`` or categories ``a:b:c``. Its dump and
    ``trees_to_dataframe`` split entries at ':' and read the parts they expect (an entry of
    ``[1]`` crashed them)."""
    if infos is None:
        return
    entries = infos.split(" ")
    if len(entries) != n_features or not all(
        e == "none" or _RANGE.fullmatch(e) or _CATEGORY_LIST.fullmatch(e) for e in entries
    ):
        raise _bad("its feature_infos are not one of none, [min:max] or a:b:c per feature")


def _check_parameters(text: bytes, end: int) -> None:
    """The parameters section after the trees: ``Booster`` reads it back (GetLoadedParam), and a
    line without ``[name: value]`` shape crashed it (a segfault, or bad_alloc)."""
    start = text.find(b"\nparameters:\n", end)
    if start < 0:
        return
    stop = text.find(b"\nend of parameters", start)
    section = text[start + len(b"\nparameters:\n") : len(text) if stop < 0 else stop]
    for line in section.split(b"\n"):
        if line and not (line.startswith(b"[") and line.endswith(b"]") and line.find(b":") >= 2):
            raise _bad(f"its parameters hold a line that is not [name: value]: {line[:60]!r}")


def check_threads(params: dict[str, Any]) -> None:
    """Refuse thread counts beyond the machine's CPUs and 256 (``MAX_THREADS`` of
    amber.security._fitted: LightGBM starts them all at predict, and 1,024 under a 6 GB address
    space ended the process; 100,000 crashed it outright)."""
    for key in ("n_jobs", "num_threads", "nthread", "num_thread", "nthreads"):
        value = params.get(key)
        if isinstance(value, np.ndarray):  # a {"$array": ...} parameter: LightGBM reads it too
            if value.size != 1:
                raise _bad(f"{key} is an array of {value.size} values")
            value = value.item()
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_THREADS:
            raise FormatError(
                f"the LightGBM model asks for {key}={value} threads, more than this machine's "
                f"{os.cpu_count()} CPUs and than {_MAX_THREADS}: LightGBM would start them all "
                f"at predict, and a process that cannot is ended. The file is damaged or "
                f"crafted, or was saved with a thread count for a larger machine: re-save it "
                f"with n_jobs=-1 (every CPU of the machine that runs it) or a smaller count"
            )
