"""Amber against pickle, joblib, cloudpickle and skops: save, load, mmap load, size, load memory.

One run fits a suite of scikit-learn models, saves each with every method (timed, durable:
each save ends with an fsync of the file and of its folder), then loads every file in a fresh
worker process (one per model and method) that measures the first load's peak memory and the
median of several warm loads. Pickle's, Amber's and Amber's ``mmap=True`` first loads are sampled
in more fresh processes (``--fresh``), interleaved, for the load a process pays once.
It writes ``results/persist.md`` (tables, targets with PASS/MISS, machine facts) and
``results/persist.png``, and prints the tables.

    .venv/bin/python benchmarks/persist.py                 # full suite, about 10 minutes
    .venv/bin/python benchmarks/persist.py --quick         # small models, under a minute
    .venv/bin/python benchmarks/persist.py --models knn,mlp --repeats 7 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The benchmark measures the checkout it lives in, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, median

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_common.py"
DISTRIBUTIONS = (
    "amber", "numpy", "scipy", "scikit-learn", "joblib", "cloudpickle", "skops",
    "xxhash", "blake3", "zstandard", "lz4", "matplotlib",
)  # fmt: skip

# Methods, in table order. "amber mmap" loads the file "amber" wrote, with mmap=True.
METHODS = (
    "amber", "amber mmap", "amber auto", "pickle", "joblib", "joblib z3", "cloudpickle", "skops",
)  # fmt: skip
FAMILY = {
    "amber": "amber", "amber mmap": "amber", "amber auto": "amber", "pickle": "pickle",
    "joblib": "joblib", "joblib z3": "joblib", "cloudpickle": "cloudpickle", "skops": "skops",
}  # fmt: skip
SUFFIX = {
    "amber": ".amber", "amber auto": ".auto.amber", "pickle": ".pkl", "joblib": ".joblib",
    "joblib z3": ".z3.joblib", "cloudpickle": ".cloudpickle.pkl", "skops": ".skops",
}  # fmt: skip
# Methods whose first load in a fresh process is sampled --fresh times, the jobs interleaved
# (pickle, amber, amber mmap, pickle, ...) so that a slow spell of the machine hits all three.
FRESH_METHODS = ("pickle", "amber", "amber mmap")
SAVE_BUDGET_S = 20.0  # stop repeating a save once this much time went into it (1 run at least)
LOAD_BUDGET_S = 30.0  # likewise for the timed loads of one worker (2 runs at least)


# -- the model suite ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Built:
    model: Any
    check_X: Any  # a few inputs; every loaded copy must predict exactly what the original does
    description: str


def build_rf(quick: bool) -> Built:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    n, d, trees = (2_000, 10, 10) if quick else (20_000, 20, 100)
    X, y = make_classification(n, d, n_informative=d // 2, random_state=0)
    model = RandomForestClassifier(trees, n_jobs=-1, random_state=0).fit(X, y)
    nodes = sum(t.tree_.node_count for t in model.estimators_)
    return Built(
        model, X[:64], f"RandomForestClassifier, {trees} trees of full depth on {n:,}x{d} "
        f"({nodes:,} nodes)"
    )  # fmt: skip


def build_hgb(quick: bool) -> Built:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    n, d, classes, iters = (1_000, 10, 3, 10) if quick else (10_000, 20, 10, 150)
    X, y = make_classification(n, d, n_informative=d // 2 + 2, n_classes=classes, random_state=0)
    model = HistGradientBoostingClassifier(
        max_iter=iters, early_stopping=False, random_state=0
    ).fit(X, y)
    arrays = sum(len(p) for p in model._predictors)
    return Built(
        model, X[:64], f"HistGradientBoostingClassifier, {classes} classes x {iters} "
        f"iterations = {arrays:,} small predictor node arrays"
    )  # fmt: skip


def build_knn(quick: bool) -> Built:
    import numpy as np
    from sklearn.neighbors import KNeighborsClassifier

    rows, d = (20_000, 50) if quick else (330_000, 100)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, d))
    y = rng.integers(0, 10, rows)
    model = KNeighborsClassifier().fit(X, y)
    check = rng.standard_normal((8, d))
    return Built(
        model, check, f"KNeighborsClassifier on {rows:,}x{d} float64 "
        f"({rows * d:,} floats, {rows * d * 8 / 1e6:.0f} MB)"
    )  # fmt: skip


def build_tfidf(quick: bool) -> Built:
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    vocab, n_docs, length = (5_000, 500, 30) if quick else (300_000, 20_000, 100)
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lens = rng.integers(4, 11, vocab)
    chars = rng.integers(0, 26, (vocab, 10))
    words = np.array(sorted({"".join(letters[c[:k]]) for c, k in zip(chars, lens, strict=True)}))
    docs = [" ".join(words[row]) for row in rng.integers(0, len(words), (n_docs, length))]
    y = rng.integers(0, 5, n_docs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the fit is not the point
        model = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=50)).fit(docs, y)
    terms = len(model[0].vocabulary_)
    return Built(
        model, np.array(docs[:16]), f"TfidfVectorizer + LogisticRegression, {terms:,} terms "
        f"from {n_docs:,} synthetic documents, 5 classes"
    )  # fmt: skip


def build_mlp(quick: bool) -> Built:
    import numpy as np
    from sklearn.neural_network import MLPClassifier

    hidden, n, d = ((256, 128), 500, 64) if quick else ((2048, 1024), 3_000, 256)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    y = rng.integers(0, 10, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MLPClassifier(hidden, max_iter=2, random_state=0).fit(X, y)
    weights = sum(c.nbytes for c in model.coefs_)
    return Built(
        model, X[:64], f"MLPClassifier {d}-{'-'.join(map(str, hidden))}-10, float64: "
        f"{_bytes(weights)} of weight matrices (+ Adam state of the same size twice)"
    )  # fmt: skip


def build_tiny(quick: bool) -> Built:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    return Built(model, X[:32], "StandardScaler + LogisticRegression on iris")


MODELS: dict[str, Callable[[bool], Built]] = {
    "rf": build_rf,
    "hgb": build_hgb,
    "knn": build_knn,
    "tfidf": build_tfidf,
    "mlp": build_mlp,
    "tiny": build_tiny,
}


# -- saving -------------------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _durable(path: Path) -> None:
    """fsync a new file and then its folder: until the folder is synced, a crash can lose the
    file's name (POSIX; ext4 happens to commit it with the file, XFS and others need not)."""
    _fsync(path)
    _fsync(path.parent)


