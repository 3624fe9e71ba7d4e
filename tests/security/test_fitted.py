"""Fitted state that compiled code reads at predict time (amber/security/_fitted.py).

Each hostile case loads with plain pickle and then crashes the process, or reads memory it does
not own, at its first prediction (shown in a subprocess where it crashes reliably); Amber refuses
the same bytes at load. Found by an audit of the allowlist's estimators: k-means centers wider
than the input, a vocabulary column past the matrix, more trees per boosting stage than output
columns, a compiled k-means step called by a FunctionTransformer, a Mahalanobis matrix of the
wrong size.
"""

from __future__ import annotations

import copy
import functools
import pickle
import pickletools
import struct
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from security_kit import crashed, run_python
from sklearn.cluster import AffinityPropagation, BisectingKMeans, KMeans, MeanShift, MiniBatchKMeans
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.feature_extraction import DictVectorizer
from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import DistanceMetric
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.validation import check_array

import amber
from amber.errors import FormatError, UntrustedTypeError
from amber.security._pickle_scan import index_map
from amber.security._policy import LoadPolicy
from amber.security._unpickler import safe_loads

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 4))
Y3 = np.arange(60) % 3
DOCS = ["a good movie", "a bad film", "good film", "bad movie"] * 5
LABELS = [1, 0, 1, 0] * 5


def refused(obj: Any, fragment: str, data: bytes | None = None) -> bytes:
    data = pickle.dumps(obj, protocol=5) if data is None else data
    with pytest.raises(FormatError, match=fragment), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        safe_loads(data, policy=LoadPolicy())
    return data


def loads(obj: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return safe_loads(pickle.dumps(obj, protocol=5), policy=LoadPolicy())


def plain_pickle_fails(tmp_path: Path, data: bytes, use: str, *, signal: bool = True) -> str:
    """Load ``data`` with plain pickle in a fresh interpreter and run ``use`` on ``obj``: the
    process dies (by a signal, or, with ``signal=False``, by exiting from native code), or, its
    memory corrupted, never gets to the end and is killed at ``run_python``'s timeout (the
    k-means step writing past its buffers crashed 30 of 30 runs alone under scikit-learn 1.4.2,
    and once left the process running for two minutes on a busy machine)."""
    path = tmp_path / "hostile.pkl"
    path.write_bytes(data)
    try:
        proc = run_python(
            f"""
            import pickle, numpy as np, warnings
            warnings.simplefilter("ignore")
            obj = pickle.loads(open({str(path)!r}, "rb").read())
            {use}
            print("survived")
            """
        )
    except subprocess.TimeoutExpired as exc:
        return f"killed: still running after {exc.timeout} s"
    died = crashed(proc) if signal else proc.returncode != 0 and "survived" not in proc.stdout
    assert died, (proc.returncode, proc.stdout[-300:], proc.stderr[-600:])
    return proc.stderr


# --------------------------------------------------------------------------- k-means
def test_kmeans_centers_wider_than_the_input(tmp_path: Path) -> None:
    wide = RNG.normal(size=(40, 50))
    hostile = KMeans(2, n_init=1, random_state=0).fit(wide)
    hostile.cluster_centers_ = np.zeros((1, 65536))
    data = refused(hostile, "cluster_centers_ are not 50 features wide")
    plain_pickle_fails(tmp_path, data, "obj.predict(np.random.rand(200, 50))")


@pytest.mark.parametrize("model", [KMeans, MiniBatchKMeans, BisectingKMeans])
def test_kmeans_family_centers_of_another_width_are_refused(model: Any) -> None:
    fitted = model(3, random_state=0).fit(X)
    assert (loads(fitted).predict(X) == fitted.predict(X)).all()
    hostile = copy.deepcopy(fitted)
    hostile.cluster_centers_ = np.zeros((3, 7))
    refused(hostile, "cluster_centers_ are not 4 features wide")


def test_bisecting_kmeans_tree_centers_and_mean_are_checked() -> None:
    fitted = BisectingKMeans(4, random_state=0).fit(X)
    hostile = copy.deepcopy(fitted)
    node = hostile._bisecting_tree
    while node.left is not None:
        node = node.right
    node.center = np.zeros(65536)
    refused(hostile, "a node of its cluster tree has a center not 4 wide")
    hostile = copy.deepcopy(fitted)
    hostile._X_mean = np.zeros(65536)  # added to every center, broadcast: a wider center
    refused(hostile, "_X_mean is not 4 values")


def test_a_negative_thread_count_is_refused(tmp_path: Path) -> None:
    hostile = KMeans(2, n_init=1, random_state=0).fit(RNG.normal(size=(5000, 4)))
    hostile._n_threads = -5
    data = refused(hostile, "thread count _n_threads is -5")
    err = plain_pickle_fails(tmp_path, data, "obj.predict(np.random.rand(5000, 4))", signal=False)
    assert "libgomp" in err  # OpenMP asked for a huge team and ended the process


@pytest.mark.parametrize("model", [MeanShift(), AffinityPropagation(random_state=0)])
def test_other_clusterers_with_centers_are_checked(model: Any) -> None:
    fitted = model.fit(X)
    assert (loads(fitted).predict(X) == fitted.predict(X)).all()
    hostile = copy.deepcopy(fitted)
    hostile.cluster_centers_ = hostile.cluster_centers_[:, :2]
    refused(hostile, "cluster_centers_ are not 4 features wide")


# --------------------------------------------------------------------------- vectorizers
def _text_model(vectorizer: Any) -> Any:
    return make_pipeline(vectorizer, LogisticRegression()).fit(DOCS, LABELS)


def test_a_vocabulary_column_past_the_matrix(tmp_path: Path) -> None:
    hostile = _text_model(CountVectorizer())
    hostile[0].vocabulary_["bad"] = 10**9
    data = refused(hostile, "vocabulary_ maps an entry to a column that is not there")
    plain_pickle_fails(tmp_path, data, "obj.predict(['a bad movie'] * 50)")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(-1, "outside 0..3"), (4, "outside 0..3"), (1.0, "a float"), (True, "a bool")],
)
def test_vocabulary_values_must_be_columns(value: Any, fragment: str) -> None:
    hostile = _text_model(TfidfVectorizer())
    hostile[0].vocabulary_["good"] = value
    refused(hostile, fragment)


def test_a_vocabulary_changed_after_its_vectorizer_was_built_is_refused() -> None:
    """The checks run once the whole stream is built: a SETITEM on the vocabulary, reached
    through the memo after the vectorizer took it, is seen."""
    vectorizer = CountVectorizer().fit(DOCS)
    vocab = vectorizer.vocabulary_
    data = pickle.dumps((vocab, vectorizer), protocol=2)  # no frames: ops can be appended
    ops = list(pickletools.genops(data))
    first_dict = next(k for k, (op, _, _) in enumerate(ops) if op.name == "EMPTY_DICT")
    op, memo_index, _ = ops[first_dict + 1]
    assert op.name == "BINPUT"
    term = b"zzz"
    late = (
        b"h" + bytes([memo_index])  # BINGET: the vocabulary the vectorizer already holds
        + b"X" + struct.pack("<I", len(term)) + term  # BINUNICODE
        + b"J" + struct.pack("<i", 10**9)  # BININT: a column far past the matrix
        + b"s0"  # SETITEM, POP
    )  # fmt: skip
    assert data.endswith(b".")
    refused(None, "vocabulary_ maps an entry", data[:-1] + late + b".")


