"""Fixtures for the serving tests: real models saved to artifacts, and real servers.

Every server is ``python -m amber serve ...`` in a subprocess on a free loopback port; tests talk
HTTP to it with httpx. Servers used by many tests are module- or session-scoped to keep the run
short on two cores. The helpers live in ``servetest_helpers``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import servetest_models
from servetest_helpers import RELOAD_TOKEN, TOKEN, Server, iris_data, save


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """iris (SVC pipeline on an array), frame (DataFrame with int, float and string columns),
    text (tf-idf + logistic regression on strings, string labels), slow (sleeps)."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.svm import SVC

    root = tmp_path_factory.mktemp("models")
    X, y = iris_data()
    out = {
        "iris": save(make_pipeline(StandardScaler(), SVC()).fit(X, y), root / "iris.amber", X[:16])
    }
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, 200).astype("int64"),
            "income": rng.normal(50_000, 10_000, 200),
            "city": rng.choice(["paris", "lyon", "nice"], 200),
        }
    )
    target = (frame["income"] > 50_000).astype(int)
    pre = ColumnTransformer(
        [("city", OneHotEncoder(handle_unknown="ignore"), ["city"])], remainder="passthrough"
    )
    model = make_pipeline(pre, LogisticRegression(max_iter=1000)).fit(frame, target)
    out["frame"] = save(model, root / "frame.amber", frame.iloc[:8])
    docs = ["good movie", "bad film", "great plot", "awful acting", "good acting", "bad plot"]
    labels = ["pos", "neg", "pos", "neg", "pos", "neg"]  # string classes: BYTES outputs
    text = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(docs, labels)
    out["text"] = save(text, root / "text.amber", docs[:3])
    # its probe sleeps 30 ms per call: measured slow at load, so it predicts on its own thread
    out["slow"] = save(servetest_models.SlowModel(), root / "slow.amber", np.full((2, 2), 0.03))
    return out


@pytest.fixture(scope="session")
def server(
    artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """iris, frame, text and slow behind a bearer token, reloads enabled, 1 MB body limit.

    iris and slow batch always (``on``): whether ``auto`` turns batching on is a timing, and
    under a loaded machine it can come out either way; frame and text keep ``auto``."""
    tmp = tmp_path_factory.mktemp("server")
    srv = Server(
        [str(artifacts[n]) for n in ("iris", "frame", "text", "slow")]
        + [
            "--max-body-mb",
            "1",
            "--poll-interval",
            "0",
            "--batching",
            "slow=on",
            "--batching",
            "iris=on",
        ],
        tmp,
        env={"AMBER_SERVE_TOKEN": TOKEN, "AMBER_RELOAD_TOKEN": RELOAD_TOKEN},
    )
    try:
        srv.wait_ready()
        srv.client.headers["Authorization"] = f"Bearer {TOKEN}"
        yield srv
    finally:
        srv.stop()
