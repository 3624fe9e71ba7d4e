"""Generate amber/security/allowlist.json: the exact globals Amber's unpickler admits.

Run from the repository root:  .venv/bin/python tools/make_allowlist.py [--check]

Where the names come from:

1. every scikit-learn estimator class (``sklearn.utils.discovery.all_estimators``), under
   the ``__module__``/``__qualname__`` that pickle records;
2. every global referenced by a broad set of fitted models (classifiers, regressors,
   transformers, clusterers, text pipelines, sparse inputs, a ColumnTransformer on a pandas
   DataFrame, ...) pickled with protocols 2, 4 and 5 and with joblib, collected with
   Amber's own scanner (and, for joblib files, with joblib's unpickler);
3. a reviewed list of numpy/scipy reconstruction entry points, numpy scalar types and
   ufuncs, builtins and collections containers, joblib's data-only array wrappers.

Every entry is checked against DENYLIST (anything that can load, execute, import, open a
file or reach arbitrary attributes); the script fails if one slips in. For each entry the
JSON records whether it is a class or a function, and whether objects made from it were
shown to work from read-only (memory-mapped) buffers ("frozen_safe").

``--check`` regenerates in memory and fails if the committed file differs.

``--release`` is for older releases of numpy, scipy and scikit-learn (run it in a virtual
environment that has them and this checkout on ``PYTHONPATH``): it writes
``allowlist-sklearn-<version>-numpy-<version>.json`` beside ``allowlist.json`` with what
that release's models name, skipping the models it cannot fit (estimators or parameters it
does not have yet). The allowlist Amber loads is the union of every file. The releases kept
are the ones ``tools/compat.sh`` installs.

``--covered`` is for newer releases and other Pythons (numpy 2.5 under Python 3.13): it fails,
naming them, if this release's models name a global the committed files do not admit as
carefully as this release needs (read-only buffers, validator); then write its file with
``--release``. It writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import pickle
import platform
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amber.security._scanner import scan_pickle  # noqa: E402
from amber.security._validators import OBJECT_VALIDATORS  # noqa: E402

OUT = ROOT / "amber" / "security" / "allowlist.json"

# ---------------------------------------------------------------------------- denylist
# Whole modules (and their submodules) that must never appear.
DENY_MODULES = {
    "os",
    "posix",
    "nt",
    "posixpath",
    "ntpath",
    "subprocess",
    "sys",
    "importlib",
    "pickle",
    "_pickle",
    "pickletools",
    "copy",
    "marshal",
    "types",
    "ctypes",
    "_ctypes",
    "codecs",
    "shutil",
    "webbrowser",
    "runpy",
    "code",
    "codeop",
    "pydoc",
    "socket",
    "ssl",
    "http",
    "urllib",
    "ftplib",
    "smtplib",
    "multiprocessing",
    "threading",
    "_thread",
    "signal",
    "tempfile",
    "pathlib",
    "io",
    "_io",
    "glob",
    "fileinput",
    "zipimport",
    "pkgutil",
    "inspect",
    "gc",
    "atexit",
    "functools",
    "operator",
    "_operator",
    "asyncio",
    "concurrent",
    "sqlite3",
    "shelve",
    "dbm",
    "zipfile",
    "tarfile",
    "logging",
    "platform",
    "sysconfig",
    "site",
    "builtins.__import__",
    "numpy.lib.format",
    "numpy.lib.npyio",
    "numpy.lib._npyio_impl",
    "numpy.lib._datasource",
    "numpy.ctypeslib",
    "numpy.testing",
    "numpy.f2py",
    "numpy.distutils",
    "numpy._core._internal",
    "numpy.core._internal",
    "sklearn.utils._joblib",
    "sklearn.externals",
    "sklearn.datasets",
    "sklearn.utils._testing",
    "sklearn.utils.estimator_checks",
    "sklearn.utils.discovery",
    "sklearn.utils.parallel",
    "sklearn.utils._show_versions",
    "sklearn.experimental",
    "joblib.parallel",
    "joblib._parallel_backends",
    "joblib.memory",
    "joblib.externals",
    "scipy.io",
    "scipy._lib._ccallback",
    "scipy.datasets",
    "pandas.io",
    "pandas.core.computation",
}
# Exact names that must never appear (in modules that are otherwise allowed).
DENY_NAMES = {
    "builtins." + n
    for n in (
        "eval",
        "exec",
        "compile",
        "open",
        "getattr",
        "setattr",
        "delattr",
        "hasattr",
        "__import__",
        "globals",
        "locals",
        "vars",
        "input",
        "breakpoint",
        "help",
        "exit",
        "quit",
        "type",
        "super",
        "dir",
        "id",
        "print",
        "classmethod",
        "staticmethod",
        "property",
        "memoryview",
        "__build_class__",
        "__loader__",
        "__spec__",
    )
} | {
    "numpy.load",
    "numpy.save",
    "numpy.savez",
    "numpy.savez_compressed",
    "numpy.fromfile",
    "numpy.memmap",
    "numpy.loadtxt",
    "numpy.savetxt",
    "numpy.genfromtxt",
    "numpy.fromregex",
    "numpy.frompyfunc",
    "numpy.vectorize",
    "numpy.fromfunction",
    "numpy.apply_along_axis",
    "numpy.apply_over_axes",
    "numpy.piecewise",
    # they size their work by a parameter (FunctionTransformer's kw_args come from the file)
    "numpy.repeat",
    "numpy.tile",
    "numpy.broadcast_to",
    "numpy.asarray",
    "numpy.ascontiguousarray",
    "numpy.diff",
    "numpy.DataSource",
    "numpy.core._ufunc_reconstruct",
    "numpy._core._ufunc_reconstruct",
    "joblib.load",
    "joblib.dump",
    "joblib.numpy_pickle.load",
    "joblib.numpy_pickle.dump",
    "joblib.Memory",
    "joblib.Parallel",
    "joblib.delayed",
    "scipy.LowLevelCallable",
    "pandas.eval",
    "pandas.read_pickle",
    "pandas.read_csv",
    "sklearn.metrics._dist_metrics.PyFuncDistance64",
    "sklearn.metrics._dist_metrics.PyFuncDistance32",
}
# Words that, in the final name component, suggest I/O, execution or reflection.
SUSPICIOUS = (
    "load",
    "open",
    "read",
    "exec",
    "eval",
    "import",
    "getattr",
    "setattr",
    "system",
    "spawn",
    "popen",
    "compile",
    "file",
    "pickle",
    "module",
)
# reviewed false positives: Cython's generated reconstructors (they only build their own
# class from a type-checked state) and a class whose name contains "read"
SUSPICIOUS_OK = {
    "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
    "sklearn._loss._loss.__pyx_unpickle_CyHalfMultinomialLoss",
    "sklearn.semi_supervised._label_propagation.LabelSpreading",
}
# and, as a category, scikit-learn's Cython reconstructors: build() adds one only for a class
# it allows, and which of its classes a release pickles through one varies (1.5: every loss)
_PYX_RECONSTRUCTOR = re.compile(r"__pyx_unpickle_[A-Za-z][A-Za-z0-9_]*")
# dunder components allowed only for these pickling helpers (guarded by the unpickler)
DUNDER_OK = {"copyreg.__newobj__", "copyreg.__newobj_ex__"}


# Admitted although their module or name is denied, because a validator restricts what they
# hold (functools.partial: only of an allowlisted function; see _validators.validate_partial)
# or the unpickler replaces them by a stand-in (getattr: only str's methods, such as str.split
# given as a tokenizer; see _unpickler._str_method).
GUARDED = {("functools", "partial"), ("builtins", "getattr")}


def denied(module: str, name: str) -> str | None:
    """Why ``module.name`` is denied, or None."""
    if (module, name) in GUARDED:
        return None
    dotted = f"{module}.{name}"
    for m in DENY_MODULES:
        if module == m or module.startswith(m + ".") or dotted == m:
            return f"module {m} is denied"
    if dotted in DENY_NAMES:
        return "name is denied"
    parts = name.split(".")
    if any(p.startswith("__") and p.endswith("__") for p in parts) and dotted not in DUNDER_OK:
        return "dunder attribute"
    last = parts[-1].lower()
    reconstructor = module.startswith("sklearn.") and _PYX_RECONSTRUCTOR.fullmatch(name)
    if any(w in last for w in SUSPICIOUS) and dotted not in SUSPICIOUS_OK and not reconstructor:
        return "suspicious name (I/O, execution or reflection)"
    return None


# ---------------------------------------------------------------------------- reviewed extras
NUMPY_EXTRAS = [
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy", "matrix"),
    ("numpy.ma.core", "MaskedArray"),
    ("numpy.ma.core", "_mareconstruct"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random.mtrand", "RandomState"),
    ("numpy.random._generator", "Generator"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random._pcg64", "PCG64DXSM"),
    ("numpy.random._philox", "Philox"),
    ("numpy.random._sfc64", "SFC64"),
    ("numpy.random.bit_generator", "SeedSequence"),
]
NUMPY_SCALARS = [
    "bool_",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "longdouble",
    "complex64",
    "complex128",
    "clongdouble",
    "str_",
    "bytes_",
    "void",
    "object_",
    "datetime64",
    "timedelta64",
    "intp",
    "uintp",
    "int_",
    "uint",
    "longlong",
    "ulonglong",
    "double",
    "single",
    "half",
    "cdouble",
    "csingle",
    "byte",
    "ubyte",
    "short",
    "ushort",
    "intc",
    "uintc",
    "long",
    "ulong",
]
# numpy's abstract scalar types: named as parameters (make_column_selector(dtype_include=
# np.number)), never instantiated (they cannot be)
NUMPY_ABSTRACT = [
    "generic",
    "number",
    "integer",
    "signedinteger",
    "unsignedinteger",
    "inexact",
    "floating",
    "complexfloating",
    "flexible",
    "character",
]


def pandas_extras() -> set[tuple[str, str]]:
    """pandas' missing-value singleton, as SimpleImputer(missing_values=pd.NA) holds it: a
    constant, named as this pandas pickles it (pandas 2: pandas._libs.missing.NA; 3: pandas.NA)."""
    import pandas as pd

    return set(scan_pickle(pickle.dumps(pd.NA, protocol=5)).globals)


# ufuncs and plain computations estimators hold as parameters (FunctionTransformer,
# TransformedTargetRegressor, ...).
NUMPY_FUNCS = [
    "log",
    "log1p",
    "log2",
    "log10",
    "exp",
    "expm1",
    "exp2",
    "sqrt",
    "cbrt",
    "square",
    "abs",
    "absolute",
    "negative",
    "reciprocal",
    "sign",
    "sin",
    "cos",
    "tan",
    "arcsin",
    "arccos",
    "arctan",
    "sinh",
    "cosh",
    "tanh",
    "arcsinh",
    "arccosh",
    "arctanh",
    "floor",
    "ceil",
    "rint",
    "trunc",
    "add",
    "subtract",
    "multiply",
    "divide",
    "power",
    "maximum",
    "minimum",
    "fmax",
    "fmin",
    "mean",
    "median",
    "sum",
    "std",
    "var",
    "nanmean",
    "nanmedian",
    "nanstd",
    "nanvar",
    "nansum",
    "nanmax",
    "nanmin",
    "max",
    "min",
    "average",
    "percentile",
    "quantile",
    "nanpercentile",
    "nanquantile",
    "isnan",
    "isfinite",
    "clip",
    # more plain computations that FunctionTransformer(func=...) is given. None of them sizes
    # its work by a parameter's value: not np.repeat, np.tile or np.broadcast_to (they allocate
    # what kw_args ask), np.asarray or np.ascontiguousarray (kw_args={"dtype": "U2000000000"}
    # asks 8 GB a value), nor np.diff (kw_args={"n": 10**12} loops that many times)
    "round",
    "around",
    "fix",
    "nan_to_num",
    "cumsum",
    "cumprod",
    "nancumsum",
    "prod",
    "nanprod",
    "sort",
    "argmax",
    "argmin",
    "isinf",
    "signbit",
    "hypot",
    "arctan2",
    "logaddexp",
    "deg2rad",
    "rad2deg",
    "fmod",
    "mod",
    "remainder",
    "float_power",
    "heaviside",
    "sinc",
]
SCIPY_SPARSE = [
    f"scipy.sparse._{fmt}.{fmt}_{kind}"
    for fmt in ("csr", "csc", "coo", "bsr", "dia", "lil", "dok")
    for kind in ("matrix", "array")
]
SCIPY_EXTRAS = [
    ("scipy.special._ufuncs", "expit"),
    ("scipy.special._ufuncs", "logit"),
    ("scipy.special._ufuncs", "boxcox"),
    ("scipy.special._ufuncs", "inv_boxcox"),
]
BUILTINS_EXTRAS = [
    ("builtins", n)
    for n in (
        "slice",
        "set",
        "frozenset",
        "complex",
        "bytearray",
        "bytes",
        "object",
        "list",
        "dict",
        "tuple",
        "int",
        "float",
        "str",
        "bool",
        "NotImplemented",
        "Ellipsis",
        "getattr",  # replaced when loading by a stand-in that reaches str's methods only
    )
] + [
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("collections", "Counter"),
    ("collections", "deque"),
    ("copyreg", "_reconstructor"),
    ("copyreg", "__newobj__"),
    ("copyreg", "__newobj_ex__"),
    ("_codecs", "encode"),
    ("datetime", "datetime"),
    ("datetime", "date"),
    ("datetime", "timedelta"),
    ("datetime", "timezone"),
    ("decimal", "Decimal"),
    ("fractions", "Fraction"),
    ("uuid", "UUID"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("joblib.numpy_pickle_compat", "NDArrayWrapper"),
    ("joblib.numpy_pickle", "NDArrayWrapper"),
]
SKLEARN_EXTRAS = [
    ("sklearn.feature_selection._univariate_selection", n)
    for n in ("f_classif", "f_regression", "chi2", "r_regression", "f_oneway")
] + [
    ("sklearn.feature_selection._mutual_info", "mutual_info_classif"),
    ("sklearn.feature_selection._mutual_info", "mutual_info_regression"),
    # scikit-learn 1.9's callbacks stay in a fitted model (set_callbacks): ProgressBar holds
    # its depth and the listeners of fits in progress, keyed by a fresh id per fit (so one
    # from a file is never used). Not ScoringMonitor, whose __setstate__ opens a socket and
    # starts threads, nor the ListenerHandle (a socket address) it holds: a file needs
    # trusted= for those.
    ("sklearn.callback._progressbar", "ProgressBar"),
]

# Amber's own reconstructors, which check their arguments themselves (the development list
# only: they do not vary with the releases of numpy, scipy and scikit-learn)
AMBER_EXTRAS = [
    # scipy.stats' own distributions, frozen with plain numbers: a randomized search's
    # param_distributions, written as data instead of scipy's exec'd source
    ("amber.handlers.scipy_stats", "frozen"),
]


# ---------------------------------------------------------------------------- fitted models
def _data() -> dict[str, Any]:
    import pandas as pd
    from scipy import sparse
    from sklearn.datasets import make_classification, make_regression

    X, y = make_classification(300, 8, n_informative=5, n_classes=3, random_state=0)
    Xr, yr = make_regression(300, 6, noise=0.1, random_state=0)
    Xpos = np.abs(X)
    rng = np.random.RandomState(0)
    texts = [
        " ".join(rng.choice(["apple", "pear", "plum", "kiwi", "fig", "lime", "date"], 6))
        for _ in range(120)
    ]
    ty = rng.randint(0, 2, 120)
    df = pd.DataFrame(
        {
            "num": rng.normal(size=200),
            "num2": rng.uniform(size=200),
            "cat": pd.Categorical(rng.choice(["a", "b", "c"], 200)),
            "txt": rng.choice(["x", "y"], 200),
        }
    )
    dy = rng.randint(0, 2, 200)
    Xnan = X.copy()
    Xnan[rng.rand(*X.shape) < 0.1] = np.nan
    Xcat = np.c_[rng.randint(0, 6, 300), X[:, :4]]
    return dict(
        X=X,
        y=y,
        yb=(y == 0).astype(int),
        Xr=Xr,
        yr=yr,
        Xpos=Xpos,
        texts=texts,
        ty=ty,
        df=df,
        dy=dy,
        Xnan=Xnan,
        Xcat=Xcat,
        Xs=sparse.csr_matrix(np.where(np.abs(X) > 1, X, 0)),
        ycount=rng.poisson(2, 300),
        y2=np.c_[y, y[::-1]],
        ypos=np.abs(yr) + 1,
        x1=Xr[:, 0],
        x1c=Xr[:, :1],
        X2=X[:, :2],
        Xb=X > 0,
        df_cat=df[["cat", "txt"]],
        txt=df["txt"],
        labels=[["a"], ["c"]],
        dicts=[{"a": 1}],
        df_num=df[["num", "num2"]],
        df_hgb=df[["num", "cat"]],
    )


_SEARCH_SCORINGS = (
    ("accuracy", True),
    ("balanced_accuracy", True),
    ("f1_macro", True),
    ("roc_auc_ovr", True),
    ("neg_log_loss", True),
    (["accuracy", "f1_macro", "precision_macro", "recall_macro"], "f1_macro"),
)
_SEARCH_REGRESSION_SCORINGS = (
    "neg_mean_squared_error",
    "neg_root_mean_squared_error",
    "neg_mean_absolute_error",
    "r2",
    "explained_variance",
)
_SGD_LOSSES = (
    "log_loss",
    "modified_huber",
    "squared_hinge",
    "perceptron",
    "squared_error",
    "huber",
    "epsilon_insensitive",
    "squared_epsilon_insensitive",
)


def models() -> Iterator[tuple[str, Callable[[dict[str, Any]], Any], str, str]]:
    """(label, fit function, the method that exercises the fitted model, its input)."""
    from sklearn import (
        calibration,
        cluster,
        compose,
        covariance,
        cross_decomposition,
        decomposition,
        discriminant_analysis,
        ensemble,
        feature_extraction,
        feature_selection,
        gaussian_process,
        impute,
        isotonic,
        kernel_approximation,
        kernel_ridge,
        linear_model,
        mixture,
        model_selection,
        multiclass,
        multioutput,
        naive_bayes,
        neighbors,
        neural_network,
        pipeline,
        preprocessing,
        random_projection,
        semi_supervised,
        svm,
        tree,
    )
    from sklearn.experimental import (  # noqa: F401
        enable_halving_search_cv,
        enable_iterative_imputer,
    )
    from sklearn.gaussian_process import kernels as K

    def clf(est: Any) -> Callable[[dict[str, Any]], Any]:
        return lambda d: est.fit(d["X"], d["y"])

    def reg(est: Any) -> Callable[[dict[str, Any]], Any]:
        return lambda d: est.fit(d["Xr"], d["yr"])

    def tr(est: Any, key: str = "X") -> Callable[[dict[str, Any]], Any]:
        return lambda d: est.fit(d[key], d["y"] if key != "Xr" else d["yr"])

    lm, en, nb = linear_model, ensemble, naive_bayes
    for est in [
        lm.LogisticRegression(max_iter=300),
        lm.SGDClassifier(),
        *(lm.SGDClassifier(loss=loss) for loss in _SGD_LOSSES),
        lm.RidgeClassifier(),
        lm.RidgeClassifierCV(),
        lm.Perceptron(),
        lm.LogisticRegressionCV(cv=3),
        svm.LinearSVC(),
        svm.SVC(),
        svm.SVC(probability=True),
        svm.NuSVC(),
        tree.DecisionTreeClassifier(),
        tree.ExtraTreeClassifier(),
        en.RandomForestClassifier(n_estimators=5),
        en.ExtraTreesClassifier(n_estimators=5),
        en.GradientBoostingClassifier(n_estimators=5),
        en.HistGradientBoostingClassifier(max_iter=5),
        en.AdaBoostClassifier(n_estimators=5),
        en.BaggingClassifier(n_estimators=3, max_features=0.5),
        neighbors.KNeighborsClassifier(algorithm="kd_tree"),
        neighbors.KNeighborsClassifier(algorithm="ball_tree"),
        neighbors.KNeighborsClassifier(algorithm="brute"),
        neighbors.KNeighborsClassifier(algorithm="ball_tree", metric="manhattan"),
        neighbors.KNeighborsClassifier(algorithm="kd_tree", metric="chebyshev"),
        neighbors.KNeighborsClassifier(algorithm="kd_tree", metric="minkowski", p=3),
        neighbors.RadiusNeighborsClassifier(radius=5.0),
        neighbors.NearestCentroid(),
        nb.GaussianNB(),
        discriminant_analysis.LinearDiscriminantAnalysis(),
        discriminant_analysis.QuadraticDiscriminantAnalysis(reg_param=0.1),
        neural_network.MLPClassifier(max_iter=50),
        neural_network.MLPClassifier(max_iter=50, solver="sgd"),
        neural_network.MLPClassifier(max_iter=50, solver="lbfgs"),
        gaussian_process.GaussianProcessClassifier(),
        calibration.CalibratedClassifierCV(cv=3),
        calibration.CalibratedClassifierCV(method="isotonic", cv=3),
        calibration.CalibratedClassifierCV(method="temperature", cv=3),  # 1.8+
        en.VotingClassifier([("lr", lm.LogisticRegression()), ("nb", nb.GaussianNB())]),
        en.StackingClassifier(
            [("lr", lm.LogisticRegression()), ("dt", tree.DecisionTreeClassifier())]
        ),
        multiclass.OneVsRestClassifier(lm.LogisticRegression()),
        multiclass.OneVsOneClassifier(svm.LinearSVC()),
        multiclass.OutputCodeClassifier(lm.LogisticRegression(), random_state=0),
        semi_supervised.LabelPropagation(),
        semi_supervised.LabelSpreading(),
        model_selection.GridSearchCV(lm.LogisticRegression(), {"C": [0.1, 1]}, cv=3),
        model_selection.HalvingGridSearchCV(lm.LogisticRegression(), {"C": [0.1, 1, 10]}, cv=3),
        model_selection.RandomizedSearchCV(
            lm.LogisticRegression(), {"C": [0.1, 1, 10]}, n_iter=2, cv=3, random_state=0
        ),
        *(  # searches scored by name keep the scorer objects and their metric functions
            model_selection.GridSearchCV(
                lm.LogisticRegression(), {"C": [0.1, 1]}, cv=3, scoring=scoring, refit=refit
            )
            for scoring, refit in _SEARCH_SCORINGS
        ),
        en.HistGradientBoostingClassifier(
            max_iter=3, early_stopping=True, validation_fraction=0.2, n_iter_no_change=1
        ),
    ]:
        yield type(est).__name__, clf(est), "predict", "X"
    for est in [
        lm.LinearRegression(),
        lm.Ridge(),
        lm.RidgeCV(),
        lm.Lasso(),
        lm.ElasticNet(),
        lm.LassoCV(cv=3),
        lm.LassoLars(),
        lm.Lars(),
        lm.OrthogonalMatchingPursuit(),
        lm.BayesianRidge(),
        lm.ARDRegression(),
        lm.HuberRegressor(),
        lm.SGDRegressor(),
        *(
            lm.SGDRegressor(loss=loss)
            for loss in ("huber", "epsilon_insensitive", "squared_epsilon_insensitive")
        ),
        lm.RANSACRegressor(),
        *(
            model_selection.GridSearchCV(lm.Ridge(), {"alpha": [0.1, 1]}, cv=3, scoring=scoring)
            for scoring in _SEARCH_REGRESSION_SCORINGS
        ),
        lm.TheilSenRegressor(max_subpopulation=50),
        lm.QuantileRegressor(alpha=0.0),
        svm.SVR(),
        svm.NuSVR(),
        svm.LinearSVR(),
        kernel_ridge.KernelRidge(kernel="rbf"),
        tree.DecisionTreeRegressor(),
        tree.ExtraTreeRegressor(),
        en.RandomForestRegressor(n_estimators=5),
        en.ExtraTreesRegressor(n_estimators=3),
        en.GradientBoostingRegressor(n_estimators=5),
        en.GradientBoostingRegressor(n_estimators=5, loss="huber"),
        en.GradientBoostingRegressor(n_estimators=5, loss="quantile"),
        en.HistGradientBoostingRegressor(max_iter=5),
        en.HistGradientBoostingRegressor(max_iter=5, loss="absolute_error"),
        en.HistGradientBoostingRegressor(max_iter=5, loss="quantile", quantile=0.3),
        en.AdaBoostRegressor(n_estimators=3),
        en.BaggingRegressor(n_estimators=3),
        neighbors.KNeighborsRegressor(),
        neighbors.RadiusNeighborsRegressor(radius=50.0),
        neural_network.MLPRegressor(max_iter=50),
        neural_network.MLPRegressor(max_iter=50, solver="sgd"),
        cross_decomposition.PLSRegression(),
        gaussian_process.GaussianProcessRegressor(
            kernel=K.ConstantKernel() * K.RBF() + K.WhiteKernel()
        ),
        gaussian_process.GaussianProcessRegressor(kernel=K.Matern() + K.RationalQuadratic()),
        gaussian_process.GaussianProcessRegressor(kernel=K.DotProduct() + K.WhiteKernel()),
        compose.TransformedTargetRegressor(
            lm.LinearRegression(), func=np.log1p, inverse_func=np.expm1
        ),
        en.StackingRegressor([("r", lm.Ridge()), ("t", tree.DecisionTreeRegressor())]),
        en.VotingRegressor([("r", lm.Ridge()), ("l", lm.Lasso())]),
    ]:
        if isinstance(est, compose.TransformedTargetRegressor):
            yield (
                "TransformedTargetRegressor",
                (lambda e: lambda d: e.fit(d["Xr"], d["ypos"]))(est),
                "predict",
                "Xr",
            )
        else:
            yield type(est).__name__, reg(est), "predict", "Xr"
    glm = [
        lm.PoissonRegressor(),
        lm.TweedieRegressor(power=1.5),
        lm.TweedieRegressor(power=0),  # the identity link: HalfTweedieLossIdentity
        lm.TweedieRegressor(power=1.5, link="identity"),
        lm.TweedieRegressor(power=3),
        lm.GammaRegressor(),
        en.HistGradientBoostingRegressor(max_iter=5, loss="poisson"),
        en.HistGradientBoostingRegressor(max_iter=5, loss="gamma"),
    ]
    for est in glm:
        yield (
            type(est).__name__ + "-glm",
            (lambda e: lambda d: e.fit(d["Xr"], d["ypos"]))(est),
            "predict",
            "Xr",
        )
    for est in [  # binary targets only
        en.GradientBoostingClassifier(n_estimators=5, loss="exponential"),
        en.HistGradientBoostingClassifier(max_iter=5),
        lm.LogisticRegression(),
    ]:
        yield (
            type(est).__name__ + "-binary",
            (lambda e: lambda d: e.fit(d["X"], d["yb"]))(est),
            "predict",
            "X",
        )
    for est in [nb.MultinomialNB(), nb.ComplementNB(), nb.BernoulliNB(), nb.CategoricalNB()]:
        yield (
            type(est).__name__,
            (lambda e: lambda d: e.fit(d["Xpos"].round(), d["y"]))(est),
            "predict",
            "Xpos",
        )
    yield (
        "HGB-categorical",
        lambda d: en.HistGradientBoostingClassifier(max_iter=5, categorical_features=[0]).fit(
            d["Xcat"], d["y"]
        ),
        "predict",
        "Xcat",
    )
    yield (
        "HGB-nan",
        lambda d: en.HistGradientBoostingClassifier(max_iter=5).fit(d["Xnan"], d["y"]),
        "predict",
        "Xnan",
    )
    yield (
        "DT-nan",
        lambda d: tree.DecisionTreeClassifier().fit(d["Xnan"], d["y"]),
        "predict",
        "Xnan",
    )
    yield (
        "RF-multioutput",
        lambda d: en.RandomForestClassifier(3).fit(d["X"], d["y2"]),
        "predict",
        "X",
    )
    yield (
        "IsolationForest",
        lambda d: en.IsolationForest(n_estimators=5).fit(d["X"]),
        "predict",
        "X",
    )
    yield "OneClassSVM", lambda d: svm.OneClassSVM().fit(d["X"]), "predict", "X"
    yield "EllipticEnvelope", lambda d: covariance.EllipticEnvelope().fit(d["X"]), "predict", "X"
    yield (
        "LOF-novelty",
        lambda d: neighbors.LocalOutlierFactor(novelty=True).fit(d["X"]),
        "predict",
        "X",
    )
    yield (
        "IsotonicRegression",
        lambda d: isotonic.IsotonicRegression().fit(d["Xr"][:, 0], d["yr"]),
        "predict",
        "x1",
    )
    yield (
        "GPR-periodic",
        lambda d: gaussian_process.GaussianProcessRegressor(
            kernel=K.ExpSineSquared() + K.WhiteKernel()
        ).fit(d["x1"][:, None], d["yr"]),
        "predict",
        "x1c",
    )
    yield (
        "MultiOutputRegressor",
        lambda d: multioutput.MultiOutputRegressor(lm.Ridge()).fit(
            d["Xr"], np.c_[d["yr"], -d["yr"]]
        ),
        "predict",
        "Xr",
    )
    for metric, params in _METRICS:
        yield (
            f"BallTree-{metric}",
            (lambda m, p: lambda d: neighbors.BallTree(d["X"], metric=m, **p(d)))(metric, params),
            "query",
            "X",
        )
    yield "KDTree-minkowski-p3", lambda d: neighbors.KDTree(d["X"], p=3), "query", "X"
    yield (
        "BallTree-haversine",
        lambda d: neighbors.BallTree(d["X2"], metric="haversine"),
        "query",
        "X2",
    )
    yield "BallTree-hamming", lambda d: neighbors.BallTree(d["Xb"], metric="hamming"), "query", "Xb"
    for metric in (
        "jaccard", "dice", "rogerstanimoto", "russellrao", "sokalsneath", "sokalmichener"
    ):  # fmt: skip
        yield (
            f"BallTree-{metric}",
            (lambda m: lambda d: neighbors.BallTree(d["Xb"], metric=m))(metric),
            "query",
            "Xb",
        )
    yield "KernelDensity", lambda d: neighbors.KernelDensity().fit(d["X"]), "score_samples", "X"
    yield "NearestNeighbors", lambda d: neighbors.NearestNeighbors().fit(d["X"]), "kneighbors", "X"
    for est in [
        cluster.KMeans(3, n_init=2),
        cluster.MiniBatchKMeans(3, n_init=2),
        cluster.BisectingKMeans(3),
        cluster.BisectingKMeans(3, algorithm="elkan"),
        cluster.Birch(),
        cluster.MeanShift(),
        mixture.GaussianMixture(2),
        mixture.BayesianGaussianMixture(n_components=2),
        cluster.AffinityPropagation(),
    ]:
        yield type(est).__name__, (lambda e: lambda d: e.fit(d["X"]))(est), "predict", "X"
    for est in [
        cluster.DBSCAN(),
        cluster.AgglomerativeClustering(3),
        cluster.OPTICS(),
        cluster.HDBSCAN(),
        cluster.SpectralClustering(3),
    ]:
        yield type(est).__name__, (lambda e: lambda d: e.fit(d["X"]))(est), "labels_", "X"
    pp, dc, fs = preprocessing, decomposition, feature_selection
    for est in [
        pp.StandardScaler(),
        pp.MinMaxScaler(),
        pp.MaxAbsScaler(),
        pp.RobustScaler(),
        pp.Normalizer(),
        pp.QuantileTransformer(n_quantiles=50),
        pp.PowerTransformer(),
        pp.PolynomialFeatures(),
        pp.SplineTransformer(),
        pp.KBinsDiscretizer(encode="ordinal"),
        pp.KBinsDiscretizer(),
        pp.FunctionTransformer(np.log1p),
        pp.Binarizer(),
        impute.SimpleImputer(),
        impute.KNNImputer(),
        impute.IterativeImputer(max_iter=2),
        impute.MissingIndicator(),
        dc.PCA(3),
        dc.TruncatedSVD(3),
        dc.FastICA(3),
        dc.KernelPCA(3),
        dc.IncrementalPCA(3),
        dc.FactorAnalysis(3),
        dc.SparsePCA(2),
        dc.DictionaryLearning(3, max_iter=3),
        fs.SelectKBest(k=3),
        fs.SelectKBest(fs.f_regression, k=3),
        fs.SelectKBest(fs.mutual_info_classif, k=3),
        fs.SelectPercentile(),
        fs.VarianceThreshold(),
        fs.GenericUnivariateSelect(),
        fs.RFE(lm.LogisticRegression(), n_features_to_select=3),
        fs.SelectFromModel(en.RandomForestClassifier(3)),
        fs.SequentialFeatureSelector(lm.LogisticRegression(), n_features_to_select=2, cv=2),
        kernel_approximation.Nystroem(n_components=10),
        kernel_approximation.RBFSampler(),
        random_projection.GaussianRandomProjection(3),
        random_projection.SparseRandomProjection(3),
        cross_decomposition.CCA(1),
        pp.TargetEncoder(),
        neighbors.NeighborhoodComponentsAnalysis(2),
        discriminant_analysis.LinearDiscriminantAnalysis(n_components=2),
        pipeline.make_union(dc.PCA(2), pp.StandardScaler()),
    ]:
        key = "Xnan" if type(est).__name__.endswith(("Imputer", "Indicator")) else "X"
        yield type(est).__name__, tr(est, key), "transform", key
    yield (
        "SelectKBest-chi2",
        lambda d: fs.SelectKBest(fs.chi2, k=3).fit(d["Xpos"], d["y"]),
        "transform",
        "Xpos",
    )
    yield "NMF", lambda d: dc.NMF(3, max_iter=50).fit(d["Xpos"]), "transform", "Xpos"
    yield (
        "LDA-topics",
        lambda d: dc.LatentDirichletAllocation(3, max_iter=3).fit(d["Xpos"].round()),
        "transform",
        "Xpos",
    )
    yield (
        "OneHotEncoder",
        lambda d: pp.OneHotEncoder(handle_unknown="ignore").fit(d["df"][["cat", "txt"]]),
        "transform",
        "df_cat",
    )
    yield (
        "OrdinalEncoder",
        lambda d: pp.OrdinalEncoder().fit(d["df"][["cat", "txt"]]),
        "transform",
        "df_cat",
    )
    yield "LabelEncoder", lambda d: pp.LabelEncoder().fit(d["df"]["txt"]), "transform", "txt"
    yield "LabelBinarizer", lambda d: pp.LabelBinarizer().fit(d["y"]), "transform", "y"
    yield (
        "MultiLabelBinarizer",
        lambda d: pp.MultiLabelBinarizer().fit([["a", "b"], ["c"]]),
        "transform",
        "labels",
    )
    fe = feature_extraction
    for est in [
        fe.text.CountVectorizer(),
        fe.text.TfidfVectorizer(ngram_range=(1, 2)),
        fe.text.TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3), sublinear_tf=True),
        fe.text.HashingVectorizer(n_features=64),
    ]:
        yield type(est).__name__, (lambda e: lambda d: e.fit(d["texts"]))(est), "transform", "texts"
    yield (
        "TfidfTransformer",
        lambda d: fe.text.TfidfTransformer().fit(d["Xpos"]),
        "transform",
        "Xpos",
    )
    yield (
        "DictVectorizer",
        lambda d: fe.DictVectorizer().fit([{"a": 1, "b": 2}, {"c": 3}]),
        "transform",
        "dicts",
    )
    yield "FeatureHasher", lambda d: fe.FeatureHasher(8).fit([{"a": 1}]), "transform", "dicts"
    for final in [lm.LogisticRegression(), svm.LinearSVC(), nb.MultinomialNB(), lm.SGDClassifier()]:
        yield (
            "text-pipeline-" + type(final).__name__,
            (
                lambda f: (
                    lambda d: pipeline.make_pipeline(fe.text.TfidfVectorizer(), f).fit(
                        d["texts"], d["ty"]
                    )
                )
            )(final),
            "predict",
            "texts",
        )
    yield (
        "sparse-LogisticRegression",
        lambda d: lm.LogisticRegression().fit(d["Xs"], d["y"]),
        "predict",
        "Xs",
    )
    yield "sparse-SVC", lambda d: svm.SVC().fit(d["Xs"], d["y"]), "predict", "Xs"
    yield "sparse-Ridge", lambda d: lm.Ridge().fit(d["Xs"], d["y"]), "predict", "Xs"
    yield (
        "sparse-KNN",
        lambda d: neighbors.KNeighborsClassifier().fit(d["Xs"], d["y"]),
        "predict",
        "Xs",
    )

    def column_transformer(d: dict[str, Any]) -> Any:
        ct = compose.ColumnTransformer(
            [
                ("num", pp.StandardScaler(), ["num", "num2"]),
                (
                    "cat",
                    pp.OneHotEncoder(handle_unknown="ignore"),
                    compose.make_column_selector(dtype_include="category"),
                ),
                ("txt", pp.OrdinalEncoder(), ["txt"]),
            ],
            remainder="drop",
        )
        return pipeline.Pipeline([("ct", ct), ("lr", lm.LogisticRegression())]).fit(
            d["df"], d["dy"]
        )

    yield "ColumnTransformer-pandas", column_transformer, "predict", "df"
    yield (
        "ColumnTransformer-set_output",
        lambda d: (
            compose.ColumnTransformer(
                [("num", pp.StandardScaler(), ["num"])], remainder="passthrough"
            )
            .set_output(transform="pandas")
            .fit(d["df"][["num", "num2"]])
        ),
        "transform",
        "df_num",
    )
    yield (
        "HGB-from-dtype",
        lambda d: en.HistGradientBoostingClassifier(max_iter=3).fit(
            d["df"][["num", "cat"]], d["dy"]
        ),
        "predict",
        "df_hgb",
    )
    yield (
        "Pipeline-scaler-svc",
        lambda d: pipeline.make_pipeline(pp.StandardScaler(), svm.SVC()).fit(d["X"], d["y"]),
        "predict",
        "X",
    )


_METRICS: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = [
    ("euclidean", lambda d: {}),
    ("manhattan", lambda d: {}),
    ("chebyshev", lambda d: {}),
    ("minkowski", lambda d: {"p": 3}),
    ("minkowski", lambda d: {"p": 2, "w": np.ones(d["X"].shape[1])}),
    ("seuclidean", lambda d: {"V": d["X"].var(axis=0)}),
    ("mahalanobis", lambda d: {"VI": np.linalg.inv(np.cov(d["X"].T))}),
    ("canberra", lambda d: {}),
    ("braycurtis", lambda d: {}),
]


# ---------------------------------------------------------------------------- collection
def _joblib_globals(obj: Any) -> set[tuple[str, str]]:
    import joblib
    from joblib import numpy_pickle

    found: set[tuple[str, str]] = set()

    from amber.security._scanner import effective_name

    class Recorder(numpy_pickle.NumpyUnpickler):
        def find_class(self, module: str, name: str) -> Any:
            found.add(effective_name(module, name, False))  # what Amber will look up
            return super().find_class(module, name)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.joblib"
        joblib.dump(obj, path)
        with open(path, "rb") as fh:
            Recorder(str(path), fh, ensure_native_byte_order=True).load()
    return found


def _readonly_ok(obj: Any, method: str, d: dict[str, Any], key: str) -> bool:
    """Does the model still work when every out-of-band buffer is read-only?"""
    bufs: list[pickle.PickleBuffer] = []
    s = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    frozen = [memoryview(bytes(b.raw())).toreadonly() for b in bufs]
    clone = pickle.loads(s, buffers=frozen)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attr = getattr(clone, method)
            if callable(attr):
                attr(d[key])
    except ValueError as exc:
        if "read-only" in str(exc) or "readonly" in str(exc) or "not writeable" in str(exc):
            return False
        raise
    return True


def collect(
    tolerant: bool = False,
) -> tuple[set[tuple[str, str]], dict[tuple[str, str], bool], dict[str, list[str]]]:
    """Globals referenced by fitted models, per sklearn class whether it is frozen-safe, and
    the denied globals some models reference (those models need ``trusted=[...]``).
    ``tolerant``: skip the models this release cannot fit instead of failing."""
    d = _data()
    seen: set[tuple[str, str]] = set()
    refused: dict[str, list[str]] = {}
    frozen: dict[tuple[str, str], bool] = {}
    failures = []
    for label, fit, method, key in models():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = fit(d)
        except Exception as exc:
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        names: set[tuple[str, str]] = set()
        for proto in (2, 4, 5):
            bufs: list[pickle.PickleBuffer] = []
            cb = bufs.append if proto == 5 else None
            s = pickle.dumps(model, protocol=proto, buffer_callback=cb)
            names |= set(scan_pickle(s, n_buffers=len(bufs)).globals)
        names |= _joblib_globals(model)
        for n in sorted(names):
            if denied(*n):
                refused.setdefault(f"{n[0]}.{n[1]}", []).append(label)
                names.discard(n)
        seen |= names
        ok = _readonly_ok(model, method, d, key)
        for n in names:
            if n[0].startswith("sklearn."):
                frozen[n] = frozen.get(n, True) and ok
        print(f"  {label:45s} {len(names):3d} globals  frozen_safe={ok}", file=sys.stderr)
    if failures and not tolerant:
        raise SystemExit("could not fit:\n  " + "\n  ".join(failures))
    for failure in failures:
        print(f"  skipped (this release cannot fit it) {failure}"[:200], file=sys.stderr)
    return seen, frozen, refused


# the metric functions a scorer can be made of (make_scorer(fbeta_score, beta=2)): named as a
# scorer's parameter and called only when the model is scored, with the caller's data
_METRIC = re.compile(r"\w+_(score|error|loss|deviance)|matthews_corrcoef")


def metric_functions() -> set[tuple[str, str]]:
    """What every named scorer of this release pickles, and its public metric functions."""
    from sklearn import metrics

    names: set[tuple[str, str]] = set()
    for scoring in metrics.get_scorer_names():
        scorer = metrics.get_scorer(scoring)
        names |= set(scan_pickle(pickle.dumps(scorer, protocol=5)).globals)
    for name in metrics.__all__:
        fn = getattr(metrics, name)
        if _METRIC.fullmatch(name) and callable(fn) and not isinstance(fn, type):
            names.add((fn.__module__, fn.__qualname__))
    return names


# functions estimators are given as parameters (SVC(kernel=linear_kernel),
# KNeighborsClassifier(metric=scipy.spatial.distance.cosine)): named only, called with data
PAIRWISE_FUNCTIONS = (
    "linear_kernel", "polynomial_kernel", "rbf_kernel", "laplacian_kernel", "sigmoid_kernel",
    "cosine_similarity", "chi2_kernel", "additive_chi2_kernel", "euclidean_distances",
    "manhattan_distances", "cosine_distances", "haversine_distances", "nan_euclidean_distances",
)  # fmt: skip
SCIPY_DISTANCES = (
    "braycurtis", "canberra", "chebyshev", "cityblock", "correlation", "cosine", "euclidean",
    "jensenshannon", "mahalanobis", "minkowski", "seuclidean", "sqeuclidean", "dice", "hamming",
    "jaccard", "rogerstanimoto", "russellrao", "sokalsneath", "yule",
)  # fmt: skip


def parameter_names() -> set[tuple[str, str]]:
    """Classes and functions estimators hold as parameters: every cross-validation splitter
    (GridSearchCV(cv=TimeSeriesSplit(5)), and cv= a list of splits), every Gaussian-process
    kernel (RBF() ** 2, PairwiseKernel), the scorer of a tuned threshold, the pairwise kernels
    and distances of scikit-learn and scipy.spatial.distance. Data and pure computations."""
    import inspect

    from scipy.spatial import distance
    from sklearn.gaussian_process import kernels
    from sklearn.metrics import _scorer, pairwise
    from sklearn.model_selection import _split

    bases = tuple(
        cls
        for cls in (
            getattr(_split, "BaseCrossValidator", None),
            getattr(_split, "BaseShuffleSplit", None),
            getattr(_split, "_RepeatedSplits", None),
        )
        if cls is not None
    )
    names: set[tuple[str, str]] = set()
    for module, base in ((_split, bases), (kernels, (kernels.Kernel,))):
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, base)
                and obj.__module__ == module.__name__
                and not inspect.isabstract(obj)
            ):
                names.add((obj.__module__, obj.__qualname__))
    curve = getattr(_scorer, "_CurveScorer", None)
    if curve is None:  # scikit-learn 1.5 kept it beside TunedThresholdClassifierCV
        with contextlib.suppress(ImportError):
            from sklearn.model_selection import _classification_threshold

            curve = getattr(_classification_threshold, "_CurveScorer", None)
    for cls in (getattr(_split, "_CVIterableWrapper", None), curve):
        if cls is not None:
            names.add((cls.__module__, cls.__qualname__))
    for name in PAIRWISE_FUNCTIONS:
        fn = getattr(pairwise, name, None)
        if fn is not None:
            names.add((fn.__module__, fn.__qualname__))
    names |= {(distance.__name__, n) for n in SCIPY_DISTANCES if hasattr(distance, n)}
    return names


def estimator_classes() -> set[tuple[str, str]]:
    from sklearn.utils.discovery import all_estimators

    return {(cls.__module__, cls.__qualname__) for _, cls in all_estimators()}


def _resolve(module: str, name: str) -> Any:
    from amber.security._allowlist import _lookup

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _lookup(module, name)


def build(tolerant: bool = False) -> dict[str, Any]:
    import joblib
    import scipy
    import sklearn

    fitted, frozen, refused = collect(tolerant)
    names = set(fitted) | estimator_classes()
    names |= set(NUMPY_EXTRAS) | set(BUILTINS_EXTRAS) | set(SCIPY_EXTRAS) | set(SKLEARN_EXTRAS)
    names |= {("numpy", n) for n in NUMPY_SCALARS + NUMPY_FUNCS + NUMPY_ABSTRACT}
    names |= pandas_extras() | metric_functions() | parameter_names()
    if not tolerant:
        names |= set(AMBER_EXTRAS)
    # and the ufuncs under the name this numpy pickles them by (2.1: numpy._core._multiarray_umath)
    names |= {g for n in NUMPY_FUNCS for g in scan_pickle(pickle.dumps(getattr(np, n), 5)).globals}
    # and scipy.special's under the name this scipy pickles them by (1.17: _special_ufuncs)
    special = importlib.import_module("scipy.special")
    names |= {
        g
        for _, n in SCIPY_EXTRAS
        if hasattr(special, n)
        for g in scan_pickle(pickle.dumps(getattr(special, n), 5)).globals
    }
    names |= {tuple(n.rsplit(".", 1)) for n in SCIPY_SPARSE}  # type: ignore[misc]
    # Cython's reconstructor of an allowed Cython class (it builds that class and sets its
    # fields): which classes a release pickles through one varies (scikit-learn 1.5's loss
    # classes, 1.9's multinomial loss only)
    for module, name in sorted(names):
        reconstructor = f"__pyx_unpickle_{name}"
        if module.startswith("sklearn.") and not name.startswith("__pyx_unpickle_"):
            with contextlib.suppress(ImportError):
                if hasattr(importlib.import_module(module), reconstructor):
                    names.add((module, reconstructor))
    by_class = {}
    for key, fn in OBJECT_VALIDATORS.items():
        with contextlib.suppress(Exception):
            by_class[id(_resolve(*key))] = fn.__name__

    problems, out = [], []
    for module, name in sorted(names):
        why = denied(module, name)
        if why:
            problems.append(f"{module}.{name}: {why}")
            continue
        try:
            obj = _resolve(module, name)
        except Exception as exc:
            print(f"  skipped {module}.{name}: {exc}", file=sys.stderr)
            continue
        kind = "class" if isinstance(obj, type) else "function"
        if kind == "function" and not callable(obj):
            kind = "constant"
        if kind == "class" and not module.startswith("sklearn."):
            safe = True  # containers and numpy/scipy types: read-only buffers are fine
        elif kind == "class":
            safe = frozen.get((module, name), False)
        else:
            safe = True
        entry: dict[str, Any] = {"module": module, "name": name, "kind": kind, "frozen_safe": safe}
        if id(obj) in by_class:
            entry["validator"] = by_class[id(obj)]
        out.append(entry)
    if problems:
        raise SystemExit("denied names would enter the allowlist:\n  " + "\n  ".join(problems))
    return {
        "format": 1,
        "generated_by": "tools/make_allowlist.py",
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__,
            "joblib": joblib.__version__,
        },
        "entries": out,
        "refused_references": {k: sorted(set(v)) for k, v in sorted(refused.items())},
    }


def release_path() -> Path:
    import sklearn

    return OUT.with_name(f"allowlist-sklearn-{sklearn.__version__}-numpy-{np.__version__}.json")


def uncovered(built: dict[str, Any]) -> list[str]:
    """The entries of ``built`` that the committed allowlist files, together, lack or admit
    less carefully (read-only buffers where this release did not show them safe, no
    validator where it names one)."""
    from amber.security._allowlist import entries

    union = entries()
    out = []
    for e in built["entries"]:
        have = union.get((e["module"], e["name"]))
        if have is None:
            out.append(f"{e['module']}.{e['name']}: not listed")
        elif have.frozen_safe and not e["frozen_safe"]:
            out.append(f"{e['module']}.{e['name']}: listed as safe on read-only buffers")
        elif e.get("validator") and have.validator != e["validator"]:
            out.append(f"{e['module']}.{e['name']}: listed without validator {e['validator']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    parser.add_argument(
        "--release", action="store_true", help="write the file of this (older) release"
    )
    parser.add_argument(
        "--covered",
        action="store_true",
        help="fail if the committed files do not admit what this release's models name",
    )
    args = parser.parse_args()
    if args.covered:
        import sklearn

        missing = uncovered(build(tolerant=True))
        if missing:
            raise SystemExit(
                f"the committed allowlists do not cover scikit-learn {sklearn.__version__} "
                f"with numpy {np.__version__}:\n  " + "\n  ".join(missing) + "\nwrite its "
                "file: PYTHONPATH=$PWD python tools/make_allowlist.py --release"
            )
        print("the committed allowlists cover this release", file=sys.stderr)
        return
    out = release_path() if args.release else OUT
    text = json.dumps(build(tolerant=args.release), indent=1) + "\n"
    if args.check:
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            flag = " --release" if args.release else ""
            raise SystemExit(f"{out} is stale; run tools/make_allowlist.py{flag}")
        return
    out.write_text(text, encoding="utf-8")
    count = text.count('"module"')
    print(f"wrote {out} ({count} entries)", file=sys.stderr)


if __name__ == "__main__":
    main()