def test_dict_vectorizer_vocabulary_is_checked() -> None:
    rows = [{"city": c, "t": float(i)} for i, c in enumerate(["a", "b", "c"] * 10)]
    fitted = make_pipeline(DictVectorizer(), LogisticRegression()).fit(rows, np.arange(30) % 2)
    assert (loads(fitted).predict(rows) == fitted.predict(rows)).all()
    hostile = copy.deepcopy(fitted)
    hostile[0].vocabulary_["city=a"] = 10**9
    refused(hostile, "vocabulary_ maps an entry to a column that is not there")


def test_index_map_reads_every_kind_of_key_and_value() -> None:
    index_map({"a": 0, "b": np.int64(1), ("c", 1): 2}, 3)
    for bad in ({"a": 2}, {"a": "0"}, {"a": None}, {"a": 2**70}):
        with pytest.raises(ValueError):
            index_map(bad, 2)


# --------------------------------------------------------------------------- gradient boosting
def test_more_trees_per_stage_than_output_columns(tmp_path: Path) -> None:
    hostile = GradientBoostingRegressor(n_estimators=1, max_depth=1).fit(X, X[:, 0])
    tree = hostile.estimators_[0, 0]
    stages = np.empty((1, 100_000), dtype=object)
    stages[0, :] = [tree] * stages.shape[1]  # one tree, memoized: a small file
    hostile.estimators_ = stages
    data = refused(hostile, "its stages have 100000 trees but n_trees_per_iteration_ is 1")
    plain_pickle_fails(tmp_path, data, "for _ in range(20): obj.predict(np.random.rand(50, 4))")


@pytest.mark.parametrize("kind", ["regressor", "classifier"])
def test_a_boosting_stage_without_a_tree_is_refused(tmp_path: Path, kind: str) -> None:
    """Found by fuzzing: the compiled predict_stages reads each stage's tree_ as a Tree, and a
    stage whose tree_ is None crashed predict."""
    if kind == "regressor":
        hostile: Any = GradientBoostingRegressor(n_estimators=3, max_depth=2).fit(X, X[:, 0])
    else:
        hostile = _gb()
    hostile.estimators_[1, 0].tree_ = None
    data = refused(hostile, "a stage of its estimators_ holds no decision tree")
    plain_pickle_fails(tmp_path, data, "obj.predict(np.random.rand(50, 4))")


def _gb(**kwargs: Any) -> Any:
    return GradientBoostingClassifier(n_estimators=3, max_depth=2, **kwargs).fit(X, Y3)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda m: setattr(m, "n_trees_per_iteration_", 5), "n_trees_per_iteration_ is 5"),
        (lambda m: setattr(m, "classes_", m.classes_[:2]), "3 trees for 2 classes"),
        (lambda m: setattr(m, "estimators_", m.estimators_[:, :1]), "1 trees but n_trees"),
        (lambda m: setattr(m._loss, "is_multiclass", False), "a loss for two classes"),
        (lambda m: setattr(m.init_, "class_prior_", m.init_.class_prior_[:1]), "predict 3 cl"),
        (lambda m: setattr(m, "init_", "ones"), "init_ is 'ones'"),
    ],
)
def test_boosting_stages_must_match_the_outputs(change: Any, fragment: str) -> None:
    hostile = _gb()
    change(hostile)
    refused(hostile, fragment)


@pytest.mark.parametrize("init", ["dummy", "zero"])
def test_a_regressor_is_sized_as_a_regressor_whatever_classes_it_holds(init: str) -> None:
    """scikit-learn's regressor asks its init estimator for one value per row (or starts from
    one zero column): three trees per stage, given classes_ and a loss that claims three
    classes, write past that column (two values past the output's end; with a logistic
    regression as init the heap was corrupted, "free(): invalid next size")."""
    clf = GradientBoostingClassifier(n_estimators=200, max_depth=1).fit(X, Y3)
    hostile = GradientBoostingRegressor(n_estimators=200, max_depth=1).fit(X, X[:, 0])
    hostile.estimators_ = clf.estimators_
    hostile.classes_, hostile.n_classes_, hostile.n_trees_per_iteration_ = clf.classes_, 3, 3
    hostile._loss.is_multiclass = True
    hostile.init_ = clf.init_ if init == "dummy" else "zero"
    refused(hostile, "a regressor's stages have 3 trees, not 1")


def test_a_regressor_takes_only_a_dummy_regressor_as_its_init_estimator(tmp_path: Path) -> None:
    """A regressor asks its init estimator for predict: a DummyClassifier's, with an empty
    constant, gives no rows, and the stages then write one value per input row past them."""
    hostile = GradientBoostingRegressor(n_estimators=5, max_depth=2).fit(X, X[:, 0])
    init = DummyClassifier(strategy="constant", constant=0).fit(X, np.zeros(len(X)))
    init.constant = np.zeros(0)
    hostile.init_ = init
    data = refused(hostile, "its init_ is a DummyClassifier")
    plain_pickle_fails(tmp_path, data, "obj.predict(np.random.rand(200_000, 4))")


def test_a_classifier_without_classes_is_refused() -> None:
    hostile = _gb()
    del hostile.classes_
    refused(hostile, "a classifier without classes_")


def test_boosting_with_an_init_estimator_amber_cannot_size_is_refused() -> None:
    model = _gb(init=LogisticRegression())
    refused(model, "init_ is a LogisticRegression")
    assert isinstance(_gb().init_, DummyClassifier)


@pytest.mark.parametrize(
    "model",
    [
        lambda: _gb(),
        lambda: _gb(init="zero"),
        lambda: GradientBoostingClassifier(n_estimators=2).fit(X, Y3 % 2),
        lambda: GradientBoostingRegressor(n_estimators=2).fit(X, X[:, 0]),
        lambda: GradientBoostingRegressor(n_estimators=2, init="zero").fit(X, X[:, 0]),
    ],
)
def test_honest_boosting_models_load(model: Any) -> None:
    fitted = model()
    assert (loads(fitted).predict(X) == fitted.predict(X)).all()


# --------------------------------------------------------------------------- functions on data
def test_a_compiled_kmeans_step_called_by_a_transformer(tmp_path: Path) -> None:
    from sklearn.cluster._kmeans import _kmeans_single_lloyd

    hostile = FunctionTransformer(
        func=_kmeans_single_lloyd,
        kw_args={"sample_weight": np.ones(1), "centers_init": np.zeros((1, 1)), "max_iter": 1},
    ).fit(np.zeros((2, 1)))
    data = refused(hostile, "a function that models only name and never call on data")
    plain_pickle_fails(
        tmp_path,
        data,
        "obj.transform(np.random.rand(4_000_000, 1))",  # reads 32 MB past a weight
    )


