"""Fitted state that scikit-learn's compiled code reads at predict time without checking it.

An estimator from a file is built from allowed types only, but its fitted attributes are data,
and some of them size or index what compiled code reads and writes later, at ``predict`` or
``transform``: the width of k-means centers (the distance kernel walks the caller's rows with
it), the column a vectorizer gives a term (it becomes a sparse index that a matrix product
reads), the number of trees per boosting stage (each writes its own column of the output).
Honest fitting keeps them consistent; a crafted file need not, and the process then crashes or
reads and writes memory it does not own. :func:`check_fitted` refuses such state when the model
is loaded.

Estimators hand the functions they hold to data too: a ``FunctionTransformer`` calls its
``func`` with the file's ``kw_args``. The allowlist admits some functions only because fitted
models name them (a bisecting k-means names its compiled k-means step), never to be called on
data; such a function there is refused (see :func:`_callable_on_data`).

Every check reads attributes only (no estimator method runs) and they run after the whole
stream is built (from ``_validators._cross_check``), so that no later opcode can change what
was checked.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from amber.errors import FormatError
from amber.security._allowlist import entries, reference_only
from amber.security._pickle_scan import index_map

__all__ = ["CHECKED_CLASSES", "check_fitted", "refusals"]

Refuse = Callable[[str, str], FormatError]

_VECTORIZERS = ("CountVectorizer", "TfidfVectorizer")
_HASHERS = ("FeatureHasher", "HashingVectorizer")
_HIST_BOOSTING = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")
_NEIGHBORS_CLASSIFIERS = ("KNeighborsClassifier", "RadiusNeighborsClassifier")
_PERCEPTRONS = ("MLPClassifier", "MLPRegressor")
_NEIGHBORS_REGRESSORS = ("KNeighborsRegressor", "RadiusNeighborsRegressor")
_NEIGHBORS_GRAPH = ("KNeighborsTransformer", "RadiusNeighborsTransformer")
_COVARIANCE = (
    ("_empirical_covariance", "EmpiricalCovariance"),
    ("_robust_covariance", "MinCovDet"),
    ("_elliptic_envelope", "EllipticEnvelope"),
    ("_shrunk_covariance", "ShrunkCovariance"),
    ("_shrunk_covariance", "LedoitWolf"),
    ("_shrunk_covariance", "OAS"),
    ("_graph_lasso", "GraphicalLasso"),
    ("_graph_lasso", "GraphicalLassoCV"),
)

#: Classes whose fitted state is checked here: the load's walk runs when a stream names one.
CHECKED_CLASSES = frozenset(
    {
        ("sklearn.cluster._kmeans", "KMeans"),
        ("sklearn.cluster._kmeans", "MiniBatchKMeans"),
        ("sklearn.cluster._bisect_k_means", "BisectingKMeans"),
        ("sklearn.cluster._mean_shift", "MeanShift"),
        ("sklearn.cluster._affinity_propagation", "AffinityPropagation"),
        ("sklearn.ensemble._gb", "GradientBoostingClassifier"),
        ("sklearn.ensemble._gb", "GradientBoostingRegressor"),
        *(("sklearn.feature_extraction.text", n) for n in _VECTORIZERS),
        ("sklearn.feature_extraction._dict_vectorizer", "DictVectorizer"),
        ("sklearn.preprocessing._function_transformer", "FunctionTransformer"),
        ("sklearn.preprocessing._encoders", "OneHotEncoder"),
        ("sklearn.preprocessing._label", "MultiLabelBinarizer"),
        *(
            ("sklearn.ensemble._hist_gradient_boosting.gradient_boosting", n)
            for n in _HIST_BOOSTING
        ),
        ("sklearn.feature_extraction._hash", "FeatureHasher"),
        ("sklearn.feature_extraction.text", "HashingVectorizer"),
        ("sklearn.cluster._birch", "Birch"),
        *(("sklearn.neighbors._classification", n) for n in _NEIGHBORS_CLASSIFIERS),
        *(("sklearn.neighbors._regression", n) for n in _NEIGHBORS_REGRESSORS),
        ("sklearn.neighbors._unsupervised", "NearestNeighbors"),
        *(("sklearn.neighbors._graph", n) for n in _NEIGHBORS_GRAPH),
        ("sklearn.neighbors._lof", "LocalOutlierFactor"),
        *(("sklearn.covariance." + m, n) for m, n in _COVARIANCE),
        ("sklearn.cluster._hdbscan.hdbscan", "HDBSCAN"),
        ("sklearn.manifold._t_sne", "TSNE"),
        *(("sklearn.neural_network._multilayer_perceptron", n) for n in _PERCEPTRONS),
        ("sklearn.impute._iterative", "IterativeImputer"),
        ("sklearn.preprocessing._polynomial", "PolynomialFeatures"),
    }
)

# More OpenMP threads than this machine has CPUs, and than 256: the compiled loops start them
# all, and where they cannot (a memory or process limit: 2,007 threads under a 6 GB address
# space) the OpenMP runtime ends the process; 100,000 crashed it outright (k-means here, and
# LightGBM's n_jobs, amber/handlers/_lgb_check.py)
MAX_THREADS = max(256, os.cpu_count() or 1)
_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))


#: Values an object-graph walk (this module's, and the load's in _validators) never enters.
ATOMS = frozenset({str, bytes, int, float, bool, type(None), np.float64, np.int64})
# where a histogram boosting model keeps its 1,000s of tree predictors (arrays only): not walked
_PREDICTORS = "_predictors"
_WALK_LIMIT = 1_000_000  # objects visited (a model is far smaller); past it, no verdict


def _containers(values: Any) -> list[Any]:
    """The values worth walking into: not atoms, not arrays of numbers."""
    return [
        v
        for v in values
        if type(v) not in ATOMS and not (type(v) is np.ndarray and not v.dtype.hasobject)
    ]


def refusals(obj: Any, referenced: Iterable[tuple[str, str]]) -> list[str]:
    """What :func:`check_fitted` refuses in the live object graph of ``obj``, for a save to warn
    about: a model the save writes faithfully but a safe load turns down (a gradient boosting
    model with another init estimator than the default, a t-SNE whose starting embedding or
    step is out of bounds), which would otherwise only come to light at the first load.

    Only estimators of the ``CHECKED_CLASSES`` that ``referenced`` (the stream's globals, as
    ``(module, name)`` pairs) names are checked, so a model with none of them costs nothing.
    """
    wanted = CHECKED_CLASSES.intersection(referenced)
    if not wanted:
        return []
    found: list[str] = []

    def refuse(what: str, detail: str) -> FormatError:
        return FormatError(f"{what}: {detail}")

    seen: set[int] = set()
    stack = [obj]
    while stack and len(seen) < _WALK_LIMIT:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, dict):
            stack += _containers(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack += _containers(o)
        elif isinstance(o, np.ndarray):
            if o.dtype.hasobject:  # (only the root can be another array: the rest are sifted)
                stack += _containers(o.ravel(order="K").tolist())
        else:
            d = getattr(o, "__dict__", None)
            if type(d) is not dict:
                continue
            key = (type(o).__module__, type(o).__name__)
            done = None
            if key in wanted:
                try:
                    done = check_fitted(o, d, refuse)  # (the attribute it vouches for, if any)
                except FormatError as exc:
                    found.append(str(exc))
                except Exception as exc:  # as a load's check would, it refuses what trips it
                    found.append(f"an estimator ({key[1]}): {type(exc).__name__}: {exc}")
            stack += _containers(v for k, v in d.items() if k != done and k != _PREDICTORS)
    return found


def check_fitted(obj: Any, d: dict[str, Any], refuse: Refuse) -> str | None:
    """Refuse inconsistent fitted state of ``obj`` (whose ``__dict__`` is ``d``).

    Returns the name of an attribute that holds nothing the load's walk needs to visit (a
    vocabulary of plain terms), if any.
    """
    cls = type(obj)
    if not cls.__module__.startswith("sklearn."):
        return None  # a class the caller trusted by name: its state is its own business
    what = f"an estimator ({cls.__name__})"
    done = None
    if "vocabulary_" in d and (cls.__name__ in _VECTORIZERS or cls.__name__ == "DictVectorizer"):
        done = _check_vocabulary(d["vocabulary_"], what, refuse)
    if "cluster_centers_" in d or "_bisecting_tree" in d:
        _check_centers(d, what, refuse)
    threads = d.get("_n_threads")
    if threads is not None and (
        not isinstance(threads, (int, np.integer)) or not 1 <= threads <= MAX_THREADS
    ):
        # OpenMP reads a negative thread count as a huge one and ends the process
        raise refuse(
            what,
            f"its thread count _n_threads is {threads!r:.40} (1..{MAX_THREADS} on this "
            f"machine of {os.cpu_count()} CPUs)",
        )
    if cls.__module__ == "sklearn.ensemble._gb" and "estimators_" in d:
        _check_stages(d, cls.__name__ == "GradientBoostingClassifier", what, refuse)
    if "_fit_X" in d and cls.__module__.startswith("sklearn.neighbors."):
        _check_neighbors(d, what, refuse)
    if "subcluster_centers_" in d:
        _check_birch(d, what, refuse)
    if "location_" in d and cls.__module__.startswith("sklearn.covariance."):
        _check_covariance(d, what, refuse)
    if cls.__name__ in _HASHERS:
        width: Any = d.get("n_features")
        if not _index(width, 1 << 62) or width < 1:
            # the compiled hashing takes each hash modulo n_features: 0 divides by zero
            raise refuse(what, f"its n_features is {width!r:.40}")
    if d.get("_preprocessor") is not None and cls.__name__ in _HIST_BOOSTING:
        _check_preprocessor(d, what, refuse)
    if cls.__name__ == "MultiLabelBinarizer" and "classes_" in d:
        _check_label_sets(d, what, refuse)
    if cls.__name__ == "OneHotEncoder" and "_n_features_outs" in d:
        _check_one_hot(d, what, refuse)
    if cls.__name__ == "HDBSCAN" and d.get("_single_linkage_tree_") is not None:
        _check_linkage(d["_single_linkage_tree_"], what, refuse)
    if cls.__name__ == "TSNE":
        _check_tsne(d, what, refuse)
    if cls.__name__ in _PERCEPTRONS and "coefs_" in d:
        _check_layers(d, what, refuse)
    if cls.__name__ == "PolynomialFeatures" and "n_output_features_" in d:
        _check_polynomial(d, what, refuse)
    # an iterative imputer has no copy parameter and never writes into its input; the imputer
    # it makes for the first pass copies, and one that does not filled the caller's own
    # (Fortran-ordered) array in place
    if (
        cls.__name__ == "IterativeImputer"
        and getattr(d.get("initial_imputer_"), "copy", True) is not True
    ):
        raise refuse(what, "its initial_imputer_ would write into the caller's array (copy)")
    if cls.__name__ == "FunctionTransformer":
        for attr in ("func", "inverse_func"):
            if not _callable_on_data(d.get(attr)):
                raise refuse(
                    what,
                    f"its {attr} is {d.get(attr)!r:.80}, a function that models only name and "
                    f"never call on data (a transformer calls it with the file's arguments)",
                )
    return done


def _check_layers(d: dict[str, Any], what: str, refuse: Refuse) -> None:
    """A perceptron's layers chain: ``predict`` multiplies by ``n_layers_ - 1`` weight matrices
    and then applies the output activation in place to the result, which with ``n_layers_`` of 1
    or less is the caller's own input array, overwritten with the model's output."""
    coefs, intercepts, layers = d.get("coefs_"), d.get("intercepts_"), d.get("n_layers_")
    if not (
        isinstance(coefs, list)
        and isinstance(intercepts, list)
        and 0 < len(coefs) == len(intercepts)
        and all(type(c) is np.ndarray and c.ndim == 2 for c in coefs)
        and all(type(b) is np.ndarray and b.ndim == 1 for b in intercepts)
    ):
        raise refuse(what, "its coefs_ and intercepts_ are not lists of weight arrays, one each")
    if not _index(layers, 1 << 31) or layers != len(coefs) + 1:
        raise refuse(what, f"n_layers_ is {layers!r:.40} but it holds {len(coefs)} weight layers")
    n_in = d.get("n_features_in_", coefs[0].shape[0])
    widths = [n_in, *(c.shape[1] for c in coefs)]
    for k, (c, b) in enumerate(zip(coefs, intercepts, strict=True)):
        if c.shape != (widths[k], widths[k + 1]) or b.shape != (widths[k + 1],):
            raise refuse(
                what,
                f"layer {k}'s weights {c.shape} and intercepts {b.shape} do not chain from "
                f"{widths[k]} inputs",
            )
    n_out = d.get("n_outputs_", widths[-1])
    if n_out != widths[-1]:
        raise refuse(what, f"n_outputs_ is {n_out!r:.40} but its last layer has {widths[-1]}")


def _polynomial_width(n: int, low: int, high: int, interaction_only: bool, bias: bool) -> int:
    """The columns of a polynomial expansion (``PolynomialFeatures._num_combinations``)."""
    if interaction_only:
        width = sum(math.comb(n, i) for i in range(max(1, low), min(high, n) + 1))
    else:
        width = math.comb(n + high, high) - 1
        if low > 0:
            width -= math.comb(n + low - 1, low - 1) - 1
    return width + int(bias)


def _check_polynomial(d: dict[str, Any], what: str, refuse: Refuse) -> None:
    """``transform`` allocates its output uninitialised, ``_n_out_full`` (or
    ``n_output_features_``) columns wide, and fills the columns of degrees up to ``_max_degree``:
    a width beyond them returned whatever the memory held (heap contents)."""
    degree, low, high = d.get("degree"), d.get("_min_degree", -1), d.get("_max_degree", -1)
    n, width, full = d.get("n_features_in_", 0), d.get("n_output_features_"), d.get("_n_out_full")
    interaction_only, bias = d.get("interaction_only"), d.get("include_bias")
    expected = (0, degree) if _index(degree, 1 << 62) else degree
    if not (
        _index(n, 1 << 31)
        and n >= 1
        and _index(low, 1001)
        and _index(high, 1001)
        and low <= high
        and isinstance(expected, (tuple, list))
        and tuple(expected) == (low, high)
        and isinstance(interaction_only, (bool, np.bool_))
        and isinstance(bias, (bool, np.bool_))
    ):
        raise refuse(
            what,
            f"its degrees ({low!r:.20}, {high!r:.20}) are not those of degree={degree!r:.40}, "
            f"or its n_features_in_ ({n!r:.40}) or flags are malformed",
        )
    n, low, high = int(n), int(low), int(high)
    widths = [("n_output_features_", width, low), ("_n_out_full", full, 0)]
    for attr, value, from_degree in widths:
        if attr == "_n_out_full" and value is None:
            continue  # (a release without it)
        if value != _polynomial_width(n, from_degree, high, bool(interaction_only), bool(bias)):
            raise refuse(
                what,
                f"its {attr} is {value!r:.40}, not the width of degrees {from_degree}..{high} "
                f"of {n} features",
            )
    if d.get("order", "C") not in ("C", "F"):
        raise refuse(what, f"its order is {d.get('order')!r:.40}")


def _check_vocabulary(
    vocab: Any, what: str, refuse: Refuse, attr: str = "vocabulary_"
) -> str | None:
    # the column of each term becomes an index of a sparse matrix that is never bounds-checked
    if not isinstance(vocab, dict):
        raise refuse(what, f"its {attr} is a {type(vocab).__name__}, not a dict")
    try:
        index_map(vocab, len(vocab))
    except ValueError as exc:
        raise refuse(
            what, f"its {attr} maps an entry to a column that is not there: {exc}"
        ) from None
    # ints only: nothing the walk would visit (it never visits a dict's keys)
    return attr


def _width(a: Any, ndim: int) -> int:
    """The last dimension of an array (or sparse matrix) of ``ndim`` dimensions, else -1."""
    shape = _shape(a)
    if shape is None:
        return -1
    if len(shape) == 2 and ndim == 1 and shape[0] == 1:
        shape = shape[1:]  # a node center of a model fitted on sparse input: a 1 x n matrix
    return int(shape[-1]) if len(shape) == ndim else -1


def _check_centers(d: dict[str, Any], what: str, refuse: Refuse) -> None:
    # the compiled distance step takes the number of features from the centers and walks the
    # caller's rows with it
    n_in = _n_in(d, what, refuse)
    centers = d.get("cluster_centers_")
    if centers is not None and _width(centers, 2) != n_in:
        raise refuse(what, f"its cluster_centers_ are not {n_in} features wide")
    if centers is not None and not _float_array(centers):
        # the compiled step takes the centers as float32 or float64 rows: a record dtype whose
        # first field is one of them passed its buffer check, then predict crashed
        raise refuse(what, f"its cluster_centers_ are {_dtype_of(centers)}, not float32/64")
    mean = d.get("_X_mean")
    if mean is not None and _width(mean, 1) != n_in:
        raise refuse(what, f"its _X_mean is not {n_in} values")
    tree = d.get("_bisecting_tree")
    if tree is None:
        return
    seen: set[int] = set()
    stack = [tree]
    while stack:  # nodes hold their centers; a shared or cyclic node is visited once
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        center = getattr(node, "center", None)
        if _width(center, 1) != n_in:
            raise refuse(what, f"a node of its cluster tree has a center not {n_in} wide")
        if isinstance(center, np.ndarray) and not _float_array(center):
            raise refuse(what, f"a node of its cluster tree has a center of {_dtype_of(center)}")
        stack += [getattr(node, "left", None), getattr(node, "right", None)]


def _float_array(a: Any) -> bool:
    """A float32 or float64 array in this machine's byte order, or a sparse matrix of one."""
    data = a if isinstance(a, np.ndarray) else getattr(a, "data", None)
    return isinstance(data, np.ndarray) and data.dtype in _FLOATS


