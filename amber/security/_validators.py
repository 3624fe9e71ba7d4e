"""Refuse hostile data in allowed types before any code reads it.

The unpickler only builds allowed types, but their *data* can still be hostile: a numpy
dtype whose state claims no object fields while it has some, a decision tree whose child
indices point outside its node array, a KD-tree whose index array points past its data.
Such objects load without complaint and crash (or read memory they do not own) at predict
time. Each validator here checks one type's invariants and raises
:class:`~amber.errors.FormatError`.

Two entry points:

- :data:`OBJECT_VALIDATORS` maps the ``(module, name)`` that builds an object to its
  validator; :func:`~amber.security._unpickler.safe_loads` runs it right after the object's
  state is set, before any later opcode can use the object.
- :func:`validate_loaded` walks a loaded object graph and runs the same validators plus the
  checks that need two objects (a tree against the estimator that feeds it its input).
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from amber.errors import FormatError
from amber.security._fitted import ATOMS as _ATOMS
from amber.security._fitted import CHECKED_CLASSES, _callable_on_data, check_fitted
from amber.security._pickle_scan import ALREADY_VIEWED, alias_dtype, claim_bytes, tree_nodes

__all__ = [
    "GENERIC_CONSTRUCTORS",
    "OBJECT_VALIDATORS",
    "PREDICTOR",
    "STATE_VALIDATORS",
    "needs_validation",
    "predictor_spec",
    "run_validator",
    "validate_array_state",
    "validate_binary_tree",
    "validate_binary_tree_state",
    "validate_bspline",
    "validate_dtype",
    "validate_dtype_state",
    "validate_imputer_triplet",
    "validate_libsvm",
    "validate_loaded",
    "validate_masked_array_state",
    "validate_metric_state",
    "validate_object",
    "validate_seed_sequence",
    "validate_sparse",
    "validate_tree",
    "validate_tree_predictor",
]

#: The class of a boosting model's trees, thousands of them to a model.
PREDICTOR = ("sklearn.ensemble._hist_gradient_boosting.predictor", "TreePredictor")

Validator = Callable[[Any], Any]
"""Checks an object (or a state), raising FormatError; a state validator may return a
replacement state, which is applied instead (None: the state as it was)."""


def _refuse(what: str, detail: str) -> FormatError:
    return FormatError(
        f"{what} in the file is inconsistent: {detail}. Using it could crash the process or "
        f"read memory it does not own, so it was refused. The file is damaged or crafted; "
        f"re-create the model from its source."
    )


def run_validator(validator: Validator, obj: Any) -> Any:
    """Run ``validator`` on ``obj``; any error it meets means the data is malformed.

    Except an ``OSError``, here and wherever a load turns errors into ``FormatError``: it comes
    from outside the data (a read that failed, a ``TimeoutError`` raised by the caller's signal
    handler), and calling the file damaged would mislead.
    """
    try:
        return validator(obj)
    except (FormatError, OSError):
        raise
    except Exception as exc:  # malformed data trips the checks themselves
        raise _refuse(
            f"an object checked by {validator.__name__}", f"{type(exc).__name__}: {exc}"
        ) from exc


def _int_array(a: Any, what: str, ndim: int = 1) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "iu" or a.ndim != ndim:
        raise _refuse(what, f"expected a {ndim}-d integer array, got {type(a).__name__}")
    return a


# --------------------------------------------------------------------------- numpy dtypes
def _canonical(d: np.dtype, depth: int) -> np.dtype:
    if depth > 32:
        raise _refuse("a numpy dtype", "fields nested more than 32 levels deep")
    if d.subdtype is not None:
        if d.names is not None or d.fields is not None:
            # numpy never writes both; given both, it keeps the fields (an object field
            # among them) that a check of the sub-array alone would not see
            raise _refuse("a numpy dtype", "it is a sub-array and has fields too")
        base, shape = d.subdtype
        if not isinstance(base, np.dtype) or not (
            isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)
        ):
            raise _refuse("a numpy dtype", "its sub-array description is malformed")
        return np.dtype((_canonical(base, depth + 1), shape))
    names = d.names
    if names is None:
        if d.fields is not None:
            raise _refuse("a numpy dtype", "it has fields but no names")
        return np.dtype(d.str)
    fields = d.fields
    if not isinstance(names, tuple) or fields is None:
        raise _refuse("a numpy dtype", "its field names are malformed")
    formats, offsets, titles = [], [], []
    for name in names:
        spec = fields.get(name) if isinstance(name, str) else None
        if not (
            isinstance(spec, tuple)
            and len(spec) in (2, 3)
            and isinstance(spec[0], np.dtype)
            and type(spec[1]) is int
            and spec[1] >= 0
        ):
            raise _refuse("a numpy dtype", f"field {name!r} is not (dtype, offset[, title])")
        fmt = _canonical(spec[0], depth + 1)
        if spec[1] + fmt.itemsize > d.itemsize:
            # numpy checks this itself, but in 32-bit arithmetic: an offset near 2**31
            # overflows past its check, and reading the field then reads gigabytes away
            raise _refuse(
                "a numpy dtype",
                f"field {name!r} ends at byte {spec[1] + fmt.itemsize}, past its "
                f"{d.itemsize}-byte item",
            )
        formats.append(fmt)
        offsets.append(spec[1])
        titles.append(spec[2] if len(spec) == 3 else None)
    if len(fields) != len(names) + sum(t is not None for t in titles):
        raise _refuse("a numpy dtype", "its fields do not match its names")
    spec_dict: dict[str, Any] = {
        "names": list(names),
        "formats": formats,
        "offsets": offsets,
        "itemsize": d.itemsize,
    }
    if any(t is not None for t in titles):
        spec_dict["titles"] = titles
    try:
        return np.dtype(spec_dict, align=d.isalignedstruct)  # type: ignore[call-overload]
    except (TypeError, ValueError) as exc:
        raise _refuse("a numpy dtype", str(exc)) from None


def validate_dtype(d: Any) -> None:
    """Refuse a dtype whose pickled state disagrees with what numpy itself would build.

    ``numpy.dtype.__setstate__`` trusts its input: the object flags, field offsets, item
    size and sub-array shape are taken as given, so a crafted state yields a dtype that
    makes numpy dereference raw bytes as object pointers or read past a buffer.
    """
    if not isinstance(d, np.dtype):
        raise _refuse("a numpy dtype", f"got {type(d).__name__}")
    if _BUILT_DTYPES.get(id(d)) is d:
        return
    key = _fingerprint(d)
    if key is not None and key in _GOOD_DTYPES:
        return
    try:
        canon = _canonical(d, 0)
    except FormatError:
        raise
    except Exception as exc:  # numpy rejects the description itself
        raise _refuse("a numpy dtype", f"{type(exc).__name__}: {exc}") from None
    for attr in ("itemsize", "flags", "alignment", "hasobject", "byteorder", "kind"):
        if getattr(d, attr) != getattr(canon, attr):
            raise _refuse(
                "a numpy dtype",
                f"its {attr} is {getattr(d, attr)!r} but its layout implies "
                f"{getattr(canon, attr)!r}",
            )
    if key is not None:
        if len(_GOOD_DTYPES) >= 4096:
            _GOOD_DTYPES.clear()
        _GOOD_DTYPES.add(key)


# Fingerprints of dtypes that passed validate_dtype. A fingerprint holds every property the
# check compares plus the full layout (``descr``: names, formats, offsets, titles, sub-array
# shapes), so a dtype with the same fingerprint has the same canonical form and passes too.
# A model with 1,500 tree predictors repeats one record dtype 1,500 times.
_GOOD_DTYPES: set[tuple[Any, ...]] = set()

# Dtype objects that passed validate_dtype once complete (see validate_object), by identity,
# held so that their ids stay theirs. Once complete, a dtype cannot change: the scan refuses
# a second BUILD and a BUILD after a copy was used. A model with 1,500 tree predictors checks
# the one dtype of their node arrays 1,500 times.
_BUILT_DTYPES: dict[int, np.dtype] = {}


def _fingerprint(d: np.dtype, depth: int = 0) -> tuple[Any, ...] | None:
    try:
        # a sub-array's ``descr`` is only its item size: its base and shape are part of the
        # key (a crafted (float64, (2**27,)) in 8 bytes would otherwise pass as ('u1', (8,)))
        sub, inner = d.subdtype, None
        if sub is not None:
            base = _fingerprint(sub[0], depth + 1) if depth < 32 else None
            if base is None:
                return None
            inner = (base, sub[1])
        return (
            repr(d.descr), d.str, d.itemsize, d.flags, d.alignment, d.hasobject,
            d.byteorder, d.kind, d.isalignedstruct, d.names, inner,
        )  # fmt: skip
    except Exception:  # a malformed dtype: leave it to the full check
        return None


def validate_dtype_state(state: Any) -> tuple[Any, ...] | None:
    """Check a ``numpy.dtype.__setstate__`` state before numpy applies it.

    numpy reads the tuple's parts without checking their types (a non-dict ``fields``
    crashes it), so only the layout numpy has written since version 3 of the format is
    accepted: ``(3 or 4, byteorder, subarray, names, fields, elsize, alignment, flags
    [, metadata])``.
    """
    what = "a numpy dtype"
    if not isinstance(state, tuple) or len(state) not in (8, 9):
        raise _refuse(what, "its state is not an 8- or 9-tuple (pre-2006 numpy formats)")
    version, order, subarray, names, fields, elsize, alignment, flags = state[:8]
    if type(version) is not int or version not in (3, 4):
        raise _refuse(what, f"unknown state version {version!r:.20}")
    if not (isinstance(order, str) and order in "<>|=" and len(order) == 1):
        raise _refuse(what, f"byte order {order!r:.20}")
    if not all(type(n) is int for n in (elsize, alignment, flags)) or not 0 <= flags < 256:
        raise _refuse(what, "its size, alignment or flags are not small integers")
    if subarray is not None and not (
        isinstance(subarray, tuple)
        and len(subarray) == 2
        and isinstance(subarray[0], np.dtype)
        and isinstance(subarray[1], tuple)
        and all(type(n) is int and n >= 0 for n in subarray[1])
    ):
        raise _refuse(what, "its sub-array description is malformed")
    if (names is None) != (fields is None):
        raise _refuse(what, "it has names without fields or fields without names")
    if subarray is not None and names is not None:
        raise _refuse(what, "it is a sub-array and has fields too")
    if names is not None:
        if not (isinstance(names, tuple) and all(isinstance(n, str) for n in names)):
            raise _refuse(what, "its field names are not strings")
        if not isinstance(fields, dict) or len(set(names)) != len(names):
            raise _refuse(what, "its fields are not a mapping of unique names")
        for key, spec in fields.items():
            if not (
                isinstance(key, str)
                and isinstance(spec, tuple)
                and len(spec) in (2, 3)
                and isinstance(spec[0], np.dtype)
                and type(spec[1]) is int
            ):
                raise _refuse(what, f"field {key!r:.40} is not (dtype, offset[, title])")
        if not set(names) <= set(fields):
            raise _refuse(what, "a field name has no field")
    if len(state) == 9 and not isinstance(state[8], (dict, tuple, type(None))):
        raise _refuse(what, "its metadata is not a mapping")
    if len(state) == 8:
        # The same state with "no metadata" spelled out: numpy applies it alike to every
        # dtype but a datetime64/timedelta64, whose state must carry its unit there; given
        # an 8-tuple, numpy leaves the unit unset and crashes, given None it raises.
        return (*state, None)
    return None


def _check_array_dtype(a: np.ndarray, what: str) -> None:
    try:
        validate_dtype(a.dtype)
    except FormatError:
        raise _refuse(what, "one of its arrays has an inconsistent dtype") from None


# --------------------------------------------------------------------------- numpy arrays
def validate_array_state(state: Any) -> None:
    """Check an ``ndarray.__setstate__`` state so that numpy applies it without error.

    numpy trusts an object array's list to be as long as the shape says (a shorter list
    makes ``__setstate__`` read past it), and on its own error paths it has already swapped
    the array's dtype, so the block is later freed under the wrong size. Hence: every state
    that reaches numpy must be exactly right.
    """
    what = "a numpy array"
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        raise _refuse(what, "its state is not a 4- or 5-tuple")
    if len(state) == 5 and type(state[0]) is not int:
        raise _refuse(what, "its state version is not an integer")
    shape, dtype, fortran, data = state[-4:]
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise _refuse(what, f"its shape is {shape!r:.80}")
    if len(shape) > 64 or type(fortran) not in (bool, int):
        raise _refuse(what, "its shape or memory order is malformed")
    validate_dtype(dtype)
    if dtype.subdtype is not None:
        # numpy turns a sub-array dtype into more dimensions of its base; an array that has
        # one as its own dtype holds more items than its shape says
        raise _refuse(what, f"its dtype {dtype} is a sub-array")
    size = math.prod(shape)
    if dtype.itemsize == 0 and size > _MAX_EMPTY_ITEMS:
        # nothing in the file bounds them: tolist() of a (2, 2**31) array of 'V0' runs for
        # minutes building four billion objects
        raise _refuse(what, f"shape {shape} holds {size} items of zero bytes")
    if dtype.hasobject:
        if dtype.names is not None and size * dtype.itemsize > _MAX_RECORDS_WITH_OBJECTS:
            # the items come from a list, so nothing in the file bounds their size: a record
            # dtype of 2**31 - 1 bytes holding one object field asks for 2 GB per item
            raise _refuse(
                what,
                f"{size} records of {dtype.itemsize} bytes with object fields "
                f"({size * dtype.itemsize} bytes, more than {_MAX_RECORDS_WITH_OBJECTS})",
            )
        if not isinstance(data, list) or len(data) != size:
            n = len(data) if isinstance(data, list) else type(data).__name__
            raise _refuse(what, f"shape {shape} needs {size} objects, the file holds {n}")
        return
    nbytes = size * dtype.itemsize
    if isinstance(data, str):  # Python 2 pickles: latin-1 text
        if len(data) != nbytes or (not data.isascii() and max(map(ord, data)) > 255):
            raise _refuse(what, f"shape {shape} needs {nbytes} bytes of latin-1 text")
    elif type(data) is not bytes or len(data) != nbytes:
        n = len(data) if isinstance(data, bytes) else type(data).__name__
        raise _refuse(what, f"shape {shape} of {dtype} needs {nbytes} bytes, the file holds {n}")
    elif not claim_bytes(data):
        # numpy keeps bytes of more than 1,000 in place and writes through them: a stream that
        # hands one bytes object to two arrays (read from the memo twice) makes them alias
        raise _refuse(what, ALREADY_VIEWED)


_MAX_EMPTY_ITEMS = 1 << 20
_MAX_RECORDS_WITH_OBJECTS = 256 << 20


def validate_masked_array_state(state: Any) -> None:
    """Check a ``MaskedArray.__setstate__`` state (data and mask) before numpy applies it."""
    if not isinstance(state, tuple) or len(state) != 7:
        raise _refuse("a numpy masked array", "its state is not a 7-tuple")
    _version, shape, dtype, fortran, data, mask, _fill = state
    validate_array_state((shape, dtype, fortran, data))
    mask_dtype = np.ma.make_mask_descr(dtype)
    validate_array_state((shape, mask_dtype, fortran, mask))


# --------------------------------------------------------------------------- decision trees
# (itemsize, left, right, link bytes, leaf flag, feature, categorical flag, bitset row):
# where tree_nodes finds each field in a node record, by the record dtype they belong to
_Layout = tuple[int, int, int, int, int, int, int, int]
_LAYOUTS: dict[str, tuple[np.dtype, _Layout]] = {}


def _layout(kind: str) -> tuple[np.dtype, _Layout]:
    found = _LAYOUTS.get(kind)
    if found is None:
        spec: tuple[str | None, ...]
        if kind == "tree":
            from sklearn.tree._tree import NODE_DTYPE as dtype

            spec = ("left_child", "right_child", None, "feature", None, None)
        else:
            from sklearn.ensemble._hist_gradient_boosting.common import (
                PREDICTOR_RECORD_DTYPE as dtype,
            )

            spec = ("left", "right", "is_leaf", "feature_idx", "is_categorical", "bitset_idx")
        fields = dtype.fields
        offsets = [fields[f][1] if f else -1 for f in spec]
        link_bytes = fields[spec[0]][0].itemsize
        layout = (dtype.itemsize, offsets[0], offsets[1], link_bytes, *offsets[2:])
        found = _LAYOUTS[kind] = (dtype, layout)
    return found


def _node_summary(nodes: Any, kind: str, what: str) -> tuple[int, int, int, int, int]:
    """Check a tree's node records (see ``tree_nodes`` in _pickle_scan.c) in one C pass.

    Returns (depth, min split feature, max split feature, categorical splits, max bitset row).
    """
    dtype, layout = _layout(kind)
    if not isinstance(nodes, np.ndarray) or nodes.ndim != 1 or nodes.shape[0] < 1:
        raise _refuse(what, "its node array is missing or has the wrong layout")
    d = nodes.dtype
    if d is not dtype and _SAME_AS_RECORD.get((id(d), kind)) is not d:
        # a structured comparison takes microseconds, and the 1,500 predictors of a boosting
        # model share one unpickled dtype object: check and compare it once
        _check_array_dtype(nodes, what)
        if d != dtype:
            raise _refuse(what, "its node array is missing or has the wrong layout")
        if len(_SAME_AS_RECORD) >= 4096:
            _SAME_AS_RECORD.clear()
        _SAME_AS_RECORD[(id(d), kind)] = d
        if d.__reduce__() == dtype.__reduce__() and d.metadata == dtype.metadata:
            # the later node arrays of this load get the library's own dtype object, which
            # its __setstate__ compares its record dtype with by identity (see alias_dtype)
            alias_dtype(d, dtype)
    if nodes.strides[0] != layout[0] and not nodes.flags.c_contiguous:
        nodes = np.ascontiguousarray(nodes)
    try:
        return tree_nodes(nodes, *layout)
    except ValueError as exc:
        raise _refuse(what, str(exc)) from None


# Dtype objects found well-formed (validate_dtype) and equal to the node record dtype of a kind
# of tree, by (identity, kind), held so that their ids stay theirs. A dtype cannot change once
# built (see _BUILT_DTYPES).
_SAME_AS_RECORD: dict[tuple[int, str], np.dtype] = {}


# The node arrays of the predictors validated during a load, in the order they were built, and
# over all of them: the highest split feature and the number of categorical splits. The
# estimator's cross-check after the load uses these instead of checking its predictors again
# (a list of references, not a summary per predictor: a boosting model has thousands, and the
# cross-check runs when the load's memory peaks). safe_loads empties them when a load ends.
class _PredictorRecord(threading.local):
    """Per thread: a server may load a model while another thread loads its replacement."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.max_feature = -1
        self.categorical = 0


