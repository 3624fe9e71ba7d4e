"""Models with behaviour the serving tests need, loaded by the server with ``--trust``.

This folder is put on ``PYTHONPATH`` for the server subprocess, so pickles refer to
``servetest_models.<Class>``.
"""

from __future__ import annotations

import time

import numpy as np


class SlowModel:
    """Sleeps ``X[0, 0]`` seconds (at most 10) per call, then returns the row sums.

    A call with ``X[0, 0] <= 0`` does not sleep at all: ``time.sleep(0)`` still yields the CPU,
    and on a busy machine that alone can take milliseconds, making the model look slow.
    """

    def predict(self, X: np.ndarray) -> np.ndarray:
        seconds = min(float(X[0, 0]), 10.0)
        if seconds > 0:
            time.sleep(seconds)
        return np.asarray(X, dtype=np.float64).sum(axis=1)


class NoisyModel:
    """Answers differently every call: its probe can never be reproduced (fails verification)."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64).sum(axis=1) + np.random.random(len(X))


class TwoShapes:
    """``predict`` answers one array; ``transform`` a dict of arrays, which HTTP cannot carry."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64).sum(axis=1)

    def transform(self, X: np.ndarray) -> dict[str, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        return {"low": X.min(axis=1), "high": X.max(axis=1)}