@pytest.mark.parametrize(
    "func",
    [
        np.log1p,
        np.round,
        functools.partial(check_array, dtype=[np.float64]),
        None,
    ],
)
def test_transformers_of_data_functions_load(func: Any) -> None:
    fitted = FunctionTransformer(func=func).fit(X)
    np.testing.assert_array_equal(loads(fitted).transform(X), fitted.transform(X))


def test_a_metric_or_a_wrapped_name_only_function_is_refused() -> None:
    from sklearn.cluster._kmeans import _kmeans_single_lloyd
    from sklearn.metrics import accuracy_score

    refused(FunctionTransformer(func=accuracy_score), "its func is")
    refused(FunctionTransformer(inverse_func=accuracy_score), "its inverse_func is")
    refused(FunctionTransformer(func=functools.partial(_kmeans_single_lloyd)), "its func is")


def test_a_function_the_caller_trusts_by_name_is_called(tmp_path: Path) -> None:
    path = tmp_path / "ft.amber"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        amber.save(FunctionTransformer(func=np.fliplr).fit(X), path)
    loaded = amber.load(path, trusted=["numpy.fliplr"])
    np.testing.assert_array_equal(loaded.transform(X), np.fliplr(X))


# --------------------------------------------------------------------------- distance metrics
def test_a_brute_force_metric_object_is_checked_against_the_input_width() -> None:
    good = DistanceMetric.get_metric("mahalanobis", VI=np.eye(4))
    fitted = KNeighborsRegressor(2, algorithm="brute", metric=good).fit(X, X[:, 0])
    np.testing.assert_array_equal(loads(fitted).predict(X), fitted.predict(X))
    hostile = copy.deepcopy(fitted)
    bad = DistanceMetric.get_metric("mahalanobis", VI=np.eye(4))
    bad.__setstate__((2.0, np.zeros(0), np.zeros((4, 1))))  # its rows read 4 columns of 1
    hostile.metric = hostile.effective_metric_ = bad
    refused(hostile, "Mahalanobis matrix does not match 4 features")


@pytest.mark.parametrize("model", [BisectingKMeans(3, random_state=0), AffinityPropagation()])
def test_clusterers_fitted_on_sparse_input_load(model: Any) -> None:
    """Their centers are a sparse matrix (affinity propagation) or 1 x n matrices in the
    bisecting tree's nodes (the mean of sparse rows): refused by the first version."""
    import scipy.sparse as sp

    sparse = sp.random(60, 5, density=0.5, format="csr", random_state=0)
    fitted = model.fit(sparse)
    assert (loads(fitted).predict(sparse) == fitted.predict(sparse)).all()


# --------------------------------------------------------------------------- neighbors, Birch,
# covariance (found by tampering with every fitted attribute of the estimators an audit reached)
def _brute(metric: str = "seuclidean", model: Any = None, **params: Any) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    params = params or {"V": X.var(0)}
    model = model or KNeighborsClassifier(3, algorithm="brute", metric=metric, metric_params=params)
    return model.fit(X, Y3)


def test_encoded_labels_outside_the_classes(tmp_path: Path) -> None:
    hostile = _brute()
    hostile._y = np.full_like(hostile._y, 2**31 - 1)  # indexes the compiled vote's class buffer
    data = refused(hostile, "an encoded label")
    plain_pickle_fails(tmp_path, data, "obj.predict(np.random.rand(7, 4))")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            lambda m: setattr(m, "_fit_X", m._fit_X[:, :2]),
            "training rows .* are not 4 features wide",
        ),
        (lambda m: setattr(m, "n_samples_fit_", 0), "n_samples_fit_ is 0"),
        (lambda m: setattr(m, "_y", m._y[:5]), "one label per training row"),
        (lambda m: setattr(m, "_y", m._y.astype(float)), "one label per training row"),
        (lambda m: m.effective_metric_params_.update(VI=np.eye(1)), "parameter VI does not"),
        (lambda m: m.metric_params.update(VI=np.eye(9)), "parameter VI does not"),
    ],
)
def test_brute_force_neighbors_state_is_checked(change: Any, fragment: str) -> None:
    hostile = _brute("mahalanobis", VI=np.eye(4))
    change(hostile)
    refused(hostile, fragment)


@pytest.mark.parametrize(
    "make",
    [
        lambda: _brute(),
        lambda: _brute("mahalanobis", VI=np.eye(4)),
        lambda: _brute("minkowski", p=3, w=np.ones(4)),
        lambda: _brute("minkowski", p=2),
        lambda: __import__("sklearn.neighbors").neighbors.RadiusNeighborsClassifier(9.0).fit(X, Y3),
        lambda: (
            __import__("sklearn.neighbors")
            .neighbors.KNeighborsClassifier(3)
            .fit(X, np.column_stack([Y3, Y3 % 2]))
        ),
    ],
)
def test_honest_neighbors_models_load(make: Any) -> None:
    fitted = make()
    np.testing.assert_array_equal(loads(fitted).predict(X), fitted.predict(X))


def test_honest_unsupervised_neighbors_load() -> None:
    from sklearn.neighbors import KNeighborsTransformer, LocalOutlierFactor, NearestNeighbors

    for model in (KNeighborsTransformer(), NearestNeighbors(), LocalOutlierFactor(novelty=True)):
        fitted = model.fit(X)
        np.testing.assert_array_equal(loads(fitted).kneighbors(X)[1], fitted.kneighbors(X)[1])


def test_birch_subcluster_norms_must_match_its_centers() -> None:
    from sklearn.cluster import Birch

    fitted = Birch(n_clusters=3).fit(X)
    assert (loads(fitted).predict(X) == fitted.predict(X)).all()
    hostile = copy.deepcopy(fitted)
    hostile.subcluster_centers_ = np.vstack([hostile.subcluster_centers_] * 3)
    refused(hostile, "_subcluster_norms do not match")
    hostile = copy.deepcopy(fitted)
    hostile.subcluster_centers_ = hostile.subcluster_centers_[:, :2]
    refused(hostile, "subcluster centers are not 4 features wide")


@pytest.mark.parametrize("name", ["EmpiricalCovariance", "MinCovDet", "EllipticEnvelope"])
def test_covariance_matrices_must_match_the_input_width(name: str) -> None:
    import sklearn.covariance

    cls = getattr(sklearn.covariance, name)
    fitted = (cls() if name == "EmpiricalCovariance" else cls(random_state=0)).fit(X)
    np.testing.assert_array_equal(loads(fitted).mahalanobis(X), fitted.mahalanobis(X))
    hostile = copy.deepcopy(fitted)
    hostile.precision_ = np.eye(1)  # scipy's compiled distance reads it 4 wide
    refused(hostile, "precision_ is not 4 x 4")
    hostile = copy.deepcopy(fitted)
    hostile.location_ = np.zeros(2)
    refused(hostile, "location_ is not 4 values")


# --------------------------------------------------------------------------- one-hot encoding
CATEGORICAL = np.array([[f"c{i % 50}", f"d{i % 7}"] for i in range(200)], dtype=object)


def _one_hot(**kwargs: Any) -> Any:
    from sklearn.preprocessing import OneHotEncoder

    return OneHotEncoder(sparse_output=False, **kwargs).fit(CATEGORICAL)


