"""Every estimator scikit-learn ships, fitted, saved with a probe, loaded back: identical.

``test_roundtrip_sklearn.py`` checks a hand-picked table of models four ways; this file checks
breadth, once each: every class ``sklearn.utils.all_estimators()`` lists (the experimental
ones enabled), in every configuration scikit-learn's own test suite builds for it
(``instance_generator._construct_instances``), fitted on small data chosen from its tags. Each
must save without a name outside the allowlist, load back with the same fitted state (bit for
bit) and the same outputs on held-out rows, and pass ``verify``. A scikit-learn release that
adds an estimator, or pickles an old one through a new helper, fails here first, and so does a
committed allowlist file of an older release (``tools/compat.sh`` runs this file there).

The instance generator and the tags are scikit-learn 1.6's; older releases skip the file.
"""

from __future__ import annotations

import copy
import pickle
import unittest
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

import amber
from amber.handlers._base import probe_methods

pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")
sp = pytest.importorskip("scipy.sparse")
try:
    from sklearn.experimental import (  # noqa: F401
        enable_halving_search_cv,
        enable_iterative_imputer,
    )
    from sklearn.utils import all_estimators, get_tags
    from sklearn.utils._test_common.instance_generator import _construct_instances
    from sklearn.utils._testing import set_random_state
    from sklearn.utils.estimator_checks import _enforce_estimator_tags_X
except ImportError:  # scikit-learn < 1.6
    pytest.skip("needs scikit-learn's test instance generator (1.6+)", allow_module_level=True)
from _same import OUTPUT_METHODS, assert_same_output, assert_same_state  # noqa: E402
from sklearn.base import is_classifier, is_regressor  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.FitFailedWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

METHODS = (*OUTPUT_METHODS, "kneighbors", "mahalanobis")
SAMPLE_ROWS = 16


# -- the estimators -----------------------------------------------------------------------------
def _by_hand(name: str, cls: Any) -> list[Any]:
    """Instances of the estimators the generator refuses (SkipTest) in some releases."""
    if name == "FrozenEstimator":  # it wraps a model fitted beforehand (see _fit)
        from sklearn.linear_model import LogisticRegression

        return [cls(LogisticRegression())]
    if name == "SparseCoder":  # before 1.8, its dictionary has no default
        atoms = np.random.RandomState(3).normal(size=(3, 5))
        return [cls(dictionary=atoms / np.linalg.norm(atoms, axis=1, keepdims=True))]
    return []


def _instances() -> list[Any]:
    params = []
    for name, cls in all_estimators():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                made = list(_construct_instances(cls))
        except unittest.SkipTest:
            made = _by_hand(name, cls)
        for k, est in enumerate(made):
            case = name if len(made) == 1 else f"{name}-{k}"
            given = get_tags(est).input_tags
            tabular = given.two_d_array and not given.pairwise
            for kind, wanted in (
                ("array", True),
                ("frame", tabular),
                ("sparse", tabular and given.sparse),
            ):
                if wanted:
                    params.append(pytest.param(est, kind, id=f"{case}-{kind}"))
    return params


INSTANCES = _instances()


def test_the_sweep_reaches_every_estimator() -> None:
    assert len({p.id.split("-")[0] for p in INSTANCES}) == len(all_estimators())
    kinds = Counter(p.values[1] for p in INSTANCES)
    # scikit-learn 1.6 lists 200 classes, 1.9 211
    assert kinds["array"] >= 200 and kinds["frame"] >= 150 and kinds["sparse"] >= 80, kinds


# -- data from tags -----------------------------------------------------------------------------
_rng = np.random.RandomState(0)
_X = _rng.normal(size=(90, 5))
_X[:30] += 2.0
_X[30:60] -= 1.5
_y = np.repeat([0, 1, 2], 30)
_order = _rng.permutation(90)
_X, _y = _X[_order], _y[_order]
X_TRAIN, X_TEST, Y_CLASS = _X[:60], _X[60:], _y[:60]
Y_REG = X_TRAIN @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.1 * _rng.normal(size=60)
Y_REG2 = np.c_[Y_REG, X_TRAIN[:, 0] - X_TRAIN[:, 1]]
Y_MULTILABEL = np.c_[Y_CLASS == 0, (Y_CLASS == 1) | (X_TRAIN[:, 0] > 0), X_TRAIN[:, 2] > 0].astype(
    int
)
TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine",
    "the early bird catches the worm",
    "all that glitters is not gold",
    "actions speak louder than words",
    "the pen is mightier than the sword",
    "fortune favours the bold fox",
    "a picture is worth a thousand words",
] * 4
DICTS = [
    {"a": float(i), "b": float(i % 3), "city": ["paris", "rome", "oslo"][i % 3]} for i in range(40)
]
LABELS = np.array(["cat", "dog", "emu"])[Y_CLASS]
LABEL_SETS = [
    tuple(sorted(s)) for s in [{"x"}, {"y", "z"}, {"x", "z"}, set(), {"z"}, {"x", "y"}] * 7
]
IMAGES = np.random.RandomState(1).rand(4, 20, 20)  # the default patch is a tenth of a side


def _with_gaps(X: np.ndarray) -> np.ndarray:
    X = X.copy()
    X[np.random.RandomState(2).rand(*X.shape) < 0.1] = np.nan
    return X