def _dtype_of(a: Any) -> str:
    return str(getattr(a, "dtype", type(a).__name__))[:60]


def _n_in(d: dict[str, Any], what: str, refuse: Refuse) -> int:
    n_in = d.get("n_features_in_")
    if not isinstance(n_in, (int, np.integer)) or n_in < 1:
        raise refuse(what, f"its input width n_features_in_ is {n_in!r:.40}")
    return int(n_in)


def _shape(a: Any) -> tuple[int, ...] | None:
    """The shape of an array or sparse matrix, else None."""
    shape = getattr(a, "shape", None)
    ok = isinstance(a, np.ndarray) or hasattr(a, "tocsr")
    return shape if ok and isinstance(shape, tuple) else None


# the metric parameters a neighbors model hands the compiled distance code with the caller's
# rows: sized by the input width, which the code does not check them against (V: seuclidean's
# variances, or mahalanobis' covariance matrix; a metric given the other shape refuses it)
_METRIC_PARAMS = {"VI": (2,), "V": (1, 2), "w": (1,)}


def _check_neighbors(d: dict[str, Any], what: str, refuse: Refuse) -> None:
    n_in = _n_in(d, what, refuse)
    fit_x = _shape(d["_fit_X"])
    if fit_x is None or len(fit_x) != 2 or fit_x[1] != n_in:
        raise refuse(what, f"its training rows (_fit_X) are not {n_in} features wide")
    n = fit_x[0]
    if d.get("n_samples_fit_", n) != n:
        raise refuse(what, f"n_samples_fit_ is {d.get('n_samples_fit_')!r:.40}, not {n}")
    tree = d.get("_tree")
    if tree is not None and np.shape(getattr(tree, "data", ())) != fit_x:
        # the tree's row numbers become the column ids of the neighbors graph, which is as wide
        # as the training rows: a taller tree made toarray() write past it
        raise refuse(what, f"its neighbors tree does not hold its {n} training rows")
    for attr in ("metric_params", "effective_metric_params_"):
        params = d.get(attr)
        if not isinstance(params, dict):
            continue
        for key, ndims in _METRIC_PARAMS.items():
            if params.get(key) is not None and np.shape(params[key]) not in [
                (n_in,) * ndim for ndim in ndims
            ]:
                raise refuse(what, f"its metric parameter {key} does not match {n_in} features")
    y = d.get("_y")
    classes = d.get("classes_")
    if y is None or classes is None:
        return  # a regressor's targets are indexed by numpy, which checks
    # a classifier's encoded labels index per-class buffers in the compiled neighbor vote
    two_d = bool(d.get("outputs_2d_"))
    per_output = classes if two_d else [classes]
    y = np.asarray(y)
    if y.dtype.kind not in "iu" or y.shape != ((n, len(per_output)) if two_d else (n,)):
        raise refuse(what, "its encoded labels (_y) do not hold one label per training row")
    columns = y.reshape(n, -1)
    for k, labels in enumerate(per_output):
        if n and (columns[:, k].min() < 0 or columns[:, k].max() >= len(labels)):
            raise refuse(what, "an encoded label (_y) is not one of its classes")