def test_one_hot_columns_fewer_than_its_codes(tmp_path: Path) -> None:
    hostile = _one_hot()
    hostile._n_features_outs = [1, 1]  # the dense output is filled past its 2 columns
    data = refused(hostile, "feature 0 is given 1 columns for 50 codes")
    use = "obj.transform(np.array([[f'c{i % 50}', f'd{i % 7}'] for i in range(200000)], object))"
    plain_pickle_fails(tmp_path, data, use)


@pytest.mark.parametrize(
    ("kwargs", "change", "fragment"),
    [
        ({"drop": "first"}, lambda e: e._drop_idx_after_grouping.__setitem__(0, 50), "drops a"),
        ({"drop": "first"}, lambda e: setattr(e, "_n_features_outs", [50, 7]), "given 50 col"),
        (
            {"min_frequency": 5, "handle_unknown": "infrequent_if_exist"},
            lambda e: e._default_to_infrequent_mappings[0].__setitem__(0, 10**6),
            "grouping maps past",
        ),
        (
            {"min_frequency": 5, "handle_unknown": "infrequent_if_exist"},
            lambda e: e._infrequent_indices.__setitem__(0, np.array([10**6])),
            "infrequent categories are not its own",
        ),
        ({}, lambda e: setattr(e, "_n_features_outs", [50]), "widths do not match"),
    ],
)
def test_one_hot_encodings_must_fit_their_columns(kwargs: Any, change: Any, fragment: str) -> None:
    hostile = _one_hot(**kwargs)
    change(hostile)
    refused(hostile, fragment)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"drop": "first"},
        {"drop": "if_binary"},
        {"min_frequency": 5, "handle_unknown": "infrequent_if_exist"},
        {"max_categories": 3, "drop": "first", "handle_unknown": "ignore"},
    ],
)
def test_honest_one_hot_encoders_load(kwargs: Any) -> None:
    fitted = _one_hot(**kwargs)
    np.testing.assert_array_equal(
        loads(fitted).transform(CATEGORICAL), fitted.transform(CATEGORICAL)
    )


# --------------------------------------------------------------------------- feature hashing
def test_a_hasher_of_zero_features_divides_by_zero(tmp_path: Path) -> None:
    from sklearn.feature_extraction import FeatureHasher

    hostile = FeatureHasher(input_type="string")
    hostile.n_features = 0
    data = refused(hostile, "its n_features is 0")
    plain_pickle_fails(tmp_path, data, "obj.transform([['a', 'b']] * 5)")  # SIGFPE


@pytest.mark.parametrize("n", [-1, 2.0, True, "8", None])
def test_a_hashing_vectorizer_needs_a_positive_width(n: Any) -> None:
    hostile = HashingVectorizer()
    hostile.n_features = n
    refused(hostile, "its n_features is")
    np.testing.assert_array_equal(
        loads(HashingVectorizer(n_features=16)).transform(DOCS).toarray(),
        HashingVectorizer(n_features=16).transform(DOCS).toarray(),
    )


# --------------------------------------------------------------------------- found by the third
# audit, which loaded every tampered estimator through Amber before calling it
def test_a_neighbors_tree_taller_than_the_training_rows(tmp_path: Path) -> None:
    from sklearn.neighbors import KDTree, KNeighborsTransformer

    hostile = KNeighborsTransformer(n_neighbors=39, algorithm="kd_tree").fit(X[:40])
    rows = np.full((400_000, 4), 1e6)
    for start in np.linspace(10_000, 399_000, 39).astype(int):
        rows[start : start + 40] = hostile._fit_X  # the nearest rows lie far past row 40
    hostile._tree = KDTree(rows, leaf_size=hostile.leaf_size)
    data = refused(hostile, "its neighbors tree does not hold its 40 training rows")
    plain_pickle_fails(tmp_path, data, "obj.transform(np.random.rand(7, 4)).toarray()")


def test_label_sets_map_only_to_their_own_columns(tmp_path: Path) -> None:
    from sklearn.preprocessing import MultiLabelBinarizer

    fitted = MultiLabelBinarizer().fit([{"a", "b"}, {"c"}, {"d"}])
    assert (loads(fitted).transform([{"a", "d"}]) == fitted.transform([{"a", "d"}])).all()
    fitted.transform([{"a"}])  # builds the cached map that pickles with it
    hostile = copy.deepcopy(fitted)
    hostile._cached_dict["a"] = 10**9
    data = refused(hostile, "its _cached_dict maps an entry to a column that is not there")
    plain_pickle_fails(tmp_path, data, "obj.transform([{'a'}] * 50)")
    hostile = copy.deepcopy(fitted)
    hostile._cached_dict = None
    hostile.classes_ = np.array(["a", "a", "a", "b"], dtype=object)
    refused(hostile, "its classes_ repeat a class")