def save_with(method: str, obj: Any, path: Path) -> list[str]:
    """Save ``obj`` durably; returns the types Amber says a load must be told to trust."""
    if method in ("amber", "amber auto"):
        import amber

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the untrusted-types warning: we read the list
            info = amber.save(obj, path, compress="auto" if method == "amber auto" else "none")
        return info.untrusted
    if method in ("pickle", "cloudpickle"):
        dump = pickle.dump
        if method == "cloudpickle":
            import cloudpickle

            dump = cloudpickle.dump
        with open(path, "wb") as f:
            dump(obj, f, protocol=5)
            f.flush()
            os.fsync(f.fileno())
        _fsync(path.parent)
        return []
    if method in ("joblib", "joblib z3"):
        import joblib

        joblib.dump(obj, path, compress=3 if method == "joblib z3" else 0)
    elif method == "skops":
        import skops.io

        skops.io.dump(obj, path)
    else:
        raise ValueError(method)
    _durable(path)
    return []


def time_saves(
    methods: tuple[str, ...], obj: Any, paths: dict[str, Path], runs: int
) -> dict[str, tuple[list[float], list[str]] | Exception]:
    """Time ``runs`` durable saves of ``obj`` by each of ``methods``, interleaved (one of each
    in turn, a fresh file each time), so that a slow spell of the disk or of the machine hits
    all of them: the targets compare Amber's median with pickle's. Returns each method's times
    and the types it says a load must trust, or the exception its save raised."""
    out: dict[str, tuple[list[float], list[str]] | Exception] = {m: ([], []) for m in methods}
    spent = dict.fromkeys(methods, 0.0)
    for _ in range(runs):
        for method in methods:
            done = out[method]
            if isinstance(done, Exception) or (done[0] and spent[method] > SAVE_BUDGET_S):
                continue
            paths[method].unlink(missing_ok=True)
            gc.collect(1)
            t0 = time.perf_counter()
            try:
                untrusted = save_with(method, obj, paths[method])
            except Exception as exc:
                out[method] = exc
                continue
            took = time.perf_counter() - t0
            done[0].append(took)
            out[method] = (done[0], untrusted)
            spent[method] += took
    return out


