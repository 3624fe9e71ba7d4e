"""Hostile data in allowed types: each case crashes (or misbehaves) with plain pickle, shown in a
subprocess, and Amber refuses the same bytes before anything can use the object."""

from __future__ import annotations

import copy
import copyreg
import io
import pickle
import pickletools
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from security_kit import Forged, crashed, run_python
from sklearn.datasets import make_classification

from amber.errors import FormatError
from amber.security._policy import LoadPolicy
from amber.security._scanner import scan_pickle
from amber.security._unpickler import safe_loads
from amber.security._validators import (
    OBJECT_VALIDATORS,
    needs_validation,
    validate_dtype,
    validate_loaded,
)

X, Y = make_classification(120, 6, n_informative=4, random_state=0)


def amber_refuses(obj: Any, fragment: str) -> bytes:
    """Pickle ``obj`` (in band, protocol 5) and check that safe_loads refuses it."""
    data = pickle.dumps(obj, protocol=5)
    with pytest.raises(FormatError, match=fragment), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        safe_loads(data, policy=LoadPolicy())
    return data


def plain_pickle_crashes(tmp_path: Path, data: bytes, use: str) -> None:
    """Load ``data`` with plain pickle in a fresh interpreter, run ``use`` on ``obj``."""
    stream, inputs = tmp_path / "hostile.pkl", tmp_path / "X.npy"
    stream.write_bytes(data)
    np.save(inputs, X)
    proc = run_python(
        f"""
        import pickle, numpy as np, warnings
        warnings.simplefilter("ignore")
        X = np.load({str(inputs)!r})
        obj = pickle.loads(open({str(stream)!r}, "rb").read())
        {use}
        print("survived")
        """
    )
    assert crashed(proc), (proc.returncode, proc.stdout[-300:], proc.stderr[-600:])


# --------------------------------------------------------------------------- decision trees
def _tree_model() -> Any:
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, Y)


def _with_tree_state(model: Any, **changes: Any) -> Any:
    """A copy of ``model`` whose tree pickles with a modified state."""
    from sklearn.tree._tree import Tree

    tree = model.tree_
    args = (changes.pop("n_features", tree.n_features), tree.n_classes.copy(), tree.n_outputs)
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    for field, (index, value) in changes.pop("nodes", {}).items():
        nodes[field][index] = value
    state = {**state, "nodes": nodes, **changes}
    hostile = copy.copy(model)
    hostile.tree_ = Forged(Tree, args, state)
    return hostile


def test_tree_child_index_out_of_range(tmp_path: Path) -> None:
    hostile = _with_tree_state(_tree_model(), nodes={"left_child": (0, 2**40)})
    data = amber_refuses(hostile, "child index is out of range")
    plain_pickle_crashes(tmp_path, data, "obj.predict(X)")


@pytest.mark.parametrize("build", ["REDUCE", "NEWOBJ"])
def test_a_tree_state_without_a_node_dimension_is_refused_before_it_is_applied(
    tmp_path: Path, build: str
) -> None:
    """Found by fuzzing: Tree.__setstate__ reads the node array's first dimension before it
    checks the array has one, so a 0-d node array crashed the load itself, whichever opcode
    the stream builds the tree with."""
    from sklearn.tree._tree import Tree

    model = _tree_model()
    tree = model.tree_
    args = (tree.n_features, tree.n_classes.copy(), tree.n_outputs)
    state = tree.__getstate__()
    hostile_state = {**state, "nodes": np.array(state["nodes"][0])}

    class Hostile(pickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if type(obj) is not Tree:
                return NotImplemented
            if build == "NEWOBJ":  # cls.__new__(cls, *args): the NEWOBJ opcode
                return copyreg.__newobj__, (Tree, *args), hostile_state
            return Tree, args, hostile_state

    out = io.BytesIO()
    Hostile(out, protocol=2).dump(model)
    data = out.getvalue()
    assert any(op.name == build for op, _, _ in pickletools.genops(data))
    with pytest.raises(FormatError, match=r"its nodes are \(\), not a 1-d array"):
        safe_loads(data, policy=LoadPolicy())
    plain_pickle_crashes(tmp_path, data, "pass")  # the load itself
    hostile = copy.copy(model)
    hostile.tree_ = Forged(Tree, args, {**state, "values": np.float64(1.0)})
    amber_refuses(hostile, "its values are float64, not a 3-d array")


def test_tree_cycle_is_refused() -> None:
    # a child pointing back at its parent makes predict loop forever
    amber_refuses(_with_tree_state(_tree_model(), nodes={"right_child": (0, 0)}), "points back")


def test_tree_depth_understated(tmp_path: Path) -> None:
    """Found by fuzzing: decision_path sizes its output by max_depth and overflows the heap."""
    hostile = _with_tree_state(_tree_model(), max_depth=1)
    data = amber_refuses(hostile, "max_depth=1 but the tree is 4 levels deep")
    plain_pickle_crashes(tmp_path, data, "for _ in range(50): obj.decision_path(X)")


def test_tree_node_with_two_parents_is_refused() -> None:
    model = _tree_model()
    left, right = model.tree_.children_left, model.tree_.children_right
    inner = np.flatnonzero(left != -1)
    parent, other = int(inner[1]), int(inner[0])  # point a second parent at a shared child
    target = int(right[parent])
    hostile = _with_tree_state(model, nodes={"right_child": (other, target)})
    amber_refuses(hostile, "no parent or more than one")


def test_tree_node_with_one_child_is_refused() -> None:
    model = _tree_model()
    leaf = int(np.flatnonzero(model.tree_.children_left == -1)[0])
    amber_refuses(_with_tree_state(model, nodes={"left_child": (leaf, 1)}), "exactly one child")


def test_tree_feature_out_of_range(tmp_path: Path) -> None:
    hostile = _with_tree_state(_tree_model(), nodes={"feature": (0, 10**9)})
    data = amber_refuses(hostile, "feature outside")
    plain_pickle_crashes(tmp_path, data, "obj.predict(X)")


def test_tree_values_of_the_wrong_shape_are_refused_by_sklearn_itself() -> None:
    model = _tree_model()
    values = model.tree_.__getstate__()["values"][:2].copy()
    amber_refuses(_with_tree_state(model, values=values), "Wrong shape for value array")


def test_tree_wider_than_its_estimator(tmp_path: Path) -> None:
    # the tree itself is consistent (feature < its n_features), but the estimator feeds it
    # rows of 6 features
    hostile = _with_tree_state(_tree_model(), n_features=10**9, nodes={"feature": (0, 10**8)})
    data = amber_refuses(hostile, "its tree expects 1000000000 features, not 6")
    plain_pickle_crashes(tmp_path, data, "obj.predict(X)")


def test_forest_member_of_another_width() -> None:
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(3, random_state=0).fit(X, Y)
    member = copy.copy(forest.estimators_[1])
    member.n_features_in_ = 9
    hostile = copy.copy(forest)
    hostile.estimators_ = [forest.estimators_[0], member, forest.estimators_[2]]
    amber_refuses(hostile, "sub-estimator expects 9 features, not 6")


# --------------------------------------------------------------------------- gradient boosting
def _hgb() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=3, random_state=0).fit(X, Y)