def test_a_sparse_svm_that_claims_probabilities_it_lacks(tmp_path: Path) -> None:
    import scipy.sparse as sp
    from sklearn.svm import SVC

    sparse = sp.csr_matrix(RNG.random((40, 4)))
    hostile = SVC().fit(sparse, np.arange(40) % 3)  # no probability model: empty probA/probB
    # the flag libsvm is given: scikit-learn 1.9's _effective_probability, probability before
    flag = "_effective_probability" if "_effective_probability" in vars(hostile) else "probability"
    setattr(hostile, flag, True)
    data = refused(hostile, "probA has 0 entries")
    use = "import scipy.sparse as sp; obj.predict(sp.csr_matrix(np.random.rand(7, 4)))"
    plain_pickle_fails(tmp_path, data, use)
    fitted = SVC(random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # probability= is deprecated in scikit-learn 1.9
        fitted.set_params(probability=True).fit(sparse, np.arange(40) % 3)
    np.testing.assert_array_equal(loads(fitted).predict_proba(sparse), fitted.predict_proba(sparse))


def test_a_boosting_preprocessor_must_return_every_column_the_trees_read() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    mixed = np.column_stack([np.arange(60) % 3, X[:, 0], np.arange(60) % 4, X[:, 1]])
    fitted = HistGradientBoostingClassifier(categorical_features=[0, 2], max_iter=3).fit(
        mixed, np.arange(60) % 2
    )
    assert (loads(fitted).predict(mixed) == fitted.predict(mixed)).all()
    hostile = copy.deepcopy(fitted)
    hostile._preprocessor.transformers_ = hostile._preprocessor.transformers_[:1]
    refused(hostile, "its categorical preprocessor returns 2 columns, not 4")


# --------------------------------------------------------------------------- found by the audit
# of the classes not yet reached (sixteenth session): compiled __setstate__ methods that read
# their state unchecked, libsvm's class count, a sparse fit's coefficients, HDBSCAN's merges
class _Raw:
    """Pickles as the reduce tuple it is given: what a crafted file holds."""

    def __init__(self, reduced: tuple[Any, ...]) -> None:
        self.reduced = reduced

    def __reduce_ex__(self, protocol: object) -> tuple[Any, ...]:
        return self.reduced


def _kd_neighbors(algorithm: str = "kd_tree") -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(3, algorithm=algorithm).fit(X, Y3)


@pytest.mark.parametrize("algorithm", ["kd_tree", "ball_tree"])
def test_a_neighbors_tree_state_is_checked_before_it_is_applied(
    tmp_path: Path, algorithm: str
) -> None:
    """The trees' compiled __setstate__ reads 13 items without a bounds check: two items crash
    plain pickle's load itself."""
    hostile = _kd_neighbors(algorithm)
    cls, args, state = hostile._tree.__reduce_ex__(2)
    hostile._tree = _Raw((cls, args, state[:2]))
    data = refused(hostile, "neighbors tree's state .* expected a tuple of 13 items, got a tuple")
    # (an unchecked read past the tuple: mostly a crash, sometimes a stray object it rejects)
    plain_pickle_fails(tmp_path, data, "pass", signal=False)
    # a tree without a metric (the compiled attribute takes None) is refused too
    hostile._tree = _Raw((cls, args, (*state[:11], None, state[12])))
    refused(hostile, "its metric is a NoneType, not a DistanceMetric")
    honest = _kd_neighbors(algorithm)
    assert (loads(honest).predict(X) == honest.predict(X)).all()


def test_a_distance_metric_state_is_checked_before_it_is_applied(tmp_path: Path) -> None:
    """DistanceMetric.__setstate__ reads (p, vec, mat) unchecked: an empty state crashes plain
    pickle's load; a Python-function metric's longer state is refused as well."""
    hostile = _kd_neighbors()
    cls, args, state = hostile._tree.__reduce_ex__(2)
    metric_cls, metric_args, _ = state[11].__reduce_ex__(2)
    hostile._tree = _Raw((cls, args, (*state[:11], _Raw((metric_cls, metric_args, ())), state[12])))
    data = refused(
        hostile, r"distance metric's state .* expected \(p, vec, mat\), or .*, got a tuple of 0"
    )
    # (an unchecked read past the tuple: mostly a crash, sometimes a stray object it rejects)
    plain_pickle_fails(tmp_path, data, "pass", signal=False)
    honest = KNeighborsRegressor(metric=DistanceMetric.get_metric("minkowski", p=3)).fit(X, Y3)
    assert (loads(honest).predict(X) == honest.predict(X)).all()


def _manhattan(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).sum())


def test_a_trusted_python_function_metric_loads_with_its_function() -> None:
    """A ball tree over a Python function: PyFuncDistance and the function load once both are
    trusted (as the save's warning says); its state must then hold a function, and a short
    state (which its compiled __setstate__ would read past) gets none and is refused."""
    from sklearn.cluster._kmeans import _kmeans_single_lloyd
    from sklearn.neighbors import KNeighborsClassifier

    fitted = KNeighborsClassifier(3, metric=_manhattan, algorithm="ball_tree").fit(X, Y3)
    metric = fitted._tree.__getstate__()[11]
    trusted = [
        f"{_manhattan.__module__}._manhattan",
        f"{type(metric).__module__}.{type(metric).__name__}",
    ]
    data = pickle.dumps(fitted, protocol=5)
    with pytest.raises(UntrustedTypeError, match="PyFuncDistance"):
        safe_loads(data, policy=LoadPolicy.make(trusted[:1]))
    back = safe_loads(data, policy=LoadPolicy.make(trusted))
    assert (back.predict(X) == fitted.predict(X)).all()

    metric_cls, metric_args, metric_state = metric.__reduce_ex__(2)
    tree_cls, tree_args, tree_state = fitted._tree.__reduce_ex__(2)
    for state, fragment in [
        (metric_state[:3], "its Python-function metric has no function"),
        ((*metric_state[:3], "os.system", {}), "needs a function and a dict .*, got a str"),
        ((*metric_state[:4], [("p", 1)]), "needs a function .*, got a function and a list"),
        # called on data with the file's keywords: only what a FunctionTransformer may call
        ((*metric_state[:3], _kmeans_single_lloyd, {}), "a function that models only name"),
        (metric_state[:4], r"expected \(p, vec, mat\), or .*got a tuple of 4"),
    ]:
        hostile = copy.deepcopy(fitted)
        raw_metric = _Raw((metric_cls, metric_args, state))
        hostile._tree = _Raw((tree_cls, tree_args, (*tree_state[:11], raw_metric, tree_state[12])))
        with pytest.raises(FormatError, match=fragment):
            safe_loads(pickle.dumps(hostile, protocol=5), policy=LoadPolicy.make(trusted))


@pytest.mark.parametrize("kind", ["SVR", "OneClassSVM"])
@pytest.mark.parametrize("count", [1, 5000])
def test_a_regression_or_one_class_svm_has_two_support_counts(
    tmp_path: Path, kind: str, count: int
) -> None:
    """libsvm takes the class count from _n_support for every model and reads an intercept per
    pair of classes; scikit-learn's own check looks at the first count only."""
    from sklearn import svm

    fitted = getattr(svm, kind)()
    fitted.fit(X, X[:, 0]) if kind == "SVR" else fitted.fit(X)
    assert (loads(fitted).predict(X) == fitted.predict(X)).all()
    hostile = copy.deepcopy(fitted)
    hostile._n_support = np.full(count, fitted._n_support[0], dtype=fitted._n_support.dtype)
    data = refused(hostile, f"a regression or one-class model with {count} support counts")
    if count > 2:  # (one count reads a row libsvm never set: not reliably a crash)
        plain_pickle_fails(tmp_path, data, "obj.predict(np.random.rand(7, 4))")


@pytest.mark.parametrize("kernel", ["precomputed", "callable"])
def test_an_svm_on_a_precomputed_or_callable_kernel_is_never_sparse(
    tmp_path: Path, kernel: str
) -> None:
    """scikit-learn never fits these on sparse input: set _sparse on one, and libsvm's sparse
    predict sizes the model by the stored support vectors (none) and reads as many kernel
    values as the support counts say."""
    import scipy.sparse as sp
    from sklearn.metrics.pairwise import linear_kernel
    from sklearn.svm import SVC

    data = X if kernel == "callable" else X @ X.T
    fitted = SVC(kernel=linear_kernel if kernel == "callable" else "precomputed").fit(data, Y3)
    assert (loads(fitted).predict(data) == fitted.predict(data)).all()
    hostile = copy.deepcopy(fitted)
    n = 2_000_000
    hostile._sparse = True
    hostile.support_vectors_ = sp.csr_matrix((0, X.shape[1]))
    hostile.support_ = np.zeros(n, np.int32)
    hostile._n_support = np.array([n - 2, 1, 1], np.int32)
    hostile._dual_coef_ = sp.csr_matrix(np.ones((2, n)))
    refused(hostile, "a precomputed or callable kernel on the sparse code path")
    hostile._sparse = "yes"
    refused(hostile, "its sparse flag is 'yes'")