def warm_up(folder: Path) -> None:
    """Import and exercise every saver once, so that no first save pays for imports."""
    import numpy as np
    from sklearn.preprocessing import StandardScaler

    obj = StandardScaler().fit(np.arange(20.0).reshape(10, 2))
    for method in SUFFIX:
        save_with(method, obj, folder / f"warmup{SUFFIX[method]}")


def auto_codecs(path: Path) -> dict[str, int]:
    """How many entries of an artifact each codec holds (``compress="auto"`` measures, so this
    can change from one save to the next)."""
    import amber

    counts: dict[str, int] = {}
    for entry in amber.inspect(path).manifest["entries"].values():
        counts[entry["compression"]] = counts.get(entry["compression"], 0) + 1
    return counts


def stream_modules(pickle_path: Path) -> list[str]:
    """The modules a model's pickle imports (our own file, so loading it here is safe)."""
    modules: set[str] = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            modules.add(module)
            return super().find_class(module, name)

    with open(pickle_path, "rb") as f:
        Recorder(f).load()
    return sorted(modules)


def _read_through(path: Path) -> None:
    """Read the file once so that its pages are in the page cache (loads are timed warm)."""
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 24):
            pass


# -- loading, in workers ------------------------------------------------------------------------
class Workers:
    """Runs each load job in a fresh process.

    ``fork``: a template process imports the libraries once and forks a child per job (see
    ``_common.serve``). ``exec``: a new interpreter per job. Both measure the same things; fork
    saves the second or two of start-up and imports per job.
    """

    def __init__(self, spawn: str) -> None:
        self.spawn = spawn
        self._proc: subprocess.Popen[str] | None = None
        self._ready = False

    def start(self) -> None:
        """Start the template (it imports while this process fits the first model)."""
        if self.spawn == "fork" and (self._proc is None or self._proc.poll() is not None):
            self._proc = subprocess.Popen(
                [sys.executable, str(WORKER), "--serve"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            self._ready = False

    def _template(self) -> subprocess.Popen[str]:
        self.start()
        assert self._proc is not None and self._proc.stdout is not None
        if not self._ready:
            if not self._proc.stdout.readline():
                raise RuntimeError("the worker template process did not start")
            self._ready = True
        return self._proc

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        if self.spawn == "exec":
            return self._run_exec(job)
        proc = self._template()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(job) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            self._proc = None
            return {"error": f"the worker template exited ({proc.wait()})"}
        return dict(json.loads(line))

    @staticmethod
    def _run_exec(job: dict[str, Any]) -> dict[str, Any]:
        try:
            proc = subprocess.run(
                [sys.executable, str(WORKER), json.dumps(job)],
                capture_output=True, text=True, timeout=job["timeout_s"], check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"error": f"worker timed out after {job['timeout_s']} s"}
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        if proc.returncode == 0 and lines:
            try:
                return dict(json.loads(lines[-1]))
            except json.JSONDecodeError:
                pass
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"worker exited {proc.returncode}: {' | '.join(tail)}"[:500]}

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=60)
        self._proc = None


# -- running everything -------------------------------------------------------------------------
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def security_modules() -> str:
    """Whether amber.security's unpickler is the real module (a file in the package)."""
    try:
        import amber.security._unpickler as u
    except ImportError as exc:
        return f"MISSING ({exc})"
    where = getattr(u, "__file__", None)
    if not where:
        return "NOT THE REAL MODULE (a stand-in without a file): numbers are not final"
    return f"real ({Path(where).name})"


