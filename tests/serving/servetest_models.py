"""Models with behaviour the serving tests need, loaded by the server with ``--trust``.

This folder is put on ``PYTHONPATH`` for the server subprocess, so pickles refer to
``servetest_models.<Class>``.
"""

from __future__ import annotations

import time

import numpy as np


class SlowModel:
    """Sleeps ``X[0, 0]`` seconds (at most 10) per call, then returns the row sums."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        time.sleep(min(max(float(X[0, 0]), 0.0), 10.0))
        return np.asarray(X, dtype=np.float64).sum(axis=1)


class NoisyModel:
    """Answers differently every call: its probe can never be reproduced (fails verification)."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64).sum(axis=1) + np.random.random(len(X))
