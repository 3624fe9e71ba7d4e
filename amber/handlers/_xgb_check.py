"""Structural checks of an XGBoost model document before XGBoost's own parser sees it.

XGBoost trusts the arrays of its model file: a child index past the tree, a cycle, a split on a
feature the model does not have, a category segment past the category list, a tree assigned to
a class that does not exist, or a class count of 10**8 crashed the process (segfault or heap
corruption) at ``load_model`` or ``predict``, or hung it. A forged file (digests recomputed, no
signature) could carry any of them, so the document is parsed (JSON by Python's json module,
the UBJSON subset XGBoost writes by ``xgb_check`` in ``_treecheck.c``) and checked there as
scikit-learn trees are: every index in range, every tree a tree. In Python the check took 4-5x
XGBoost's own load.

What ``xgb_check`` checks: the learner's num_feature, num_class and num_target are counts (a
number, or a decimal string); base_score lists one value or one per output; the objective's
softmax num_class is the model's; feature_names and feature_types list every feature or none;
gblinear has (num_feature + 1) weights per output; a gbtree's (or dart's) num_trees matches its
trees, num_parallel_tree is at most their number; each tree's child links stay within it and
reach every node at most once (no cycle), its splits use existing features, its split types are
0 or 1, its categorical splits point inside its category list, its categories are below 2**24,
its per-node arrays have one value per node and a vector leaf (multi_output_tree) is one row of
leaf_weights, num_class wide; its id is its position (XGBoost places trees by id) and each
node's parent is the node linking to it (XGBoost indexes nodes by parent as it loads); no class
or target is more than the trees can fill; tree_info names existing outputs; iteration_indptr
splits the trees into rounds; dart has a weight per tree; XGBoost 3's category encoder has one
entry per feature whose sorted_idx and offsets stay within that feature's categories. UBJSON is
read strictly: lengths within the data (no arrays of values without bytes), no key twice in an
object, text in UTF-8, nesting at most 64 deep, nothing after the document, and no more values
than one per 8 bytes (a document of nulls took 70 bytes of memory per byte before it was
refused).
"""

from __future__ import annotations

import json
from typing import Any

from amber.errors import FormatError
from amber.handlers._common import SizeBounds, check_category_bits, check_depth
from amber.handlers._treecheck import xgb_check

__all__ = ["check_model"]

_MAX_FEATURES = 2**24


def _bad(what: str) -> FormatError:
    return FormatError(
        f"the XGBoost model is malformed: {what}. XGBoost would have crashed or misread it; "
        f"the file is damaged or crafted. Re-create it from the original model with amber.save()"
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different: with a key given twice, the check would read
    one value and XGBoost perhaps the other."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _bad("an object gives a key twice")
    return out


def _check_width(num_feature: int, n_names: int, bounds: SizeBounds) -> None:
    """XGBoost keeps a buffer of ``num_feature`` values per thread at predict (300,000,000
    took 4.9 GB on one thread): a model wider than 2**24 features must list as many names
    (``n_names``: how many it lists, -1 for none)."""
    if num_feature > _MAX_FEATURES and n_names != num_feature:
        bounds.exceeded(
            f"the XGBoost model is {num_feature:,} features wide (over {_MAX_FEATURES:,}) "
            f"without as many feature names"
        )


def check_model(raw: bytes | bytearray | memoryview, fmt: str, bounds: SizeBounds) -> None:
    """Refuse a model document (XGBoost's JSON, or the UBJSON subset it writes) whose indices
    or counts XGBoost would trust to its harm; a width past the bound goes to ``bounds``."""
    document: Any = raw
    if fmt == "json":
        try:
            document = json.loads(bytes(raw), object_pairs_hook=_unique_keys)
        except (ValueError, RecursionError) as exc:
            raise _bad(f"not JSON ({str(exc)[:80]})") from None
        if not isinstance(document, dict):
            raise _bad("the model has no 'learner'")
    try:
        num_feature, n_names, depth, category_bits = xgb_check(document)
    except ValueError as exc:
        raise _bad(str(exc)) from None
    _check_width(num_feature, n_names, bounds)
    check_depth("XGBoost", depth, bounds)
    check_category_bits("XGBoost", category_bits, bounds)
