"""A randomized search's scipy.stats distributions: stored as data, loaded without running code."""

from __future__ import annotations

import copyreg
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from security_kit import Forged
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import RandomizedSearchCV

import amber
from amber.errors import FormatError, UntrustedTypeError
from amber.handlers.scipy_stats import frozen
from amber.security._policy import LoadPolicy
from amber.security._unpickler import safe_loads

X, Y = load_iris(return_X_y=True)


def _distributions() -> dict[str, Any]:
    own = stats.expon(scale=0.5)
    own.random_state = np.random.RandomState(7)  # a distribution with a generator of its own
    return {
        "C": stats.loguniform(1e-3, 1e3),
        "tol": stats.uniform(1e-5, np.float64(1e-3)),
        "max_iter": stats.randint(100, 300),
        "intercept_scaling": own,
    }


def _search() -> RandomizedSearchCV:
    return RandomizedSearchCV(
        LogisticRegression(), _distributions(), n_iter=3, cv=3, random_state=0
    ).fit(X, Y)


@pytest.mark.parametrize("mmap", [False, True])
def test_a_randomized_search_loads_safely_with_the_same_distributions(
    tmp_path: Path, mmap: bool
) -> None:
    search = _search()
    path = tmp_path / "search.amber"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to trust: no warning at save
        amber.save(search, path, sample=X[:10])
    names = amber.inspect(path).globals
    assert "amber.handlers.scipy_stats.frozen" in names
    assert not [n for n in names if n.startswith("scipy.stats")], names
    loaded = amber.load(path, mmap=mmap)
    assert np.array_equal(loaded.predict(X), search.predict(X))
    assert loaded.best_params_ == search.best_params_
    for key, dist in search.param_distributions.items():
        again = loaded.param_distributions[key]
        assert type(again) is type(dist) and again.dist.name == dist.dist.name
        assert again.args == dist.args and again.kwds == dist.kwds
        assert np.array_equal(again.rvs(8, random_state=3), dist.rvs(8, random_state=3))
    # the distribution's own generator comes back in its state; the others use numpy's global one
    own = loaded.param_distributions["intercept_scaling"]
    assert np.array_equal(own.rvs(5), stats.expon(scale=0.5).rvs(5, random_state=7))
    assert loaded.param_distributions["C"].random_state is np.random.mtrand._rand
    amber.verify(path)


def test_a_discrete_search_space_on_a_forest_loads_safely(tmp_path: Path) -> None:
    space = {"max_depth": stats.randint(2, 6), "min_samples_leaf": [1, 2]}
    search = RandomizedSearchCV(
        RandomForestClassifier(n_estimators=5, random_state=0), space, n_iter=3, cv=3,
        random_state=0,
    ).fit(X, Y)  # fmt: skip
    amber.save(search, tmp_path / "rf.amber", sample=X[:10])
    loaded = amber.load(tmp_path / "rf.amber")
    assert np.array_equal(loaded.predict_proba(X), search.predict_proba(X))
    assert loaded.param_distributions["max_depth"].args == (2, 6)


class _Mine(stats.rv_continuous):
    """A distribution of the user's own: its pickle is scipy's, refused as before."""

    def _pdf(self, x: Any) -> Any:
        return np.exp(-x)


def test_other_distributions_are_pickled_as_before_and_refused(tmp_path: Path) -> None:
    histogram = stats.rv_histogram(np.histogram(np.arange(10.0), bins=3))
    arrays = stats.uniform(loc=np.array([0.0, 1.0]))  # array arguments
    for dist in (_Mine(a=0, name="mine")(), histogram, arrays):
        path = tmp_path / "m.amber"
        with pytest.warns(UserWarning, match="scipy.stats' own frozen with plain numbers"):
            amber.save({"space": dist}, path)
        with pytest.raises(UntrustedTypeError):
            amber.load(path)