_PREDICTORS = _PredictorRecord()


def forget_predictors() -> None:
    record = _PREDICTORS
    record.nodes = []
    record.max_feature = -1
    record.categorical = 0


_NODES = operator.attrgetter("nodes")


def _validated_in_this_load(predictors: list[Any]) -> bool:
    """Whether ``predictors`` are, in order, a run of the predictors validated in this load.

    (Loops in C, map and the identity test: a boosting model holds thousands of predictors.)
    """
    seen = _PREDICTORS.nodes
    if not predictors or not seen:
        return False
    try:
        nodes = list(map(_NODES, predictors))
    except AttributeError:
        return False  # one holds no node array: not a predictor that was validated
    first = nodes[0]
    start = next((k for k, a in enumerate(seen) if a is first), -1)
    if start < 0 or start + len(nodes) > len(seen):
        return False
    return all(map(operator.is_, nodes, seen[start : start + len(nodes)]))


def validate_tree(tree: Any) -> None:
    """Check a ``sklearn.tree._tree.Tree``: sizes, child links (acyclic), features, values."""
    what = "a decision tree (sklearn.tree._tree.Tree)"
    n_features, n_outputs = tree.n_features, tree.n_outputs
    node_count, capacity = tree.node_count, tree.capacity
    if n_features < 1 or n_outputs < 1:
        raise _refuse(what, f"n_features={n_features}, n_outputs={n_outputs}")
    if not 0 < node_count == capacity:
        # node_count drives loops over the node array; it must not exceed what was allocated
        raise _refuse(what, f"node_count={node_count} but {capacity} nodes were stored")
    n_classes = tree.n_classes
    counts = n_classes.tolist() if n_classes.shape == (n_outputs,) else [0]
    if min(counts) < 1:
        raise _refuse(what, "its class counts are malformed")
    if tree.max_n_classes != max(counts):
        raise _refuse(what, "max_n_classes disagrees with its class counts")
    state = tree.__getstate__()
    nodes, values = state["nodes"], state["values"]
    if values.shape != (node_count, n_outputs, tree.max_n_classes):
        raise _refuse(what, f"values have shape {values.shape}")
    depth, low, high, _, _ = _node_summary(nodes, "tree", what)
    if tree.max_depth != depth:
        # decision_path allocates n_samples * (1 + max_depth) entries and fills one per level
        raise _refuse(what, f"max_depth={tree.max_depth} but the tree is {depth} levels deep")
    if low < 0 or high >= n_features:
        raise _refuse(what, f"a split uses a feature outside 0..{n_features - 1}")


