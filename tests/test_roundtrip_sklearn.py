"""Round trips of fitted scikit-learn objects: save, load (plain, mmap, compressed), compare.

In the spirit of scikit-learn's ``parametrize_with_checks``: one table of fitted estimators
(classifiers, regressors, transformers, clusterers, text and table pipelines, searches), and the
same contract checked on each of them in four ways of storing and reading:

- ``plain``: ``save(compress="none")`` then ``load()``;
- ``mmap``: ``save(compress="none")`` then ``load(mmap=True)`` (and ``probe="always"``);
- ``mmap-every-buffer``: the same, with every array buffer stored out of band, so that even
  tiny models get read-only, file-backed arrays (as big models do under ``mmap``);
- ``auto``: ``save(compress="auto")`` then ``load()``.

The contract: the loaded object has the same type and parameters as the original and the same
fitted state (bit for bit); every output it offers (``predict``, ``predict_proba``,
``predict_log_proba``, ``decision_function``, ``transform``, ``score_samples``, and a few
estimator-specific ones) is *exactly* equal on held-out data; ``inspect`` lists the globals and
no untrusted name; ``verify`` passes and re-runs the probe.
"""

from __future__ import annotations

import copy
import importlib.util
import mmap
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import amber
from amber.handlers import sklearn as sklearn_handler

pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")
sp = pytest.importorskip("scipy.sparse")
special = pytest.importorskip("scipy.special")

