"""The classic persistence example, done with Amber (``make demo``).

Train an SVC on iris, save it with a probe, reload it in a fresh Python process (no code from the
file runs there), print its accuracy, then show what ``amber inspect`` and ``amber verify`` see.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sklearn import datasets, svm

import amber

RELOAD = """
import sys
import amber
from sklearn import datasets

X, y = datasets.load_iris(return_X_y=True)
clf = amber.load(sys.argv[1])
print(f"Accuracy: {clf.score(X, y):.2f}")
"""


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-out")
    out.mkdir(exist_ok=True)
    path = out / "iris.amber"

    X, y = datasets.load_iris(return_X_y=True)
    clf = svm.SVC(gamma="scale").fit(X, y)
    accuracy = round(float(clf.score(X, y)), 4)
    info = amber.save(clf, path, sample=X[:32], metadata={"metrics": {"accuracy": accuracy}})
    print(f"saved {path} ({info.file_size:,} bytes)\n")

    print("$ reloading in a fresh process")
    subprocess.run([sys.executable, "-c", RELOAD, str(path)], check=True)
    for command in ("inspect", "verify"):
        print(f"\n$ amber {command} {path}")
        subprocess.run([sys.executable, "-m", "amber", command, str(path)], check=True)


if __name__ == "__main__":
    main()