def _with_predictor_nodes(model: Any, field: str, value: Any, which: int = 0) -> Any:
    hostile = copy.deepcopy(model)
    nodes = hostile._predictors[which][0].nodes
    nodes[field][0] = value
    return hostile


# The first predictor of a stream is checked in full; the later ones, whose node dtype is the
# object the first one's passed with, skip the dtype checks (remembered): both must refuse.
@pytest.mark.parametrize("which", [0, -1], ids=["first", "last"])
def test_boosting_child_out_of_range(tmp_path: Path, which: int) -> None:
    data = amber_refuses(_with_predictor_nodes(_hgb(), "left", 2**31, which), "child index")
    plain_pickle_crashes(tmp_path, data, "obj.predict(X)")


@pytest.mark.parametrize("which", [0, -1], ids=["first", "last"])
def test_boosting_feature_out_of_range(tmp_path: Path, which: int) -> None:
    hostile = _with_predictor_nodes(_hgb(), "feature_idx", 10**9, which)
    data = amber_refuses(hostile, "feature >= 6")
    plain_pickle_crashes(tmp_path, data, "obj.predict(X)")


def test_boosting_models_of_different_widths_in_one_stream() -> None:
    """The load-wide summary of the predictors must not let a narrow model's predictor split on
    a feature that only the wide model has."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    narrow = HistGradientBoostingClassifier(max_iter=3, random_state=0).fit(X[:, :2], Y)
    wide = _hgb()  # 6 features
    loaded = safe_loads(pickle.dumps([wide, narrow], protocol=5), policy=LoadPolicy())
    np.testing.assert_array_equal(loaded[1].predict(X[:, :2]), narrow.predict(X[:, :2]))
    np.testing.assert_array_equal(loaded[0].predict(X), wide.predict(X))
    split = int(np.flatnonzero(narrow._predictors[0][0].nodes["is_leaf"] == 0)[0])
    hostile = copy.deepcopy(narrow)
    hostile._predictors[0][0].nodes["feature_idx"][split] = 4  # valid for the wide model only
    amber_refuses([wide, hostile], "feature >= 2")
    amber_refuses([hostile, wide], "feature >= 2")


@pytest.mark.parametrize("where", ["first", "last"])
def test_an_estimator_hidden_in_a_boosting_predictor_is_still_cross_checked(where: str) -> None:
    """The cross-check walk skips a boosting model's predictors only when each holds its three
    arrays and nothing else: a tree wider than its estimator hidden in one is found."""
    hostile = copy.deepcopy(_hgb())
    tree = _with_tree_state(_tree_model(), n_features=10**9, nodes={"feature": (0, 10**8)})
    predictor = hostile._predictors[0 if where == "first" else -1][-1]
    predictor.hidden = tree
    amber_refuses(hostile, "its tree expects 1000000000 features, not 6")
    loaded = safe_loads(pickle.dumps(_hgb(), protocol=5), policy=LoadPolicy())  # plain: loads
    np.testing.assert_array_equal(loaded.predict(X), _hgb().predict(X))


def test_predictors_count_as_checked_only_with_the_node_arrays_that_were() -> None:
    """The walk skips a boosting model's predictors only when they are, in order, the ones
    whose node arrays the load checked: a predictor holding a copy of its array (or none) is
    not one of them."""
    from amber.security import _validators

    flat = [p for stage in _hgb()._predictors for p in stage]
    _validators._PREDICTORS.nodes = [p.nodes for p in flat]
    try:
        assert _validators._validated_in_this_load(flat)
        assert _validators._validated_in_this_load(flat[1:])  # a run inside the record
        copied = copy.copy(flat[-1])
        copied.nodes = flat[-1].nodes.copy()
        assert not _validators._validated_in_this_load([*flat[:-1], copied])
        bare = copy.copy(flat[0])
        del bare.nodes
        assert not _validators._validated_in_this_load([bare, *flat[1:]])
        assert not _validators._validated_in_this_load([*flat, flat[0]])  # past the record
    finally:
        _validators.forget_predictors()


def _rewritten_after_its_check(model: Any) -> bytes:
    """``model``'s protocol-5 pickle with opcodes added at its end that rewrite the bytes under
    its first predictor's node array (the bytearray the array views, fetched from the memo):
    the root's child links become 10**7, after the predictor was built and checked."""
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    data = pickle.dumps(model, protocol=5)
    target = model._predictors[0][0].nodes.tobytes()
    ops = list(pickletools.genops(data))
    memo, index = 0, None
    body = bytearray()
    for k, (op, _, pos) in enumerate(ops):
        if op.name == "MEMOIZE":
            previous = ops[k - 1]
            if previous[0].name == "BYTEARRAY8" and bytes(previous[1]) == target:
                index = memo
            memo += 1
        if op.name not in ("FRAME", "STOP"):  # unframed, so that opcodes can follow
            body += data[pos : ops[k + 1][2] if k + 1 < len(ops) else len(data)]
    assert index is not None
    for field in ("left", "right"):
        offset = PREDICTOR_RECORD_DTYPE.fields[field][1]
        for i, byte in enumerate(struct.pack("<I", 10**7)):
            body += b"j" + struct.pack("<I", index)  # LONG_BINGET the bytearray
            body += b"J" + struct.pack("<i", offset + i) + b"J" + struct.pack("<i", byte)
            body += b"s0"  # SETITEM, POP
    return bytes(body + b".")


def test_boosting_nodes_rewritten_after_their_check(tmp_path: Path) -> None:
    data = _rewritten_after_its_check(_hgb())
    with pytest.raises(FormatError, match="modify an array's bytes in place"):
        safe_loads(data, policy=LoadPolicy())
    plain_pickle_crashes(tmp_path, data, "obj.predict_proba(X * 0 + 1e9)")


def test_a_full_walk_checks_again_the_predictors_checked_as_built() -> None:
    """A joblib file's load checks each object as it is built and walks the result with every
    validator: the walk must not skip the predictors, whose nodes the stream may have changed
    since their check."""
    from amber.security import _validators

    model = copy.deepcopy(_hgb())
    predictors = [p for stage in model._predictors for p in stage]
    try:
        for p in predictors:
            _validators.validate_tree_predictor(p)  # as the load did, while building them
        predictors[-1].nodes["left"][0] = 10**6  # changed after its check
        with pytest.raises(FormatError, match="child index"):
            _validators._walk(model, cross_only=False)
    finally:
        _validators.forget_predictors()