def run_model(
    name: str, args: argparse.Namespace, workdir: Path, workers: Workers
) -> dict[str, Any]:
    import numpy as np

    t0 = time.perf_counter()
    built = MODELS[name](args.quick)
    log(f"[{name}] fitted in {time.perf_counter() - t0:.1f} s: {built.description}")
    check_X = workdir / f"{name}.check_X.npy"
    check_y = workdir / f"{name}.check_y.npy"
    x = np.asarray(built.check_X)
    np.save(check_X, x, allow_pickle=False)
    np.save(
        check_y,
        np.asarray(built.model.predict(x.tolist() if x.dtype.kind == "U" else x)),
        allow_pickle=False,
    )
    rows: dict[str, dict[str, Any]] = {m: {} for m in METHODS}
    trusted: dict[str, list[str]] = {}
    # the median drops one-time costs and the VM's erratic large writes; the pair the targets
    # compare gets more runs
    save_runs = {"pickle": 7, "amber": 7}
    gc.collect()
    # pickle's and Amber's saves in turn (the targets' ratio), then each of the others
    rounds: list[tuple[str, ...]] = [("pickle", "amber")]
    rounds += [(m,) for m in SUFFIX if m not in ("pickle", "amber")]
    for group in rounds:
        paths = {m: workdir / f"{name}{SUFFIX[m]}" for m in group}
        runs = save_runs.get(group[0], 5)
        for method, result in time_saves(group, built.model, paths, runs).items():
            path = paths[method]
            if isinstance(result, Exception):
                rows[method]["error"] = f"save failed: {type(result).__name__}: {result}"[:300]
                log(f"[{name}] {method:<11} save FAILED: {result}")
                continue
            times, untrusted = result
            trusted[method] = untrusted
            rows[method].update(
                save_s=median(times), save_min_s=min(times), save_runs=len(times),
                size=path.stat().st_size,
            )  # fmt: skip
            log(
                f"[{name}] {method:<11} save {median(times) * 1e3:9.1f} ms  "
                f"{path.stat().st_size:,} B"
            )
    rows["amber mmap"].update(size=rows["amber"].get("size"))
    if "error" not in rows["amber auto"]:
        rows["amber auto"]["codecs"] = auto_codecs(workdir / f"{name}{SUFFIX['amber auto']}")
    modules = stream_modules(workdir / f"{name}.pkl") if "error" not in rows["pickle"] else []
    description = built.description
    del built
    gc.collect()
    jobs: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        source = "amber" if method == "amber mmap" else method
        if "error" in rows[source]:
            rows[method].setdefault("error", rows[source]["error"])
            continue
        path = workdir / f"{name}{SUFFIX[source]}"
        _read_through(path)
        job = {
            "method": method, "family": FAMILY[method], "path": str(path),
            "mmap": method == "amber mmap", "trusted": trusted.get(source, []),
            "modules": modules, "repeats": args.repeats, "budget_s": LOAD_BUDGET_S,
            "check_X": str(check_X), "check_y": str(check_y), "timeout_s": 1800,
        }  # fmt: skip
        jobs[method] = job
        res = workers.run(job)
        if "error" in res:
            rows[method]["error"] = res["error"]
            log(f"[{name}] {method:<11} load FAILED: {res['error']}")
            continue
        times = res.pop("load_times_s")
        rows[method].update(res, load_s=median(times), load_min_s=min(times), load_runs=len(times))
        log(
            f"[{name}] {method:<11} load {rows[method]['load_s'] * 1e3:9.2f} ms  "
            f"peak {res['peak_bytes'] / 1e6:8.1f} MB  {res['check']}"
        )
    fresh_loads(name, rows, jobs, args.fresh, workers)
    amber_trusted = sorted({t for m in ("amber", "amber auto") for t in trusted.get(m, [])})
    return {"rows": rows, "trusted": amber_trusted, "description": description}