from _same import (  # noqa: E402
    OUTPUT_METHODS,
    assert_same_output,
    assert_same_params,
    assert_same_state,
)
from sklearn import (  # noqa: E402
    calibration,
    cluster,
    compose,
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
    linear_model,
    mixture,
    model_selection,
    multioutput,
    naive_bayes,
    neighbors,
    neural_network,
    pipeline,
    preprocessing,
    svm,
    tree,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore:.*Liblinear failed to converge.*"),
    # SVC(probability=True) is deprecated in scikit-learn 1.9 but still common in the wild
    pytest.mark.filterwarnings("ignore:The `probability` parameter was deprecated:FutureWarning"),
    # predict_log_proba of trees and forests on pure leaves: log(0)
    pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning"),
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """Tiny data: OpenMP and BLAS thread pools only add start-up and contention costs."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


SAMPLE_ROWS = 8


# -- the table of cases -------------------------------------------------------------------------
Prepare = Callable[[Any], Any]  # Split -> Split
Fit = Callable[[Any, Any], Any]  # (unfitted estimator, Split) -> fitted object
Extra = Callable[[Any, Any], dict[str, Any]]  # (fitted object, X_test) -> named outputs


def _fit(est: Any, d: Any) -> Any:
    return est.fit(d.X_train, d.y_train)


@dataclass(frozen=True)
class Case:
    """One fitted object to round-trip.

    ``data`` names a dataset fixture from ``conftest.py``; ``prepare`` derives the data this
    case needs from it; ``fit`` builds the object (default ``est.fit(X_train, y_train)``);
    ``sample=False`` saves without a probe (for objects with no method the probe can record);
    ``extra`` computes estimator-specific outputs or attributes to compare; ``marks`` are
    pytest marks for the case (known gaps, as strict xfails), ``readonly_marks`` marks for
    the ``mmap-every-buffer`` mode only.
    """

    id: str
    make: Callable[[], Any]
    data: str = "multiclass_data"
    prepare: Prepare | None = None
    fit: Fit = _fit
    sample: bool = True
    extra: Extra | None = None
    marks: tuple[Any, ...] = ()
    readonly_marks: tuple[Any, ...] = ()


def _with_nans(d: Any) -> Any:
    def holes(X: np.ndarray, offset: int) -> np.ndarray:
        X = X.copy()
        X.ravel()[offset::7] = np.nan
        return X

    return type(d)(holes(d.X_train, 0), holes(d.X_test, 3), d.y_train, d.y_test)


def _booleans(d: Any) -> Any:
    """Each feature as whether it is above its training median (for the boolean metrics)."""
    median = np.median(d.X_train, axis=0)
    return type(d)(d.X_train > median, d.X_test > median, d.y_train, d.y_test)


def _with_progress_bar() -> Any:
    from sklearn.callback import ProgressBar

    return _lr().set_callbacks(ProgressBar())


def _categorical_strings(d: Any) -> Any:
    """Each feature binned into the categories "lo", "mid", "hi" (a str array)."""
    labels = np.array(["lo", "mid", "hi"])

    def cats(X: np.ndarray) -> np.ndarray:
        return labels[np.digitize(X, [-1.0, 1.0])]

    return type(d)(cats(d.X_train), cats(d.X_test), d.y_train, d.y_test)


def _with_int_category(d: Any) -> Any:
    """A sixth feature: an integer category 0..3 (for HistGradientBoosting)."""

    def add(X: np.ndarray, y: np.ndarray) -> np.ndarray:
        code = (np.arange(len(X)) + y) % 4
        return np.column_stack([X, code.astype(np.float64)])

    return type(d)(add(d.X_train, d.y_train), add(d.X_test, d.y_test), d.y_train, d.y_test)


def _frame_with_category_dtype(d: Any) -> Any:
    def convert(frame: Any) -> Any:
        frame = frame.copy()
        for column in ("city", "plan"):
            frame[column] = frame[column].astype("category")
        return frame

    return type(d)(convert(d.X_train), convert(d.X_test), d.y_train, d.y_test)


def _frame_with_pd_na(d: Any) -> Any:
    """``plan`` as pandas' nullable string dtype, every fifth value missing (``pd.NA``)."""

    def convert(frame: Any) -> Any:
        frame = frame.copy()
        plan = frame["plan"].astype("string[python]")
        plan[::5] = pd.NA
        frame["plan"] = plan
        return frame

    return type(d)(convert(d.X_train), convert(d.X_test), d.y_train, d.y_test)


def _selected_by_dtype() -> Any:
    """Columns chosen by dtype, as scikit-learn's examples write it (numpy.number)."""
    from sklearn.compose import make_column_selector, make_column_transformer

    return pipeline.make_pipeline(
        make_column_transformer(
            (
                pipeline.make_pipeline(impute.SimpleImputer(), preprocessing.StandardScaler()),
                make_column_selector(dtype_include=np.number),
            ),
            (
                preprocessing.OneHotEncoder(handle_unknown="ignore"),
                make_column_selector(dtype_exclude=np.number),
            ),
        ),
        _lr(),
    )


def _imputed_pd_na() -> Any:
    from sklearn.compose import make_column_transformer

    return pipeline.make_pipeline(
        make_column_transformer(
            (
                pipeline.make_pipeline(
                    impute.SimpleImputer(missing_values=pd.NA, strategy="most_frequent"),
                    preprocessing.OneHotEncoder(handle_unknown="ignore"),
                ),
                ["plan"],
            ),
            (impute.SimpleImputer(), ["age", "income"]),
        ),
        _lr(),
    )


def _scored_search(scoring: Any) -> Any:
    return model_selection.GridSearchCV(_lr(), {"C": [0.1, 1.0]}, cv=3, scoring=scoring)


def _searched(cv: Any) -> Any:
    return model_selection.GridSearchCV(_lr(), {"C": [0.1, 1.0]}, cv=cv)


def _fixed_splits() -> list[tuple[np.ndarray, np.ndarray]]:
    """cv= a list of (train, test) index arrays: scikit-learn wraps it (_CVIterableWrapper)."""
    folds = np.arange(60) % 3  # the training part of the datasets (conftest.N_TRAIN)
    return [(np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in range(3)]


def _pairwise(name: str) -> Any:
    from sklearn.metrics import pairwise

    return getattr(pairwise, name)


def _scipy_cosine() -> Any:
    from scipy.spatial import distance

    return distance.cosine


def _tuned_threshold() -> Any:
    return model_selection.TunedThresholdClassifierCV(_lr(), scoring="f1", cv=3)


def _fbeta2() -> Any:
    from sklearn.metrics import fbeta_score, make_scorer

    return make_scorer(fbeta_score, beta=2, average="macro")


def _first_column(d: Any) -> Any:
    return type(d)(d.X_train[:, 0].copy(), d.X_test[:, 0].copy(), d.y_train, d.y_test)


def _as_csr_array(d: Any) -> Any:
    return type(d)(sp.csr_array(d.X_train), sp.csr_array(d.X_test), d.y_train, d.y_test)


def _object_labels(d: Any) -> Any:
    """String labels in an object array, as they come out of a pandas column."""
    return type(d)(d.X_train, d.X_test, d.y_train.astype(object), d.y_test.astype(object))


def _best_estimator(est: Any, d: Any) -> Any:
    return est.fit(d.X_train, d.y_train).best_estimator_


def _kneighbors(est: Any, X: Any) -> dict[str, Any]:
    return {"kneighbors": est.kneighbors(X), "kneighbors_graph": est.kneighbors_graph(X)}


def _predict_std(est: Any, X: Any) -> dict[str, Any]:
    return {"predict(return_std)": est.predict(X, return_std=True)}


def _dbscan_state(est: Any, X: Any) -> dict[str, Any]:
    return {
        "labels_": est.labels_,
        "core_sample_indices_": est.core_sample_indices_,
        "components_": est.components_,
    }


def _lr(**kw: Any) -> Any:
    return linear_model.LogisticRegression(max_iter=200, **kw)


def _scaled(est: Any) -> Any:
    return pipeline.make_pipeline(preprocessing.StandardScaler(), est)


def _frame_preprocessor(*, sparse: bool = True) -> Any:
    numeric = pipeline.make_pipeline(impute.SimpleImputer(), preprocessing.StandardScaler())
    return compose.ColumnTransformer(
        [
            ("num", numeric, ["age", "income", "visits"]),
            (
                "cat",
                preprocessing.OneHotEncoder(handle_unknown="ignore", sparse_output=sparse),
                ["city", "plan"],
            ),
        ]
    )


def _halving_search() -> Any:
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401

    return model_selection.HalvingGridSearchCV(_lr(), {"C": [0.1, 1.0, 10.0]}, cv=3)


def _svc_grid() -> Any:
    return model_selection.GridSearchCV(
        _scaled(svm.SVC()), {"svc__C": [0.1, 1.0], "svc__gamma": ["scale", 0.5]}, cv=3
    )


C = Case
ens = ensemble
_MORE_SGD_LOSSES = (
    "modified_huber",
    "squared_hinge",
    "epsilon_insensitive",
    "squared_epsilon_insensitive",
)
CLASSIFIERS = [
    C("LogisticRegression", lambda: _lr()),
    C("LogisticRegression-binary", lambda: _lr(C=0.5), data="binary_data"),
    C("SVC", lambda: svm.SVC()),
    C(
        "SVC-probability",
        lambda: svm.SVC(probability=True, random_state=0),
    ),
    C("LinearSVC", lambda: svm.LinearSVC(random_state=0)),
    C("DecisionTreeClassifier", lambda: tree.DecisionTreeClassifier(random_state=0)),
    C("RandomForestClassifier", lambda: ens.RandomForestClassifier(10, random_state=0)),
    C("ExtraTreesClassifier", lambda: ens.ExtraTreesClassifier(10, random_state=0)),
    C("GradientBoostingClassifier", lambda: ens.GradientBoostingClassifier(n_estimators=10)),
    C("HistGradientBoostingClassifier", lambda: ens.HistGradientBoostingClassifier(max_iter=15)),
    C(
        "HistGradientBoostingClassifier-categorical",
        lambda: ens.HistGradientBoostingClassifier(max_iter=15, categorical_features=[5]),
        prepare=_with_int_category,
    ),
    C(
        "HistGradientBoostingClassifier-frame-category-dtype",
        lambda: ens.HistGradientBoostingClassifier(max_iter=15, categorical_features="from_dtype"),
        data="frame_data",
        prepare=_frame_with_category_dtype,
    ),
    C(
        "KNeighborsClassifier-kd_tree",
        lambda: neighbors.KNeighborsClassifier(5, algorithm="kd_tree"),
        extra=_kneighbors,
    ),
    C(
        "KNeighborsClassifier-ball_tree",
        lambda: neighbors.KNeighborsClassifier(5, algorithm="ball_tree"),
        extra=_kneighbors,
    ),
    C(
        "KNeighborsClassifier-brute",
        lambda: neighbors.KNeighborsClassifier(5, algorithm="brute"),
        extra=_kneighbors,
    ),
    C(
        "KNeighborsClassifier-ball_tree-sokalmichener",
        lambda: neighbors.KNeighborsClassifier(5, algorithm="ball_tree", metric="sokalmichener"),
        prepare=_booleans,
        extra=_kneighbors,
    ),
    C(
        "CalibratedClassifierCV-temperature",
        lambda: calibration.CalibratedClassifierCV(_lr(), method="temperature", cv=3),
        marks=(
            pytest.mark.skipif(
                not hasattr(calibration, "_TemperatureScaling"), reason="scikit-learn 1.8 and later"
            ),
        ),
    ),
    C(
        "LogisticRegression-ProgressBar-callback",
        _with_progress_bar,
        marks=(
            pytest.mark.skipif(
                not hasattr(linear_model.LogisticRegression, "set_callbacks"),
                reason="scikit-learn 1.9 and later",
            ),
            pytest.mark.skipif(
                importlib.util.find_spec("rich") is None, reason="ProgressBar needs rich"
            ),
        ),
    ),
    C("GaussianNB", lambda: naive_bayes.GaussianNB()),
    C("MultinomialNB", lambda: naive_bayes.MultinomialNB(), data="count_data"),
    C(
        "MLPClassifier",
        lambda: neural_network.MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0),
    ),
    C("SGDClassifier", lambda: linear_model.SGDClassifier(random_state=0)),
    C(
        "SGDClassifier-log_loss",
        lambda: linear_model.SGDClassifier(loss="log_loss", random_state=0),
    ),
    # the loss objects of these were missing from the allowlist: an honest model needed trust
    *(
        C(f"SGDClassifier-{loss}", lambda loss=loss: linear_model.SGDClassifier(loss=loss))
        for loss in _MORE_SGD_LOSSES
    ),
    C(
        "GradientBoostingClassifier-exponential",
        lambda: ens.GradientBoostingClassifier(n_estimators=10, loss="exponential"),
        data="binary_data",
    ),
    C(
        "MLPClassifier-sgd",
        lambda: neural_network.MLPClassifier(
            hidden_layer_sizes=(8,), solver="sgd", max_iter=50, random_state=0
        ),
    ),
    C("RidgeClassifier", lambda: linear_model.RidgeClassifier()),
    C("AdaBoostClassifier", lambda: ens.AdaBoostClassifier(n_estimators=10, random_state=0)),
    C(
        "BaggingClassifier",
        lambda: ens.BaggingClassifier(tree.DecisionTreeClassifier(), 5, random_state=0),
    ),
    C(
        "VotingClassifier-soft",
        lambda: ens.VotingClassifier(
            [("lr", _lr()), ("nb", naive_bayes.GaussianNB())], voting="soft"
        ),
    ),
    C(
        "VotingClassifier-hard",
        lambda: ens.VotingClassifier(
            [("lr", _lr()), ("tree", tree.DecisionTreeClassifier(random_state=0))]
        ),
    ),
    C(
        "StackingClassifier",
        lambda: ens.StackingClassifier(
            [("svc", svm.LinearSVC(random_state=0)), ("nb", naive_bayes.GaussianNB())],
            final_estimator=_lr(),
            cv=3,
        ),
    ),
    C(
        "CalibratedClassifierCV-sigmoid",
        lambda: calibration.CalibratedClassifierCV(svm.LinearSVC(random_state=0), cv=3),
    ),
    C(
        "CalibratedClassifierCV-isotonic",
        lambda: calibration.CalibratedClassifierCV(
            naive_bayes.GaussianNB(), method="isotonic", cv=3
        ),
    ),
    C(
        "LinearDiscriminantAnalysis",
        lambda: discriminant_analysis.LinearDiscriminantAnalysis(),
    ),
    C(
        "QuadraticDiscriminantAnalysis",
        lambda: discriminant_analysis.QuadraticDiscriminantAnalysis(reg_param=0.01),
    ),
    C("LogisticRegression-string-labels", lambda: _lr(), data="string_label_data"),
    C(
        "LogisticRegression-object-labels",
        lambda: _lr(),
        data="string_label_data",
        prepare=_object_labels,
    ),
    C(
        "RandomForestClassifier-string-labels",
        lambda: ens.RandomForestClassifier(5, random_state=0),
        data="string_label_data",
    ),
    C("SVC-string-labels", lambda: svm.SVC(), data="string_label_data"),
]

REGRESSORS = [
    C("LinearRegression", lambda: linear_model.LinearRegression(), data="regression_data"),
    C(
        "TweedieRegressor-identity",  # its loss was missing from the allowlist
        lambda: linear_model.TweedieRegressor(power=0),
        data="regression_data",
    ),
    C("Ridge", lambda: linear_model.Ridge(), data="regression_data"),
    C("Lasso", lambda: linear_model.Lasso(alpha=0.05), data="regression_data"),
    C("ElasticNet", lambda: linear_model.ElasticNet(alpha=0.05), data="regression_data"),
    C("SVR", lambda: svm.SVR(), data="regression_data"),
    C("KNeighborsRegressor", lambda: neighbors.KNeighborsRegressor(4), data="regression_data"),
    C(
        "RandomForestRegressor",
        lambda: ens.RandomForestRegressor(10, random_state=0),
        data="regression_data",
    ),
    C(
        "HistGradientBoostingRegressor",
        lambda: ens.HistGradientBoostingRegressor(max_iter=15),
        data="regression_data",
    ),
    C(
        "GaussianProcessRegressor",
        lambda: gaussian_process.GaussianProcessRegressor(
            gaussian_process.kernels.RBF() + gaussian_process.kernels.WhiteKernel(),
            random_state=0,
        ),
        data="regression_data",
        extra=_predict_std,
    ),
    C(
        "IsotonicRegression",
        lambda: isotonic.IsotonicRegression(out_of_bounds="clip"),
        data="regression_data",
        prepare=_first_column,
    ),
    C(
        "PLSRegression",
        lambda: cross_decomposition.PLSRegression(n_components=2),
        data="regression_data",
    ),
    C(
        "TransformedTargetRegressor",
        lambda: compose.TransformedTargetRegressor(
            linear_model.Ridge(), transformer=preprocessing.StandardScaler()
        ),
        data="regression_data",
    ),
    C(
        "TransformedTargetRegressor-func",
        lambda: compose.TransformedTargetRegressor(
            linear_model.LinearRegression(), func=np.arcsinh, inverse_func=np.sinh
        ),
        data="regression_data",
    ),
    C(
        "MLPRegressor",
        lambda: neural_network.MLPRegressor(hidden_layer_sizes=(8,), max_iter=50, random_state=0),
        data="regression_data",
    ),
    C(
        "Ridge-multioutput",
        lambda: linear_model.Ridge(),
        data="multioutput_regression_data",
    ),
    C(
        "RandomForestRegressor-multioutput",
        lambda: ens.RandomForestRegressor(5, random_state=0),
        data="multioutput_regression_data",
    ),
    C(
        "KNeighborsRegressor-multioutput",
        lambda: neighbors.KNeighborsRegressor(3),
        data="multioutput_regression_data",
    ),
    C(
        "MultiOutputRegressor-SVR",
        lambda: multioutput.MultiOutputRegressor(svm.SVR()),
        data="multioutput_regression_data",
    ),
    C(
        "PLSRegression-multioutput",
        lambda: cross_decomposition.PLSRegression(n_components=2),
        data="multioutput_regression_data",
    ),
]

TRANSFORMERS = [
    C("StandardScaler", lambda: preprocessing.StandardScaler()),
    C("MinMaxScaler", lambda: preprocessing.MinMaxScaler()),
    C("RobustScaler", lambda: preprocessing.RobustScaler()),
    C("PCA", lambda: decomposition.PCA(3)),
    C("PCA-whiten", lambda: decomposition.PCA(2, whiten=True)),
    C("TruncatedSVD", lambda: decomposition.TruncatedSVD(2, random_state=0)),
    C(
        "KBinsDiscretizer-ordinal",
        lambda: preprocessing.KBinsDiscretizer(3, encode="ordinal", strategy="uniform"),
    ),
    C(
        "KBinsDiscretizer-onehot-sparse",
        lambda: preprocessing.KBinsDiscretizer(
            3,
            encode="onehot",
            strategy="quantile",
            # scikit-learn 1.7's new default, said here to silence its FutureWarning (older
            # releases, which tools/compat.sh runs these tests with, have only that method)
            **(
                {"quantile_method": "averaged_inverted_cdf"}
                if "quantile_method" in preprocessing.KBinsDiscretizer().get_params()
                else {}
            ),
        ),
    ),
    C("PolynomialFeatures", lambda: preprocessing.PolynomialFeatures(2)),
    C(
        "OneHotEncoder-sparse",
        lambda: preprocessing.OneHotEncoder(),
        prepare=_categorical_strings,
    ),
    C(
        "OneHotEncoder-dense",
        lambda: preprocessing.OneHotEncoder(sparse_output=False, drop="first"),
        prepare=_categorical_strings,
    ),
    C("OrdinalEncoder", lambda: preprocessing.OrdinalEncoder(), prepare=_categorical_strings),
    C(
        "TargetEncoder",
        lambda: preprocessing.TargetEncoder(cv=3, random_state=0),
        data="binary_data",
        prepare=_categorical_strings,
    ),
    C("SimpleImputer", lambda: impute.SimpleImputer(), prepare=_with_nans),
    C(
        "SimpleImputer-most_frequent-indicator",
        lambda: impute.SimpleImputer(strategy="most_frequent", add_indicator=True),
        prepare=_with_nans,
    ),
    C("KNNImputer", lambda: impute.KNNImputer(n_neighbors=3), prepare=_with_nans),
    C(
        "FunctionTransformer-ufunc",
        lambda: preprocessing.FunctionTransformer(np.log1p, inverse_func=np.expm1),
        data="count_data",
    ),
    C(
        "FunctionTransformer-scipy-expit",
        lambda: preprocessing.FunctionTransformer(special.expit, inverse_func=special.logit),
    ),
    C(
        "FunctionTransformer-round-kw_args",
        lambda: preprocessing.FunctionTransformer(np.round, kw_args={"decimals": 1}),
    ),
    C(
        "FunctionTransformer-cumsum-kw_args",
        lambda: preprocessing.FunctionTransformer(np.cumsum, kw_args={"axis": 1}),
    ),
    C(
        "FunctionTransformer-nan_to_num",
        lambda: preprocessing.FunctionTransformer(np.nan_to_num),
        prepare=_with_nans,
    ),
    C(
        "SelectKBest-f_classif",
        lambda: feature_selection.SelectKBest(feature_selection.f_classif, k=2),
    ),
    C("Nystroem", lambda: kernel_approximation.Nystroem(n_components=10, random_state=0)),
    C(
        "QuantileTransformer",
        lambda: preprocessing.QuantileTransformer(n_quantiles=20, random_state=0),
    ),
    C("PowerTransformer", lambda: preprocessing.PowerTransformer()),
]

CLUSTERERS = [
    C("KMeans", lambda: cluster.KMeans(3, n_init=1, random_state=0)),
    C(
        "MiniBatchKMeans",
        lambda: cluster.MiniBatchKMeans(3, n_init=1, batch_size=32, random_state=0),
    ),
    C("DBSCAN", lambda: cluster.DBSCAN(eps=1.5), sample=False, extra=_dbscan_state),
    C("Birch", lambda: cluster.Birch(n_clusters=3)),
    C("GaussianMixture", lambda: mixture.GaussianMixture(3, random_state=0)),
    C("IsolationForest", lambda: ens.IsolationForest(n_estimators=20, random_state=0)),
    C(
        "LocalOutlierFactor-novelty",
        lambda: neighbors.LocalOutlierFactor(n_neighbors=5, novelty=True),
    ),
    C(
        "NearestNeighbors",
        lambda: neighbors.NearestNeighbors(n_neighbors=3),
        sample=False,
        extra=_kneighbors,
    ),
]

fe_text = feature_extraction.text
TEXT = [
    # str's methods as tokenizer and preprocessor: pickled as getattr(str, "split")
    C(
        "CountVectorizer-tokenizer-str.split-preprocessor-str.lower",
        lambda: pipeline.make_pipeline(
            fe_text.CountVectorizer(
                tokenizer=str.split, preprocessor=str.lower, token_pattern=None
            ),
            _lr(),
        ),
        data="text_data",
    ),
    C(
        "CountVectorizer+LogisticRegression",
        lambda: pipeline.make_pipeline(fe_text.CountVectorizer(), _lr()),
        data="text_data",
    ),
    C(
        "TfidfVectorizer-bigrams+MultinomialNB",
        lambda: pipeline.make_pipeline(
            fe_text.TfidfVectorizer(ngram_range=(1, 2)), naive_bayes.MultinomialNB()
        ),
        data="text_data",
    ),
    C(
        "TfidfVectorizer-char_wb+LogisticRegression",
        lambda: pipeline.make_pipeline(
            fe_text.TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)), _lr()
        ),
        data="text_data",
    ),
    C(
        "CountVectorizer-char-ngrams+MultinomialNB",
        lambda: pipeline.make_pipeline(
            fe_text.CountVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2),
            naive_bayes.MultinomialNB(),
        ),
        data="text_data",
    ),
    C(
        "TfidfVectorizer-alone",
        lambda: fe_text.TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        data="text_data",
    ),
]

