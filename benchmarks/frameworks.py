"""Framework handlers against each framework's own save/load, in one run.

- PyTorch: a ~100 MB MLP. ``amber.load`` (a whole module, rebuilt) and ``amber.load(mmap=True)``
  against ``torch.load(weights_only=True)`` of its state dict (tensors only). Targets: at most
  1.0x and 0.2x.
- Keras 3 / TensorFlow: a small MLP. ``amber.save``/``amber.load`` against Keras's own ``.keras``
  (``model.save`` / ``keras.saving.load_model``) and, with ``format="savedmodel"``, against
  ``model.export`` / ``tf.saved_model.load``. Target: at most 1.2x, save and load each.
- XGBoost / LightGBM: 300 trees. ``amber.load`` against ``XGBClassifier().load_model`` and
  ``lightgbm.Booster(model_file=...)``. Target: at most 1.2x.

Every time is the median of ``--repeats`` runs in this process (Amber and native alternating, so
a busy machine slows both alike), after a warm-up, page cache warm for both sides.
Writes ``benchmarks/results/frameworks.md`` and ``frameworks.png``. Run:
``.venv/bin/python benchmarks/frameworks.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import amber

RESULTS = Path(__file__).resolve().parent / "results"
ROWS: list[dict[str, Any]] = []


def compare(
    ours: Callable[[], Any], theirs: Callable[[], Any], repeats: int
) -> tuple[float, float]:
    """Medians of both, measured in alternation so that a busy machine slows both alike."""
    ours(), theirs()  # warm: imports, page cache, lazy initialisation
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeats):
        for fn, out in ((ours, a), (theirs, b)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def row(
    framework: str,
    what: str,
    native: str,
    target: float,
    ours: Callable[[], Any],
    theirs: Callable[[], Any],
    repeats: int,
) -> None:
    amber_s, native_s = compare(ours, theirs, repeats)
    ratio = amber_s / native_s
    ROWS.append(
        {
            "framework": framework,
            "what": what,
            "amber_ms": amber_s * 1e3,
            "native": native,
            "native_ms": native_s * 1e3,
            "ratio": ratio,
            "target": target,
            "verdict": "PASS" if ratio <= target else "MISS",
        }
    )
    print(
        f"{framework:10} {what:24} {amber_s * 1e3:8.1f} ms vs {native:34} "
        f"{native_s * 1e3:8.1f} ms  {ratio:5.2f}x (target {target}x) {ROWS[-1]['verdict']}"
    )


# -- PyTorch ------------------------------------------------------------------------------------
def bench_torch(tmp: Path, repeats: int, quick: bool) -> None:
    import torch

    class Wide(torch.nn.Module):
        def __init__(self, width: int = 2560, depth: int = 4) -> None:
            super().__init__()
            self.width, self.depth = width, depth
            self.layers = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(depth))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = torch.relu(layer(x))
            return x

    # amber saves the class by import path: make it importable as __main__.Wide
    Wide.__module__, Wide.__qualname__ = "__main__", "Wide"
    sys.modules["__main__"].Wide = Wide  # type: ignore[attr-defined]
    width = 1024 if quick else 2560
    model = Wide(width)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    state_path = tmp / "state.pt"
    torch.save(model.state_dict(), state_path)
    path = tmp / "wide.amber"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "needs trusted=[...]": we trust it
        amber.save(model, path, format="class")
    trusted = ["__main__.Wide"]
    x = np.ones((2, width), np.float32)
    ref = amber.predict(model, x)
    assert np.array_equal(amber.predict(amber.load(path, trusted=trusted), x), ref)
    assert np.array_equal(amber.predict(amber.load(path, trusted=trusted, mmap=True), x), ref)
    native = lambda: torch.load(state_path, weights_only=True)  # noqa: E731
    label = f"load {size / 1e6:.0f} MB MLP"
    native_name = "torch.load(weights_only=True)"
    ours = lambda: amber.load(path, trusted=trusted)  # noqa: E731
    row("torch", label, native_name, 1.0, ours, native, repeats)
    ours_mmap = lambda: amber.load(path, trusted=trusted, mmap=True)  # noqa: E731
    row("torch", label + " mmap", native_name, 0.2, ours_mmap, native, repeats)


# -- Keras / TensorFlow -------------------------------------------------------------------------
def bench_keras(tmp: Path, repeats: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,))]
        + [keras.layers.Dense(256, activation="relu") for _ in range(4)]
        + [keras.layers.Dense(4)]
    )
    x = np.ones((8, 64), np.float32)
    model(x)
    k_path, a_path = tmp / "m.keras", tmp / "k.amber"
    s_dir, s_path = tmp / "exported", tmp / "s.amber"
    row(
        "keras",
        "save (.keras)",
        "model.save('.keras')",
        1.2,
        lambda: amber.save(model, a_path),
        lambda: model.save(k_path),
        repeats,
    )
    row(
        "keras",
        "load (.keras)",
        "keras.saving.load_model",
        1.2,
        lambda: amber.load(a_path),
        lambda: keras.saving.load_model(k_path),
        repeats,
    )
    row(
        "tensorflow",
        "save (SavedModel)",
        "model.export (tf_saved_model)",
        1.2,
        lambda: amber.save(model, s_path, format="savedmodel"),
        lambda: model.export(str(s_dir), verbose=False),
        repeats,
    )
    row(
        "tensorflow",
        "load (SavedModel)",
        "tf.saved_model.load",
        1.2,
        lambda: amber.load(s_path),
        lambda: tf.saved_model.load(str(s_dir)),
        repeats,
    )


# -- trees --------------------------------------------------------------------------------------
def bench_trees(tmp: Path, repeats: int, quick: bool) -> None:
    import lightgbm as lgb
    import xgboost as xgb

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 20))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    n = 50 if quick else 300
    xm = xgb.XGBClassifier(n_estimators=n, max_depth=6, n_jobs=2).fit(X, y)
    x_native, x_path = tmp / "x.ubj", tmp / "x.amber"
    xm.save_model(x_native)
    amber.save(xm, x_path)

    def xgb_native() -> Any:
        m = xgb.XGBClassifier()
        m.load_model(x_native)
        return m

    row(
        "xgboost",
        f"load {n} trees",
        "XGBClassifier().load_model(.ubj)",
        1.2,
        lambda: amber.load(x_path),
        xgb_native,
        repeats,
    )
    lm = lgb.LGBMClassifier(n_estimators=n, num_leaves=63, verbose=-1, n_jobs=2).fit(X, y)
    l_native, l_path = tmp / "l.txt", tmp / "l.amber"
    lm.booster_.save_model(l_native)
    amber.save(lm, l_path)
    row(
        "lightgbm",
        f"load {n} trees",
        "lightgbm.Booster(model_file=)",
        1.2,
        lambda: amber.load(l_path),
        lambda: lgb.Booster(model_file=str(l_native)),
        repeats,
    )


# -- report -------------------------------------------------------------------------------------
def report(repeats: int) -> None:
    RESULTS.mkdir(exist_ok=True)
    lines = [
        "# Framework handlers against native save/load",
        "",
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs; "
        f"median of {repeats} alternating runs after a warm-up, one process, one run of this "
        f"script.",
        "",
        "| framework | operation | Amber (ms) | native | native (ms) | ratio | target | |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for r in ROWS:
        lines.append(
            f"| {r['framework']} | {r['what']} | {r['amber_ms']:.1f} | {r['native']} | "
            f"{r['native_ms']:.1f} | {r['ratio']:.2f}x | ≤{r['target']}x | {r['verdict']} |"
        )
    (RESULTS / "frameworks.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.5 * len(ROWS) + 1.5))
    labels = [f"{r['framework']}: {r['what']}" for r in ROWS]
    colors = ["tab:green" if r["verdict"] == "PASS" else "tab:red" for r in ROWS]
    ys = np.arange(len(ROWS))
    ax.barh(ys, [r["ratio"] for r in ROWS], color=colors)
    ax.scatter([r["target"] for r in ROWS], ys, marker="|", s=400, color="black", label="target")
    ax.set_yticks(ys, labels)
    ax.invert_yaxis()
    ax.set_xlabel("Amber time / native time (lower is better)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / "frameworks.png", dpi=110)
    print(f"wrote {RESULTS / 'frameworks.md'} and {RESULTS / 'frameworks.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="smaller models (a smoke run)")
    parser.add_argument("--only", nargs="*", choices=["torch", "keras", "trees"])
    args = parser.parse_args()
    only = set(args.only or ["torch", "keras", "trees"])
    with tempfile.TemporaryDirectory(prefix="amber-bench-") as tmp:
        if "torch" in only:
            bench_torch(Path(tmp), args.repeats, args.quick)
        if "trees" in only:
            bench_trees(Path(tmp), args.repeats, args.quick)
        if "keras" in only:
            bench_keras(Path(tmp), args.repeats)
    report(args.repeats)


if __name__ == "__main__":
    main()