def test_boosting_categorical_split_past_its_bitsets() -> None:
    hostile = copy.deepcopy(_hgb())
    nodes = hostile._predictors[0][0].nodes
    nodes["is_categorical"][0] = 1
    nodes["bitset_idx"][0] = 10**6
    amber_refuses(hostile, "categorical split points past its bitsets")


def test_boosting_negative_feature_is_refused() -> None:
    amber_refuses(_with_predictor_nodes(_hgb(), "feature_idx", -3), "negative feature index")


def test_boosting_categorical_split_on_a_numeric_feature() -> None:
    hostile = copy.deepcopy(_hgb())
    nodes = hostile._predictors[0][0].nodes
    nodes["is_categorical"][0] = 1
    nodes["bitset_idx"][0] = 0
    hostile._predictors[0][0].binned_left_cat_bitsets = np.zeros((1, 8), np.uint32)
    hostile._predictors[0][0].raw_left_cat_bitsets = np.zeros((1, 8), np.uint32)
    amber_refuses(hostile, "categorical split is on a non-categorical feature")


def test_boosting_nodes_of_another_layout_are_refused() -> None:
    hostile = copy.deepcopy(_hgb())
    predictor = hostile._predictors[0][0]
    predictor.nodes = np.zeros(len(predictor.nodes), dtype=[("left", "<i8"), ("right", "<i8")])
    # sklearn's own __setstate__ refuses to cast it; the validator would refuse it otherwise
    amber_refuses(hostile, "Cannot cast|wrong layout")


def test_tree_nodes_checks_its_field_offsets() -> None:
    from amber.security._pickle_scan import tree_nodes

    nodes = np.zeros(3, dtype=[("left", "<i8"), ("right", "<i8"), ("feature", "<i8")])
    nodes["left"], nodes["right"] = [1, -1, -1], [2, -1, -1]
    assert tree_nodes(nodes, 24, 0, 8, 8, -1, 16, -1, -1) == (1, 0, 0, 0, -1)
    for bad in [(24, 0, 8, 8, -1, 17, -1, -1), (24, 0, 20, 8, -1, 16, -1, -1),
                (24, 0, 8, 5, -1, 16, -1, -1), (24, 0, 8, 8, -1, 16, 3, 22),
                (16, 0, 8, 8, -1, 8, -1, -1)]:  # fmt: skip
        with pytest.raises(ValueError):
            tree_nodes(nodes, *bad)
    with pytest.raises(ValueError, match="empty"):
        tree_nodes(b"", 24, 0, 8, 8, -1, 16, -1, -1)


_LINKS = {
    "tree": ("left_child", "right_child", "feature"),
    "predictor": ("left", "right", "feature_idx"),
}


def _tree_nodes_reference(nodes: np.ndarray, kind: str) -> tuple[int, ...] | None:
    """The rules tree_nodes enforces, node by node in Python; None where it must refuse."""
    names = _LINKS[kind]
    n = len(nodes)
    parents, depth = [0] * n, [0] * n
    deepest, features, n_cat, max_row = 0, [], 0, -1
    for i, rec in enumerate(nodes.tolist()):
        row = dict(zip(nodes.dtype.names, rec, strict=True))
        left, right = int(row[names[0]]), int(row[names[1]])
        if kind == "tree":
            split = left != -1
            if split != (right != -1):
                return None
        else:
            split = row["is_leaf"] == 0
        if not split:
            continue
        for child in (left, right):
            if not i < child < n or parents[child]:
                return None
            parents[child] = 1
            depth[child] = depth[i] + 1
            deepest = max(deepest, depth[child])
        features.append(int(row[names[2]]))
        if kind != "tree" and row["is_categorical"]:
            n_cat += 1
            max_row = max(max_row, int(row["bitset_idx"]))
    if not all(parents[1:]):
        return None
    return (deepest, min(features, default=0), max(features, default=-1), n_cat, max_row)


def _in_preorder(nodes: np.ndarray, kind: str) -> np.ndarray:
    """``nodes`` renumbered as scikit-learn's depth-first builder and the boosting grower
    number them: a split's left child next, its right child after the left subtree."""
    link, other, _ = _LINKS[kind]

    def split(i: int) -> bool:
        return bool(nodes[link][i] != -1) if kind == "tree" else nodes["is_leaf"][i] == 0

    order: list[int] = []
    stack = [0]
    while stack:
        i = stack.pop()
        order.append(i)
        if split(i):
            stack += [int(nodes[other][i]), int(nodes[link][i])]
    new = {old: k for k, old in enumerate(order)}
    out = nodes[order].copy()
    for k, old in enumerate(order):
        if split(old):
            out[link][k], out[other][k] = new[int(nodes[link][old])], new[int(nodes[other][old])]
    return out


@pytest.mark.parametrize("numbering", ["breadth-first", "preorder"])
@pytest.mark.parametrize("kind", ["tree", "predictor"])
def test_tree_nodes_agrees_with_a_python_reference(kind: str, numbering: str) -> None:
    """Random trees, most of them damaged in one field: the C pass and the rules agree.

    Trees numbered in preorder (as fitted ones are) take tree_nodes' sequential pass, others
    and the damaged ones its general pass."""
    from amber.security._pickle_scan import tree_nodes
    from amber.security._validators import _layout

    dtype, layout = _layout(kind)
    link, other, feature = _LINKS[kind]
    rng = np.random.default_rng(0)
    refused = 0
    for case in range(400):
        n_leaves = int(rng.integers(1, 40 if case % 2 else 300))  # both sides of SMALL_TREE
        nodes = np.zeros(2 * n_leaves - 1, dtype=dtype)
        nodes[link] = nodes[other] = -1 if kind == "tree" else 0
        if kind != "tree":
            nodes["is_leaf"] = 1
        leaves, k = [0], 1  # split a random leaf; its children take the next two indices
        while len(leaves) < n_leaves:
            parent = leaves.pop(int(rng.integers(len(leaves))))
            nodes[link][parent], nodes[other][parent] = k, k + 1
            nodes[feature][parent] = int(rng.integers(0, 20))
            if kind != "tree":
                nodes["is_leaf"][parent] = 0
                if rng.random() < 0.1:
                    nodes["is_categorical"][parent] = 1
                    nodes["bitset_idx"][parent] = int(rng.integers(0, 50))
            leaves += [k, k + 1]
            k += 2
        if numbering == "preorder":
            nodes = _in_preorder(nodes, kind)
        if case % 4:  # damage one field of one node
            field = [link, other, feature, "is_leaf" if kind != "tree" else link][case % 4]
            at = int(rng.integers(len(nodes)))
            twin = int(nodes[link][at])  # as other: both links of a node name one child
            value = int(rng.choice([-1, 0, at, at + 1, twin, len(nodes) - 1, len(nodes), 2**31]))
            if kind != "tree" and field == "is_leaf":
                value = int(rng.integers(0, 3))
            elif kind != "tree" and value < 0:
                value = 2**32 - 1
            nodes[field][at] = value
        want = _tree_nodes_reference(nodes, kind)
        if want is None:
            refused += 1
            with pytest.raises(ValueError):
                tree_nodes(nodes, *layout)
        else:
            assert tree_nodes(nodes, *layout) == want, case
    assert 50 < refused < 350  # both outcomes were exercised


