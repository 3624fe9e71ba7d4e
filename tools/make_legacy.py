"""Write the legacy pickles of ``tests/data/legacy/`` (run once, in the release they come from).

scikit-learn 1.6's pickles of gradient boosting and of its GLMs name their Cython loss classes
``_loss.Cy...`` (a build quirk of that release); later releases cannot unpickle them. Made with

    python -m venv /tmp/sk16 && /tmp/sk16/bin/pip install scikit-learn==1.6.1 numpy==2.1.3
    /tmp/sk16/bin/python tools/make_legacy.py

Each model is pickled (protocol 5) beside the predictions it gave in that release, as ``.npy``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import PoissonRegressor

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "legacy"


def main() -> None:
    assert sklearn.__version__ == "1.6.1", sklearn.__version__
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    y = np.exp(X[:, 0] / 2) + rng.random(80)
    models = {
        "hgb": HistGradientBoostingRegressor(max_iter=3, max_leaf_nodes=4).fit(X, y),
        "poisson": PoissonRegressor().fit(X, y),
    }
    np.save(OUT / "X.npy", X[:10])
    for name, model in models.items():
        with open(OUT / f"sklearn-1.6.1-{name}.pkl", "wb") as f:
            pickle.dump(model, f, protocol=5)
        np.save(OUT / f"sklearn-1.6.1-{name}.predict.npy", model.predict(X[:10]))


if __name__ == "__main__":
    main()