SPARSE = [
    C("LogisticRegression-csr", lambda: _lr(), data="sparse_binary_data"),
    C("LinearSVC-csr", lambda: svm.LinearSVC(random_state=0), data="sparse_binary_data"),
    C(
        "SGDClassifier-csr",
        lambda: linear_model.SGDClassifier(random_state=0),
        data="sparse_binary_data",
    ),
    C(
        "LogisticRegression-csr_array",
        lambda: _lr(),
        data="sparse_binary_data",
        prepare=_as_csr_array,
    ),
]

FRAMES = [
    C(
        "ColumnTransformer+LogisticRegression",
        lambda: pipeline.make_pipeline(_frame_preprocessor(), _lr()),
        data="frame_data",
    ),
    C("ColumnTransformer-sparse", lambda: _frame_preprocessor(), data="frame_data"),
    C(
        "ColumnTransformer-set_output-pandas",
        lambda: _frame_preprocessor(sparse=False).set_output(transform="pandas"),
        data="frame_data",
    ),
    C(
        "ColumnTransformer-set_output-pandas+RandomForest",
        lambda: pipeline.make_pipeline(
            _frame_preprocessor(sparse=False), ens.RandomForestClassifier(5, random_state=0)
        ).set_output(transform="pandas"),
        data="frame_data",
    ),
]