def _load(obj: Any) -> Any:
    return safe_loads(pickle.dumps(obj, protocol=5), policy=LoadPolicy())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("rv_continuous", (), {}, None), "not one of scipy.stats' own"),
        (("__builtins__", (), {}, None), "not one of scipy.stats' own"),
        (("stats", (), {}, None), "not one of scipy.stats' own"),
        ((3, (), {}, None), "not one of scipy.stats' own"),
        (("norm", ("0",), {}, None), "not plain numbers"),
        (("norm", ([0.0],), {}, None), "not plain numbers"),
        (("norm", (), {"loc": "x"}, None), "not plain numbers"),
        (("norm", (np.timedelta64(1, "s"),), {}, None), "not plain numbers"),
        (("norm", (), {1: 0.0}, None), "not plain numbers"),
        (("randint", (0, 2**70), {}, None), "not plain numbers"),
        (("norm", (0.0,) * 40, {}, None), "not plain numbers"),
        (("norm", [0.0], {}, None), "not plain numbers"),
        (("norm", (), {}, "seed"), "not a numpy RandomState or Generator"),
        (("norm", (1.0, 2.0, 3.0), {}, None), "cannot be frozen with the file's arguments"),
        (("norm", (), {"shape": 1.0}, None), "cannot be frozen with the file's arguments"),
    ],
)
def test_a_hand_written_call_is_checked_before_scipy_sees_it(
    args: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(FormatError, match=message):
        _load(Forged(frozen, args))


def test_scipys_own_pickle_of_a_distribution_still_runs_nothing(tmp_path: Path) -> None:
    """scipy's __setstate__ exec's the template in its state: a file that sets it is refused
    before anything runs, trusted names or not for the frozen wrapper alone."""
    marker = tmp_path / "pwned"
    dist = stats.uniform(0, 1)
    state = dist.dist.__getstate__()
    state["_parse_arg_template"] = (
        f"import pathlib; pathlib.Path({str(marker)!r}).touch()\n"
        "def _parse_args(self, loc=0, scale=1): return (), loc, scale\n"
        "def _parse_args_stats(self, loc=0, scale=1, moments='mv'):\n"
        "    return (), loc, scale, moments\n"
        "def _parse_args_rvs(self, loc=0, scale=1, size=None): return (), loc, scale, size\n"
    )
    hostile = Forged(copyreg._reconstructor, (type(dist.dist), object, None), state)
    data = pickle.dumps(hostile, protocol=5)
    pickle.loads(data)  # plain pickle runs the file's code
    assert marker.exists()
    marker.unlink()
    (tmp_path / "h.pkl").write_bytes(data)
    with pytest.raises(UntrustedTypeError):
        amber.load(tmp_path / "h.pkl")
    assert not marker.exists()


def test_a_distribution_class_is_never_offered_to_trust_nor_admitted(tmp_path: Path) -> None:
    """Trusting the names of a distribution would let its __setstate__ exec the template of
    the file: the refusal offers none of them, trusted= refuses scipy's, and a trusted subclass
    of scipy's base classes (found so once imported) is refused as well."""
    marker = tmp_path / "pwned"
    dist = stats.loguniform(1e-2, 1e2)
    state = dist.dist.__getstate__()
    state["_parse_arg_template"] = (
        f"import pathlib; pathlib.Path({str(marker)!r}).touch()\n" + state["_parse_arg_template"]
    )
    hostile = Forged(copyreg._reconstructor, (type(dist.dist), object, None), state)
    path = tmp_path / "h.pkl"
    path.write_bytes(pickle.dumps({"C": hostile}, protocol=5))
    with pytest.raises(UntrustedTypeError, match=r"runs? code Amber cannot vet") as refused:
        amber.load(path)
    assert "trusted=[" not in str(refused.value), refused.value
    name = f"{type(dist.dist).__module__}.{type(dist.dist).__name__}"
    with pytest.raises(ValueError, match=r"trusted= cannot admit .*scipy.stats distribution"):
        amber.load(path, trusted=[name])
    # a subclass of the user's own, trusted by name: refused as trusted= is read when its
    # module is imported already, else once the load imports it
    mine = _Mine(a=0, name="mine")
    path.write_bytes(pickle.dumps(mine, protocol=5))
    with pytest.raises(ValueError, match=r"trusted= cannot admit .*_Mine"):
        amber.load(path, trusted=[f"{_Mine.__module__}.{_Mine.__qualname__}"])
    module = tmp_path / "users_distribution.py"
    module.write_text(
        "import numpy as np\nfrom scipy import stats\n\n"
        "class Theirs(stats.rv_continuous):\n    def _pdf(self, x):\n        return np.exp(-x)\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import users_distribution  # type: ignore[import-not-found]

        path.write_bytes(pickle.dumps(users_distribution.Theirs(a=0, name="t"), protocol=5))
        del sys.modules["users_distribution"]
        with pytest.raises(UntrustedTypeError, match=r"runs? code Amber cannot vet") as refused:
            amber.load(path, trusted=["users_distribution.Theirs"])
        assert "trusted=[" not in str(refused.value), refused.value
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("users_distribution", None)
    assert not marker.exists()