def test_keywords_a_model_hands_to_its_functions_never_carry_out(tmp_path: Path) -> None:
    """numpy's out= writes the result into an array of the file, which pickle's memo can make
    the index array of a tree the loader checked: the tree's next query read far outside."""
    import functools

    from sklearn.neighbors import KNeighborsTransformer
    from sklearn.pipeline import FeatureUnion

    data = RNG.random((4, 4))
    knn = KNeighborsTransformer(n_neighbors=2, algorithm="kd_tree").fit(data)
    victim = knn._tree.__getstate__()[1]  # its index array
    kw = {"axis": 0, "dtype": np.intp, "out": victim, "initial": 10**12}
    for writer in (
        FunctionTransformer(np.sum, kw_args=kw),
        FunctionTransformer(functools.partial(np.sum, **kw)),
    ):
        hostile = FeatureUnion([("w", writer), ("k", knn)])
        data_bytes = refused(hostile, "it holds keywords with out=")
    plain_pickle_fails(tmp_path, data_bytes, "obj.transform(np.random.rand(4, 4))")
    # a metric's parameters are keywords too
    from sklearn.neighbors import NearestNeighbors

    writer = NearestNeighbors(algorithm="brute", metric=np.add, metric_params={"out": victim})
    refused([writer.fit(data), knn], "it holds keywords with out=")
    # the loader's own stand-in for numpy's _frombuffer is not a function to call on data
    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy 1
        from numpy.core.numeric import _frombuffer

    refused(FunctionTransformer(_frombuffer), "a function that models only name")
    # honest keywords, and a partial without out=, load
    honest = FunctionTransformer(functools.partial(np.round, decimals=2), kw_args=None)
    assert (loads(honest.fit(X)).transform(X) == honest.transform(X)).all()
    honest = FunctionTransformer(np.round, kw_args={"decimals": 1}).fit(X)
    assert (loads(honest).transform(X) == honest.transform(X)).all()


def test_a_sparse_svm_holds_what_libsvm_reads(tmp_path: Path) -> None:
    """A sparse fit keeps its dual coefficients in a sparse matrix, and libsvm copies
    (classes - 1) x (support vectors) values from its stored data; its support vectors are the
    rows of a CSR matrix."""
    import scipy.sparse as sp
    from sklearn.svm import SVC

    sparse = sp.csr_matrix(RNG.random((40, 4)))
    fitted = SVC().fit(sparse, Y3[:40])
    assert (loads(fitted).predict(sparse) == fitted.predict(sparse)).all()
    hostile = copy.deepcopy(fitted)
    hostile._dual_coef_ = sp.csr_matrix(fitted._dual_coef_.shape)  # the shape, no values
    data = refused(hostile, "its sparse dual coefficients store 0 values")
    use = "import scipy.sparse as sp; obj.predict(sp.csr_matrix(np.random.rand(7, 4)))"
    plain_pickle_fails(tmp_path, data, use)
    # libsvm reads the support vectors' index pointers as rows: a CSC matrix of the same shape
    # (the audit scaled it to 3,000,000 support vectors and saw predict crash) is refused
    hostile = copy.deepcopy(fitted)
    hostile.support_vectors_ = fitted.support_vectors_.tocsc()
    refused(hostile, "its sparse support vectors are not rows of a CSR matrix")


@pytest.mark.parametrize("algorithm", ["lloyd", "elkan"])
def test_a_k_means_step_is_held_only_by_bisecting_k_means(tmp_path: Path, algorithm: str) -> None:
    """BisectingKMeans keeps k-means' compiled step (an allowlisted function) and calls it with
    centers it computes; called with the file's centers (a SelectKBest whose score function is
    a partial of it), the step writes by their width and the fit crashes."""
    import functools

    from sklearn.cluster._kmeans import _kmeans_single_elkan, _kmeans_single_lloyd
    from sklearn.feature_selection import SelectKBest

    honest = BisectingKMeans(3, algorithm=algorithm, random_state=0).fit(X)
    back = loads(honest)
    assert back._kmeans_single is honest._kmeans_single
    assert (back.predict(X) == honest.predict(X)).all()

    step = _kmeans_single_lloyd if algorithm == "lloyd" else _kmeans_single_elkan
    crafted = functools.partial(step, centers_init=np.zeros((3, 1)), max_iter=3, n_threads=1)
    selector = SelectKBest(crafted, k=2)
    data = refused(selector, f"it holds '{step.__qualname__}', a step that only a BisectingKM")
    plain_pickle_fails(tmp_path, data, "obj.fit(np.random.rand(2000, 50), np.random.rand(2000))")
    # elsewhere beside its own place: in a list, or a second estimator holding the same step
    refused([honest, step], "a step that only a BisectingKMeans's _kmeans_single may hold")
    other = copy.deepcopy(honest)
    other.score_func = honest._kmeans_single
    refused(other, "a step that only")
    # and not in another estimator's _kmeans_single
    selector = SelectKBest(k=2)
    selector._kmeans_single = step
    refused(selector, "a step that only")


def test_tsne_parameters_stay_where_its_embedding_is_finite(tmp_path: Path) -> None:
    """t-SNE's only data method refits with the file's parameters: an exaggeration or a step of
    1e300, or an initial embedding of NaN, makes the embedding non-finite, and the Barnes-Hut
    quadtree then recurses until the stack overflows (scikit-learn accepts all three)."""
    from sklearn.manifold import TSNE

    init = np.random.default_rng(3).normal(size=(X.shape[0], 2)) * 1e-4
    # (n_iter before scikit-learn 1.5)
    short = {"max_iter" if "max_iter" in TSNE().get_params() else "n_iter": 250}
    honest = [
        TSNE(perplexity=5, random_state=0, **short),
        TSNE(perplexity=5, init=init, learning_rate=200.0, random_state=0, **short),
        TSNE(perplexity=5, method="exact", init="random", random_state=0, **short),
    ]
    for fitted in honest:
        fitted.fit(X)
        back = loads(fitted)
        assert np.array_equal(back.fit_transform(X), fitted.fit_transform(X))
    for attr, value, fragment in [
        ("early_exaggeration", 1e300, "its early_exaggeration is 1e\\+300, not a number"),
        ("early_exaggeration", float("nan"), "its early_exaggeration is nan"),
        ("learning_rate", 1e300, "its learning_rate is 1e\\+300"),
        ("init", np.full_like(init, np.nan), "initial embedding holds values that are not fin"),
        ("init", np.full(5, 1.0), "initial embedding is a 1-d float64 array"),
        ("init", [[0.0, 1.0]], "its init is a list"),
    ]:
        hostile = copy.deepcopy(honest[1])
        setattr(hostile, attr, value)
        refused(hostile, fragment)
    hostile = copy.deepcopy(honest[0])
    hostile.early_exaggeration = 1e300
    data = refused(hostile, "its early_exaggeration")
    plain_pickle_fails(tmp_path, data, "obj.fit_transform(np.random.rand(40, 4))")