def _check_birch(d: dict[str, Any], what: str, refuse: Refuse) -> None:
    # the compiled nearest-subcluster search reads one squared norm per center
    n_in = _n_in(d, what, refuse)
    centers = _shape(d["subcluster_centers_"])
    if centers is None or len(centers) != 2 or centers[1] != n_in:
        raise refuse(what, f"its subcluster centers are not {n_in} features wide")
    for attr in ("_subcluster_norms", "subcluster_labels_"):
        if attr in d and np.shape(d[attr]) != centers[:1]:
            raise refuse(what, f"its {attr} do not match its {centers[0]} subclusters")


def _check_linkage(tree: Any, what: str, refuse: Refuse) -> None:
    # dbscan_clustering's compiled union-find holds 2m + 1 clusters for a tree of m merges (the
    # points, then one cluster per merge) and reads each merge's two node ids unchecked
    names = getattr(getattr(tree, "dtype", None), "names", None) or ()
    if not (isinstance(tree, np.ndarray) and tree.ndim == 1 and "left_node" in names):
        raise refuse(what, "its single-linkage tree is not a 1-d record array of merges")
    for field in ("left_node", "right_node"):
        if field not in names or not _indices(tree[field], 2 * tree.shape[0] + 1):
            raise refuse(what, f"a merge's {field} lies outside its {tree.shape[0]}-merge tree")


