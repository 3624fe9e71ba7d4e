"""Structural checks of an XGBoost model document before XGBoost's own parser sees it.

XGBoost trusts the arrays of its model file: a child index past the tree, a cycle, a split on a
feature the model does not have, a category segment past the category list, a tree assigned to
a class that does not exist, or a class count of 10**8 crashed the process (segfault or heap
corruption) at ``load_model`` or ``predict``, or hung it. A forged file (digests recomputed, no
signature) could carry any of them, so the document is parsed here (JSON, or the UBJSON subset
XGBoost writes) and checked as scikit-learn trees are: every index in range, every tree a tree.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from amber.errors import FormatError
from amber.handlers._common import SizeBounds

__all__ = ["check_model", "check_width", "parse_model"]

_MAX_DEPTH = 64
# Category values are float32 in XGBoost's matrices: it refuses those from 2**24 up itself.
_MAX_CATEGORY = 2**24
_INT32_MAX = 2**31 - 1
_INT64 = struct.Struct(">q")
_MAX_FEATURES = 2**24

_SCALARS = {
    ord("i"): (">b", 1),
    ord("U"): (">B", 1),
    ord("I"): (">h", 2),
    ord("l"): (">i", 4),
    ord("L"): (">q", 8),
    ord("d"): (">f", 4),
    ord("D"): (">d", 8),
}
_ARRAYS = {
    ord("i"): ">i1",
    ord("U"): ">u1",
    ord("I"): ">i2",
    ord("l"): ">i4",
    ord("L"): ">i8",
    ord("d"): ">f4",
    ord("D"): ">f8",
}


def _bad(what: str) -> FormatError:
    return FormatError(
        f"the XGBoost model is malformed: {what}. XGBoost would have crashed or misread it; "
        f"the file is damaged or crafted. Re-create it from the original model with amber.save()"
    )


class _UBJSON:
    """A reader of the UBJSON XGBoost writes (big-endian; typed, counted arrays)."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = bytes(data)
        self.pos = 0

    def _marker(self) -> int:
        pos = self.pos
        if pos >= len(self.data):
            raise _bad("UBJSON data ends early")
        self.pos = pos + 1
        return self.data[pos]

    def _number(self, marker: int) -> Any:
        spec = _SCALARS.get(marker)
        if spec is None:
            raise _bad(f"UBJSON marker {chr(marker)!r} where a number belongs")
        fmt, size = spec
        pos = self.pos
        if pos + size > len(self.data):
            raise _bad("UBJSON data ends early")
        self.pos = pos + size
        return struct.unpack_from(fmt, self.data, pos)[0]

    def _length(self) -> int:
        n = self._number(self._marker())
        if not isinstance(n, int) or n < 0:
            raise _bad("a negative UBJSON length")
        return n

    def _bytes(self, n: int) -> bytes:
        pos = self.pos
        if n > len(self.data) - pos:
            raise _bad("UBJSON data ends early")
        self.pos = pos + n
        return self.data[pos : pos + n]

    def _text(self) -> str:
        data, pos = self.data, self.pos
        if pos + 9 <= len(data) and data[pos] == 0x4C:  # L: the length as XGBoost writes it
            n = _INT64.unpack_from(data, pos + 1)[0]
            if n < 0:
                raise _bad("a negative UBJSON length")
            self.pos = pos + 9
        else:
            n = self._length()
        try:
            return self._bytes(n).decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("UBJSON text that is not UTF-8") from None

    def value(self, depth: int = 0, marker: int | None = None) -> Any:
        if depth > _MAX_DEPTH:
            raise _bad(f"nesting deeper than {_MAX_DEPTH}")
        m = self._marker() if marker is None else marker
        if m in _SCALARS:
            return self._number(m)
        if m == 0x53 or m == 0x48:  # S, H
            return self._text()
        if m == 0x43:  # C
            return chr(self._bytes(1)[0])
        if m == 0x54:  # T
            return True
        if m == 0x46:  # F
            return False
        if m == 0x5A:  # Z
            return None
        if m == 0x5B:  # [
            return self._array(depth)
        if m == 0x7B:  # {
            return self._object(depth)
        raise _bad(f"unknown UBJSON marker {m:#x} at byte {self.pos - 1}")

    def _array(self, depth: int) -> Any:
        data, pos = self.data, self.pos
        if pos + 12 <= len(data) and data[pos] == 0x24 and data[pos + 2 : pos + 4] == b"#L":
            # $<type>#L<count>: the typed array header XGBoost writes, read in one step
            n = _INT64.unpack_from(data, pos + 4)[0]
            if n < 0:
                raise _bad("a negative UBJSON length")
            self.pos = pos + 12
            return self._typed(depth, data[pos + 1], n)
        m = self._marker()
        if m == 0x24:  # $: typed and counted
            kind = self._marker()
            if self._marker() != 0x23:
                raise _bad("a typed UBJSON array without a count")
            return self._typed(depth, kind, self._length())
        if m == 0x23:  # #: counted, every element at least one byte
            n = self._length()
            if n > len(self.data) - self.pos:
                raise _bad("a UBJSON array longer than the data")
            return [self.value(depth + 1) for _ in range(n)]
        out = []
        while m != 0x5D:  # ]
            out.append(self.value(depth + 1, m))
            m = self._marker()
        return out

    def _typed(self, depth: int, kind: int, n: int) -> Any:
        dtype = _ARRAYS.get(kind)
        if dtype is None:
            if kind in (0x5A, 0x54, 0x46, 0x4E) or n > len(self.data) - self.pos:
                # elements of no bytes (null, true, false, no-op): 2**40 of them from a few
                # bytes ran the parser out of memory
                raise _bad("a typed UBJSON array of values without data, or past the data")
            return [self.value(depth + 1, kind) for _ in range(n)]
        size = int(dtype[-1])
        # one block of numbers, kept as an array (native byte order): the checks work on arrays
        return np.frombuffer(self._bytes(n * size), dtype=dtype).astype(dtype[1:])

    def _object(self, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        m = self._marker()
        if m == 0x23:
            n = self._length()
            if n > len(self.data) - self.pos:
                raise _bad("a UBJSON object longer than the data")
            for _ in range(n):
                key = self._text()
                if key in out:
                    raise _bad("an object gives a key twice")
                out[key] = self.value(depth + 1)
            return out
        while m != 0x7D:  # }
            self.pos -= 1
            key = self._text()
            if key in out:
                raise _bad("an object gives a key twice")
            out[key] = self.value(depth + 1)
            m = self._marker()
        return out


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different: with a key given twice, the check would read
    one value and XGBoost perhaps the other."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _bad("an object gives a key twice")
    return out


def parse_model(raw: bytes | bytearray | memoryview, fmt: str) -> Any:
    """The model document of XGBoost's JSON or UBJSON format, as Python values."""
    if fmt == "json":
        try:
            return json.loads(bytes(raw), object_pairs_hook=_unique_keys)
        except (ValueError, RecursionError) as exc:
            raise _bad(f"not JSON ({str(exc)[:80]})") from None
    reader = _UBJSON(raw)
    doc = reader.value()
    if reader.pos != len(reader.data):
        raise _bad(f"{len(reader.data) - reader.pos} bytes follow the UBJSON document")
    return doc


def _get(obj: Any, key: str, what: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise _bad(f"{what} has no {key!r}")
    return obj[key]


def _int(value: Any, what: str, low: int = 0, high: int = _INT32_MAX) -> int:
    """A count or index, written as a number or (in model parameters) as a decimal string."""
    try:
        n = int(value) if isinstance(value, str) else value
    except ValueError:
        raise _bad(f"{what} is {value!r}, not an integer") from None
    if isinstance(n, bool) or not isinstance(n, int) or not low <= n <= high:
        raise _bad(f"{what} is {value!r}, outside {low}..{high}")
    return n


def _is_seq(values: Any) -> bool:
    """A list (JSON) or a flat array (a typed UBJSON array)."""
    return isinstance(values, list) or (isinstance(values, np.ndarray) and values.ndim == 1)


def _ints(values: Any, what: str, length: int | None = None) -> np.ndarray:
    if not _is_seq(values) or (length is not None and len(values) != length):
        got = len(values) if _is_seq(values) else type(values).__name__
        raise _bad(f"{what} has {got} values, not {length}")
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iu":
            raise _bad(f"{what} holds values that are not integers")
        return values.astype(np.int64, copy=False)
    try:
        arr = np.asarray(values, dtype=np.int64)
    except (ValueError, TypeError, OverflowError):
        raise _bad(f"{what} holds values that are not integers") from None
    if arr.ndim != 1:
        raise _bad(f"{what} is not a flat list")
    return arr


def _check_tree(tree: Any, k: int, num_feature: int) -> int:
    """Check tree ``k``; return its leaf vector size."""
    what = f"tree {k}"
    param = _get(tree, "tree_param", what)
    n = _int(_get(param, "num_nodes", what), f"{what}'s num_nodes", 1)
    leaf_size = _int(_get(param, "size_leaf_vector", what), f"{what}'s size_leaf_vector", 0)
    left = _ints(_get(tree, "left_children", what), f"{what}'s left_children", n)
    right = _ints(_get(tree, "right_children", what), f"{what}'s right_children", n)
    features = _ints(_get(tree, "split_indices", what), f"{what}'s split_indices", n)
    for key in ("parents", "split_conditions", "default_left", "split_type"):
        values = _get(tree, key, what)
        if not _is_seq(values) or len(values) != n:
            raise _bad(f"{what}'s {key} does not have one value per node")
    leaf = left == -1
    if leaf_size > 1:
        # a vector-leaf tree (multi_output_tree): a leaf's right child is its row of
        # leaf_weights
        leaf_weights = _get(tree, "leaf_weights", what)
        if not _is_seq(leaf_weights) or len(leaf_weights) % leaf_size:
            raise _bad(f"{what}'s leaf_weights do not come in rows of {leaf_size}")
        rows = len(leaf_weights) // leaf_size
        if np.any(leaf & ((right < 0) | (right >= rows))):
            raise _bad(f"{what} has a leaf outside its {rows} leaf weight rows")
    elif np.any(leaf != (right == -1)):
        raise _bad(f"{what} has a node with one child")
    inner = ~leaf
    children = np.concatenate([left[inner], right[inner]])
    if children.size and (children.min() < 1 or children.max() >= n):
        raise _bad(f"{what} has a child index outside 1..{n - 1}")
    # each node is the child of at most one node, and the root of none: no cycle is reachable
    if children.size and np.bincount(children, minlength=n).max() > 1:
        raise _bad(f"{what} has a node reached twice (a cycle or a shared child)")
    if np.any(inner & ((features < 0) | (features >= num_feature))):
        raise _bad(f"{what} splits on a feature outside 0..{num_feature - 1}")
    kinds = _ints(tree["split_type"], f"{what}'s split_type", n)
    if np.any((kinds != 0) & (kinds != 1)):
        raise _bad(f"{what} has a split type other than numerical (0) or categorical (1)")
    categories = _ints(tree.get("categories", []), f"{what}'s categories")
    nodes = _ints(tree.get("categories_nodes", []), f"{what}'s categories_nodes")
    segments = _ints(tree.get("categories_segments", []), f"{what}'s categories_segments")
    sizes = _ints(tree.get("categories_sizes", []), f"{what}'s categories_sizes")
    if not len(nodes) == len(segments) == len(sizes):
        raise _bad(f"{what}'s categorical splits disagree in number")
    if nodes.size:
        if nodes.min() < 0 or nodes.max() >= n or np.any(kinds[nodes] != 1):
            raise _bad(f"{what} lists categories for a node that is no categorical split")
        if segments.min() < 0 or sizes.min() < 0 or np.any(segments + sizes > len(categories)):
            raise _bad(f"{what} has a category segment past its category list")
    if np.any(inner & (kinds == 1)) and not np.all(
        np.isin(np.flatnonzero(inner & (kinds == 1)), nodes)
    ):
        raise _bad(f"{what} has a categorical split without categories")
    if categories.size and (categories.min() < 0 or categories.max() >= _MAX_CATEGORY):
        raise _bad(f"{what} has a category outside 0..{_MAX_CATEGORY - 1}")
    weights = _get(tree, "base_weights", what)
    if not _is_seq(weights) or len(weights) != n * max(leaf_size, 1):
        raise _bad(f"{what}'s base_weights do not match its nodes")
    return leaf_size


def check_width(num_feature: int, names: Any, bounds: SizeBounds) -> None:
    """XGBoost keeps a buffer of ``num_feature`` values per thread at predict (300,000,000
    took 4.9 GB on one thread): a model wider than 2**24 features must list as many names."""
    if num_feature > _MAX_FEATURES and not (_is_seq(names) and len(names) == num_feature):
        bounds.exceeded(
            f"the XGBoost model is {num_feature:,} features wide (over {_MAX_FEATURES:,}) "
            f"without as many feature names"
        )


def check_model(doc: Any, bounds: SizeBounds) -> None:
    """Refuse a model document whose indices or counts XGBoost would trust to its harm."""
    learner = _get(doc, "learner", "the model")
    param = _get(learner, "learner_model_param", "the learner")
    num_feature = _int(_get(param, "num_feature", "the learner"), "num_feature", 0)
    check_width(num_feature, learner.get("feature_names"), bounds)
    num_class = _int(param.get("num_class", "0"), "num_class", 0)
    num_target = _int(param.get("num_target", "1"), "num_target", 1)
    outputs = max(num_class, num_target, 1)
    scores = param.get("base_score")
    # XGBoost 3 keeps one base score per output, as a list in text
    listed = isinstance(scores, str) and scores.startswith("[")
    if listed and len(scores.strip("[]").split(",")) not in (1, outputs):
        raise _bad(f"base_score does not have {outputs} values")
    objective = learner.get("objective")
    softmax = objective.get("softmax_multiclass_param") if isinstance(objective, dict) else None
    classes = softmax.get("num_class") if isinstance(softmax, dict) else None
    if classes is not None and _int(classes, "the objective's num_class") != num_class:
        raise _bad(f"the objective's num_class is not the model's {num_class}")
    for key in ("feature_names", "feature_types"):
        listed = learner.get(key)
        if listed is not None and (not _is_seq(listed) or len(listed) not in (0, num_feature)):
            raise _bad(f"{key} does not list the {num_feature} features")
    booster = _get(learner, "gradient_booster", "the learner")
    name = _get(booster, "name", "the gradient booster")
    if name == "gblinear":
        weights = _get(_get(booster, "model", "gblinear"), "weights", "gblinear")
        groups = max(num_class, num_target, 1)
        if not _is_seq(weights) or len(weights) != (num_feature + 1) * groups:
            raise _bad(f"gblinear has {len(weights)} weights for {num_feature} features")
        return
    if name == "dart":
        booster = _get(booster, "gbtree", "dart")
    elif name != "gbtree":
        raise _bad(f"gradient booster {name!r}")
    model = _get(booster, "model", "gbtree")
    trees = _get(model, "trees", "gbtree")
    if not isinstance(trees, list):
        raise _bad("its trees are not a list")
    n_trees = len(trees)
    params = _get(model, "gbtree_model_param", "gbtree")
    if _int(params.get("num_trees", n_trees), "num_trees") != n_trees:
        raise _bad(f"num_trees says {params.get('num_trees')} but {n_trees} are stored")
    _int(params.get("num_parallel_tree", "1"), "num_parallel_tree", 1, max(n_trees, 1))
    leaf_sizes = [_check_tree(tree, k, num_feature) for k, tree in enumerate(trees)]
    width = max(num_class, num_target)
    if any(size > 1 and size != width for size in leaf_sizes):
        # XGBoost writes a vector leaf's values into one output per class or target: a wider
        # one overran the output buffer (heap corruption)
        raise _bad(f"a tree's leaf vector is not {width} wide (one value per class or target)")
    # an output per class or target: as many as the trees (or a tree's leaf vector) can fill
    outputs = max(n_trees, *leaf_sizes, 1)
    if num_class > outputs or num_target > outputs:
        raise _bad(f"num_class={num_class}, num_target={num_target} for {n_trees} trees")
    info = _ints(_get(model, "tree_info", "gbtree"), "tree_info", n_trees)
    if info.size and (info.min() < 0 or info.max() >= max(num_class, num_target, 1)):
        raise _bad("tree_info assigns a tree to a class or target the model does not have")
    indptr = _ints(model.get("iteration_indptr", [0, n_trees]), "iteration_indptr")
    if indptr.size < 1 or indptr[0] != 0 or indptr[-1] != n_trees or np.any(np.diff(indptr) < 0):
        raise _bad("iteration_indptr does not split the trees into rounds")
    if name == "dart":
        drops = _get(_get(learner, "gradient_booster", "the learner"), "weight_drop", "dart")
        if not _is_seq(drops) or len(drops) != n_trees:
            raise _bad("dart's weight_drop does not have one weight per tree")