def validate_tree_state(state: Any) -> None:
    """The state a ``sklearn.tree._tree.Tree`` is given, before it is applied: its compiled
    ``__setstate__`` reads the node array's first dimension before it checks that there is one
    (a 0-d array crashed the load); the rest is checked on the built tree (:func:`validate_tree`).
    """
    what = "a decision tree's state"
    if type(state) is not dict:
        raise _refuse(what, f"expected a dict, got {_shape_of(state)}")
    for key, ndim in (("nodes", 1), ("values", 3)):
        a = state.get(key)
        if not isinstance(a, np.ndarray) or a.ndim != ndim:
            shape = a.shape if isinstance(a, np.ndarray) else type(a).__name__
            raise _refuse(what, f"its {key} are {shape}, not a {ndim}-d array")


_U32 = np.dtype(np.uint32)
_F64 = np.dtype(np.float64)
_BITSET_STRIDES = (32, 4)  # a C-contiguous (n, 8) uint32 array


def _bitset_rows(b: Any, attr: str, what: str) -> int:
    if not isinstance(b, np.ndarray) or b.ndim != 2 or (b.dtype is not _U32 and b.dtype != _U32):
        raise _refuse(what, f"{attr} is not a 2-d uint32 array")
    if b.shape[1] != 8 or (b.strides != _BITSET_STRIDES and not b.flags.c_contiguous):
        raise _refuse(what, f"{attr} has shape {b.shape}")
    rows: int = b.shape[0]
    return rows