# t-SNE's only data method refits with the file's parameters. scikit-learn accepts any finite
# early exaggeration and learning rate, and any initial embedding: past float32's range (P
# values times 1e60, steps of 1e60, an embedding of NaN, inf or 1e300) the embedding turns
# non-finite and the Barnes-Hut quadtree recurses without end into a stack overflow (seen at
# 1e60; 1e30 ran). The bounds are far above any value in use (defaults 12, "auto", "pca").
_TSNE_EXAGGERATION_MAX = 1e6
_TSNE_LEARNING_RATE_MAX = 1e9
_TSNE_INIT_MAX = 1e6


def _check_tsne(d: dict[str, Any], what: str, refuse: Refuse) -> None:
    for attr, high in (
        ("early_exaggeration", _TSNE_EXAGGERATION_MAX),
        ("learning_rate", _TSNE_LEARNING_RATE_MAX),
    ):
        value: Any = d.get(attr)
        if isinstance(value, str):
            continue  # "auto": scikit-learn's own choice, or a name its parameter check refuses
        if not _real(value) or not abs(float(value)) <= high:
            raise refuse(what, f"its {attr} is {value!r:.40}, not a number of at most {high:g}")
    init = d.get("init")
    if isinstance(init, np.ndarray):
        if init.dtype.kind not in "iuf" or init.ndim != 2:
            raise refuse(what, f"its initial embedding is a {init.ndim}-d {init.dtype} array")
        if init.size and not float(np.max(np.abs(init), initial=0.0)) <= _TSNE_INIT_MAX:
            # (NaN fails the comparison too)
            raise refuse(
                what,
                f"its initial embedding holds values that are not finite or exceed "
                f"{_TSNE_INIT_MAX:g} in size",
            )
    elif not (init is None or isinstance(init, str)):
        raise refuse(what, f"its init is a {type(init).__name__}")