@pytest.mark.parametrize("kind", ["tree", "predictor"])
def test_tree_nodes_takes_a_tree_too_deep_for_its_sequential_pass(kind: str) -> None:
    """A preorder tree deeper than the sequential pass's stack (256 pending right children)
    is checked by the general pass: accepted, with its depth."""
    from amber.security._pickle_scan import tree_nodes
    from amber.security._validators import _layout

    dtype, layout = _layout(kind)
    link, other, feature = _LINKS[kind]
    depth = 1500  # a spine of splits whose right children are leaves, numbered in preorder
    nodes = np.zeros(2 * depth + 1, dtype=dtype)
    nodes[link] = nodes[other] = -1 if kind == "tree" else 0
    if kind != "tree":
        nodes["is_leaf"] = 1
    for d in range(depth):
        split = d  # splits 0..depth-1 down the left spine; right leaves after the spine
        nodes[link][split] = d + 1 if d + 1 < depth else depth
        nodes[other][split] = 2 * depth - d
        nodes[feature][split] = d % 7
        if kind != "tree":
            nodes["is_leaf"][split] = 0
    assert _tree_nodes_reference(nodes, kind) == (depth, 0, 6, 0, -1)
    assert tree_nodes(nodes, *layout) == (depth, 0, 6, 0, -1)


# --------------------------------------------------------------------------- neighbors trees
def _knn(algorithm: str = "kd_tree", **kwargs: Any) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(algorithm=algorithm, **kwargs).fit(X, Y)


def _with_tree_arrays(model: Any, index: int, value: Any) -> Any:
    """A copy whose neighbors tree pickles with state[index] replaced."""
    tree = model._tree
    constructor, args, state = tree.__reduce__()
    state = list(state)
    state[index] = value
    hostile = copy.copy(model)
    hostile._tree = Forged(constructor, args, tuple(state))
    return hostile


@pytest.mark.parametrize("algorithm", ["kd_tree", "ball_tree"])
def test_neighbors_index_array_out_of_range(tmp_path: Path, algorithm: str) -> None:
    model = _knn(algorithm)
    idx = model._tree.__getstate__()[1].copy()
    idx[:] = 10**9
    data = amber_refuses(_with_tree_arrays(model, 1, idx), "index array does not index")
    plain_pickle_crashes(tmp_path, data, "obj.predict(X)")


def test_neighbors_node_range_out_of_range() -> None:
    model = _knn()
    node_data = model._tree.__getstate__()[2].copy()
    node_data["idx_end"][-1] = 10**9
    amber_refuses(_with_tree_arrays(model, 2, node_data), "index range lies outside")


def test_neighbors_inner_node_without_children() -> None:
    model = _knn()
    node_data = model._tree.__getstate__()[2].copy()
    node_data["is_leaf"][-1] = 0
    amber_refuses(_with_tree_arrays(model, 2, node_data), "children lie past the node array")


def test_neighbors_node_count_mismatch() -> None:
    amber_refuses(_with_tree_arrays(_knn(), 6, 10**6), "claims 1000000 nodes")


def test_neighbors_metric_vector_of_the_wrong_size() -> None:
    from sklearn.metrics import DistanceMetric

    model = _knn("ball_tree", metric="seuclidean", metric_params={"V": np.ones(6)})
    metric = DistanceMetric.get_metric("seuclidean", V=np.ones(2))
    amber_refuses(_with_tree_arrays(model, 11, metric), "vector does not match 6 features")


# --------------------------------------------------------------------------- libsvm
def _svc(**kwargs: Any) -> Any:
    from sklearn.svm import SVC

    return SVC(**kwargs).fit(X, Y)


def test_svm_support_counts_that_do_not_add_up(tmp_path: Path) -> None:
    # scikit-learn itself notices this for dense models, not for sparse ones
    from scipy import sparse

    hostile = copy.deepcopy(type(_svc())().fit(sparse.csr_matrix(X), Y))
    hostile._n_support = np.array([10**7, 10**7], dtype=np.int32)
    data = amber_refuses(hostile, "counts per class do not add up")
    plain_pickle_crashes(
        tmp_path, data, "from scipy import sparse; obj.predict(sparse.csr_matrix(X))"
    )


def test_svm_dual_coefficients_of_the_wrong_shape() -> None:
    hostile = copy.deepcopy(_svc())
    hostile._dual_coef_ = hostile._dual_coef_[:, :3].copy()
    amber_refuses(hostile, "dual coefficients have shape")


def test_svm_precomputed_support_index_outside_the_training_set(tmp_path: Path) -> None:
    from sklearn.svm import SVC

    gram = X @ X.T
    model = SVC(kernel="precomputed").fit(gram, Y)
    hostile = copy.deepcopy(model)
    hostile.support_ = np.full_like(model.support_, 10**9)
    data = amber_refuses(hostile, "support index lies outside the training set")
    plain_pickle_crashes(tmp_path, data, "obj.predict(X @ X.T)")


def test_svm_support_vectors_of_another_width() -> None:
    hostile = copy.deepcopy(_svc())
    hostile.support_vectors_ = np.zeros((hostile.support_vectors_.shape[0], 2))
    amber_refuses(hostile, "support vectors have 2 features, not 6")


# --------------------------------------------------------------------------- scipy.sparse
def test_csr_index_out_of_range(tmp_path: Path) -> None:
    from scipy import sparse

    m = sparse.csr_matrix(np.eye(4))
    m.indices[0] = 10**9
    data = amber_refuses(m, "an index is outside 0..3")
    plain_pickle_crashes(tmp_path, data, "obj @ np.ones(4)")