def test_hdbscan_merges_name_clusters_of_its_tree(tmp_path: Path) -> None:
    """dbscan_clustering's compiled union-find has room for the points and one cluster per
    merge, and reads each merge's node ids unchecked."""
    from sklearn.cluster import HDBSCAN

    fitted = HDBSCAN(min_cluster_size=3).fit(X)
    back = loads(fitted)
    np.testing.assert_array_equal(back.dbscan_clustering(0.5), fitted.dbscan_clustering(0.5))
    hostile = copy.deepcopy(fitted)
    hostile._single_linkage_tree_["left_node"][-1] = 2**31 - 1
    data = refused(hostile, "a merge's left_node lies outside its 59-merge tree")
    plain_pickle_fails(tmp_path, data, "obj.dbscan_clustering(1e9, min_cluster_size=2)")
    hostile._single_linkage_tree_ = np.zeros(3)
    refused(hostile, "its single-linkage tree is not a 1-d record array of merges")


def test_a_haversine_metric_needs_two_features() -> None:
    """The haversine metric reads (latitude, longitude) from every row: put in the tree of a
    model of one feature, it reads past each row (a read the audit saw with a guard page after
    every numpy buffer; without one it reads a neighbour's bytes and goes on)."""
    from sklearn.neighbors import NearestNeighbors

    points = RNG.uniform(-1, 1, size=(40, 2))
    honest = NearestNeighbors(n_neighbors=3, algorithm="ball_tree", metric="haversine")
    honest.fit(points)
    np.testing.assert_array_equal(loads(honest).kneighbors(points)[1], honest.kneighbors(points)[1])
    hostile = NearestNeighbors(n_neighbors=3, algorithm="ball_tree").fit(points[:, :1])
    cls, args, state = hostile._tree.__reduce_ex__(2)
    haversine = DistanceMetric.get_metric("haversine")
    hostile._tree = _Raw((cls, args, (*state[:11], haversine, state[12])))
    refused(hostile, "its haversine metric reads 2 features, not 1")


@pytest.mark.parametrize("route", ["copyreg_newobj", "metric_newobj"])
def test_a_neighbors_tree_is_built_by_its_own_newobj_only(tmp_path: Path, route: str) -> None:
    """The state checks are chosen by the constructor: a tree built another way
    (copyreg.__newobj__, the metrics' newObj; NEWOBJ on the class is refused as a call of a
    class honest pickles only name) skipped them, and a 2-item state crashed the load (found
    by review)."""
    import copyreg

    from sklearn.metrics import _dist_metrics

    hostile = _kd_neighbors()
    state = hostile._tree.__reduce_ex__(2)[2]
    tree = type(hostile._tree)
    if route == "copyreg_newobj":
        hostile._tree = _Raw((copyreg.__newobj__, (tree,), state[:2]))
        message = r"copyreg.__newobj__ of <class 'sklearn.neighbors._kd_tree.KDTree'>"
    else:
        hostile._tree = _Raw((_dist_metrics.newObj, (tree,), state[:2]))
        message = r"_dist_metrics.newObj of <class 'sklearn.neighbors._kd_tree.KDTree'>"
    data = pickle.dumps(hostile, protocol=1)
    refused(hostile, message, data)
    # plain pickle reads the 11 missing items from whatever follows the tuple: mostly a crash,
    # sometimes a stray object that its compiled code rejects (a TypeError seen in CI)
    plain_pickle_fails(tmp_path, data, "pass", signal=False)