def _real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_covariance(d: dict[str, Any], what: str, refuse: Refuse) -> None:
    # the Mahalanobis distances (scipy's compiled code) read the precision matrix by the width
    # of the caller's rows
    n_in = _n_in(d, what, refuse)
    if np.shape(d["location_"]) != (n_in,):
        raise refuse(what, f"its location_ is not {n_in} values")
    for attr in ("precision_", "covariance_"):
        if d.get(attr) is not None and np.shape(d[attr]) != (n_in, n_in):
            raise refuse(what, f"its {attr} is not {n_in} x {n_in}")


def _index(value: Any, below: int) -> bool:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        return False
    return 0 <= int(value) < below


def _indices(a: Any, below: int, size: int | None = None) -> bool:
    return (
        isinstance(a, np.ndarray)
        and a.ndim == 1
        and a.dtype.kind in "iu"
        and (size is None or a.shape[0] == size)
        and (a.size == 0 or (int(a.min()) >= 0 and int(a.max()) < below))
    )


def _check_preprocessor(d: dict[str, Any], what: str, refuse: Refuse) -> None:
    """A boosting model's categorical preprocessor must hand its trees as many columns as they
    split on (n_features_in_): each of its parts maps a column to one column, so the widths of
    their column selections must add up (a truncated preprocessor let the trees read past the
    rows it returned)."""
    n_in = _n_in(d, what, refuse)
    parts = getattr(d["_preprocessor"], "transformers_", None)
    if not isinstance(parts, list):
        raise refuse(what, "its categorical preprocessor is not a fitted ColumnTransformer")
    width = 0
    for part in parts:
        if not (isinstance(part, tuple) and len(part) == 3):
            raise refuse(what, "its categorical preprocessor is malformed")
        _, transformer, columns = part
        if isinstance(transformer, str) and transformer == "drop":
            continue
        if transformer != "passthrough" and type(transformer).__name__ not in _ONE_TO_ONE:
            raise refuse(what, f"its categorical preprocessor holds a {type(transformer).__name__}")
        selected = np.asarray(columns)
        if selected.dtype == bool and selected.shape == (n_in,):
            width += int(selected.sum())
        elif selected.ndim == 1 and _indices(selected, n_in):
            width += selected.size
        else:
            raise refuse(what, "its categorical preprocessor selects columns it does not have")
    if width != n_in:
        raise refuse(what, f"its categorical preprocessor returns {width} columns, not {n_in}")