def validate_tree_predictor(predictor: Any) -> None:
    """Check a HistGradientBoosting ``TreePredictor``: node links and bitset rows.

    A boosting model holds thousands of these (1,500 in the benchmark's), so this runs lean:
    the node records are checked by one C pass (``tree_nodes``), the rest are attribute reads.
    """
    what = "a gradient-boosting tree (TreePredictor)"
    nodes = getattr(predictor, "nodes", None)
    binned = _bitset_rows(
        getattr(predictor, "binned_left_cat_bitsets", None), "binned_left_cat_bitsets", what
    )
    raw = _bitset_rows(
        getattr(predictor, "raw_left_cat_bitsets", None), "raw_left_cat_bitsets", what
    )
    _, low, high, n_categorical, max_row = _node_summary(nodes, "predictor", what)
    record = _PREDICTORS
    record.nodes.append(nodes)
    if high > record.max_feature:
        record.max_feature = high
    record.categorical += n_categorical
    if low < 0:
        raise _refuse(what, "a split uses a negative feature index")
    if n_categorical and max_row >= min(binned, raw):
        raise _refuse(what, "a categorical split points past its bitsets")


def predictor_spec(fallback: Callable[[Any], Any]) -> tuple[Any, ...]:
    """What ``predictor_check`` (_pickle_scan.c) needs to run :func:`validate_tree_predictor`
    in C for the plain case: ``functools.partial(predictor_check, predictor_spec(hook))`` is a
    hook that checks a predictor as ``hook`` would, and hands anything else to ``hook``."""
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

    dtype, layout = _layout("predictor")
    return (
        fallback,
        TreePredictor,
        np.ndarray,
        _U32,
        dtype,
        _SAME_AS_RECORD,
        _PREDICTORS,
        "predictor",
        *layout,
    )


# --------------------------------------------------------------------------- neighbors trees
def validate_binary_tree(tree: Any) -> None:
    """Check a ``KDTree``/``BallTree``: index array, node ranges, bounds and metric sizes."""
    what = f"a neighbors tree ({type(tree).__name__})"
    (data, idx_array, node_data, node_bounds, leaf_size, n_levels, n_nodes, *_rest) = (
        tree.__getstate__()
    )
    metric, sample_weight = _rest[-2], _rest[-1]
    if not (isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[0] >= 1):
        raise _refuse(what, "its data is not a non-empty 2-d array")
    n_samples, n_features = data.shape
    idx_array = _int_array(idx_array, what)
    if idx_array.shape != (n_samples,) or idx_array.min() < 0 or idx_array.max() >= n_samples:
        raise _refuse(what, "its index array does not index its data")
    if not isinstance(node_data, np.ndarray) or node_data.shape != (n_nodes,) or n_nodes < 1:
        raise _refuse(what, f"it claims {n_nodes} nodes but stores {np.shape(node_data)}")
    if n_levels < 1 or n_levels > 64 or n_nodes != 2**n_levels - 1 or leaf_size < 1:
        raise _refuse(what, f"n_levels={n_levels}, n_nodes={n_nodes}, leaf_size={leaf_size}")
    _check_array_dtype(node_data, what)
    start, end = node_data["idx_start"], node_data["idx_end"]
    if np.any((start < 0) | (start > end) | (end > n_samples)):
        raise _refuse(what, "a node's index range lies outside its data")
    is_leaf = node_data["is_leaf"]
    if np.any((is_leaf != 0) & (is_leaf != 1)):
        raise _refuse(what, "a node's leaf flag is neither 0 nor 1")
    inner = np.flatnonzero(is_leaf == 0)
    if inner.size and 2 * int(inner.max()) + 2 >= n_nodes:
        raise _refuse(what, "an inner node's children lie past the node array")
    n_bounds = 2 if type(tree).__name__.startswith("KDTree") else 1
    if not isinstance(node_bounds, np.ndarray) or node_bounds.shape != (
        n_bounds,
        n_nodes,
        n_features,
    ):
        raise _refuse(what, f"its node bounds have shape {np.shape(node_bounds)}")
    if sample_weight is not None and np.shape(sample_weight) != (n_samples,):
        raise _refuse(what, "its sample weights do not match its data")
    _validate_metric(metric, n_features, what)


def validate_binary_tree_state(state: Any) -> None:
    """The state a ``KDTree``/``BallTree`` is given, before it is applied: its compiled
    ``__setstate__`` reads 13 items without a bounds check (a shorter tuple crashed the load)
    and keeps a metric that every query calls into."""
    what = "a neighbors tree's state"
    if type(state) is not tuple or len(state) != _TREE_STATE_ITEMS:
        raise _refuse(
            what, f"expected a tuple of {_TREE_STATE_ITEMS} items, got {_shape_of(state)}"
        )
    if not _is_distance_metric(state[11]):
        raise _refuse(what, f"its metric is a {type(state[11]).__name__}, not a DistanceMetric")
    # its compiled __setstate__ takes these as typed buffers: a record dtype whose first field
    # is of the right type passed that check, and the load itself then crashed
    data, idx_array, node_data, node_bounds, weights = (state[i] for i in (0, 1, 2, 3, 12))
    arrays = [
        ("data", data, 2, _TREE_FLOATS),
        ("index array", idx_array, 1, (np.dtype(np.intp),)),
        ("node bounds", node_bounds, 3, (getattr(data, "dtype", None),)),
    ]
    if weights is not None:
        arrays.append(("sample weights", weights, 1, _TREE_FLOATS))
    for name, a, ndim, dtypes in arrays:
        if not (isinstance(a, np.ndarray) and a.ndim == ndim and a.dtype in dtypes):
            raise _refuse(what, f"its {name} are {_array_kind(a)}, not {ndim}-d of {dtypes[0]}")
    if not (isinstance(node_data, np.ndarray) and node_data.dtype == _node_data_dtype()):
        raise _refuse(what, f"its node data are {_array_kind(node_data)}")


_TREE_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))


def _array_kind(a: Any) -> str:
    if isinstance(a, np.ndarray):
        return f"a {a.ndim}-d array of {str(a.dtype)[:60]}"
    return f"a {type(a).__name__}"


@functools.cache
def _node_data_dtype() -> np.dtype:
    """The record of a KDTree's or BallTree's nodes (scikit-learn's ``NodeData``)."""
    try:
        from sklearn.neighbors._kd_tree import NodeData
    except ImportError:  # (a release that does not name it: the layout it has had since 0.x)
        fields = [("idx_start", np.intp), ("idx_end", np.intp), ("is_leaf", np.intp)]
        return np.dtype([*fields, ("radius", np.float64)])
    return np.dtype(NodeData)


def validate_imputer_triplet(triplet: Any) -> None:
    """An ``IterativeImputer`` step (a named tuple): a feature index, the indices it reads and
    a fitted estimator. Made by a call, not by TUPLE opcodes, it would let tuples nest past the
    scanner's bound (CPython hashes nested tuples recursively: 200,000 levels crashed a load)."""
    what = "an iterative imputer's step"
    if len(triplet) != 3:
        raise _refuse(what, f"it holds {len(triplet)} items, not 3")
    feat_idx, neighbors, estimator = triplet
    if not isinstance(feat_idx, (int, np.integer)) or isinstance(feat_idx, bool):
        raise _refuse(what, f"its feature index is a {type(feat_idx).__name__}")
    if not (neighbors is None or isinstance(neighbors, np.ndarray)):
        raise _refuse(what, f"its neighbor features are a {type(neighbors).__name__}")
    if isinstance(estimator, tuple):
        raise _refuse(what, "its estimator is a tuple")


def validate_metric_state(state: Any) -> tuple[Any, ...] | None:
    """The state a ``DistanceMetric`` is given, before it is applied: its compiled
    ``__setstate__`` reads ``(p, vec, mat)`` without a bounds check (an empty tuple crashed the
    load), and a Python-function metric's reads two more, ``(func, kwargs)``.

    ``PyFuncDistance`` is never on the allowlist: it loads only when the caller trusts it (and
    its function). Which class the state is for is not known here, so a three-item state is
    padded with a function of ``None`` and no keywords: the other metrics ignore the two items,
    and a trusted Python-function metric given a short state raises a ``TypeError`` when it is
    used instead of reading past the tuple.
    """
    what = "a distance metric's state"
    if type(state) is not tuple or len(state) not in (3, 5):
        raise _refuse(
            what,
            f"expected (p, vec, mat), or (p, vec, mat, func, kwargs) for a Python-function "
            f"metric, got {_shape_of(state)}",
        )
    # (p, vec, mat): vec and mat are float64 for every metric, and the compiled __setstate__
    # takes them as typed buffers (a record dtype of a float64 field passed, then crashed)
    for name, a, ndim in (("vector", state[1], 1), ("matrix", state[2], 2)):
        if not (isinstance(a, np.ndarray) and a.ndim == ndim and a.dtype == _F64):
            raise _refuse(what, f"its {name} is {_array_kind(a)}, not {ndim}-d of float64")
    if len(state) == 3:
        return (*state, None, {})
    _check_metric_function(state[3], state[4], what)
    return None


