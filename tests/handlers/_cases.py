"""Tiny real models, one or more per handler, for the conformance suite.

A case says which handler must save it, which top-level modules ``amber.inspect`` must not import
for it, and how to build (model, sample) in a second or two. Frameworks are imported inside the
builders, so collecting the tests imports none. Every handler registered in
``amber.handlers`` must have a case here: ``test_every_handler_has_a_case`` fails otherwise.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

N, D = 40, 5


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    return X, y


@dataclass(frozen=True)
class Case:
    id: str
    handler: str
    requires: str  # module that must be importable, else the case is skipped
    build: Callable[[], tuple[Any, np.ndarray]]
    framework_modules: tuple[str, ...]  # what inspect must not import
    save_kwargs: tuple[tuple[str, Any], ...] = ()
    trusted: tuple[str, ...] = ()

    def available(self) -> bool:
        return importlib.util.find_spec(self.requires) is not None


def _sklearn() -> tuple[Any, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    X, y = data()
    return LogisticRegression().fit(X, y), X[:8]


def _xgb_classifier() -> tuple[Any, np.ndarray]:
    import xgboost as xgb

    X, y = data()
    return xgb.XGBClassifier(n_estimators=4, max_depth=2, n_jobs=1).fit(X, y), X[:8]


def _xgb_booster() -> tuple[Any, np.ndarray]:
    import xgboost as xgb

    X, y = data()
    booster = xgb.train({"max_depth": 2, "nthread": 1}, xgb.DMatrix(X, label=y), 3)
    return booster, X[:8]


def _lgbm_classifier() -> tuple[Any, np.ndarray]:
    import lightgbm as lgb

    X, y = data()
    labels = np.array(["no", "yes"])[y]
    model = lgb.LGBMClassifier(n_estimators=4, min_child_samples=5, n_jobs=1, verbose=-1)
    return model.fit(X, labels), X[:8]


def _lgbm_booster() -> tuple[Any, np.ndarray]:
    import lightgbm as lgb

    X, _ = data()
    params = {"verbose": -1, "num_threads": 1, "min_data_in_leaf": 5}
    return lgb.train(params, lgb.Dataset(X, label=X[:, 2]), 3), X[:8]


def _torch_module() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(D, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _torch_export() -> tuple[Any, np.ndarray]:
    X, _ = data()
    return _torch_module(), X[:8]


def _torch_linear() -> tuple[Any, np.ndarray]:
    import torch

    torch.manual_seed(0)
    X, _ = data()
    return torch.nn.Linear(D, 3), X[:8]


def _keras_model() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((D,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
    )


def _keras() -> tuple[Any, np.ndarray]:
    X, _ = data()
    return _keras_model(), X[:8]


_TF = ("tensorflow", "keras")
CASES = [
    Case("sklearn-logistic", "sklearn", "sklearn", _sklearn, ("sklearn", "scipy")),
    Case("xgboost-classifier", "xgboost", "xgboost", _xgb_classifier, ("xgboost",)),
    Case(
        "xgboost-booster-json",
        "xgboost",
        "xgboost",
        _xgb_booster,
        ("xgboost",),
        save_kwargs=(("format", "json"),),
    ),
    Case("lightgbm-classifier", "lightgbm", "lightgbm", _lgbm_classifier, ("lightgbm",)),
    Case("lightgbm-booster", "lightgbm", "lightgbm", _lgbm_booster, ("lightgbm",)),
    Case("torch-export", "torch", "torch", _torch_export, ("torch",)),
    Case(
        "torch-class",
        "torch",
        "torch",
        _torch_linear,
        ("torch",),
        save_kwargs=(("format", "class"),),
    ),
    Case("keras-native", "keras", "keras", _keras, _TF),
    Case(
        "tensorflow-savedmodel",
        "tensorflow",
        "tensorflow",
        _keras,
        _TF,
        save_kwargs=(("format", "savedmodel"),),
    ),
]


def forge_entry(path: Any, name: str, change: Callable[[bytes], bytes]) -> None:
    """Re-write one entry of an artifact through Amber's own writer, its digests recomputed:
    what an attacker without the signing key can do to a file."""
    from amber.artifact._reader import ArtifactReader
    from amber.artifact._writer import artifact_writer

    with ArtifactReader(path) as reader:
        manifest = {k: v for k, v in reader.manifest.items() if k != "entries"}
        entries = {n: bytes(reader.read(n)) for n in reader.entries}
    entries[name] = change(entries[name])
    with artifact_writer(path) as writer:
        for n, content in entries.items():
            writer.add(n, content)
        writer.finish(manifest)