def fresh_loads(
    name: str,
    rows: dict[str, dict[str, Any]],
    jobs: dict[str, dict[str, Any]],
    runs: int,
    workers: Workers,
) -> None:
    """Sample the first load in a fresh process ``runs`` times for FRESH_METHODS (the job above
    was the first sample), interleaved; the median goes into ``fresh_s``.

    A first load is what a process that loads its model once pays, and the heap it starts from
    is the same for every method. The warm loads after it each start from the heap the previous
    load left: glibc returns a freed model's memory to the system or keeps it for the next load
    depending on where live blocks happen to sit, and the forest's load is twice as fast in the
    second case, for pickle and Amber alike.
    """
    methods = [m for m in FRESH_METHODS if "first_load_s" in rows[m]]  # (its job ran)
    samples = {m: [rows[m]["first_load_s"]] for m in methods}
    for _ in range(runs - 1):
        for method in methods:
            res = workers.run({**jobs[method], "repeats": 0})
            if "error" in res:
                log(f"[{name}] {method:<11} fresh load FAILED: {res['error']}")
                continue
            samples[method].append(res["first_load_s"])
    for method, times in samples.items():
        rows[method].update(fresh_s=median(times), fresh_runs=len(times))
        log(f"[{name}] {method:<11} first load in a fresh process, median of {len(times)}: "
            f"{median(times) * 1e3:9.2f} ms")  # fmt: skip


# -- the report ---------------------------------------------------------------------------------
def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:,.0f}"
    return f"{ms:.3g}" if ms >= 1 else f"{ms:.3f}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}" if abs(n) < 100 * scale else f"{n / scale:,.0f} {unit}"
    return f"{n} B"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if b <= 0:  # e.g. no measurable memory growth for pickle: equal if Amber's is none too
        return 1.0 if a <= 0 else float("inf")
    return a / b


def _x(r: float | None) -> str:
    if r is None:
        return "n/a"
    if r == float("inf"):
        return "inf"
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x"


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    a, m, z = rows["amber"], rows["amber mmap"], rows["amber auto"]
    p, s = rows["pickle"], rows["skops"]
    return {
        "save": _ratio(a.get("save_s"), p.get("save_s")),
        "load": _ratio(a.get("load_s"), p.get("load_s")),
        "fresh load": _ratio(a.get("fresh_s"), p.get("fresh_s")),
        "mmap load": _ratio(m.get("load_s"), p.get("load_s")),
        "mmap fresh load": _ratio(m.get("fresh_s"), p.get("fresh_s")),
        "mmap/default load": _ratio(m.get("load_s"), a.get("load_s")),
        "size": _ratio(a.get("size"), p.get("size")),
        "peak memory": _ratio(a.get("peak_bytes"), p.get("peak_bytes")),
        "mmap private memory": _ratio(m.get("private_bytes"), p.get("peak_bytes")),
        "load vs skops": _ratio(a.get("load_s"), s.get("load_s")),
        "auto size": _ratio(z.get("size"), p.get("size")),
        "auto load": _ratio(z.get("load_s"), p.get("load_s")),
    }


# (label, ratio key, models it applies to (None: every model), the bound)
TARGETS: tuple[tuple[str, str, tuple[str, ...] | None, float], ...] = (
    ("default load <= 1.0x pickle", "load", None, 1.0),
    ("default load <= 0.7x pickle", "load", ("knn", "mlp"), 0.7),
    ("save <= 1.5x pickle (+fsync of file and folder)", "save", None, 1.5),
    ("mmap load <= 0.2x pickle", "mmap load", ("knn", "mlp"), 0.2),
    ("mmap load <= default load (many small arrays)", "mmap/default load", ("hgb",), 1.0),
    ("peak load memory <= pickle's", "peak memory", None, 1.0),
    ("mmap private memory < 10% of pickle's peak", "mmap private memory", ("knn",), 0.1),
    ("auto compression: file <= 20% of pickle's", "auto size", ("rf",), 0.2),
    ("auto compression: load <= 1.2x pickle", "auto load", ("rf",), 1.2),
)


# What each ratio divides: (method, field) over (method, field).
_OPERANDS: dict[str, tuple[str, str, str, str]] = {
    "save": ("amber", "save_s", "pickle", "save_s"),
    "load": ("amber", "load_s", "pickle", "load_s"),
    "mmap load": ("amber mmap", "load_s", "pickle", "load_s"),
    "mmap/default load": ("amber mmap", "load_s", "amber", "load_s"),
    "peak memory": ("amber", "peak_bytes", "pickle", "peak_bytes"),
    "mmap private memory": ("amber mmap", "private_bytes", "pickle", "peak_bytes"),
    "auto size": ("amber auto", "size", "pickle", "size"),
    "auto load": ("amber auto", "load_s", "pickle", "load_s"),
}


