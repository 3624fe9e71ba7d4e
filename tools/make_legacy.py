"""Write the legacy pickles of ``tests/data/legacy/`` (run once, in the release they come from).

scikit-learn 1.6's pickles of gradient boosting and of its GLMs name their Cython loss classes
``_loss.Cy...`` (a build quirk of that release); later releases cannot unpickle them. 1.5's
do too, and rebuild those classes with Cython reconstructors (``__pyx_unpickle_CyHalfPoissonLoss``)
that later releases no longer have. Made with

    python -m venv /tmp/sk && /tmp/sk/bin/pip install scikit-learn==1.6.1 numpy==2.1.3
    /tmp/sk/bin/python tools/make_legacy.py
    /tmp/sk/bin/pip install scikit-learn==1.5.2 && /tmp/sk/bin/python tools/make_legacy.py

Each model is pickled (protocol 5) beside the predictions it gave in that release, as ``.npy``
(from 1.5.2 only the GLM: its file is what the tests need).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import joblib
import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import PoissonRegressor

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "legacy"


def main() -> None:
    release = sklearn.__version__
    assert release in ("1.6.1", "1.5.2"), release
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    y = np.exp(X[:, 0] / 2) + rng.random(80)
    models = {
        "hgb": HistGradientBoostingRegressor(max_iter=3, max_leaf_nodes=4).fit(X, y),
        "poisson": PoissonRegressor().fit(X, y),
    }
    np.save(OUT / "X.npy", X[:10])
    if release == "1.5.2":
        del models["hgb"]
    for name, model in models.items():
        with open(OUT / f"sklearn-{release}-{name}.pkl", "wb") as f:
            pickle.dump(model, f, protocol=5)
        np.save(OUT / f"sklearn-{release}-{name}.predict.npy", model.predict(X[:10]))
        if release == "1.6.1" and name == "hgb":  # the same model as joblib writes it
            joblib.dump(model, OUT / f"sklearn-{release}-{name}.joblib")


if __name__ == "__main__":
    main()