def test_csr_negative_last_index_pointer(tmp_path: Path) -> None:
    """Found by fuzzing: scipy's own check_format(full_check=True) lets this through."""
    from scipy import sparse

    m = sparse.csr_matrix((5, 5))
    m.indptr = np.array([0, 10**6, 2 * 10**6, 3 * 10**6, 4 * 10**6, -(2**30)], dtype=np.int32)
    m.check_format(full_check=True)  # scipy accepts it
    data = amber_refuses(m, "index pointers do not start at 0 and never decrease")
    plain_pickle_crashes(tmp_path, data, "obj @ np.ones(5)")


def test_csr_index_pointer_not_monotonic() -> None:
    from scipy import sparse

    m = sparse.csr_array(np.eye(4))
    m.indptr[2] = 10**6
    amber_refuses(m, "sparse matrix")


def test_coo_coordinate_out_of_range(tmp_path: Path) -> None:
    from scipy import sparse

    m = sparse.coo_matrix(np.eye(4))
    m.row[1] = 10**9
    data = amber_refuses(m, "coordinate along axis 0 is out of bounds")
    plain_pickle_crashes(tmp_path, data, "obj.tocsr()")


def test_sparse_inside_an_estimator_is_checked() -> None:
    from scipy import sparse

    model = _svc()
    sparse_model = type(model)().fit(sparse.csr_matrix(X), Y)
    sparse_model.support_vectors_.indices[0] = 10**6
    amber_refuses(sparse_model, "sparse matrix")


# --------------------------------------------------------------------------- scipy splines, numpy
def test_bspline_with_too_few_coefficients() -> None:
    from scipy.interpolate import BSpline

    spline = BSpline(np.arange(10.0), np.ones(6), 3)
    hostile = copy.copy(spline)
    hostile._t = np.linspace(0, 1, 2_000_000)
    # With plain pickle, evaluating it reads megabytes past the coefficient array: a segfault
    # or garbage depending on what lies there, so only the refusal is asserted.
    amber_refuses(hostile, "2000000 knots, degree 3 and 6 coefficients")


def test_seed_sequence_pool_of_the_wrong_size() -> None:
    seq = np.random.SeedSequence(7)
    reduce_value = seq.__reduce__()
    state = dict(reduce_value[2]) if isinstance(reduce_value[2], dict) else reduce_value[2]
    assert isinstance(state, tuple)
    fields = list(state)
    pools = [k for k, v in enumerate(fields) if isinstance(v, np.ndarray)]
    fields[pools[0]] = np.zeros(1, dtype=np.uint32)
    hostile = Forged(reduce_value[0], reduce_value[1], tuple(fields))
    amber_refuses(hostile, "entropy pool does not match")


def test_dtype_validator_accepts_what_numpy_builds() -> None:
    for d in [np.dtype("f8"), np.dtype([("a", "i4"), ("b", "O")]), np.dtype(("u1", (3,)))]:
        validate_dtype(d)
    with pytest.raises(FormatError):
        validate_dtype("f8")


def _refused(data: bytes, fragment: str) -> None:
    with pytest.raises(FormatError, match=fragment), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        safe_loads(data, policy=LoadPolicy())


def test_a_field_offset_that_overflows_numpy_s_check_is_refused(tmp_path: Path) -> None:
    """numpy checks that fields fit their item in 32-bit arithmetic: at 2**31 - 1 the check
    overflows and accepts the dtype, and reading the field reads 2 GB away."""
    record = np.dtype({"names": ["a", "b"], "formats": ["f8", "u1"], "offsets": [0, 8]})
    honest = pickle.dumps(np.zeros(2, dtype=record), protocol=2)
    assert honest.count(b"K\x08\x86") == 1  # field b's (dtype, offset 8) pair
    data = honest.replace(b"K\x08\x86", b"J\xff\xff\xff\x7f\x86")
    plain_pickle_crashes(tmp_path, data, "print(obj['b'].sum())")
    _refused(data, "field 'b' ends at byte 2147483648, past its 9-byte item")


def test_a_datetime_dtype_state_without_its_unit_is_refused(tmp_path: Path) -> None:
    """An 8-tuple dtype state (as written for 'i8') applied to 'm8' leaves the unit unset:
    numpy crashes in __setstate__. The state gets its 'no metadata' spelled out, and numpy
    then refuses it; honest datetime and timedelta arrays load as before."""
    data = pickle.dumps(np.arange(3, dtype=np.int64), protocol=4).replace(b"i8", b"m8")
    plain_pickle_crashes(tmp_path, data, "print(obj)")
    _refused(data, "Invalid datetime dtype")
    for honest in (
        np.arange(3).astype("M8[ns]"),
        np.arange(3).astype("m8[s]"),
        np.zeros(2, dtype=[("t", "M8[D]"), ("x", "f4")]),
    ):
        for protocol in (2, 4, 5):
            back = safe_loads(pickle.dumps(honest, protocol=protocol), policy=LoadPolicy())
            assert back.dtype == honest.dtype and np.array_equal(back, honest)


def test_a_global_loaded_as_a_checking_stand_in_cannot_be_held_as_a_value() -> None:
    """numpy's scalar and _reconstruct (and the other guarded callables) load as stand-ins
    that check their arguments; held as a value, the stand-in would be in the model where
    pickle puts numpy's function. Also when the same stream calls it elsewhere."""
    scalar = np.float64(1.0).__reduce__()[0]
    rebuild = np.arange(2).__reduce__()[0]
    _refused(pickle.dumps({"s": scalar}, protocol=4), "holds numpy.*scalar as a value")
    mixed = pickle.dumps([np.arange(70_000), {"r": rebuild}], protocol=4)
    _refused(mixed, "holds numpy.*_reconstruct as a value")
    _refused(pickle.dumps((1, rebuild), protocol=2), "holds numpy.*_reconstruct as a value")
    _refused(pickle.dumps(rebuild, protocol=4), "STOP holds numpy.*_reconstruct as a value")


def _array_of(dtype_state: tuple[Any, ...], array_state: tuple[Any, ...]) -> Forged:
    """An ndarray pickled as numpy pickles one, with the dtype's and the array's states
    given: the dtype is rebuilt from ``dtype_state``, then the array from ``array_state``."""
    rebuild, args, _ = np.arange(1).__reduce__()
    dtype = Forged(np.dtype, ("V8", False, True), dtype_state)
    return Forged(rebuild, args, (1, *array_state[:1], dtype, *array_state[1:]))


_SCALAR = np.float64(1.0).__reduce__()[0]
_REBUILD = np.arange(1).__reduce__()[0]