def test_iterative_imputer_steps_cannot_nest(tmp_path: Path) -> None:
    """Its steps are named tuples made by a call, which the scanner's tuple-depth bound does
    not see: 200,000 steps nested in each other as a dict key crashed the load (found by
    review). A step must hold an index, indices and an estimator; honest imputers load at
    every protocol."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer
    from sklearn.impute._iterative import _ImputerTriplet

    gaps = X.copy()
    gaps[::3, 1] = np.nan
    fitted = IterativeImputer(max_iter=3, random_state=0).fit(gaps)
    for protocol in (0, 2, 5):
        back = safe_loads(pickle.dumps(fitted, protocol=protocol), policy=LoadPolicy())
        np.testing.assert_array_equal(back.transform(gaps), fitted.transform(gaps))
    nested: Any = None
    for _ in range(3):
        nested = _ImputerTriplet(nested, None, None)
    refused({nested: 1}, "an iterative imputer's step .* its feature index is a NoneType")
    refused(_ImputerTriplet(1, np.arange(2), (1,)), "its estimator is a tuple")


# --------------------------------------------------------------------------- perceptrons
def _mlp(cls: Any = None) -> Any:
    from sklearn.neural_network import MLPClassifier

    model = (cls or MLPClassifier)(hidden_layer_sizes=(5, 3), max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (not converged in 30 iterations: no matter)
        return model.fit(X, Y3)


def test_a_perceptron_with_too_few_layers_overwrites_the_callers_input() -> None:
    """Found by fuzzing: with n_layers_ of 1, predict multiplies by no weights and applies the
    output activation in place to the caller's own array. Plain pickle loads it and predicts
    without a word, the input overwritten; Amber refuses it at load."""
    hostile = _mlp()
    hostile.n_layers_ = 1
    data = refused(hostile, "n_layers_ is 1 but it holds 3 weight layers")
    mine = X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pickle.loads(data).predict(mine)
    assert not np.array_equal(mine, X)  # what plain pickle's copy did to the caller's data


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda m: setattr(m, "n_layers_", 0), "n_layers_ is 0 but it holds 3"),
        (lambda m: setattr(m, "n_layers_", 9), "n_layers_ is 9 but it holds 3"),
        (lambda m: setattr(m, "n_layers_", "4"), "n_layers_ is '4'"),
        (lambda m: setattr(m, "coefs_", m.coefs_[:2]), "not lists of weight arrays, one each"),
        (lambda m: setattr(m, "coefs_", tuple(m.coefs_)), "not lists of weight arrays"),
        (lambda m: setattr(m, "intercepts_", []), "not lists of weight arrays"),
        (lambda m: m.coefs_.__setitem__(1, m.coefs_[1].T.copy()), "layer 1's weights \\(3, 5\\)"),
        (lambda m: m.intercepts_.__setitem__(0, m.intercepts_[0][:2]), "intercepts \\(2,\\)"),
        (lambda m: setattr(m, "n_features_in_", 5), "layer 0's weights \\(4, 5\\)"),
        (lambda m: setattr(m, "n_outputs_", 2), "n_outputs_ is 2 but its last layer has 3"),
    ],
)
def test_a_perceptrons_layers_must_chain(change: Any, fragment: str) -> None:
    hostile = _mlp()
    change(hostile)
    refused(hostile, fragment)


def test_honest_perceptrons_load() -> None:
    from sklearn.neural_network import MLPRegressor

    for model in (_mlp(), _mlp(MLPRegressor)):
        np.testing.assert_array_equal(loads(model).predict(X), model.predict(X))


# --------------------------------------------------------------------------- imputers
def test_an_iterative_imputer_whose_first_pass_writes_in_place_is_refused() -> None:
    """Found by fuzzing: an IterativeImputer has no copy parameter, but the SimpleImputer it
    keeps for the first pass does; set to False, transform filled the caller's own
    (Fortran-ordered) array. Plain pickle loads it silently; Amber refuses it, and loads the
    honest one."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    data = X.copy()
    data[::3, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (not converged in 3 iterations: no matter)
        model = IterativeImputer(max_iter=3, random_state=0).fit(data)
    np.testing.assert_array_equal(loads(model).transform(data), model.transform(data))
    model.initial_imputer_.copy = False
    hostile = refused(model, "its initial_imputer_ would write into the caller's array")
    mine = np.asfortranarray(data)
    pickle.loads(hostile).transform(mine)
    assert not np.isnan(mine).any()  # what plain pickle's copy did to the caller's data


# --------------------------------------------------------------------------- found by fuzzing
# (a campaign of 30,000 mutants of 111 estimator configurations, 2026-12-02): arrays of a record
# dtype whose first field has the expected type pass the compiled code's buffer checks, which
# read them as plain values of the wrong size; a thread count OpenMP cannot start; a polynomial
# expansion wider than the degrees it fills
def _record(a: np.ndarray) -> np.ndarray:
    return np.zeros(a.shape, dtype=[("a", a.dtype), ("b", "i4")])


def _svc_fitted(sparse_fit: bool = False) -> Any:
    from scipy import sparse
    from sklearn.svm import SVC

    data = sparse.csr_matrix(X) if sparse_fit else X
    return SVC(kernel="linear", probability=True, random_state=0).fit(data, Y3)


@pytest.mark.parametrize(
    ("attr", "sparse_fit"),
    [
        ("_intercept_", False), ("_dual_coef_", False), ("support_vectors_", False),
        ("_probA", False), ("_probB", False), ("class_weight_", True), ("_intercept_", True),
    ],
)  # fmt: skip
def test_svm_arrays_of_a_record_dtype_are_refused(
    tmp_path: Path, attr: str, sparse_fit: bool
) -> None:
    fitted = _svc_fitted(sparse_fit)
    hostile = copy.deepcopy(fitted)
    setattr(hostile, attr, _record(getattr(fitted, attr)))
    data = refused(hostile, "not float64")
    if attr == "_intercept_" and not sparse_fit:
        plain_pickle_fails(tmp_path, data, f"obj.predict(np.array({X[:5].tolist()}))")
    assert (loads(fitted).predict(X) == fitted.predict(X)).all()


@pytest.mark.parametrize("model", [KMeans, MiniBatchKMeans, BisectingKMeans])
def test_kmeans_centers_of_a_record_dtype_are_refused(tmp_path: Path, model: Any) -> None:
    fitted = model(3, random_state=0).fit(X)
    hostile = copy.deepcopy(fitted)
    hostile.cluster_centers_ = _record(fitted.cluster_centers_)
    data = refused(hostile, r"cluster_centers_ are \[\('a', '<f8'\), .*, not float32/64")
    if model is KMeans:
        plain_pickle_fails(tmp_path, data, f"obj.predict(np.array({X[:5].tolist()}))")
    float32 = model(3, random_state=0).fit(X.astype(np.float32))
    assert loads(float32).cluster_centers_.dtype == np.float32


def test_a_bisecting_kmeans_node_center_of_a_record_dtype_is_refused() -> None:
    hostile = copy.deepcopy(BisectingKMeans(3, random_state=0).fit(X))
    node = hostile._bisecting_tree.left
    node.center = _record(node.center)
    refused(hostile, "a node of its cluster tree has a center of")


@pytest.mark.parametrize("threads", [0, 100_000])
def test_kmeans_thread_counts_beyond_the_machine_are_refused(tmp_path: Path, threads: int) -> None:
    from amber.security._fitted import MAX_THREADS

    hostile = KMeans(3, n_init=1, random_state=0).fit(X)
    hostile._n_threads = threads
    data = refused(hostile, f"_n_threads is {threads} \\(1..{MAX_THREADS} on this machine")
    if threads == 100_000:
        plain_pickle_fails(tmp_path, data, f"obj.score(np.array({X[:5].tolist()}))")
    hostile._n_threads = MAX_THREADS
    assert loads(hostile)._n_threads == MAX_THREADS


@pytest.mark.parametrize("item", ["data", "idx_array", "node_bounds", "metric vec", "metric mat"])
def test_neighbors_tree_arrays_of_a_record_dtype_are_refused_before_they_are_applied(
    tmp_path: Path, item: str
) -> None:
    """A record-dtype array in a KDTree's or BallTree's state crashed the load itself, in the
    tree's (or its metric's) compiled __setstate__."""
    from sklearn.neighbors import KNeighborsClassifier

    fitted = KNeighborsClassifier(
        3, algorithm="ball_tree", metric="mahalanobis", metric_params={"V": np.cov(X.T)}
    ).fit(X, Y3)
    hostile = copy.deepcopy(fitted)
    cls, args, state = fitted._tree.__reduce_ex__(2)
    state = list(state)
    if item.startswith("metric"):
        m_cls, m_args, (p, vec, mat) = state[11].__reduce_ex__(2)
        vec, mat = (_record(vec), mat) if item == "metric vec" else (vec, _record(mat))
        state[11] = _Raw((m_cls, m_args, (p, vec, mat)))
        message = "distance metric's state .* is a .-d array of \\[\\('a', '<f8'\\)"
    else:
        k = {"data": 0, "idx_array": 1, "node_bounds": 3}[item]
        state[k] = _record(state[k])
        message = "neighbors tree's state .* are a .-d array of \\[\\('a', '<[fi]8'\\)"
    hostile._tree = _Raw((cls, args, tuple(state)))
    data = refused(hostile, message)
    if item == "metric vec":
        plain_pickle_fails(tmp_path, data, f"obj.predict(np.array({X[:5].tolist()}))", signal=False)
    other = list(fitted._tree.__reduce_ex__(2)[2])  # node data of another record
    other[2] = np.zeros(other[2].shape, dtype=[("idx_start", "<i8"), ("idx_end", "<i8")])
    hostile._tree = _Raw((cls, args, tuple(other)))
    refused(hostile, "its node data are a 1-d array of")
    assert (loads(fitted).predict(X) == fitted.predict(X)).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"_max_degree": 1}, r"degrees \(0, 1\) are not those of degree=3"),
        ({"_n_out_full": 60}, "its _n_out_full is 60, not the width of degrees 0..3 of 4"),
        ({"n_output_features_": 34}, "its n_output_features_ is 34, not the width"),
        ({"n_features_in_": 2**40}, "n_features_in_ .* or flags are malformed"),
        ({"order": "K"}, "its order is 'K'"),
    ],
)
def test_a_polynomial_expansion_wider_than_its_degrees_is_refused(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    """transform allocates its output uninitialised, _n_out_full columns wide, and fills the
    columns of degrees up to _max_degree: the rest returned heap contents."""
    from sklearn.preprocessing import PolynomialFeatures

    fitted = PolynomialFeatures(3).fit(X)
    hostile = copy.deepcopy(fitted)
    vars(hostile).update(change)
    refused(hostile, message)
    for honest in (
        fitted, PolynomialFeatures((2, 3)).fit(X), PolynomialFeatures(2, interaction_only=True,
        include_bias=False).fit(X), PolynomialFeatures(0).fit(X),
    ):  # fmt: skip
        np.testing.assert_array_equal(loads(honest).transform(X), honest.transform(X))