def _value(field: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{_ms(v)} ms" if field.endswith("_s") else _bytes(int(v))


def judge(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    out = []
    for label, key, models, bound in TARGETS:
        for name in models or tuple(results):
            if name not in results:
                continue
            rows = results[name]["rows"]
            r = ratios(rows)[key]
            strict = "<" in label and "<=" not in label
            if r is None:
                verdict = "n/a"
            else:
                verdict = "PASS" if (r < bound if strict else r <= bound) else "MISS"
            goal = f"{'<' if strict else '<='} {bound:g}x"
            ma, fa, mb, fb = _OPERANDS[key]
            shown = f"{r:.4f}x" if r is not None and 0.99 < r < 1.01 else _x(r)
            measured = f"{shown} ({_value(fa, rows[ma].get(fa))} / {_value(fb, rows[mb].get(fb))})"
            out.append((label, name, measured, goal, verdict))
    return out


def render(results: dict[str, Any], info: dict[str, Any], args: argparse.Namespace) -> str:
    lines: list[str] = []
    add = lines.append
    mode = "quick (small models: a smoke run, not the benchmark)" if args.quick else "full"
    add("# Amber persistence benchmark")
    add("")
    add(f"- date: {info['date']}; mode: {mode}; load repeats: {args.repeats}")
    add(f"- machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
        f"{info['ram']} RAM; {info['os']}")  # fmt: skip
    add(f"- python {info['python']}; " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    add(f"- amber commit: {info['commit']}; amber.security unpickler: {info['security']}")
    add(f"- model files in {info['workdir_fs']}; run took {info['elapsed']:.0f} s; load average "
        f"(1 min) {info['load_before']:.2f} before, {info['load_after']:.2f} after (other "
        f"processes on the machine make times noisier)")  # fmt: skip
    add("")
    add("## Models")
    add("")
    add("| model | what |")
    add("|---|---|")
    for name, res in results.items():
        add(f"| {name} | {res['description']} |")
    add("")
    add("## Results")
    add("")
    add(
        "Times in milliseconds. *load* is the median of the warm loads in the worker (page cache "
        "warm: each file was just written and read through); *1st load* is the first load in "
        "the fresh worker process. *peak* is the growth of the RSS high-water mark over the "
        "first load and a pass that reads every page of every array of the loaded model; "
        "*private* and *file* split the RSS growth at the end of that pass into anonymous "
        "memory and pages of a mapped file (the shared page cache)."
    )
    add("")
    cols = ("save ms", "load ms", "1st load ms", "size", "peak", "private", "file", "check")
    add("| model | method | " + " | ".join(cols) + " |")
    add("|---|---|--:|--:|--:|--:|--:|--:|--:|---|")
    for name, res in results.items():
        for method in METHODS:
            row = res["rows"][method]
            save = "(same file)" if method == "amber mmap" else _ms(row.get("save_s"))
            if "error" in row and "load_s" not in row:
                error = row["error"].replace("|", "/")
                error = error if len(error) <= 200 else error[:197] + "..."
                add(f"| {name} | {method} | {save} | n/a | n/a | {_bytes(row.get('size'))} | "
                    f"n/a | n/a | n/a | error: {error} |")  # fmt: skip
                continue
            add(
                f"| {name} | {method} | {save} | {_ms(row['load_s'])} | "
                f"{_ms(row['first_load_s'])} | {_bytes(row.get('size'))} | "
                f"{_bytes(row['peak_bytes'])} | {_bytes(row['private_bytes'])} | "
                f"{_bytes(row['file_bytes'])} | {row['check']} |"
            )
    add("")
    add("## Amber against the others")
    add("")
    add(
        'Ratios below 1 favour Amber. *auto* is `compress="auto"`; *mmap* is `mmap=True`. '
        "*load* compares the medians of the warm loads (the targets' measure); *fresh load* "
        f"the medians of the first load in {args.fresh} fresh processes each, interleaved "
        "with pickle's (the load a process that loads its model once pays)."
    )
    add("")
    keys = (
        "save", "load", "fresh load", "mmap load", "mmap fresh load", "size", "peak memory",
        "load vs skops", "auto size", "auto load",
    )  # fmt: skip
    heads = (
        "save / pickle", "load / pickle", "fresh load / pickle", "mmap load / pickle",
        "mmap fresh load / pickle", "size / pickle", "peak mem / pickle", "load / skops",
        "auto size / pickle", "auto load / pickle",
    )  # fmt: skip
    add("| model | " + " | ".join(heads) + " |")
    add("|---|" + "--:|" * len(heads))
    for name, res in results.items():
        r = ratios(res["rows"])
        add(f"| {name} | " + " | ".join(_x(r[k]) for k in keys) + " |")
    add("")
    add("## Targets")
    add("")
    add("| target | model | measured | goal | result |")
    add("|---|---|--:|--:|---|")
    verdicts = judge(results)
    for label, name, measured, goal, verdict in verdicts:
        add(f"| {label} | {name} | {measured} | {goal} | **{verdict}** |")
    passed = sum(v[-1] == "PASS" for v in verdicts)
    add("")
    add(f"{passed} of {len(verdicts)} targets pass.")
    add("")
    add("## How it is measured")
    add("")
    trusted = {n: r["trusted"] for n, r in results.items() if r["trusted"]}
    spawn = (
        "forked from a template process that has only imported the libraries"
        if args.spawn == "fork"
        else "a new interpreter"
    )
    notes = [
        "Saves run in the benchmark process, each into a fresh file: pickle's and Amber's "
        "alternate, 7 runs each, and the others follow, 5 runs each (fewer when a save takes "
        "seconds); each gets the median of its runs. "
        "pickle, cloudpickle (protocol 5), joblib and skops are followed by an `fsync` of the "
        "file and one of its folder, so that every save is durable (a new file's name is only "
        "durable once its folder is synced); `amber.save` writes a temporary file, fsyncs it, "
        "renames it and fsyncs the folder. Amber saves without a probe (`sample=None`).",
        f"Each (model, method) is loaded in its own fresh process ({spawn}), which first "
        "imports the loading library and the modules the model's pickle names, so imports "
        "count neither in the times nor in the memory; the pages of library files it has "
        "mapped are populated before the baseline (`MADV_POPULATE_READ`), so that code paged in "
        "by the first call does not count as load memory. skops loads with "
        "`trusted=skops.io.get_untrusted_types(file=...)`, computed once before timing, as a "
        "user would review the list once.",
        "Memory: the RSS high-water mark (`VmHWM`) is reset to the current RSS at the baseline "
        "(`/proc/self/clear_refs`), then read after loading and touching. `ru_maxrss` is not "
        "used: Linux carries it across `exec`, so a worker started by this (large) process "
        "would report the parent's peak.",
        "For `mmap=True` the arrays are read-only views of the file. Their pages count in RSS "
        "once touched (Amber's load reads every entry to check its xxh3 checksum, and the "
        "touching pass reads every array), but as *file* pages: they belong to the page cache, "
        "are shared by every process that maps the same file, and the kernel can drop and "
        "re-read them under memory pressure. *private* is what the process holds for itself; "
        "the mmap memory target compares that with pickle's peak.",
        "Memory growth of less than a few MB is approximate: the allocator reuses memory the "
        "process freed before the baseline, and the RSS counts pages of 4 kB.",
        "*check* compares the loaded model's predictions on a few inputs with the original's "
        "(exact equality).",
    ]
    codecs = {
        n: ", ".join(f"{c} x{k}" for c, k in sorted(r["rows"]["amber auto"]["codecs"].items()))
        for n, r in results.items()
        if r["rows"]["amber auto"].get("codecs")
    }
    if codecs:
        notes.append(
            '`compress="auto"` picks a codec per entry by timing it on a sample, so the choice '
            "can vary from save to save (and with the machine's load); the loaded files held: "
            + "; ".join(f"{n}: {c}" for n, c in codecs.items())
        )
    if trusted:
        notes.append(
            "Amber reported types outside its allowlist and was loaded with `trusted=` them: "
            + "; ".join(f"{n}: {', '.join(t)}" for n, t in trusted.items())
        )
    lines.extend(f"- {n}" for n in notes)
    add("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    names = list(results)
    others = [m for m in METHODS if m != "pickle"]
    panels = (
        ("load time / pickle (warm page cache)", "load_s"),
        ("save time / pickle (+fsync of file and folder)", "save_s"),
        ("file size / pickle", "size"),
        ("peak load memory / pickle", "peak_bytes"),
    )
    fig, axes = plt.subplots(2, 2, figsize=(15, 9), constrained_layout=True)
    width = 0.8 / len(others)
    colors = plt.get_cmap("tab10").colors
    for ax, (title, key) in zip(axes.flat, panels, strict=True):
        x = np.arange(len(names))
        for i, method in enumerate(others):
            if key == "save_s" and method == "amber mmap":
                continue
            vals = []
            for name in names:
                rows = results[name]["rows"]
                r = _ratio(rows[method].get(key), rows["pickle"].get(key))
                vals.append(r if r is not None and 0 < r < float("inf") else np.nan)
            heights = [v - 1.0 for v in vals]  # bars grow from 1 (as fast as pickle), up or down
            ax.bar(x + (i - len(others) / 2 + 0.5) * width, heights, width, bottom=1.0,
                   label=method, color=colors[i % len(colors)])  # fmt: skip
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(x, names)
        ax.set_title(title)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes.flat[0].legend(ncol=2, fontsize=8)
    fig.suptitle(
        "Amber vs pickle, joblib, cloudpickle, skops: ratio to pickle protocol 5 (lower is better)"
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(HERE.parent), "status", "--porcelain", "amber"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stdout.strip() + (" (amber/ has uncommitted changes)" if dirty.stdout else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    default_spawn = "fork" if sys.platform.startswith("linux") else "exec"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="small models, 2 repeats (under a minute)")
    add("--models", default=",".join(MODELS), help=f"a subset of {','.join(MODELS)}")
    add("--repeats", type=int, default=None, help="timed loads per job (default 5, --quick 2)")
    add(
        "--fresh",
        type=int,
        default=None,
        help=f"first loads in fresh processes for {', '.join(FRESH_METHODS)}, interleaved "
        "(default 7, --quick 2)",
    )
    add("--out", type=Path, default=HERE / "results", help="where persist.md/.png go")
    add("--workdir", type=Path, default=None, help="where model files go (default: a temp dir)")
    add(
        "--spawn",
        choices=("fork", "exec"),
        default=default_spawn,
        help="how each load job gets a fresh process: forked from a template that imported the "
        "libraries (default on Linux), or a new interpreter",
    )
    args = parser.parse_args(argv)
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODELS]
    if unknown or not chosen:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    args.models = chosen
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.fresh is None:
        args.fresh = 2 if args.quick else 7
    if args.fresh < 1:
        parser.error("--fresh must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="amber-bench-", dir=args.workdir))
    security = security_modules()
    commit = _commit()  # at the start: others may commit while it runs
    log(f"amber.security unpickler: {security}; model files in {workdir}")
    results: dict[str, Any] = {}
    workers = Workers(args.spawn)
    try:
        workers.start()  # the template starts while this process is still small
        warm_up(workdir)
        for name in args.models:
            built_at = time.perf_counter()
            results[name] = run_model(name, args, workdir, workers)
            for f in workdir.glob(f"{name}.*"):
                f.unlink()
            log(f"[{name}] done in {time.perf_counter() - built_at:.0f} s")
    finally:
        workers.close()
        shutil.rmtree(workdir, ignore_errors=True)
    info = machine_info(DISTRIBUTIONS)
    info.update(
        date=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        commit=commit, security=security, elapsed=time.perf_counter() - started,
        workdir_fs=str(workdir.parent), load_before=load_before,
        load_after=os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
    )  # fmt: skip
    report = render(results, info, args)
    (args.out / "persist.md").write_text(report)
    (args.out / "persist.json").write_text(json.dumps({"info": info, "results": results}, indent=1))
    plot(results, args.out / "persist.png")
    print(report)
    log(f"wrote {args.out / 'persist.md'} and {args.out / 'persist.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