# the parts of a boosting model's preprocessor, each one column out per column in
_ONE_TO_ONE = ("OrdinalEncoder", "FunctionTransformer")


def _check_label_sets(d: dict[str, Any], what: str, refuse: Refuse) -> None:
    """A label's column is its index in classes_ (or in the cached map of it), and the output is
    as wide as that map: duplicate classes or a cached index past the map made ``toarray()``
    write outside the output."""
    classes = d["classes_"]
    if not isinstance(classes, np.ndarray) or classes.ndim != 1:
        raise refuse(what, "its classes_ is not a 1-d array")
    if len(set(classes.tolist())) != len(classes):
        raise refuse(what, "its classes_ repeat a class")
    cached = d.get("_cached_dict")
    if cached is not None:
        _check_vocabulary(cached, what, refuse, "_cached_dict")
        if len(cached) != len(classes):
            raise refuse(what, "its cached class map does not match its classes")


def _check_one_hot(d: dict[str, Any], what: str, refuse: Refuse) -> None:
    """Each feature's code (after grouping infrequent categories and dropping one) must fit the
    columns ``_n_features_outs`` gives it: they size the sparse matrix its codes index, which
    ``toarray`` then fills unchecked (a short count corrupted the heap)."""
    cats, outs = d.get("categories_"), d["_n_features_outs"]
    if not isinstance(cats, list) or not isinstance(outs, list) or len(outs) != len(cats):
        raise refuse(what, "its output widths do not match its features")
    infrequent = d.get("_infrequent_indices") if d.get("_infrequent_enabled") else None
    mappings = d.get("_default_to_infrequent_mappings") if infrequent is not None else None
    drops = d.get("_drop_idx_after_grouping")
    for lst in (infrequent, mappings, drops):
        if lst is not None and len(lst) != len(cats):
            raise refuse(what, "its per-feature encodings do not match its features")
    for i, categories in enumerate(cats):
        n = len(categories)
        groups = n
        rare = infrequent[i] if infrequent is not None else None
        mapping = mappings[i] if mappings is not None else None
        if (rare is None) != (mapping is None):
            raise refuse(what, f"feature {i} has infrequent categories without their mapping")
        if rare is not None:
            if not (_indices(rare, n) and rare.size >= 1):
                raise refuse(what, f"feature {i}'s infrequent categories are not its own")
            groups = n - rare.size + 1
            if not _indices(mapping, groups, size=n):
                raise refuse(what, f"feature {i}'s grouping maps past its {groups} columns")
        drop = drops[i] if drops is not None else None
        if drop is not None and not _index(drop, groups):
            raise refuse(what, f"feature {i} drops a category it does not have")
        if outs[i] != groups - (drop is not None):
            raise refuse(what, f"feature {i} is given {outs[i]!r:.20} columns for {groups} codes")