def _check_metric_function(func: Any, kwargs: Any, what: str) -> None:
    """A Python-function metric calls ``func(x, y, **kwargs)`` on data, with the file's
    keywords: a function may be one the caller trusted, or one the allowlist admits to be called
    on data, as for a ``FunctionTransformer``."""
    if not callable(func) or type(kwargs) is not dict:
        raise _refuse(
            what,
            f"a Python-function metric needs a function and a dict of keywords, got a "
            f"{type(func).__name__} and a {type(kwargs).__name__}",
        )
    if not _callable_on_data(func):
        raise _refuse(
            what,
            f"its Python-function metric is {func!r:.80}, a function that models only name "
            f"and never call on data",
        )


_TREE_STATE_ITEMS = 13  # scikit-learn 1.0 to 1.9


def _shape_of(state: Any) -> str:
    return f"a tuple of {len(state)}" if type(state) is tuple else f"a {type(state).__name__}"


def _is_distance_metric(metric: Any) -> bool:
    cls = type(metric)
    return cls.__module__ == "sklearn.metrics._dist_metrics" and cls.__name__.endswith(
        ("Distance64", "Distance32", "Distance")
    )


def _validate_metric(metric: Any, n_features: int, what: str) -> None:
    if not _is_distance_metric(metric):
        raise _refuse(what, f"its metric is a {type(metric).__name__}, not a DistanceMetric")
    state = metric.__getstate__()
    vec, mat = state[1], state[2]
    name = type(metric).__name__
    if name.startswith("PyFuncDistance"):
        # (loaded only when trusted; a short state was given no function)
        if state[3] is None:
            raise _refuse(what, "its Python-function metric has no function")
        _check_metric_function(state[3], state[4], what)
        return
    if name.startswith("SEuclidean") and np.shape(vec) != (n_features,):
        raise _refuse(what, f"its {name} vector does not match {n_features} features")
    if name.startswith("Minkowski") and np.size(vec) not in (0, n_features):
        raise _refuse(what, f"its Minkowski weights do not match {n_features} features")
    if name.startswith("Mahalanobis") and np.shape(mat) != (n_features, n_features):
        raise _refuse(what, f"its Mahalanobis matrix does not match {n_features} features")
    if name.startswith("Haversine") and n_features != 2:
        # (latitude, longitude): it reads two values of every row, whatever the rows hold
        raise _refuse(what, f"its haversine metric reads 2 features, not {n_features}")


# --------------------------------------------------------------------------- scipy.sparse
def _check_compressed(m: Any, shape: tuple[int, ...], what: str) -> None:
    """indptr/indices/data of a CSR, CSC or BSR matrix, checked without trusting scipy.

    scipy's ``check_format(full_check=True)`` skips its index checks when the last index
    pointer is negative, and its C++ kernels then read far outside the arrays.
    """
    fmt = m.format
    indptr = _int_array(m.indptr, what)
    indices = _int_array(m.indices, what)
    data = m.data
    if not isinstance(data, np.ndarray):
        raise _refuse(what, "its data is not an array")
    for a in (indptr, indices, data):
        _check_array_dtype(a, what)
    if fmt == "bsr":
        if data.ndim != 3 or len(shape) != 2:
            raise _refuse(what, f"its blocks have shape {data.shape}")
        rows, cols = data.shape[1:]
        if rows < 1 or cols < 1 or shape[0] % rows or shape[1] % cols:
            raise _refuse(what, f"blocks of {rows}x{cols} do not tile {shape}")
        major, minor = shape[0] // rows, shape[1] // cols
    elif len(shape) == 1:
        major, minor = 1, shape[0]
    elif len(shape) == 2:
        major, minor = (shape[0], shape[1]) if fmt == "csr" else (shape[1], shape[0])
    else:
        raise _refuse(what, f"a compressed matrix of shape {shape}")
    if data.ndim < 1 or indptr.shape != (major + 1,):
        raise _refuse(what, f"{indptr.shape[0]} index pointers for {major} rows or columns")
    steps = np.diff(indptr.astype(np.int64))
    if int(indptr[0]) != 0 or np.any(steps < 0):
        raise _refuse(what, "its index pointers do not start at 0 and never decrease")
    if not int(indptr[-1]) == indices.shape[0] == data.shape[0]:
        raise _refuse(what, "its index pointers, indices and data disagree in length")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= minor):
        raise _refuse(what, f"an index is outside 0..{minor - 1}")


def validate_sparse(m: Any) -> None:
    """Check a scipy.sparse matrix or array: index arrays in bounds and consistent."""
    what = f"a sparse matrix ({type(m).__name__})"
    fmt = getattr(m, "format", None)
    try:
        shape = m.shape
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
            raise _refuse(what, f"its shape is {shape!r}")
        if fmt in ("csr", "csc", "bsr"):
            _check_compressed(m, shape, what)
            m.check_format(full_check=True)
        elif fmt == "coo":
            # what the installed scipy indexes with: coords from 1.13 (row and col are views of
            # it), row and col before (a coords in the state would be ignored there)
            stored_as_coords = isinstance(getattr(type(m), "row", None), property)
            coords = m.coords if stored_as_coords else (m.row, m.col)
            if not isinstance(coords, tuple) or len(coords) != len(shape):
                raise _refuse(what, "its coordinates do not match its shape")
            n = np.shape(m.data)
            for axis, c in enumerate(coords):
                c = _int_array(c, what)
                if c.shape != n or (c.size and (c.min() < 0 or c.max() >= shape[axis])):
                    raise _refuse(what, f"a coordinate along axis {axis} is out of bounds")
        elif fmt == "dia":
            data, offsets = m.data, _int_array(m.offsets, what)
            if not isinstance(data, np.ndarray) or data.ndim != 2:
                raise _refuse(what, "its data is not a 2-d array")
            if data.shape[0] != offsets.shape[0]:
                raise _refuse(what, "its data rows do not match its offsets")
    except FormatError:
        raise
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        raise _refuse(what, str(exc)) from None


