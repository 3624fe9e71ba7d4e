"""Registry benchmark: what a registry costs on top of plain files, and how it scales.

1. Push then load of a ~100 MB model through the embedded registry (folder + SQLite), against
   ``amber.save`` + ``amber.load`` of the same model to a plain file (target: within 1.3x).
2. ``versions()`` and alias resolution with 10,000 versions in the SQLite catalog (target: under
   5 ms), for one model holding all of them and for 100 models of 100 versions. ``versions()``
   is timed twice: called again on an unchanged model (the list kept under the model's
   revision), and right after another writer changed the model (the list built again).
3. 8 processes pushing the same name at once: every version present, none duplicated; pushes
   per second.

Usage::

    .venv/bin/python benchmarks/registry.py            # writes benchmarks/results/registry.md
    .venv/bin/python benchmarks/registry.py --quick    # small sizes, for a smoke test

Run as ``registry.py --pusher ...`` it is one of the concurrent pushers of part 3.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


# -- 1. push + load vs save + load ---------------------------------------------------------------
def bench_roundtrip(work: Path, megabytes: int, repeats: int) -> list[tuple[str, str]]:
    import numpy as np
    from sklearn.preprocessing import StandardScaler

    import amber
    from amber.registry import Registry

    features = megabytes * (1 << 20) // (3 * 8)  # mean_, var_ and scale_: float64 each
    model = StandardScaler().fit(np.random.default_rng(0).random((2, features)))
    plain = work / "plain.amber"
    reg = Registry(work / "registry")
    rows: dict[str, list[float]] = {k: [] for k in ("save", "load", "push", "rload")}
    for i in range(repeats + 1):  # the first round warms the page cache and imports
        t0 = time.perf_counter()
        amber.save(model, plain)
        t1 = time.perf_counter()
        amber.load(plain)
        t2 = time.perf_counter()
        v = reg.push("big", model)
        t3 = time.perf_counter()
        reg.load(f"models:/big/{v.version}")
        t4 = time.perf_counter()
        reg.delete("big", v.version)
        reg.gc(grace=0)
        if i:
            for key, dt in zip(rows, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                rows[key].append(dt * 1e3)
    size = plain.stat().st_size / 1e6
    med = {k: statistics.median(v) for k, v in rows.items()}
    base, registry = med["save"] + med["load"], med["push"] + med["rload"]
    reg.close()
    return [
        ("model", f"StandardScaler, {size:.0f} MB artifact (float64 arrays)"),
        ("amber.save + amber.load (plain file)", f"{med['save']:.0f} + {med['load']:.0f} ms"),
        ("reg.push + reg.load (folder + SQLite)", f"{med['push']:.0f} + {med['rload']:.0f} ms"),
        ("registry / plain (target <= 1.3x)", f"**{registry / base:.2f}x**"),
    ]


# -- 2. catalog queries at 10,000 versions ---------------------------------------------------------
def _fill(reg: Any, artifact: Path, layout: list[tuple[str, int]]) -> None:
    """Publish one real version per model, then copy its row (bulk SQL) up to ``count``."""
    import sqlalchemy as sa

    from amber.registry._schema import t

    for name, _ in layout:
        reg.push(name, artifact)
    with reg.catalog.engine.begin() as conn:
        for name, count in layout:
            (model_id,) = conn.execute(
                sa.select(t.models.c.id).where(t.models.c.name == name)
            ).one()
            first = (
                conn.execute(sa.select(t.versions).where(t.versions.c.model_id == model_id))
                .one()
                ._asdict()
            )
            first.pop("id")
            conn.execute(
                t.versions.insert(), [{**first, "version": v} for v in range(2, count + 1)]
            )
            conn.execute(
                t.models.update().where(t.models.c.id == model_id).values(next_version=count + 1)
            )
    for name, count in layout:
        reg.set_alias(name, "production", count // 2)
        reg.set_alias(name, "staging", count)


def _catalog_calls(reg: Any, name: str, count: int) -> dict[str, Callable[[], Any]]:
    return {
        f"versions('{name}') -> {count:,} rows": lambda: reg.versions(name),
        f"versions('{name}', limit=100)": lambda: reg.versions(name, limit=100),
        f"get('models:/{name}@production')": lambda: reg.get(f"models:/{name}@production"),
        f"get('models:/{name}/latest')": lambda: reg.get(f"models:/{name}/latest"),
        f"get('models:/{name}/{count // 3}')": lambda: reg.get(f"models:/{name}/{count // 3}"),
    }


def bench_catalog(work: Path, total: int, repeats: int) -> list[tuple[str, str]]:
    from sklearn.preprocessing import StandardScaler

    import amber
    from amber.registry import Registry

    artifact = work / "small.amber"
    amber.save(StandardScaler().fit([[0.0, 1.0], [1.0, 0.0]]), artifact)
    rows = []
    for label, layout in (
        (f"1 model x {total:,} versions", [("one", total)]),
        (
            f"100 models x {total // 100:,} versions",
            [(f"m{i:03d}", total // 100) for i in range(100)],
        ),
    ):
        folder = work / label.replace(" ", "_")
        with Registry(folder) as reg:
            _fill(reg, artifact, layout)
            name, count = layout[len(layout) // 2]
            reg.versions(name)  # warm the connection pool and SQLite's page cache
            timings = _catalog_calls(reg, name, count)
            for what, fn in timings.items():
                rows.append((f"{label}: {what}", f"{_median_ms(fn, repeats):.2f} ms"))
            after = _listing_after_changes(reg, name, count, max(5, repeats // 5), artifact)
            rows += [(f"{label}: {what}", result) for what, result in after]
    return rows


def _listing_after_changes(
    reg: Any, name: str, count: int, repeats: int, artifact: Path
) -> list[tuple[str, str]]:
    """``versions()`` when the list ``reg`` keeps is stale: a second Registry object (as another
    process would) moves an alias, or pushes a version, before each timed call; and the first
    call of a newly opened Registry, which reads the whole list."""
    from amber.registry import Registry

    changes: dict[str, Callable[[Any, int], Any]] = {
        "another writer moved an alias": lambda w, i: w.set_alias(name, "canary", 1 + i % count),
        "another writer pushed a version": lambda w, i: w.push(name, artifact),
    }
    rows = []
    with Registry(reg.location) as writer:
        for what, change in changes.items():
            times = []
            for i in range(repeats):
                change(writer, i)
                t0 = time.perf_counter()
                reg.versions(name)
                times.append(time.perf_counter() - t0)
            ms = statistics.median(times) * 1e3
            rows.append((f"versions('{name}') after {what}", f"{ms:.2f} ms"))
    times = []
    for _ in range(repeats):
        with Registry(reg.location) as fresh:
            fresh.get(f"models:/{name}/latest")  # connect first: time the listing alone
            t0 = time.perf_counter()
            fresh.versions(name)
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    rows.append((f"versions('{name}'), first call of a new Registry (reads all)", f"{ms:.2f} ms"))
    return rows


# -- 3. concurrent pushers -------------------------------------------------------------------------
def pusher(location: str, name: str, go: str, out: str, files: list[str]) -> None:
    from amber.registry import Registry

    reg = Registry(location)
    reg.models()
    Path(out + ".ready").touch()
    while not os.path.exists(go):
        time.sleep(0.001)
    start = time.time()
    versions = [reg.push(name, f).version for f in files]
    Path(out).write_text(json.dumps({"versions": versions, "start": start, "end": time.time()}))


def bench_concurrent(work: Path, procs: int, per_proc: int) -> list[tuple[str, str]]:
    from sklearn.preprocessing import StandardScaler

    import amber

    location = work / "concurrent"
    files = []
    for i in range(procs * per_proc):  # distinct small artifacts: every push stores a blob
        path = work / f"p{i}.amber"
        amber.save(StandardScaler().fit([[float(i), 1.0], [0.0, 2.0]]), path)
        files.append(str(path))
    from amber.registry import Registry

    location.mkdir()
    Registry(location).catalog.migrate()
    go = str(work / "go")
    outs = [str(work / f"out{i}.json") for i in range(procs)]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--pusher",
                str(location),
                "m",
                go,
                out,
                *files[i * per_proc : (i + 1) * per_proc],
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for i, out in enumerate(outs)
    ]
    while not all(os.path.exists(o + ".ready") for o in outs):
        time.sleep(0.01)
    Path(go).touch()
    for child in children:
        if child.wait(timeout=600) != 0:
            raise SystemExit(f"a pusher failed with exit status {child.returncode}")
    results = [json.loads(Path(o).read_text()) for o in outs]
    got = sorted(v for r in results for v in r["versions"])
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    n = procs * per_proc
    with Registry(location) as reg:
        listed = [v.version for v in reg.versions("m")]
    ok = got == list(range(1, n + 1)) and listed == got
    return [
        (f"{procs} processes x {per_proc} pushes, one name", f"{n} pushes in {wall:.2f} s"),
        ("pushes per second (all processes)", f"**{n / wall:.0f}/s**"),
        ("versions: all present, none duplicated", "yes" if ok else f"NO: {got}"),
    ]


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--pusher":
        location, name, go, out, *files = argv[1:]
        pusher(location, name, go, out, files)
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    megabytes, repeats, total, procs, per_proc = (
        (4, 2, 500, 2, 2) if args.quick else (100, 5, 10_000, 8, 5)
    )
    work = Path(tempfile.mkdtemp(prefix="amber-registry-bench-"))
    try:
        sections = [
            ("Push + load vs save + load", bench_roundtrip(work, megabytes, repeats)),
            (f"Catalog queries at {total:,} versions (SQLite)", bench_catalog(work, total, 50)),
            ("Concurrent pushers (folder + SQLite)", bench_concurrent(work, procs, per_proc)),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import platform

    lines = [
        "# Registry benchmark",
        "",
        f"`benchmarks/registry.py{' --quick' if args.quick else ''}` on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; medians.",
        "",
    ]
    for title, rows in sections:
        lines += [f"## {title}", "", "| measure | result |", "|---|---|"]
        lines += [f"| {a} | {b} |" for a, b in rows]
        lines.append("")
    report = "\n".join(lines)
    print(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ("registry-quick.md" if args.quick else "registry.md")).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