@pytest.mark.parametrize(
    ("hostile", "use", "fragment"),
    [
        pytest.param(  # numpy keeps the object field and reads b"AAAAAAAA" as a pointer
            _array_of(
                (3, "|", (np.dtype("u1"), (8,)), ("o",), {"o": (np.dtype("O"), 0)}, 8, 1, 0),
                ((1,), False, b"A" * 8),
            ),
            "print(obj.copy())", "a sub-array and has fields too", id="sub-array-with-fields",
        ),
        pytest.param(
            Forged(_SCALAR, (np.dtype(("u1", (3,))), b"abc")),
            "print(np.asarray(obj))", "sub-array dtype", id="scalar-of-a-sub-array",
        ),
        pytest.param(  # the scalar views an empty array: its object field is garbage
            Forged(_SCALAR, (np.dtype([("o", "O")]), np.empty(0, dtype=[("o", "O")]))),
            "print(repr(obj))", "other than its 0-d array", id="object-record-without-its-data",
        ),
        pytest.param(
            Forged(_REBUILD, (np.matrix, (0,), b"b"), (1, (3,), np.dtype("O"), False, [1, 2, 3])),
            "print(np.ascontiguousarray(obj.T))", "numpy matrix .* 1 dimensions",
            id="one-dimensional-matrix",
        ),
    ],
)  # fmt: skip
def test_numpy_objects_whose_layout_lies_are_refused(
    tmp_path: Path, hostile: Any, use: str, fragment: str
) -> None:
    """Found by a fuzz of dtype and array states: each crashes plain pickle's result on use."""
    data = pickle.dumps(hostile, protocol=2)
    plain_pickle_crashes(tmp_path, data, use)
    _refused(data, fragment)


def test_the_cache_of_checked_dtypes_tells_sub_arrays_apart() -> None:
    """A dtype found good is remembered by a fingerprint; a sub-array's ``descr`` is only its
    item size, so a crafted (float64, (2**27,)) in 8 bytes once passed as the honest
    ('u1', (8,)) checked before it, and reading it crashed."""
    validate_dtype(np.dtype(("u1", (8,))))
    crafted = np.dtype("V8")  # a new object each time: the state below changes only it
    crafted.__setstate__((3, "|", (np.dtype("f8"), (2**27,)), None, None, 8, 1, 0))
    with pytest.raises(FormatError, match="itemsize is 8 but its layout implies 1073741824"):
        validate_dtype(crafted)