FRAMES += [
    C("ColumnTransformer-make_column_selector-np.number", _selected_by_dtype, data="frame_data"),
    C(
        "SimpleImputer-pd.NA",
        _imputed_pd_na,
        data="frame_data",
        prepare=_frame_with_pd_na,
    ),
]

COMPOSITES = [
    C(
        "Pipeline-scaler-pca-logreg",
        lambda: pipeline.Pipeline(
            [
                ("scale", preprocessing.StandardScaler()),
                ("pca", decomposition.PCA(3)),
                ("clf", _lr()),
            ]
        ),
    ),
    C(
        "Pipeline-imputer-scaler-pca",
        lambda: pipeline.make_pipeline(
            impute.SimpleImputer(), preprocessing.StandardScaler(), decomposition.PCA(2)
        ),
        prepare=_with_nans,
    ),
    C(
        "FeatureUnion",
        lambda: pipeline.FeatureUnion(
            [
                ("pca", decomposition.PCA(2)),
                ("kbest", feature_selection.SelectKBest(k=2)),
            ]
        ),
    ),
    C(
        "Pipeline-FeatureUnion-SVC",
        lambda: pipeline.make_pipeline(
            pipeline.make_union(
                decomposition.PCA(2), preprocessing.PolynomialFeatures(2, include_bias=False)
            ),
            svm.SVC(probability=True, random_state=0),
        ),
    ),
    C("GridSearchCV", _svc_grid),
    C("GridSearchCV-best_estimator_", _svc_grid, fit=_best_estimator),
    C(
        "GridSearchCV-logreg-refit",
        lambda: model_selection.GridSearchCV(_lr(), {"C": [0.01, 1.0]}, cv=3),
        data="binary_data",
    ),
    # scored by name (scorer objects and metric functions, missing from the allowlist before)
    C(
        "GridSearchCV-multimetric",
        lambda: model_selection.GridSearchCV(
            _lr(), {"C": [0.1, 1.0]}, scoring=["accuracy", "f1_macro"], refit="f1_macro", cv=3
        ),
    ),
    # early stopping on a scorer leaves a copy of the bound method _raw_predict in the
    # estimator's dictionary (scikit-learn's _patch_raw_predict): saved without it
    C(
        "HistGradientBoosting-early_stopping-scoring-f1",
        lambda: ens.HistGradientBoostingClassifier(
            max_iter=15,
            early_stopping=True,
            scoring="f1",
            validation_fraction=0.25,
            n_iter_no_change=3,
            random_state=0,
        ),
        data="binary_data",
    ),
    # parameters that are splitters, kernels or functions of scikit-learn and scipy
    C("GridSearchCV-cv-TimeSeriesSplit", lambda: _searched(model_selection.TimeSeriesSplit(3))),
    C(
        "GridSearchCV-cv-RepeatedStratifiedKFold",
        lambda: _searched(model_selection.RepeatedStratifiedKFold(n_splits=3, n_repeats=2)),
    ),
    C(
        "GridSearchCV-cv-StratifiedShuffleSplit",
        lambda: _searched(model_selection.StratifiedShuffleSplit(3, random_state=0)),
    ),
    C("GridSearchCV-cv-list-of-splits", lambda: _searched(_fixed_splits())),
    C("SVC-kernel-linear_kernel", lambda: _scaled(svm.SVC(kernel=_pairwise("linear_kernel")))),
    C(
        "KNeighbors-metric-scipy-cosine",
        lambda: neighbors.KNeighborsClassifier(metric=_scipy_cosine(), algorithm="brute"),
    ),
    C(
        "GaussianProcessClassifier-kernel-power",
        lambda: gaussian_process.GaussianProcessClassifier(
            gaussian_process.kernels.RBF() ** 2, random_state=0
        ),
        data="binary_data",
    ),
    C(
        "GaussianProcessRegressor-PairwiseKernel",
        lambda: gaussian_process.GaussianProcessRegressor(
            gaussian_process.kernels.PairwiseKernel(metric="laplacian")
        ),
        data="regression_data",
    ),
    C(
        "TunedThresholdClassifierCV-f1",
        _tuned_threshold,
        data="binary_data",
        marks=(
            pytest.mark.skipif(
                not hasattr(model_selection, "TunedThresholdClassifierCV"),
                reason="scikit-learn 1.5 and later",
            ),
        ),
    ),
    # a scorer made of any public metric, or any scoring name of the release
    C("GridSearchCV-make_scorer-fbeta", lambda: _scored_search(_fbeta2())),
    C("GridSearchCV-scoring-matthews_corrcoef", lambda: _scored_search("matthews_corrcoef")),
    C(
        "GridSearchCV-scoring-average_precision",
        lambda: _scored_search("average_precision"),
        data="binary_data",
    ),
    C(
        "GridSearchCV-regression-scoring-median_absolute_error",
        lambda: model_selection.GridSearchCV(
            linear_model.Ridge(), {"alpha": [0.1]}, scoring="neg_median_absolute_error", cv=3
        ),
        data="regression_data",
    ),
    C(
        "GridSearchCV-regression-scoring",
        lambda: model_selection.GridSearchCV(
            linear_model.Ridge(), {"alpha": [0.1, 1.0]}, scoring="neg_mean_absolute_error", cv=3
        ),
        data="regression_data",
    ),
    C("HalvingGridSearchCV", lambda: _halving_search()),
]