# --------------------------------------------------------------------------- libsvm
def validate_libsvm(est: Any) -> None:
    """Check a fitted libsvm estimator (SVC, NuSVC, SVR, NuSVR, OneClassSVM)."""
    d = vars(est)
    if "support_" not in d:
        return  # not fitted: nothing reaches libsvm
    what = f"a support vector model ({type(est).__name__})"
    try:
        n_sv_per_class = _int_array(d["_n_support"], what)
        support = _int_array(d["support_"], what)
        sv = d["support_vectors_"]
        dual, intercept = d["_dual_coef_"], d["_intercept_"]
        prob_a, prob_b = d["_probA"], d["_probB"]
        shape_fit = d["shape_fit_"]
        impl = d["_impl"] if "_impl" in d else type(est)._impl
    except KeyError as exc:
        raise _refuse(what, f"it lacks {exc}") from None
    # libsvm reads these as float64 (dense or a sparse matrix's values): a record dtype whose
    # first field is float64 passed the compiled code's buffer check, then predict crashed
    floats = [
        ("support_vectors_", sv), ("dual coefficients", dual), ("intercepts", intercept),
        ("probA", prob_a), ("probB", prob_b),
    ]  # fmt: skip
    if d.get("class_weight_") is not None:
        floats.append(("class weights", d["class_weight_"]))
    for name, a in floats:
        values = a if isinstance(a, np.ndarray) else getattr(a, "data", None)
        if not (isinstance(values, np.ndarray) and values.dtype == _F64):
            dtype = getattr(values, "dtype", type(a).__name__)
            raise _refuse(what, f"its {name} are {str(dtype)[:60]}, not float64")
    n_sv = support.shape[0]
    n_class = n_sv_per_class.shape[0]
    classify = impl in ("c_svc", "nu_svc")
    precomputed = d.get("kernel") == "precomputed" or callable(d.get("kernel"))
    sparse = d.get("_sparse", False)
    if not isinstance(sparse, (bool, np.bool_)):
        raise _refuse(what, f"its sparse flag is {sparse!r:.40}")
    if sparse and precomputed:
        # scikit-learn never fits these on sparse input; libsvm's sparse predict would size the
        # model by the stored rows (none) and read as many kernel values as support counts
        raise _refuse(what, "a precomputed or callable kernel on the sparse code path")
    if np.shape(sv)[0] != (0 if precomputed else n_sv):
        raise _refuse(what, f"{np.shape(sv)[0]} support vectors but {n_sv} support indices")
    if not isinstance(sv, np.ndarray) and (
        getattr(sv, "format", None) != "csr" or np.shape(sv.indptr) != (np.shape(sv)[0] + 1,)
    ):
        # libsvm's sparse code reads the index pointers as one row per support vector
        raise _refuse(what, "its sparse support vectors are not rows of a CSR matrix")
    if n_sv_per_class.size and n_sv_per_class.min() < 0:
        raise _refuse(what, "a class has a negative number of support vectors")
    if classify:
        if n_class < 2 or int(n_sv_per_class.sum()) != n_sv:
            raise _refuse(what, "the support vector counts per class do not add up")
        n_pairs = n_class * (n_class - 1) // 2
        want_dual = (n_class - 1, n_sv)
    elif n_class != 2:
        # libsvm takes the class count from this array for every kind of model and reads a
        # row of coefficients and an intercept per pair of classes: a regression or one-class
        # model has one pair
        raise _refuse(what, f"a regression or one-class model with {n_class} support counts")
    else:
        n_pairs, want_dual = 1, (1, n_sv)
    if np.shape(dual) != want_dual:
        raise _refuse(what, f"dual coefficients have shape {np.shape(dual)}")
    stored: Any = dual if isinstance(dual, np.ndarray) else getattr(dual, "data", ())
    if np.size(stored) != math.prod(want_dual):
        # a sparse fit's coefficients: libsvm copies every one of them from the stored values
        raise _refuse(what, f"its sparse dual coefficients store {np.size(stored)} values")
    if np.shape(intercept) != (n_pairs,):
        raise _refuse(what, f"intercepts have shape {np.shape(intercept)}")
    # libsvm reads the probability parameters when the model says it has them (scikit-learn
    # 1.9's _effective_probability, probability before it): on sparse input, empty ones
    # crashed predict
    flag = d["_effective_probability"] if "_effective_probability" in d else d.get("probability")
    if not isinstance(flag, (bool, np.bool_, str, type(None))):
        raise _refuse(what, f"its probability flag is {flag!r:.40}")
    probability = flag is True or flag is np.True_
    if probability and not classify:
        raise _refuse(what, "a regression or one-class model claims probability estimates")
    sizes = (n_pairs,) if probability else (0, n_pairs)
    for name, p in (("probA", prob_a), ("probB", prob_b)):
        if np.size(p) not in sizes:
            raise _refuse(what, f"{name} has {np.size(p)} entries")
    if not (isinstance(shape_fit, tuple) and len(shape_fit) == 2):
        raise _refuse(what, "shape_fit_ is malformed")
    if n_sv and (support.min() < 0 or support.max() >= shape_fit[0]):
        raise _refuse(what, "a support index lies outside the training set")
    n_in = d.get("n_features_in_")
    if not precomputed and n_in is not None and np.shape(sv)[1] != n_in:
        raise _refuse(what, f"support vectors have {np.shape(sv)[1]} features, not {n_in}")


# --------------------------------------------------------------------------- scipy splines
def validate_bspline(spline: Any) -> None:
    """Check a ``scipy.interpolate.BSpline`` the way its constructor would (pickles skip it)."""
    what = "a B-spline (scipy.interpolate.BSpline)"
    d = getattr(spline, "__dict__", {})
    t, c, k = d.get("_t", d.get("t")), d.get("_c", d.get("c")), d.get("k")
    if not (isinstance(t, np.ndarray) and t.ndim == 1 and t.dtype.kind == "f"):
        raise _refuse(what, "its knots are not a 1-d float array")
    if not (isinstance(c, np.ndarray) and c.ndim >= 1 and type(k) is int and k >= 0):
        raise _refuse(what, "its coefficients or degree are malformed")
    n = t.shape[0] - k - 1
    if n < k + 1 or c.shape[0] < n:
        raise _refuse(what, f"{t.shape[0]} knots, degree {k} and {c.shape[0]} coefficients")
    if np.any(np.diff(t) < 0):
        raise _refuse(what, "its knots are not sorted")
    axis = d.get("axis", 0)
    if type(axis) is not int or not 0 <= axis < c.ndim:
        raise _refuse(what, f"axis={axis!r}")


# --------------------------------------------------------------------------- numpy random
def validate_seed_sequence(seq: Any) -> None:
    """Check a numpy ``SeedSequence``: its entropy pool matches its declared size."""
    what = "a numpy SeedSequence"
    pool, size = getattr(seq, "pool", None), getattr(seq, "pool_size", None)
    if not (
        isinstance(pool, np.ndarray)
        and pool.dtype == np.uint32
        and type(size) is int
        and pool.shape == (size,)
    ):
        raise _refuse(what, "its entropy pool does not match its pool size")


def validate_random_state(obj: Any) -> None:
    """Check a numpy ``RandomState``, ``Generator`` or bit generator after its state is set.

    numpy takes a bit generator's position in its buffer from the state without a range check:
    an MT19937 at ``pos`` 10**9 loads, and its first draw reads far outside its key (a
    crash); a Philox with a negative ``buffer_pos`` reads before its buffer.
    """
    what = f"a numpy {type(obj).__name__}"
    bit_generator = obj
    if not isinstance(obj, np.random.BitGenerator):
        bit_generator = getattr(obj, "_bit_generator", None) or getattr(obj, "bit_generator", None)
    if not isinstance(bit_generator, np.random.BitGenerator):
        raise _refuse(what, "it has no bit generator")
    state = bit_generator.state
    kind = state.get("bit_generator")
    if kind == "MT19937":
        inner = state["state"]
        pos, key = inner["pos"], inner["key"]
        if not (0 <= int(pos) <= 624 and np.shape(key) == (624,)):
            raise _refuse(what, f"its MT19937 position {pos} is outside its 624-word key")
    elif kind == "Philox":
        pos = state["buffer_pos"]
        if not 0 <= int(pos) <= 4:
            raise _refuse(what, f"its Philox buffer position {pos} is outside its 4-word buffer")


def validate_partial(obj: Any) -> None:
    """A ``functools.partial`` may only wrap an allowlisted function.

    scikit-learn stores one in HistGradientBoosting's categorical preprocessor
    (``partial(check_array, ...)``). Its state can name any callable on the unpickler's stack,
    so the wrapped callable is checked by identity against the allowlist after the state is set.
    """
    from amber.security._allowlist import _lookup, entries

    if type(obj) is not functools.partial:
        raise _refuse("a functools.partial", f"it is a {type(obj).__name__}")
    func = obj.func
    key = (getattr(func, "__module__", None), getattr(func, "__qualname__", None))
    entry = entries().get(key) if all(isinstance(k, str) for k in key) else None  # type: ignore[arg-type]
    if entry is None or entry.kind != "function" or _lookup(entry.module, entry.name) is not func:
        raise _refuse(
            "a functools.partial",
            f"it wraps {func!r}, which is not an allowlisted function",
        )


