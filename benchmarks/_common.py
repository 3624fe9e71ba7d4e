"""Helpers for the benchmarks: memory probes, machine facts, and the per-load worker process.

Run as a script this file is the worker of ``persist.py``, which runs each (model, method) load
job in a fresh process: a child forked from a template process that imported the libraries
(``python benchmarks/_common.py --serve``), or a new interpreter (``... _common.py JOB_JSON``).
The job imports what the loader and the model need, records a memory baseline, loads the file
once (timing it and measuring its peak memory), touches every array of the loaded model, times
``repeats`` more loads, and then checks the last model's predictions. The result is one JSON line.

Only the standard library is imported at module level, so that ``persist.py`` can import this
file cheaply.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import platform
import resource
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "MEMORY_FIELDS",
    "iter_arrays",
    "machine_info",
    "median",
    "memory_now",
    "reset_peak",
    "touch",
]

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MEMORY_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


# -- memory -------------------------------------------------------------------------------------
def memory_now() -> dict[str, int]:
    """Resident memory of this process in bytes.

    On Linux, from ``/proc/self/status``: ``VmRSS`` (all resident pages), ``VmHWM`` (its
    high-water mark), ``RssAnon`` (private, anonymous memory) and ``RssFile`` (file pages mapped
    into the process, which live in the shared page cache). Elsewhere only the high-water mark
    from ``getrusage`` is known.
    """
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in MEMORY_FIELDS:
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    if "VmHWM" not in out:  # not Linux: ru_maxrss is bytes on macOS, KiB elsewhere
        scale = 1 if sys.platform == "darwin" else 1024
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        out = {"VmHWM": peak, "VmRSS": peak}
    return out


def reset_peak() -> bool:
    """Reset this process's RSS high-water mark to its current RSS (Linux >= 4.0).

    Needed because ``ru_maxrss`` is inherited across ``exec``: a worker that the benchmark
    (holding gigabytes of fitted models) starts reports the parent's peak, not its own, and
    ``subprocess`` uses ``vfork`` so even the pre-exec copy is the parent's memory map.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def prefault_libraries() -> int:
    """Map in every page of every file this process maps now (code of the imported libraries).

    A forked child shares its template's memory but not the template's page-table entries for
    file mappings, so the first call into a library re-maps its code pages and they would count
    as "load memory"; a fresh interpreter likewise maps code pages the first time a function
    runs. Populating them before the baseline (``MADV_POPULATE_READ``, Linux >= 5.14) leaves
    only what the load itself allocates or maps. Returns the number of mappings populated.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        with open("/proc/self/maps") as f:
            maps = f.read().splitlines()
    except (OSError, AttributeError):
        return 0
    done = 0
    for line in maps:
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or not parts[5].startswith("/") or "r" not in parts[1]:
            continue  # anonymous memory, [heap], [stack], [vdso], unreadable
        start, end = (int(x, 16) for x in parts[0].split("-"))
        if madvise(start, end - start, _MADV_POPULATE_READ) == 0:
            done += 1
    return done


_MADV_POPULATE_READ = 22


# -- touching a loaded model --------------------------------------------------------------------
_ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None), type)


def iter_arrays(obj: Any) -> Iterator[Any]:
    """Every numpy array reachable from ``obj`` through attributes, containers and slots."""
    import numpy as np

    seen: set[int] = set()
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, _ATOMS) or id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            yield o
            if o.dtype.hasobject and o.size < 1_000_000:
                stack.extend(o.ravel().tolist())
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        else:
            d = getattr(o, "__dict__", None)
            if isinstance(d, dict):
                stack.extend(d.values())
            for slot in getattr(type(o), "__slots__", ()):
                if isinstance(slot, str) and hasattr(o, slot):
                    stack.append(getattr(o, slot))


def touch(obj: Any) -> int:
    """Read one byte of every page of every array of ``obj``; returns the bytes covered.

    For a memory-mapped load this faults in every page a reader of the model would need, so
    that the memory it reports is what using the model costs, not just what opening it costs.
    """
    import numpy as np

    total = 0
    sink = 0
    for a in iter_arrays(obj):
        if a.nbytes == 0 or a.dtype.hasobject:
            continue
        flat = a.ravel(order="K")  # a view when the array is contiguous in any order
        if not flat.flags.contiguous:
            flat = np.ascontiguousarray(flat)
        u = flat.view(np.uint8)
        sink += int(u[::PAGE].sum()) + int(u[-1])
        total += a.nbytes
    return total if sink >= 0 else -1


# -- facts about the machine --------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info(distributions: tuple[str, ...]) -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    ram = _ram_gib()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "ram": f"{ram:.1f} GiB" if ram else "unknown",
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "versions": {d: _version(d) for d in distributions},
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- the worker ---------------------------------------------------------------------------------
_METHOD_IMPORTS: dict[str, tuple[str, ...]] = {
    "amber": (
        "amber",
        "amber.handlers.sklearn",
        "amber.security._unpickler",
        "amber.security._scanner",
        "amber.security._allowlist",
        "amber.security._validators",
    ),
    "pickle": ("pickle",),
    "cloudpickle": ("cloudpickle",),
    "joblib": ("joblib", "joblib.numpy_pickle"),
    "skops": ("skops.io",),
}


def _loader(job: dict[str, Any]) -> Callable[[], Any]:
    method, path = job["method"], job["path"]
    family = job["family"]
    if family == "amber":
        import amber

        trusted = job.get("trusted") or None
        mmap = bool(job.get("mmap"))
        return lambda: amber.load(path, mmap=mmap, trusted=trusted)
    if family in ("pickle", "cloudpickle"):
        mod = importlib.import_module(family)

        def load_pickle() -> Any:
            with open(path, "rb") as f:
                return mod.load(f)

        return load_pickle
    if family == "joblib":
        import joblib

        return lambda: joblib.load(path)
    if family == "skops":
        import skops.io

        # The list of types to trust is made once, as a user reviews it once and writes it
        # into their code; it is not part of the timed load.
        types = skops.io.get_untrusted_types(file=path)
        return lambda: skops.io.load(path, trusted=types)
    raise ValueError(f"unknown method {method!r}")


def _check(model: Any, job: dict[str, Any]) -> str:
    import numpy as np

    if not job.get("check_X"):
        return "skipped"
    x = np.load(job["check_X"], allow_pickle=False)
    want = np.load(job["check_y"], allow_pickle=False)
    got = model.predict(x.tolist() if x.dtype.kind == "U" else x)
    return "ok" if np.array_equal(np.asarray(got), want) else "MISMATCH"


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    for name in (*_METHOD_IMPORTS[job["family"]], *job.get("modules", ())):
        with contextlib.suppress(ImportError):  # a module that moved: the load will say
            importlib.import_module(name)
    import numpy as np  # noqa: F401  (imported before the baseline, like every library)

    load = _loader(job)
    gc.collect()
    prefaulted = prefault_libraries()
    has_reset = reset_peak()
    base = memory_now()
    t0 = time.perf_counter()
    model = load()
    first = time.perf_counter() - t0
    after_load = memory_now()
    touched = touch(model)
    after = memory_now()
    result: dict[str, Any] = {
        "first_load_s": first,
        "peak_load_bytes": after_load["VmHWM"] - base["VmRSS"],
        "peak_bytes": after["VmHWM"] - base["VmRSS"],
        "private_bytes": after.get("RssAnon", 0) - base.get("RssAnon", 0),
        "file_bytes": after.get("RssFile", 0) - base.get("RssFile", 0),
        "touched_bytes": touched,
        "peak_exact": has_reset,
        "prefaulted_mappings": prefaulted,
        "baseline_rss_bytes": base["VmRSS"],
    }
    times: list[float] = []
    started = time.perf_counter()
    for _ in range(job["repeats"]):
        del model
        gc.collect(1)  # the young generations: any cycle a load made (a full pass costs 0.1 s)
        t0 = time.perf_counter()
        model = load()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - started > job.get("budget_s", 60.0) and len(times) >= 2:
            break
    result["load_times_s"] = times
    # Checked last, on the last model loaded: a prediction wakes the BLAS and OpenMP worker
    # threads, which then spin for a while on the other cores, and loads timed right after it
    # shared those cores with them (an MLP's mmap load, hashed on two threads: 11-13 ms instead
    # of 6-8; pickle's, on one thread, much less changed).
    result["check"] = _check(model, job)
    return result


def _safe_run(job: dict[str, Any]) -> dict[str, Any]:
    try:
        return run_job(job)
    except Exception as exc:  # reported, not hidden: the table shows the error
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def serve() -> int:
    """The template process: import every loader once, then fork one fresh child per job.

    Jobs arrive as JSON lines on stdin and results leave as JSON lines on stdout. Each child is
    a new process that has loaded nothing yet (the template only imported libraries), so its
    first load and its memory are those of a fresh process, without paying a second of
    interpreter start-up and scikit-learn import per job. Without ``fork`` each job gets
    ``python _common.py JOB`` instead (see :func:`run_isolated`).
    """
    for names in _METHOD_IMPORTS.values():
        for name in names:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
    with contextlib.suppress(ImportError):
        importlib.import_module("sklearn.base")
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: run the job, hand back one JSON document, exit at once
            os.close(read_end)
            code = 0
            try:
                signal.alarm(int(job.get("timeout_s", 1800)))
                payload = json.dumps(_safe_run(job)).encode()
                with os.fdopen(write_end, "wb") as out:
                    out.write(payload)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as inp:
            data = inp.read()
        _, status = os.waitpid(pid, 0)
        if data and os.waitstatus_to_exitcode(status) == 0:
            print(data.decode(), flush=True)
            continue
        code = os.waitstatus_to_exitcode(status)
        why = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        if code == -signal.SIGALRM:
            why += " (timed out)"
        print(json.dumps({"error": f"worker {why}"}), flush=True)
    return 0


def run_isolated(job: dict[str, Any]) -> int:
    """Run one job in this (fresh) process and print its result as one JSON line."""
    sys.stdout.write("\n" + json.dumps(_safe_run(job)) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.path[:0] = [str(Path(__file__).resolve().parents[1])]
    if sys.argv[1:] == ["--serve"]:
        raise SystemExit(serve())
    raise SystemExit(run_isolated(json.loads(sys.argv[1])))