CASES = CLASSIFIERS + REGRESSORS + TRANSFORMERS + CLUSTERERS + TEXT + SPARSE + FRAMES + COMPOSITES
MODES = {
    # id: (save options, load options, every buffer out of band)
    "plain": ({"compress": "none"}, {}, False),
    "mmap": ({"compress": "none"}, {"mmap": True}, False),
    # tiny models keep their arrays in the pickle stream; pushing every buffer out of band
    # makes all of them read-only views of the file, as big models' arrays are under mmap
    "mmap-every-buffer": ({"compress": "none"}, {"mmap": True}, True),
    "auto": ({"compress": "auto"}, {}, False),
}


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


# -- fitting, once per case ---------------------------------------------------------------------
@dataclass
class Fitted:
    obj: Any
    X_test: Any
    sample: Any
    methods: list[str]
    outputs: dict[str, Any]


_FITTED: dict[str, Fitted] = {}


def _available(obj: Any) -> list[str]:
    return [m for m in OUTPUT_METHODS if hasattr(obj, m)]


def _outputs(obj: Any, X: Any, case: Case, methods: list[str]) -> dict[str, Any]:
    out = {m: getattr(obj, m)(X) for m in methods}
    if case.extra is not None:
        out.update(case.extra(obj, X))
    return out