def _check_stages(d: dict[str, Any], classifier: bool, what: str, refuse: Refuse) -> None:
    # each stage's k-th tree adds into column k of the raw predictions, which have one column
    # per tree of a stage: n_trees_per_iteration_ when init_ is "zero", else as many as the
    # init estimator predicts. Which it is follows the class, as in scikit-learn (a regressor
    # asks its init estimator for one value per row, whatever classes_ the file gives it)
    stages = d["estimators_"]
    if not isinstance(stages, np.ndarray) or stages.ndim != 2 or stages.dtype != object:
        raise refuse(what, "its estimators_ is not a 2-d array of trees")
    # the compiled predict_stages reads each stage's tree_ as a Tree, unchecked: None crashed
    if not all(map(_is_tree, (getattr(est, "tree_", None) for est in stages.flat))):
        raise refuse(what, "a stage of its estimators_ holds no decision tree (tree_)")
    k = int(stages.shape[1])
    per = d.get("n_trees_per_iteration_", k)
    if per != k:
        raise refuse(what, f"its stages have {k} trees but n_trees_per_iteration_ is {per!r:.40}")
    classes = d.get("classes_")
    if not classifier:  # one tree per stage
        if k != 1:
            raise refuse(what, f"a regressor's stages have {k} trees, not 1")
        _check_init(d.get("init_"), 1, "DummyRegressor", what, refuse)
        return
    if classes is None:
        raise refuse(what, "it is a classifier without classes_")
    n = len(classes)
    if k != (1 if n == 2 else n):
        raise refuse(what, f"its stages have {k} trees for {n} classes")
    if k > 1 and getattr(d.get("_loss"), "is_multiclass", None) is not True:
        raise refuse(what, "it has several trees per stage but a loss for two classes")
    _check_init(d.get("init_"), max(n, 1), "DummyClassifier", what, refuse)