def _attempts(est: Any) -> Iterator[tuple[Any, Any, Any]]:
    """(X, y, X_eval) to fit on, in order of preference: the first that fits is used."""
    tags = get_tags(est)
    given, target = tags.input_tags, tags.target_tags
    if not given.two_d_array:
        for wanted, X in (
            (given.three_d_array, IMAGES),
            (given.string, TEXT),
            (given.dict, DICTS),
            (target.one_d_labels, LABELS),
            (target.two_d_labels, LABEL_SETS),
        ):
            if wanted:
                yield X, None, X[:12]
                return
    X, X_eval = X_TRAIN, X_TEST
    name = type(est).__name__
    if "Imputer" in name or name == "MissingIndicator":  # with nothing to impute, they drop
        X, X_eval = _with_gaps(X), _with_gaps(X_eval)
    X, X_eval = _enforce_estimator_tags_X(est, X, X_test=X_eval)
    if not given.pairwise:
        X_eval = np.concatenate([X_eval, X[:10]])
    if is_classifier(est):
        y = Y_CLASS
        if tags.classifier_tags is not None and not tags.classifier_tags.multi_class:
            y = (Y_CLASS != 0).astype(int)
        ys = [Y_MULTILABEL if target.multi_output and not target.single_output else y]
    elif is_regressor(est):
        y = np.exp(Y_REG / 5) if target.positive_only else Y_REG
        ys = [Y_REG2 if target.multi_output and not target.single_output else y]
    else:
        ys = [Y_CLASS, Y_REG] if target.required else [None, Y_CLASS]
    for y in ys:
        yield X, y, X_eval
    yield X[:, :3], ys[0], X_eval[:, :3]  # SparseCoder's dictionary fixes 3 features
    yield np.abs(X), ys[0], np.abs(X_eval)


def _as(kind: str, X: Any) -> Any:
    """``X`` as the input kind of the case: the array, a DataFrame, a CSR matrix."""
    if kind == "frame":
        return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    return sp.csr_matrix(X) if kind == "sparse" else X


def _fit(est: Any, kind: str) -> tuple[Any, Any]:
    """``est`` fitted on ``kind`` input, and the inputs to compare its copies on."""
    set_random_state(est, 0)
    if type(est).__name__ == "FrozenEstimator":
        est.estimator.fit(X_TRAIN, Y_CLASS)
    errors = []
    for X, y, X_eval in _attempts(est):
        X, X_eval = _as(kind, X), _as(kind, X_eval)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est = est.fit(X) if y is None else est.fit(X, y)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            continue
        outputs = _outputs(est, X_eval)
        if outputs and all(isinstance(v, _Raised) for v in outputs.values()):
            # rows it cannot answer (an unseen category, no neighbour within the radius):
            # rows it was fitted on
            X_eval = X[:20]
        return est, X_eval
    raise AssertionError(f"no data fits {est!r}: " + "; ".join(errors))


def _outputs(est: Any, X: Any) -> dict[str, Any]:
    """What each prediction method gives on ``X``; an error is an outcome too (PCA with a
    sparse solver has no score_samples) and must be the same error after the reload."""
    out: dict[str, Any] = {}
    for method in METHODS:
        if not hasattr(est, method):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[method] = getattr(est, method)(copy.copy(X))
        except Exception as exc:
            out[method] = _Raised(type(exc), str(exc))
    return out


class _Raised(NamedTuple):
    """A method's error, compared by type and message."""

    kind: type
    message: str


# -- the contract -------------------------------------------------------------------------------
@pytest.mark.parametrize(("est", "kind"), INSTANCES)
def test_every_estimator_round_trips(est: Any, kind: str, tmp_path: Path) -> None:
    est, X_eval = _fit(copy.deepcopy(est), kind)
    expected = _outputs(est, X_eval)
    again = _outputs(est, X_eval)
    # outputs drawn at random on each call (DummyClassifier "stratified", BernoulliRBM's
    # score_samples) prove nothing: the rest must still match
    random = {m for m in expected if _differs(expected[m], again[m])}
    snapshot = copy.deepcopy(est)
    path = tmp_path / "model.amber"

    # a probe where the model has a method to record that answers the rows
    probed = not random and any(
        not isinstance(expected.get(m), _Raised) for m in probe_methods(None, est)
    )
    info = amber.save(est, path, sample=X_eval[:SAMPLE_ROWS] if probed else None)
    assert info.untrusted == [], f"stock scikit-learn needs trusted=: {info.untrusted}"

    loaded = amber.load(path)
    assert_same_state(snapshot, loaded, type(est).__name__)
    got = _outputs(loaded, X_eval)
    assert got.keys() == expected.keys()
    # a strided array (PCA's components_ after a sparse fit) comes back contiguous from any
    # pickle, and BLAS then computes in other last bits: where a plain pickle round trip of
    # the model differs from it too, the reload must give what that copy gives
    differing = [m for m in expected.keys() - random if _differs(expected[m], got[m])]
    if differing:
        as_pickled = _outputs(pickle.loads(pickle.dumps(snapshot, protocol=5)), X_eval)
        for method in differing:
            assert not _differs(as_pickled[method], got[method]), method
    report = amber.verify(path)
    assert report.ok, report
    if probed:
        assert report.probe is not None and report.probe.startswith("probe matched (exactly)")


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, _Raised) or isinstance(b, _Raised):
        return a != b
    try:
        assert_same_output(a, b, "")
    except AssertionError:
        return True
    return False
