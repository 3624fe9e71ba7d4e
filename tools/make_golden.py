"""Write the golden artifacts of the current format version into tests/data/golden/v<N>/.

Run once per format version (``.venv/bin/python tools/make_golden.py``) and commit the output;
never regenerate an old version's files. tests/test_golden.py loads every version's files with
the current code, re-runs their probes, and checks their manifests.

``--add NAME ...`` writes only the named models, into the current version's folder, next to the
files already there (never over one): for an optional field the version gained later, such as
``xxh3_128_parts`` (``knn_parts``), or for a codec (``forest_nodes``: ``nodes-lz4``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris, make_classification
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

import amber
from amber.artifact._manifest import FORMAT_VERSION

ROOT = Path(__file__).resolve().parents[1] / "tests" / "data" / "golden"


def models() -> dict[str, tuple[object, object, str]]:
    X, y = load_iris(return_X_y=True)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, 200),
            "income": rng.normal(50_000, 15_000, 200),
            "city": rng.choice(["paris", "lyon", "nice"], 200),
        }
    )
    churn = (frame["age"] > 50) ^ (frame["city"] == "nice")
    docs = [
        " ".join(rng.choice(["red", "green", "sky", "leaf", "apple", "sea"], 5)) for _ in range(80)
    ]
    topics = np.array(["a", "b"])[[int("sky" in d) for d in docs]]
    points = rng.random((3000, 8))  # 192 KB: out of band, memory-mappable
    # 16.8 MB of float64, past PARTS_FROM (16 MiB): the manifest lists the XXH3-128 of each of
    # its three parts (8 MiB, 8 MiB, 64,000 bytes). A 16 kB block repeated, plus the part's
    # number, so that git stores it in about 170 kB and no two parts have the same digest.
    rows, part_rows = 262_144 + 1_000, (8 << 20) // 64
    many = np.tile(rng.random((256, 8)), (rows // 256 + 1, 1))[:rows]
    many += (np.arange(rows) // part_rows)[:, None]
    # trees of 500-600 nodes, whose node arrays (32 kB and more) go out of band, where "auto"
    # stores them with nodes-lz4
    Xn, yn = make_classification(2000, 8, n_informative=5, flip_y=0.2, random_state=0)
    return {
        "iris_svc": (SVC(gamma="scale").fit(X, y), X[:32], "none"),
        "forest_zstd": (RandomForestClassifier(20, random_state=0).fit(X, y), X[:16], "zstd"),
        "hgb_auto": (
            HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X, y),
            X[:16],
            "auto",
        ),
        "forest_nodes": (RandomForestClassifier(4, random_state=0).fit(Xn, yn), Xn[:16], "auto"),
        "knn_mmap": (KNeighborsClassifier().fit(points, np.arange(3000) % 4), points[:10], "none"),
        "knn_parts": (
            KNeighborsClassifier(algorithm="brute").fit(many, np.arange(rows) % 4),
            many[::26_000],
            "none",
        ),
        "frame_pipeline": (
            make_pipeline(
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["age", "income"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                    ]
                ),
                LogisticRegression(),
            ).fit(frame, churn),
            frame.head(20),
            "lz4",
        ),
        "text_pipeline": (
            make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(docs, topics),
            docs[:10],
            "zlib",
        ),
    }


def main() -> None:
    folder = ROOT / f"v{FORMAT_VERSION}"
    chosen = models()
    if "--add" in sys.argv:
        names = sys.argv[sys.argv.index("--add") + 1 :]
        unknown = [n for n in names if n not in chosen]
        present = [n for n in names if (folder / f"{n}.amber").exists()]
        if not names or unknown or present:
            sys.exit(
                f"--add takes the names of models not yet in {folder} (unknown: {unknown}, "
                f"already there: {present}; known: {', '.join(chosen)})"
            )
        chosen = {n: chosen[n] for n in names}
    elif folder.exists() and "--force" not in sys.argv:
        sys.exit(f"{folder} exists: golden files of a released version are never regenerated")
    folder.mkdir(parents=True, exist_ok=True)
    for name, (model, sample, codec) in chosen.items():
        info = amber.save(
            model, folder / f"{name}.amber", sample=sample, compress=codec,
            metadata={"golden": name, "format_version": FORMAT_VERSION},
        )  # fmt: skip
        print(f"{info.path}: {info.file_size:,} bytes")


if __name__ == "__main__":
    main()