def fitted(case: Case, request: pytest.FixtureRequest) -> Fitted:
    if case.id not in _FITTED:
        data = request.getfixturevalue(case.data)
        if case.prepare is not None:
            data = case.prepare(data)
        obj = case.fit(case.make(), data)
        methods = _available(obj)
        outputs = _outputs(obj, data.X_test, case, methods)
        assert outputs, f"{case.id}: nothing to compare"
        sample = data.head(SAMPLE_ROWS) if case.sample else None
        _FITTED[case.id] = Fitted(obj, data.X_test, sample, methods, outputs)
    return _FITTED[case.id]


# -- the contract -------------------------------------------------------------------------------
def _case_mode_params() -> list[Any]:
    params = []
    for case in CASES:
        for mode, (_, _, every_buffer) in MODES.items():
            marks = case.marks + (case.readonly_marks if every_buffer else ())
            params.append(pytest.param(case, mode, id=f"{case.id}-{mode}", marks=marks))
    return params


@pytest.mark.parametrize(("case", "mode"), _case_mode_params())
def test_roundtrip(
    case: Case,
    mode: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f = fitted(case, request)
    save_options, load_options, every_buffer = MODES[mode]
    path = tmp_path / f"{case.id}.amber"
    if every_buffer:
        monkeypatch.setattr(sklearn_handler, "OUT_OF_BAND_MIN", 1)

    snapshot = copy.deepcopy(f.obj)  # the probe's calls may touch counters (trees count queries)
    info = amber.save(f.obj, path, sample=f.sample, **save_options)

    # inspect: what will be imported is listed up front, and all of it is vetted
    shown = amber.inspect(path)
    own_type = f"{type(f.obj).__module__}.{type(f.obj).__qualname__}"
    assert shown.object_type == own_type
    assert own_type in shown.globals
    assert shown.globals == info.globals
    assert shown.untrusted == [], f"stock scikit-learn flagged untrusted: {shown.untrusted}"
    assert shown.has_probe is case.sample

    loaded = amber.load(path, **load_options)

    assert type(loaded) is type(f.obj)
    arrays = _arrays(loaded)  # (trees copy their nodes out of the map: none may be visible)
    if every_buffer and arrays:
        assert any(_file_backed(a) for a in arrays), "no array is backed by the file"
    assert_same_params(f.obj, loaded)
    assert_same_state(snapshot, loaded, case.id)
    got = _outputs(loaded, f.X_test, case, f.methods)
    assert set(got) == set(f.outputs)
    for name, expected in f.outputs.items():
        assert_same_output(expected, got[name], f"{case.id}.{name}")

    report = amber.verify(path)
    assert report.ok
    if case.sample:
        assert report.probe is not None and report.probe.startswith("probe matched (exactly)")
        recorded = set(shown.manifest["probe"]["outputs"])
        assert recorded and recorded <= set(f.methods), recorded
    if load_options.get("mmap"):  # the probe also runs on read-only, file-backed arrays
        amber.load(path, mmap=True, probe="always")


def test_dataframe_signature_records_columns_and_dtypes(frame_data: Any, tmp_path: Path) -> None:
    model = pipeline.make_pipeline(_frame_preprocessor(), _lr()).fit(
        frame_data.X_train, frame_data.y_train
    )
    sample = frame_data.X_train.iloc[:5]
    amber.save(model, tmp_path / "frame.amber", sample=sample)

    signature = amber.inspect(tmp_path / "frame.amber").signature
    assert signature is not None
    assert signature["inputs"] == {
        "kind": "dataframe",
        "columns": [
            {"name": "age", "dtype": "float64"},
            {"name": "income", "dtype": "float64"},
            {"name": "visits", "dtype": "int64"},
            {"name": "city", "dtype": str(sample["city"].dtype)},
            {"name": "plan", "dtype": str(sample["plan"].dtype)},
        ],
    }
    assert str(sample["city"].dtype) in ("str", "string", "object")
    assert signature["outputs"]["predict"]["kind"] == "ndarray"
    assert signature["outputs"]["predict_proba"] == {
        "kind": "ndarray",
        "dtype": "float64",
        "shape": [None, 2],
    }


def test_dataframe_output_signature_is_a_frame(frame_data: Any, tmp_path: Path) -> None:
    model = _frame_preprocessor(sparse=False).set_output(transform="pandas")
    model.fit(frame_data.X_train, frame_data.y_train)
    amber.save(model, tmp_path / "ct.amber", sample=frame_data.X_train.iloc[:5])

    signature = amber.inspect(tmp_path / "ct.amber").signature
    assert signature is not None
    out = signature["outputs"]["transform"]
    assert out["kind"] == "dataframe"
    assert [c["name"] for c in out["columns"]] == list(model.get_feature_names_out())


@pytest.mark.parametrize(
    "column",
    [
        pytest.param(pd.Series(["paris", None, "nice"], dtype="str"), id="str-with-missing"),
        pytest.param(pd.array([1, None, 3], dtype="Int64"), id="Int64-with-NA"),
    ],
)
def test_frame_output_with_missing_values_verifies(column: Any, tmp_path: Path) -> None:
    X = pd.DataFrame({"x": [1.0, 2.0, 3.0], "other": column})
    model = compose.ColumnTransformer(
        [("num", preprocessing.StandardScaler(), ["x"])], remainder="passthrough"
    ).set_output(transform="pandas")
    model.fit(X)
    amber.save(model, tmp_path / "ct.amber", sample=X)
    assert amber.verify(tmp_path / "ct.amber").ok


def test_text_signature_is_a_list_of_str(text_data: Any, tmp_path: Path) -> None:
    model = pipeline.make_pipeline(fe_text.CountVectorizer(), _lr())
    model.fit(text_data.X_train, text_data.y_train)
    amber.save(model, tmp_path / "text.amber", sample=text_data.X_train[:4])

    signature = amber.inspect(tmp_path / "text.amber").signature
    assert signature is not None
    assert signature["inputs"] == {"kind": "list", "item_types": ["str"], "shape": [None]}


def test_sparse_signature(sparse_binary_data: Any, tmp_path: Path) -> None:
    model = _lr().fit(sparse_binary_data.X_train, sparse_binary_data.y_train)
    amber.save(model, tmp_path / "csr.amber", sample=sparse_binary_data.X_train[:4])

    signature = amber.inspect(tmp_path / "csr.amber").signature
    assert signature is not None
    assert signature["inputs"] == {
        "kind": "sparse",
        "format": "csr",
        "dtype": "float64",
        "shape": [None, 40],
    }


# -- memory mapping -----------------------------------------------------------------------------
BIG = sklearn_handler.OUT_OF_BAND_MIN  # smaller buffers stay in the pickle stream


def _backing(array: np.ndarray) -> list[Any]:
    """The chain of objects an array's memory comes from: bases, then memoryview owners."""
    chain: list[Any] = []
    obj: Any = array
    while obj is not None and len(chain) < 64:
        chain.append(obj)
        obj = obj.obj if isinstance(obj, memoryview) else getattr(obj, "base", None)
    return chain


def _file_backed(array: np.ndarray) -> bool:
    return any(isinstance(o, mmap.mmap) for o in _backing(array))


def _arrays(obj: Any, depth: int = 0) -> list[np.ndarray]:
    """The numpy arrays reachable through attributes, lists, tuples and dicts."""
    if isinstance(obj, np.ndarray):
        return [obj]
    if depth > 12:
        return []
    if isinstance(obj, dict):
        children: Any = obj.values()
    elif isinstance(obj, list | tuple):
        children = obj
    else:
        children = getattr(obj, "__dict__", {}).values()
    return [a for child in children for a in _arrays(child, depth + 1)]


@pytest.fixture(scope="module")
def wide_models() -> dict[str, Any]:
    """Models whose fitted arrays are well past the out-of-band threshold."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 9000))
    y = X[:, 0] + 0.1 * rng.normal(size=20)
    knn_X = rng.normal(size=(1200, 8))
    knn = neighbors.KNeighborsClassifier(3, algorithm="brute").fit(knn_X, np.arange(1200) % 2)
    return {
        "linear": (linear_model.LinearRegression().fit(X, y), X[:3]),
        "knn": (knn, knn_X[:3]),
    }


def _big_arrays(name: str, model: Any) -> dict[str, np.ndarray]:
    if name == "linear":
        return {"coef_": model.coef_}
    return {"_fit_X": model._fit_X}


@pytest.mark.parametrize("name", ["linear", "knn"])
def test_mmap_arrays_are_copy_on_write_views_of_the_file(
    name: str, wide_models: dict[str, Any], tmp_path: Path
) -> None:
    model, sample = wide_models[name]
    for attr, array in _big_arrays(name, model).items():
        assert array.nbytes >= BIG, f"{attr} is too small to leave the stream"
    path = tmp_path / "wide.amber"
    amber.save(model, path, sample=sample)

    before = path.read_bytes()
    mapped = amber.load(path, mmap=True)
    assert_same_output(model.predict(sample), mapped.predict(sample), "predict")
    for attr, array in _big_arrays(name, mapped).items():
        assert _file_backed(array), f"{attr}: {[type(o).__name__ for o in _backing(array)]}"
        array[...] = 0  # copy-on-write: private pages, never the file
    assert path.read_bytes() == before

    plain = amber.load(path)
    for attr, array in _big_arrays(name, plain).items():
        assert array.flags.writeable, f"{attr} of a default load must be writable"
        assert not _file_backed(array), attr
        assert_array_equal(array, _big_arrays(name, model)[attr], strict=True)


def test_mmap_of_compressed_artifact_gives_private_writable_arrays(
    wide_models: dict[str, Any], tmp_path: Path
) -> None:
    model, sample = wide_models["linear"]
    path = tmp_path / "wide-zstd.amber"
    amber.save(model, path, sample=sample, compress="zstd")

    loaded = amber.load(path, mmap=True)
    assert loaded.coef_.flags.writeable
    assert not _file_backed(loaded.coef_)
    assert_array_equal(loaded.coef_, model.coef_, strict=True)


def test_small_arrays_stay_in_the_stream_and_writable_under_mmap(
    binary_data: Any, tmp_path: Path
) -> None:
    model = _lr().fit(binary_data.X_train, binary_data.y_train)
    assert model.coef_.nbytes < BIG
    amber.save(model, tmp_path / "small.amber")

    loaded = amber.load(tmp_path / "small.amber", mmap=True)
    assert not _file_backed(loaded.coef_)
    assert_array_equal(loaded.coef_, model.coef_, strict=True)


def test_mmap_model_survives_overwrite_of_its_file(
    wide_models: dict[str, Any], binary_data: Any, tmp_path: Path
) -> None:
    model, sample = wide_models["linear"]
    path = tmp_path / "wide.amber"
    amber.save(model, path, sample=sample)
    mapped = amber.load(path, mmap=True)
    expected = model.predict(sample)

    # the atomic writer replaces the file by rename: the old mapping keeps the old bytes
    amber.save(_lr().fit(binary_data.X_train, binary_data.y_train), path)
    assert_same_output(expected, mapped.predict(sample), "predict after overwrite")
    assert_array_equal(mapped.coef_, model.coef_, strict=True)


_UPDATE_IN_PLACE = """
import sys, warnings
import numpy as np
import amber
from sklearn.linear_model import SGDClassifier

warnings.simplefilter("ignore")
rng = np.random.default_rng(0)
X = rng.normal(size=(40, 9000))  # coef_ is 72 KB: out of band, so memory-mapped
y = (X[:, 0] > 0).astype(int)
amber.save(SGDClassifier(random_state=0).fit(X, y), sys.argv[1])
model = amber.load(sys.argv[1], mmap=True)
try:
    model.partial_fit(X, y)
except Exception as exc:  # a clean refusal is fine; a crash is not
    print(type(exc).__name__, exc)
"""


def test_updating_an_mmap_loaded_model_does_not_crash(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _UPDATE_IN_PLACE, str(tmp_path / "sgd.amber")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, f"exit status {proc.returncode}: {proc.stderr[-2000:]}"


# -- cases the table cannot express -------------------------------------------------------------
def test_hgb_categorical_partial_is_admitted_only_for_allowlisted_functions(
    binary_data: Any, tmp_path: Path
) -> None:
    # With categorical features, HistGradientBoosting keeps a FunctionTransformer holding
    # functools.partial(sklearn.utils.validation.check_array, ...): partial is on the
    # allowlist only with a validator that checks the wrapped function is allowlisted.
    data = _with_int_category(binary_data)
    model = ens.HistGradientBoostingClassifier(max_iter=10, categorical_features=[5])
    model.fit(data.X_train, data.y_train)
    path = tmp_path / "hgb.amber"
    info = amber.save(model, path, sample=data.X_train[:8])
    assert "functools.partial" in info.globals and info.untrusted == []
    loaded = amber.load(path)
    assert_same_state(model, loaded, "hgb")
    for method in ("predict", "predict_proba", "decision_function"):
        expected = getattr(model, method)(data.X_test)
        assert_same_output(expected, getattr(loaded, method)(data.X_test), method)
    assert amber.verify(path).ok


def test_probe_needs_a_recordable_method(tmp_path: Path, multiclass_data: Any) -> None:
    from sklearn.cluster import DBSCAN

    model = DBSCAN().fit(multiclass_data.X_train)  # fit_predict only: nothing to re-run
    with pytest.raises(ValueError, match=r"a DBSCAN has none of .*kneighbors.* nothing to probe"):
        amber.save(model, tmp_path / "db.amber", sample=multiclass_data.X_train[:4])
    assert not (tmp_path / "db.amber").exists()


def test_a_neighbours_index_is_probed_by_its_neighbours(
    tmp_path: Path, multiclass_data: Any
) -> None:
    """NearestNeighbors has none of the four methods nor score_samples: its kneighbors (the
    distances and indices) is recorded, and a reloaded index that answers otherwise is caught."""

    model = neighbors.NearestNeighbors(n_neighbors=3).fit(multiclass_data.X_train)
    path = tmp_path / "nn.amber"
    info = amber.save(model, path, sample=multiclass_data.X_train[:6])
    assert list(info.manifest["probe"]["outputs"]) == ["kneighbors"]
    assert [d["dtype"] for d in info.signature["outputs"]["kneighbors"]["items"]] == [  # type: ignore[index]
        "float64",
        "int64",
    ]
    assert "kneighbors: identical" in str(amber.verify(path).probe)
    loaded = amber.load(path)
    np.testing.assert_array_equal(
        loaded.kneighbors(multiclass_data.X_test)[1], model.kneighbors(multiclass_data.X_test)[1]
    )
    # the same points in another order: the same distances, other indices
    reordered = neighbors.NearestNeighbors(n_neighbors=3).fit(multiclass_data.X_train[::-1])
    report = _probe_run_on(reordered, "kneighbors", path)
    assert not report.ok and "kneighbors" in str(report)


def _probe_run_on(model: Any, method: str, path: Path) -> Any:
    """The report of ``path``'s probe re-run with ``model``'s ``method`` (another model)."""
    from amber import _probe
    from amber.artifact._reader import ArtifactReader

    with ArtifactReader(path) as reader:
        methods = {method: getattr(model, method)}
        return _probe.check(model, reader.manifest["probe"], reader, exact=True, methods=methods)


def test_a_covariance_estimate_is_probed_by_its_distances(
    tmp_path: Path, multiclass_data: Any
) -> None:
    """LedoitWolf and its family have none of the four methods: their mahalanobis distances
    (what they compute from the fitted precision) are recorded, and a reload with another
    estimate is caught."""
    from sklearn.covariance import LedoitWolf

    model = LedoitWolf().fit(multiclass_data.X_train)
    path = tmp_path / "lw.amber"
    info = amber.save(model, path, sample=multiclass_data.X_train[:6])
    assert list(info.manifest["probe"]["outputs"]) == ["mahalanobis"]
    assert "mahalanobis: identical" in str(amber.verify(path).probe)
    report = _probe_run_on(LedoitWolf().fit(multiclass_data.X_train[::2]), "mahalanobis", path)
    assert not report.ok and "mahalanobis" in str(report)


def test_a_density_model_is_probed_by_its_scores(tmp_path: Path, multiclass_data: Any) -> None:
    """KernelDensity has none of the four methods; its score_samples is what it computes."""
    model = neighbors.KernelDensity(bandwidth=0.5).fit(multiclass_data.X_train)
    path = tmp_path / "kde.amber"
    info = amber.save(model, path, sample=multiclass_data.X_train[:4])
    assert list(info.manifest["probe"]["outputs"]) == ["score_samples"]
    assert amber.verify(path).ok
    loaded = amber.load(path)
    np.testing.assert_array_equal(
        loaded.score_samples(multiclass_data.X_test), model.score_samples(multiclass_data.X_test)
    )


def test_refitting_a_loaded_model_works(tmp_path: Path, multiclass_data: Any) -> None:
    model = ens.RandomForestClassifier(5, random_state=0)
    model.fit(multiclass_data.X_train, multiclass_data.y_train)
    amber.save(model, tmp_path / "rf.amber")
    for mmap_mode in (False, True):
        loaded = amber.load(tmp_path / "rf.amber", mmap=mmap_mode)
        loaded.fit(multiclass_data.X_train, multiclass_data.y_train)
        assert_same_output(
            model.predict_proba(multiclass_data.X_test),
            loaded.predict_proba(multiclass_data.X_test),
            f"refit (mmap={mmap_mode})",
        )
