"""Shared fixtures: small, deterministic datasets that any test module can ask for by name.

Every dataset is a :class:`Split` (train and held-out parts). Numpy arrays are made read-only so
that a test (or a model) that writes into shared data fails loudly instead of leaking state into
the next test; take a copy first if you need to modify one. Only numpy is imported at module
level: scipy and pandas are imported inside the fixtures that need them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

# CI replays the same fuzz examples every run (a red build must mean a regression, not a new
# random draw); developers' runs keep exploring. CI=true is set by the CI runner.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

SEED = 0
N_TRAIN = 60
N_TEST = 24
N_FEATURES = 5


@dataclass(frozen=True)
class Split:
    """A dataset, split into training and held-out parts."""

    X_train: Any
    X_test: Any
    y_train: Any
    y_test: Any

    def head(self, n: int) -> Any:
        """The first ``n`` training rows, whatever the container (array, frame, sparse, list)."""
        if hasattr(self.X_train, "iloc"):
            return self.X_train.iloc[:n]
        return self.X_train[:n]


def _frozen(*arrays: np.ndarray) -> None:
    for array in arrays:
        array.setflags(write=False)


def _blobs(n_classes: int, seed: int, n_features: int = N_FEATURES) -> Split:
    """Gaussian blobs, every class equally present in both parts, rows shuffled."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(n_classes, n_features))

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % n_classes)
        return centers[y] + rng.normal(size=(n, n_features)), y

    X_train, y_train = part(N_TRAIN)
    X_test, y_test = part(N_TEST)
    _frozen(X_train, X_test, y_train, y_test)
    return Split(X_train, X_test, y_train, y_test)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded generator for each test."""
    return np.random.default_rng(SEED)


@pytest.fixture(scope="session")
def binary_data() -> Split:
    """Two classes (0, 1), 5 float64 features."""
    return _blobs(2, SEED)


@pytest.fixture(scope="session")
def multiclass_data() -> Split:
    """Three classes (0, 1, 2), 5 float64 features."""
    return _blobs(3, SEED + 1)


@pytest.fixture(scope="session")
def string_label_data() -> Split:
    """Three classes labelled with strings ("cat", "dog", "emu"), 5 float64 features."""
    blobs = _blobs(3, SEED + 2)
    names = np.array(["cat", "dog", "emu"])
    y_train, y_test = names[blobs.y_train], names[blobs.y_test]
    _frozen(y_train, y_test)
    return Split(blobs.X_train, blobs.X_test, y_train, y_test)


@pytest.fixture(scope="session")
def count_data() -> Split:
    """Non-negative integer counts (as for multinomial models), three classes."""
    rng = np.random.default_rng(SEED + 3)
    rates = rng.uniform(0.5, 6.0, size=(3, N_FEATURES))

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % 3)
        return rng.poisson(rates[y]).astype(np.int64), y

    X_train, y_train = part(N_TRAIN)
    X_test, y_test = part(N_TEST)
    _frozen(X_train, X_test, y_train, y_test)
    return Split(X_train, X_test, y_train, y_test)


def _regression(seed: int, n_targets: int) -> Split:
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(N_FEATURES, n_targets))

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        X = rng.normal(size=(n, N_FEATURES))
        y = X @ weights + 0.1 * rng.normal(size=(n, n_targets))
        return X, (y[:, 0] if n_targets == 1 else y)

    X_train, y_train = part(N_TRAIN)
    X_test, y_test = part(N_TEST)
    _frozen(X_train, X_test, y_train, y_test)
    return Split(X_train, X_test, y_train, y_test)


@pytest.fixture(scope="session")
def regression_data() -> Split:
    """A noisy linear target, 5 float64 features."""
    return _regression(SEED + 4, 1)


@pytest.fixture(scope="session")
def multioutput_regression_data() -> Split:
    """Two noisy linear targets (y has shape (n, 2)), 5 float64 features."""
    return _regression(SEED + 5, 2)


@pytest.fixture(scope="session")
def sparse_binary_data() -> Split:
    """Two classes, 40 features in a scipy.sparse CSR matrix about 80% zeros."""
    import scipy.sparse as sp

    rng = np.random.default_rng(SEED + 6)
    weights = rng.normal(size=40)

    def part(n: int) -> tuple[Any, np.ndarray]:
        dense = rng.normal(size=(n, 40)) * (rng.random((n, 40)) < 0.2)
        y = (dense @ weights > 0).astype(np.int64)
        y[:2] = [0, 1]  # both classes present, whatever the draw
        return sp.csr_matrix(dense), y

    X_train, y_train = part(N_TRAIN)
    X_test, y_test = part(N_TEST)
    _frozen(y_train, y_test)
    return Split(X_train, X_test, y_train, y_test)


_TOPICS = {
    "sport": "ball goal match team score coach league player win run field",
    "food": "bread salt oven recipe cheese soup taste cook dinner sauce spice",
}
_COMMON = ["the", "a", "of", "and", "today", "really", "very", "with"]


@pytest.fixture(scope="session")
def text_data() -> Split:
    """Short English-like documents (lists of str) labelled "sport" or "food"."""
    rng = np.random.default_rng(SEED + 7)
    labels = sorted(_TOPICS)

    def part(n: int) -> tuple[list[str], np.ndarray]:
        y = rng.permutation(np.arange(n) % 2)
        docs = []
        for label in y:
            words = _TOPICS[labels[label]].split() + _COMMON
            docs.append(" ".join(rng.choice(words, size=int(rng.integers(4, 12)))))
        names = np.array(labels)[y]
        _frozen(names)
        return docs, names

    X_train, y_train = part(N_TRAIN)
    X_test, y_test = part(N_TEST)
    return Split(X_train, X_test, y_train, y_test)


@pytest.fixture(scope="session")
def frame_data() -> Split:
    """A pandas DataFrame: numeric columns (one with NaNs), string columns; a binary target.

    Columns: ``age`` float64 (with NaN), ``income`` float64, ``visits`` int64, ``city`` and
    ``plan`` strings. Every category of the held-out part also occurs in the training part.
    """
    import pandas as pd

    rng = np.random.default_rng(SEED + 8)
    cities = np.array(["paris", "lyon", "nice"])
    plans = np.array(["basic", "pro"])

    def part(n: int) -> tuple[Any, np.ndarray]:
        age = rng.normal(40, 12, size=n)
        age[::7] = np.nan
        frame = pd.DataFrame(
            {
                "age": age,
                "income": rng.lognormal(10, 0.5, size=n),
                "visits": rng.poisson(3, size=n).astype(np.int64),
                "city": pd.Series(cities[np.arange(n) % 3], dtype="str"),
                "plan": pd.Series(plans[rng.permutation(np.arange(n) % 2)], dtype="str"),
            }
        )
        y = ((frame["income"] > np.exp(10)) ^ (frame["city"] == "nice")).to_numpy(np.int64)
        y[:2] = [0, 1]
        _frozen(y)
        return frame, y

    X_train, y_train = part(N_TRAIN)
    X_test, y_test = part(N_TEST)
    return Split(X_train, X_test, y_train, y_test)