# --------------------------------------------------------------------------- registry
_SPARSE = [
    f"scipy.sparse._{fmt}.{fmt}_{kind}"
    for fmt in ("csr", "csc", "bsr", "coo", "dia")
    for kind in ("matrix", "array")
]
_SVM = [f"sklearn.svm._classes.{n}" for n in ("SVC", "NuSVC", "SVR", "NuSVR", "OneClassSVM")]

OBJECT_VALIDATORS: dict[tuple[str, str], Validator] = {
    ("numpy", "dtype"): validate_dtype,
    ("sklearn.impute._iterative", "_ImputerTriplet"): validate_imputer_triplet,
    ("functools", "partial"): validate_partial,
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"): validate_seed_sequence,
    ("numpy.random._pickle", "__randomstate_ctor"): validate_random_state,
    ("numpy.random._pickle", "__generator_ctor"): validate_random_state,
    ("numpy.random._pickle", "__bit_generator_ctor"): validate_random_state,
    ("scipy.interpolate._bsplines", "BSpline"): validate_bspline,
    ("sklearn.tree._tree", "Tree"): validate_tree,
    ("sklearn.neighbors._kd_tree", "KDTree"): validate_binary_tree,
    ("sklearn.neighbors._kd_tree", "KDTree64"): validate_binary_tree,
    ("sklearn.neighbors._kd_tree", "KDTree32"): validate_binary_tree,
    ("sklearn.neighbors._ball_tree", "BallTree"): validate_binary_tree,
    ("sklearn.neighbors._ball_tree", "BallTree64"): validate_binary_tree,
    ("sklearn.neighbors._ball_tree", "BallTree32"): validate_binary_tree,
    PREDICTOR: validate_tree_predictor,
    **{tuple(n.rsplit(".", 1)): validate_sparse for n in _SPARSE},  # type: ignore[misc]
    **{tuple(n.rsplit(".", 1)): validate_libsvm for n in _SVM},  # type: ignore[misc]
}
"""Validators run on an object right after the unpickler sets its state, keyed by the raw
``(module, name)`` of the global that constructs it."""

STATE_VALIDATORS: dict[tuple[str, str], Validator] = {
    ("numpy", "dtype"): validate_dtype_state,
    ("numpy._core.multiarray", "_reconstruct"): validate_array_state,
    ("numpy.core.multiarray", "_reconstruct"): validate_array_state,
    ("numpy.ma.core", "_mareconstruct"): validate_masked_array_state,
    # the compiled trees' and metrics' own constructors (their __setstate__ trusts the state)
    ("sklearn.neighbors._kd_tree", "newObj"): validate_binary_tree_state,
    ("sklearn.neighbors._ball_tree", "newObj"): validate_binary_tree_state,
    ("sklearn.metrics._dist_metrics", "newObj"): validate_metric_state,
    ("sklearn.tree._tree", "Tree"): validate_tree_state,
}
"""Validators run on each ``BUILD`` state before it is applied, for objects made by these
globals (when applying a hostile state is itself unsafe)."""

GENERIC_CONSTRUCTORS = frozenset(
    {
        ("copyreg", "__newobj__"),
        ("copyreg", "__newobj_ex__"),
        ("copyreg", "_reconstructor"),
        ("sklearn.neighbors._kd_tree", "newObj"),
        ("sklearn.neighbors._ball_tree", "newObj"),
        ("sklearn.metrics._dist_metrics", "newObj"),
    }
)
"""Allowed helpers that build an object of a class named in their arguments: what they
build is validated by its type (:func:`validate_object`)."""

_BY_TYPE: dict[tuple[str, str], Validator] = {
    **OBJECT_VALIDATORS,
    ("numpy.random.bit_generator", "SeedSequence"): validate_seed_sequence,
    **{
        key: validate_random_state
        for key in (
            ("numpy.random.mtrand", "RandomState"),
            ("numpy.random._generator", "Generator"),
            ("numpy.random._mt19937", "MT19937"),
            ("numpy.random._philox", "Philox"),
        )
    },
}


def validate_object(obj: Any) -> None:
    """Run the validator of ``obj``'s type, if it has one."""
    if isinstance(obj, np.dtype):
        validate_dtype(obj)
        if len(_BUILT_DTYPES) >= 4096:
            _BUILT_DTYPES.clear()
        _BUILT_DTYPES[id(obj)] = obj
        return
    validator = _class_info(type(obj))[0]
    if validator is not None:
        validator(obj)


def _class_info(cls: type) -> tuple[Validator | None, bool]:
    """A class's validator (or None) and whether it is one of ``_LEAVES``, found once per class
    (by identity) rather than from its module and name for each object: a boosting model has
    1,500 predictors."""
    info = _CLASS_INFO.get(cls)
    if info is None:
        if len(_CLASS_INFO) >= 4096:
            _CLASS_INFO.clear()
        key = (cls.__module__, cls.__qualname__)
        info = _CLASS_INFO[cls] = (_BY_TYPE.get(key), key in _LEAVES)
    return info


_CLASS_INFO: dict[type, tuple[Validator | None, bool]] = {}


# Allowlisted functions that scikit-learn calls only with arguments it computes itself, and
# that write outside their buffers when called with others (k-means' steps write by the width
# of the centers they are given: a SelectKBest whose score function was a partial of one
# crashed its fit). A file may hold one only where scikit-learn puts it: (module, class,
# attribute) of the holder.
_HELD_ONLY_AT = {
    ("sklearn.cluster._kmeans", name): (
        "sklearn.cluster._bisect_k_means",
        "BisectingKMeans",
        "_kmeans_single",
    )
    for name in ("_kmeans_single_lloyd", "_kmeans_single_elkan")
}


def _held_only_at() -> dict[int, tuple[str, str, str]]:
    """``_HELD_ONLY_AT`` by the functions' ids (a module not imported holds none in a load)."""
    found = {}
    for (module, name), holder in _HELD_ONLY_AT.items():
        func = getattr(sys.modules.get(module), name, None)
        if func is not None:
            found[id(func)] = holder
    return found


# Estimators whose sub-objects must agree with the estimator's own input width, and the objects
# the walk checks where they are held.
_CROSS_CHECKED = {
    *_HELD_ONLY_AT,  # where they are held (see _walk)
    ("functools", "partial"),  # what it calls and with what keywords (see _walk)
    ("numpy", "matrix"),  # its shape, set by a state, must be 2-d (see _walk)
    ("numpy.matrixlib.defmatrix", "matrix"),
    ("sklearn.tree._tree", "Tree"),
    PREDICTOR,
    ("sklearn.neighbors._kd_tree", "KDTree"),
    ("sklearn.neighbors._ball_tree", "BallTree"),
    *CHECKED_CLASSES,  # fitted state that compiled code reads at predict time (_fitted.py)
    # a DistanceMetric object (a neighbors model's metric=): its sizes against the input width
    ("sklearn.metrics._dist_metrics", "newObj"),
}


def needs_validation(referenced: Iterable[tuple[str, str]], *, cross_only: bool = False) -> bool:
    """Whether a stream that references these globals needs :func:`validate_loaded`.

    With ``cross_only``, only the checks that relate two objects count (the loader already
    validated each object as it was built).
    """
    names = set(referenced)
    if names & _CROSS_CHECKED:
        return True
    return not cross_only and bool(names & (set(OBJECT_VALIDATORS) - {("numpy", "dtype")}))


# --------------------------------------------------------------------------- graph walk
_HOLDS_TREES = ("tree_", "_tree", "_predictors")