def test_arrays_whose_size_nothing_in_the_file_bounds_are_refused() -> None:
    records = np.dtype({"names": ["o"], "formats": ["O"], "offsets": [0], "itemsize": 2**31 - 1})
    huge = Forged(_REBUILD, (np.ndarray, (0,), b"b"), (1, (1,), records, False, [(None,)]))
    _refused(pickle.dumps(huge, protocol=2), "1 records of 2147483647 bytes with object fields")
    empty = Forged(_REBUILD, (np.ndarray, (0,), b"b"), (1, (2, 2**31), np.dtype("V0"), False, b""))
    _refused(pickle.dumps(empty, protocol=2), "holds 4294967296 items of zero bytes")
    # what numpy itself writes still loads: records with objects, their scalars, matrices
    rows = np.array([(1, "a"), (2, None)], dtype=[("x", "i8"), ("o", "O")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # np.matrix
        matrix = np.matrix([[1, 2], [3, 4]])
    for honest in (rows, rows[0], matrix, np.zeros(3, dtype="V0")):
        back = safe_loads(pickle.dumps(honest, protocol=2), policy=LoadPolicy())
        assert type(back) is type(honest) and pickle.dumps(back) == pickle.dumps(honest)


# --------------------------------------------------------------------------- graph walk
def test_validate_loaded_walks_the_graph_only_when_needed() -> None:
    bad = _with_tree_state(_tree_model(), nodes={"left_child": (0, 2**40)})
    hostile = pickle.loads(pickle.dumps(bad))  # never predicted with: safe to hold
    graph = {"models": [None, ("x", hostile)]}
    names = scan_pickle(pickle.dumps(_tree_model())).globals
    assert needs_validation(names)
    with pytest.raises(FormatError, match="child index"):
        validate_loaded(graph, names)
    assert not needs_validation([("builtins", "slice")])
    validate_loaded(graph, [("builtins", "slice")])  # nothing referenced needs a check


def test_every_validated_name_is_on_the_allowlist() -> None:
    from amber.security._allowlist import entries

    allowed = entries()
    missing = [f"{m}.{n}" for m, n in OBJECT_VALIDATORS if (m, n) not in allowed]
    # validators may name classes this scikit-learn/scipy version lacks (KDTree64, ...)
    for name in missing:
        assert name.rsplit(".", 1)[-1].endswith(("32", "64")), name


def test_honest_models_pass_every_validator() -> None:
    from scipy import sparse
    from scipy.interpolate import BSpline

    objects = [
        _tree_model(),
        _hgb(),
        _knn(),
        _knn("ball_tree", metric="minkowski", p=3),
        _svc(),
        _svc(kernel="poly"),
        sparse.csr_matrix(np.eye(3)),
        sparse.coo_array(np.eye(3)),
        sparse.bsr_matrix(np.eye(4), blocksize=(2, 2)),
        sparse.dia_matrix(np.eye(3)),
        BSpline(np.arange(10.0), np.ones(6), 3),
        np.random.default_rng(1),
    ]
    for obj in objects:
        data = pickle.dumps(obj, protocol=5)
        clone = safe_loads(data, policy=LoadPolicy())
        assert type(clone) is type(obj)


# --------------------------------------------------------------------------- bypass attempts
def test_generic_constructors_cannot_skip_validation() -> None:
    """An object built through copyreg's helpers is validated by its type all the same."""
    import copyreg

    from sklearn.svm import SVC
    from sklearn.tree._tree import Tree

    model = _tree_model()
    tree = model.tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    nodes["left_child"][0] = 2**40
    args = (Tree, tree.n_features, tree.n_classes.copy(), tree.n_outputs)
    via_newobj = Forged(copyreg.__newobj__, args, {**state, "nodes": nodes})
    data = pickle.dumps(via_newobj, protocol=1)  # protocol 1: a REDUCE of copyreg.__newobj__
    assert b"__newobj__" in data
    with pytest.raises(FormatError, match="child index"):
        safe_loads(data, policy=LoadPolicy())

    svc = copy.deepcopy(_svc())
    svc._n_support = np.array([10**7, 10**7], dtype=np.int32)
    via_reconstructor = Forged(copyreg._reconstructor, (SVC, object, None), svc.__getstate__())
    with pytest.raises(FormatError, match="do not add up"):
        safe_loads(pickle.dumps(via_reconstructor, protocol=2), policy=LoadPolicy())


# --------------------------------------------------------------------------- functools.partial
def test_partial_of_an_allowlisted_function_loads() -> None:
    import functools

    from sklearn.utils.validation import check_array

    original = functools.partial(check_array, ensure_all_finite=False)
    clone = safe_loads(pickle.dumps(original, protocol=5), policy=LoadPolicy())
    assert clone.func is check_array and clone.keywords == {"ensure_all_finite": False}


@pytest.mark.parametrize("wrapped", ["class", "constructed object"])
def test_partial_of_anything_but_an_allowlisted_function_is_refused(wrapped: str) -> None:
    import functools

    from sklearn.gaussian_process.kernels import RBF
    from sklearn.svm import SVC

    func: Any = SVC if wrapped == "class" else RBF()  # allowed types, but not functions
    data = pickle.dumps(functools.partial(func, 1.0), protocol=5)
    with pytest.raises(FormatError, match="not an allowlisted function"):
        safe_loads(data, policy=LoadPolicy())


def test_loads_do_not_keep_the_predictors_they_checked(tmp_path: Path) -> None:
    """The per-load list of validated boosting predictors is emptied by every kind of load."""
    import joblib

    import amber
    from amber.security import _validators

    model = _hgb()
    pickle_path, joblib_path = tmp_path / "m.pkl", tmp_path / "m.joblib"
    pickle_path.write_bytes(pickle.dumps(model, protocol=5))
    joblib.dump(model, joblib_path)
    amber.save(model, tmp_path / "m.amber")
    for path in (pickle_path, joblib_path, tmp_path / "m.amber"):
        loaded = amber.load(path)
        np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
        assert _validators._PREDICTORS.nodes == [], path.name


def test_the_predictor_record_is_per_thread() -> None:
    """A load in another thread (a server loading a replacement) cannot empty this one's."""
    import threading

    from amber.security import _validators

    predictor = _hgb()._predictors[0][0]
    _validators.validate_tree_predictor(predictor)
    other = threading.Thread(target=_validators.forget_predictors)
    other.start()
    other.join()
    try:
        assert _validators._PREDICTORS.nodes == [predictor.nodes]
    finally:
        _validators.forget_predictors()


@pytest.mark.parametrize("which", ["tree", "boosting", "forest member"])
def test_an_estimator_holding_trees_must_record_its_input_width(which: str) -> None:
    """scikit-learn checks an input's width only against n_features_in_, and the trees' compiled
    loops index the input by their split features unchecked: without it, a split on feature
    10**9 reads far outside a one-column input (plain pickle segfaults at predict)."""
    from sklearn.ensemble import RandomForestClassifier

    if which == "tree":
        hostile = copy.deepcopy(_tree_model())
    elif which == "boosting":
        hostile = copy.deepcopy(_hgb())
    else:
        forest = copy.deepcopy(RandomForestClassifier(3, random_state=0).fit(X, Y))
        hostile, forest = forest.estimators_[1], forest  # the forest keeps its own width
    del hostile.n_features_in_
    target = forest if which == "forest member" else hostile
    amber_refuses(target, r"it holds trees but records no input width \(n_features_in_\)")
    with pytest.raises(FormatError, match="n_features_in_ is 'six'"):
        other = copy.deepcopy(_tree_model())
        other.n_features_in_ = "six"
        safe_loads(pickle.dumps(other, protocol=5), policy=LoadPolicy())


# --------------------------------------------------------------------------- the C fast paths
def _frombuffer_outcome(func: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        a = func(*args, **kwargs)
    except Exception as exc:  # the same refusal, word for word
        return (type(exc), str(exc))
    return (a.shape, a.dtype, a.strides, a.flags.writeable, a.tobytes(order="A"))


def test_frombuffer_does_what_numpys_does() -> None:
    """The loader hands out _pickle_scan.frombuffer for numpy's _frombuffer (the call that
    rebuilds every array of a protocol-5 pickle): same arrays, same errors, every case."""
    from amber.security._pickle_scan import frombuffer

    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy 1.x
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

    raw = bytearray(np.arange(24.0).tobytes())
    record = np.dtype([("a", "<i4"), ("b", "<f8")])
    cases: list[tuple[Any, ...]] = [
        (raw, np.dtype("f8"), (24,), "C"),
        (raw, np.dtype("f8"), (24,), "F"),
        (bytes(raw), np.dtype("f8"), (24,), "C"),  # read-only
        (raw, np.dtype("f8"), (4, 6), "C"),
        (raw, np.dtype("f8"), (4, 6), "F"),
        (raw, np.dtype("f8"), (2, 3, 4), "K", (2, 0, 1)),
        (raw, np.dtype("f8"), (24,), "K"),  # numpy refuses 'K' without an axis order
        (raw, np.dtype("f8"), (25,), "C"),
        (raw, np.dtype("f8"), (23,), "C"),
        (raw, np.dtype("f8"), [24], "C"),  # a list, not a tuple
        (raw, np.dtype("f8"), (np.int64(24),), "C"),
        (raw, np.dtype("f8"), (24,), "c"),
        (raw, np.dtype("f8"), (24,), "Z"),
        (raw, np.dtype("f8"), (24,), 7),
        (raw, np.dtype("f8"), (-1,), "C"),
        (raw, np.dtype("f8"), (2**70,), "C"),
        (raw, np.dtype(("f8", (2,))), (12,), "C"),  # a sub-array dtype: 2-d from frombuffer
        (raw, np.dtype(("f8", (2,))), (12, 2), "C"),
        (raw, np.dtype("u1"), (192,), "C"),
        (raw, np.dtype("f8"), (), "C"),
        (bytearray(8), np.dtype("f8"), (), "C"),
        (bytearray(), np.dtype("f8"), (0,), "C"),
        (bytearray(), np.dtype("f8"), (0, 8), "C"),
        (bytearray(12 * 12), record, (12,), "C"),
        (raw, np.dtype("O"), (24,), "C"),
        (raw, "f8", (24,), "C"),
        ("not a buffer", np.dtype("f8"), (1,), "C"),
        (raw, np.dtype("f8")),  # too few
    ]
    for args in cases:
        want = _frombuffer_outcome(_frombuffer, *args)
        assert _frombuffer_outcome(frombuffer, *args) == want, args
    assert _frombuffer_outcome(frombuffer, raw, np.dtype("f8"), (24,), order="C") == (
        _frombuffer_outcome(_frombuffer, raw, np.dtype("f8"), (24,), order="C")
    )
    a = frombuffer(raw, np.dtype("f8"), (24,), "C")
    a[0] = 5.0  # a view of the buffer, as numpy's
    assert raw[:8] == np.float64(5.0).tobytes()


def test_the_loader_uses_the_c_frombuffer() -> None:
    from amber.security import _pickle_scan, _unpickler

    loaded = safe_loads(pickle.dumps(np.arange(5.0), protocol=5), policy=LoadPolicy())
    np.testing.assert_array_equal(loaded, np.arange(5.0))
    found = [v[1] for k, v in _unpickler._FOUND.items() if k[1] == "_frombuffer"]
    assert found and all(f is _pickle_scan.frombuffer for f in found)


def _predictor_variants(model: Any) -> list[tuple[str, Any]]:
    """Predictors in the plain layout and in every way out of it a file could hold."""
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

    base = model._predictors[0][0]
    out: list[tuple[str, Any]] = [("plain", copy.deepcopy(p)) for s in model._predictors for p in s]

    def variant(label: str, **attrs: Any) -> None:
        p = copy.deepcopy(base)
        for k, v in attrs.items():
            if v is delattr:
                delattr(p, k)
            else:
                setattr(p, k, v)
        out.append((label, p))

    nodes = base.nodes
    wide = np.zeros(2 * len(nodes), nodes.dtype)
    wide[::2] = nodes
    variant("strided nodes", nodes=wide[::2])
    variant("2-d nodes", nodes=nodes.reshape(1, -1))
    variant("empty nodes", nodes=nodes[:0])
    variant("nodes of another dtype object", nodes=nodes.astype(nodes.dtype.newbyteorder("=")))
    variant("nodes of another layout", nodes=np.zeros(len(nodes), [("left", "<u4")]))
    variant("nodes as a list", nodes=nodes.tolist())
    variant("no nodes", nodes=delattr)
    variant("no bitsets", raw_left_cat_bitsets=delattr)
    variant("int32 bitsets", binned_left_cat_bitsets=np.zeros((0, 8), np.int32))
    variant("7-column bitsets", raw_left_cat_bitsets=np.zeros((2, 7), np.uint32))
    variant("Fortran bitsets", raw_left_cat_bitsets=np.zeros((3, 8), np.uint32, order="F"))
    variant("1-d bitsets", raw_left_cat_bitsets=np.zeros(8, np.uint32))
    variant("one row, strided", raw_left_cat_bitsets=np.zeros((2, 8), np.uint32)[::2])
    variant("two rows, strided", raw_left_cat_bitsets=np.zeros((4, 8), np.uint32)[::2])
    variant("empty, strided", raw_left_cat_bitsets=np.zeros((2, 8), np.uint32)[:0, ::2])
    variant("rows of 8 in steps", raw_left_cat_bitsets=np.zeros((3, 16), np.uint32)[:, ::2])
    variant("bitsets as a list", binned_left_cat_bitsets=[[0] * 8])
    for field, value in [("left", 10**6), ("left", 0), ("feature_idx", -1), ("feature_idx", 99)]:
        bad = nodes.copy()
        bad[field][0] = value
        variant(f"{field}={value}", nodes=bad)
    cat = nodes.copy()
    cat["is_categorical"][0], cat["bitset_idx"][0] = 1, 2
    variant("categorical split past its bitsets", nodes=cat)
    rows = np.zeros((3, 8), np.uint32)
    variant("categorical split", nodes=cat, binned_left_cat_bitsets=rows, raw_left_cat_bitsets=rows)

    class Derived(TreePredictor):
        pass

    derived = copy.deepcopy(base)
    derived.__class__ = Derived
    out.append(("subclass", derived))
    out.append(("not a predictor", np.zeros(3)))
    return out


def test_the_c_predictor_check_accepts_only_what_the_python_check_accepts() -> None:
    """predictor_check runs validate_tree_predictor in C for the plain case and hands
    everything else to its fallback; what it accepts, Python accepts too, and it records the
    predictor exactly as Python does."""
    import functools

    from amber.security import _validators
    from amber.security._pickle_scan import predictor_check

    model = _hgb()
    dtype = model._predictors[0][0].nodes.dtype
    _validators._SAME_AS_RECORD[(id(dtype), "predictor")] = dtype
    passed_on: list[Any] = []

    def fallback(p: Any) -> Any:
        passed_on.append(p)
        return p

    check = functools.partial(predictor_check, _validators.predictor_spec(fallback))
    record = _validators._PREDICTORS
    try:
        for label, p in _predictor_variants(model):
            _validators.forget_predictors()
            passed_on.clear()
            assert check(p) is p, label
            if passed_on:
                assert label != "plain" and record.nodes == [], label
                continue
            c_record = (record.nodes, record.max_feature, record.categorical)
            _validators.forget_predictors()
            _validators.validate_tree_predictor(p)  # raises if C accepted what Python refuses
            assert c_record[0] == [p.nodes] and record.nodes[0] is c_record[0][0], label
            assert c_record[1:] == (record.max_feature, record.categorical), label
        passed_on.clear()
        _validators.forget_predictors()
        for p in [q for s in model._predictors for q in s]:  # a load's worth: the sums
            check(p)
        want = (len(record.nodes), record.max_feature, record.categorical)
        _validators.forget_predictors()
        for p in [q for s in model._predictors for q in s]:
            _validators.validate_tree_predictor(p)
        assert want == (len(record.nodes), record.max_feature, record.categorical)
        assert not passed_on
    finally:
        _validators.forget_predictors()


def test_node_arrays_get_the_librarys_own_record_dtype_only_when_identical() -> None:
    """After the first predictor of a load, node arrays are built with scikit-learn's own
    record dtype object (its __setstate__ compares by identity then): only when the file's
    dtype pickles to the same state. One that differs where == does not look (metadata) keeps
    its own."""
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    model = _hgb()
    loaded = safe_loads(pickle.dumps(model, protocol=5), policy=LoadPolicy())
    dtypes = [p.nodes.dtype for s in loaded._predictors for p in s]
    assert dtypes[0] is not PREDICTOR_RECORD_DTYPE and dtypes[0] == PREDICTOR_RECORD_DTYPE
    assert all(d is PREDICTOR_RECORD_DTYPE for d in dtypes[1:])
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))

    tagged = np.dtype(PREDICTOR_RECORD_DTYPE, metadata={"origin": "elsewhere"})
    hostile = copy.deepcopy(model)
    for stage in hostile._predictors:
        for p in stage:
            p.nodes = p.nodes.view(tagged)
    data = pickle.dumps(hostile, protocol=5)
    assert pickle.loads(data)._predictors[-1][0].nodes.dtype.metadata == {"origin": "elsewhere"}
    loaded = safe_loads(data, policy=LoadPolicy())
    kept = [p.nodes.dtype.metadata for s in loaded._predictors for p in s]
    assert kept == [{"origin": "elsewhere"}] * len(kept)