def _is_tree(obj: Any) -> bool:
    cls = type(obj)
    return cls.__name__ == "Tree" and cls.__module__ == "sklearn.tree._tree"


def _check_init(init: Any, width: int, dummy: str, what: str, refuse: Refuse) -> None:
    """The init estimator must predict as many columns as the stages add into: the default
    one, ``dummy``, of the model's kind (a regressor calls its init estimator's ``predict``,
    which a DummyClassifier answers from its constant or classes, unchecked here: an empty
    constant gave no rows for the stages to write into)."""
    if isinstance(init, str):
        if init != "zero":
            raise refuse(what, f"its init_ is {init!r:.40}")
        return
    name = type(init).__name__
    if type(init).__module__ != "sklearn.dummy" or name != dummy:
        # any other estimator predicts as many columns as its own fitted arrays say
        raise refuse(
            what,
            f"its init_ is a {name}; Amber checks the prediction width of the default init "
            f"estimators only (load with allow_arbitrary_code=True if you made this file)",
        )
    v = vars(init)
    if name == "DummyClassifier":
        classes, prior = v.get("classes_"), v.get("class_prior_")
        if not (
            v.get("n_outputs_") == 1
            and isinstance(prior, np.ndarray)
            and prior.shape == (width,)
            and np.shape(classes) == (width,)
            and v.get("n_classes_") == width
        ):
            raise refuse(what, f"its init_ does not predict {width} classes")
    elif name == "DummyRegressor":
        constant = v.get("constant_")
        if not (v.get("n_outputs_") == 1 and np.shape(constant) == (1, 1)):
            raise refuse(what, "its init_ does not predict one value per row")
    else:
        raise refuse(what, f"its init_ is a {name}")


# scikit-learn functions that the allowlist admits and that are plain Python over numpy:
# HistGradientBoosting's categorical preprocessor is FunctionTransformer(partial(check_array))
_SKLEARN_ON_DATA = frozenset({("sklearn.utils.validation", "check_array")})


def _callable_on_data(func: Any) -> bool:
    """Whether ``func`` may be called on data with arguments from the file.

    numpy's functions and ufuncs and scipy.special's are (the allowlist holds the ones that
    size nothing by an argument); so is a function outside Amber's allowlist, which a load
    admits only when its caller trusted it by name, and ``check_array`` (plain Python). A
    function the allowlist admits because fitted models name it (scikit-learn's compiled k-means
    step, a metric) is not: called with crafted arguments, it can write outside its buffers.
    """
    if func is None or isinstance(func, np.ufunc):
        return True
    if type(func) is functools.partial:
        return _callable_on_data(func.func)
    if getattr(func, "__objclass__", None) is str:
        return True  # str.lower and its kind (reached through the getattr stand-in)
    module, name = getattr(func, "__module__", None), getattr(func, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(name, str):
        return False
    if isinstance(func, type):
        return issubclass(func, np.generic)  # np.float32 as a cast
    if module == "amber" or module.startswith("amber."):
        # the loader's stand-ins and faster equivalents (its C frombuffer for numpy's
        # _frombuffer): they rebuild what a stream describes, and are never called on data
        return False
    if (module, name) not in entries() or (module, name) in _SKLEARN_ON_DATA:
        return True  # trusted by name (no load admits it otherwise), or plain Python
    if module == "numpy" or module.startswith(("numpy.", "scipy.special")):
        # reviewed computations (named, never called by a stream); not the helpers that
        # pickles call to rebuild arrays and scalars
        return reference_only(module, name)
    return False