def _only_checked_predictors(predictors: Any, flat: list[Any]) -> bool:
    """Whether a boosting model's ``_predictors`` (``flat``: its predictors, each checked as it
    was built) is lists of predictors holding their three arrays only: the walk would find
    nothing more in it."""
    cls = type(flat[0]) if flat else None
    return (
        cls is not None
        and _class_info(cls)[1]
        and type(predictors) is list
        and all(type(stage) is list for stage in predictors)
        and all(map(operator.is_, map(type, flat), itertools.repeat(cls)))
        and all(map(_LEAF_ATTRIBUTES.issuperset, map(vars, flat)))
    )


def _cross_check(obj: Any) -> str | None:
    """Check what relates ``obj`` (an estimator) to the objects it holds; returns the name of
    an attribute whose contents need no walk (already checked, nothing inside), if any."""
    d = getattr(obj, "__dict__", None)
    if not isinstance(d, dict):
        return None
    what = f"an estimator ({type(obj).__name__})"
    done = check_fitted(obj, d, _refuse)
    n_in = d.get("n_features_in_")
    if n_in is None:
        # scikit-learn checks an input's width only against a recorded n_features_in_, and
        # the trees' compiled predict loops index the input by their split features unchecked
        if any(d.get(k) is not None for k in _HOLDS_TREES):
            raise _refuse(what, "it holds trees but records no input width (n_features_in_)")
        return done
    if (type(n_in) is not int and not isinstance(n_in, np.integer)) or n_in < 0:
        raise _refuse(what, f"its input width n_features_in_ is {n_in!r:.40}")
    tree = d.get("tree_")
    if tree is not None and getattr(tree, "n_features", n_in) != n_in:
        raise _refuse(what, f"its tree expects {tree.n_features} features, not {n_in}")
    for attr in ("metric", "effective_metric_"):
        metric = d.get(attr)
        if type(metric).__module__ == "sklearn.metrics._dist_metrics":
            # brute force hands it the caller's rows, which are n_features_in_ wide
            _validate_metric(metric, int(n_in), what)
    neighbors = d.get("_tree")
    if neighbors is not None:
        width = np.shape(getattr(neighbors, "data", ()))
        if len(width) == 2 and width[1] != n_in:
            raise _refuse(what, f"its neighbors tree has {width[1]} features, not {n_in}")
    # done: from check_fitted, or "_predictors" below (a model holds one or the other)
    predictors = d.get("_predictors")
    if predictors is not None:
        cat = getattr(d.get("_bin_mapper"), "is_categorical_", None)
        flat = list(itertools.chain.from_iterable(predictors))
        record = _PREDICTORS
        checked = record.max_feature < n_in and not record.categorical
        if checked and _validated_in_this_load(flat):
            if _only_checked_predictors(predictors, flat):
                done = "_predictors"
            flat = []  # every split of every predictor is numeric and on a known feature
        for p in flat:
            _, _, high, n_categorical, _ = _node_summary(
                getattr(p, "nodes", None), "predictor", what
            )
            if high >= n_in:
                raise _refuse(what, f"a boosting tree splits on a feature >= {n_in}")
            if not n_categorical:
                continue
            nodes = p.nodes[p.nodes["is_leaf"] == 0]
            is_cat = nodes["is_categorical"] != 0
            if np.any(is_cat) and (
                cat is None or not np.all(np.asarray(cat)[nodes["feature_idx"][is_cat]])
            ):
                raise _refuse(what, "a categorical split is on a non-categorical feature")
    subs = d.get("estimators_")
    if subs is not None:
        features = d.get("estimators_features_")
        flat = list(np.ravel(subs)) if isinstance(subs, np.ndarray) else list(subs)
        for k, sub in enumerate(flat):
            sub_width = n_in
            if features is not None:
                feats = _int_array(np.asarray(features[k]), what)
                if feats.size and (feats.min() < 0 or feats.max() >= n_in):
                    raise _refuse(what, "a sub-estimator's feature subset is out of range")
                sub_width = feats.shape[0]
            sub_n = getattr(sub, "n_features_in_", sub_width)
            if sub_n != sub_width:
                raise _refuse(what, f"a sub-estimator expects {sub_n} features, not {sub_width}")
    return done


def validate_loaded(
    obj: Any, referenced_globals: Iterable[tuple[str, str]], *, cross_only: bool = False
) -> None:
    """Walk a loaded object graph and refuse hostile data in the types that need checks.

    Cheap when nothing needs checking: returns at once unless ``referenced_globals`` (from
    :func:`~amber.security._scanner.scan_pickle`) names a validated type. ``cross_only``
    skips the per-object validators (for callers that ran them while loading).
    """
    if not needs_validation(referenced_globals, cross_only=cross_only):
        return
    if cross_only:
        _walk(obj, cross_only=True)  # the caller (safe_loads) forgets this load's predictors
        return
    try:
        _walk(obj, cross_only=False)
    finally:
        forget_predictors()


def _walk(obj: Any, *, cross_only: bool) -> None:
    seen: set[int] = set()
    stack = [obj]
    pop, push, add = stack.pop, stack.extend, seen.add
    held_only = _held_only_at()
    holders = {(module, cls): attribute for module, cls, attribute in held_only.values()}
    while stack:
        o = pop()
        t = type(o)
        if t in _ATOMS or id(o) in seen:
            continue
        add(id(o))
        if id(o) in held_only:
            # (the attribute where it may be is not walked into: reached, it is somewhere else)
            _, holder, attribute = held_only[id(o)]
            raise _refuse(
                "a model",
                f"it holds {getattr(o, '__qualname__', o)!r:.80}, a step that only a "
                f"{holder}'s {attribute} may hold (called on data with other arguments, "
                f"it writes outside its buffers)",
            )
        if not cross_only:
            run_validator(validate_object, o)
        if _class_info(t)[1] and vars(o).keys() <= _LEAF_ATTRIBUTES:
            continue  # validated as built; holds only arrays (a boosting model has 1,000s)
        if isinstance(o, dict):
            if o.get("out") is not None:
                # keywords a model hands to the functions it holds (a FunctionTransformer's
                # kw_args, a metric's metric_params, a partial's keywords): out= would make
                # numpy write into an array of the file, which pickle's memo can make one the
                # loader checked elsewhere (a tree's indices: the next query crashed). No
                # fitted model keeps one.
                raise _refuse(
                    "a model", "it holds keywords with out=, which would write into its arrays"
                )
            push(v for v in o.values() if type(v) not in _ATOMS)
        elif isinstance(o, (list, tuple, set, frozenset)):
            push(v for v in o if type(v) not in _ATOMS)
        elif isinstance(o, np.ndarray):
            if isinstance(o, np.matrix) and o.ndim != 2:
                # numpy's matrix code assumes two dimensions; a state can set any shape
                raise _refuse("a numpy matrix", f"it has {o.ndim} dimensions, not 2")
            if o.dtype.hasobject:
                push(o.ravel(order="K").tolist())
        elif isinstance(o, np.dtype):
            continue
        elif t is functools.partial:
            # what it calls and with what (its keywords: a dict, checked as every dict is):
            # none of it is in its __dict__
            push((o.func, o.args, o.keywords))
        else:
            d = getattr(o, "__dict__", None)
            if type(d) is dict:
                done = run_validator(_cross_check, o)
                if not cross_only:
                    # a full walk (a joblib file's) checks again what was checked as it was
                    # built: the stream may have changed it since
                    done = None
                # where scikit-learn keeps a step of _HELD_ONLY_AT, if this is its holder
                kept = holders.get((t.__module__, t.__name__)) if holders else None
                if kept is not None and id(d.get(kept)) not in held_only:
                    kept = None
                push(v for k, v in d.items() if type(v) not in _ATOMS and k != done and k != kept)


# Validated types whose attributes are plain arrays, with nothing to walk into: checked as they
# were built, and cross-checked from the estimator that holds them.
_LEAVES = {PREDICTOR}
_LEAF_ATTRIBUTES = frozenset({"nodes", "binned_left_cat_bitsets", "raw_left_cat_bitsets"})
