"""Load benchmark of ``amber serve`` against MLflow, BentoML and a bare hand-written endpoint.

Everything runs on this machine over loopback: the servers (one worker each) and the load
generator, wrk (one thread, installed from Debian's packages if missing and root; otherwise a
Python asyncio generator, and the report says which). Workloads: an iris SVC pipeline with one
row per request, and a 100-tree random forest with 1 and 100 rows per request, each at
concurrency 1, 8 and 64. Also: cold start (process start to the first correct answer) and idle
memory (resident set of the server's process tree after start-up). All servers of a model run at
once and are measured cell by cell in turn, so that other load on the machine hits them alike.

Servers:

- ``amber``: ``amber serve`` with its defaults (validation, metrics, access log to a file,
  micro-batching chosen by measurement at load);
- ``amber-nobatch``: the same with ``--batching off`` (shows what batching buys at c=64);
- ``bare``: the endpoint a user would write by hand: Starlette + uvicorn (uvloop, httptools) +
  orjson, one route calling ``predict``; no validation, no metrics (written by this script);
- ``mlflow``: ``mlflow models serve --env-manager local`` on an MLflow model of the same object;
- ``bentoml`` and ``bentoml-batch``: a BentoML service, plain and ``batchable=True``.

MLflow and BentoML are installed into side virtual environments under
``benchmarks/results/venvs/`` (never into the project's); if that fails, the report says what
failed and the rest still runs. ``--frameworks`` adds the measurement behind Amber's choice of
Starlette: the bare endpoint's route in FastAPI, and in FastAPI with a pydantic body.

Usage::

    .venv/bin/python benchmarks/serve.py            # 15 s per cell, 1 pass
    .venv/bin/python benchmarks/serve.py --quick    # 3 s per cell, amber and bare only
    .venv/bin/python benchmarks/serve.py --passes 3 --frameworks

Writes ``benchmarks/results/serve.md`` (tables and targets), ``serve.json`` and ``serve.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = RESULTS / "serve-work"
VENVS = RESULTS / "venvs"
PY = sys.executable
CONCURRENCY = (1, 8, 64)
WORKLOADS = (("iris-svc", 1), ("rf100", 1), ("rf100", 100))
SIDE_ENVS = {
    "mlflow": ["mlflow==3.17.2", "scikit-learn==1.9.1"],
    "bentoml": ["bentoml==1.4.40", "scikit-learn==1.9.1"],
}
SERVERS = ("amber", "amber-nobatch", "bare", "mlflow", "bentoml", "bentoml-batch")


# -- models and payloads ------------------------------------------------------------------------
def make_models(work: Path) -> dict[str, Any]:
    """Train the two models, save them as .amber and as joblib pickles; payload rows."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_iris, make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    import amber

    work.mkdir(parents=True, exist_ok=True)
    X, y = load_iris(return_X_y=True)
    iris = make_pipeline(StandardScaler(), SVC()).fit(X, y)
    Xr, yr = make_classification(n_samples=2000, n_features=20, random_state=0)
    rf = RandomForestClassifier(n_estimators=100, random_state=0).fit(Xr, yr)
    out: dict[str, Any] = {}
    for name, model, data in (("iris-svc", iris, X), ("rf100", rf, Xr)):
        amber.save(model, work / f"{name}.amber", sample=data[:32])
        joblib.dump(model, work / f"{name}.joblib")
        rng = np.random.default_rng(1)
        rows = data[rng.integers(0, len(data), 100)]
        out[name] = {
            "amber": str(work / f"{name}.amber"),
            "joblib": str(work / f"{name}.joblib"),
            "rows": rows.tolist(),
            "expected": model.predict(rows).tolist(),
            "features": int(data.shape[1]),
        }
    return out


def payload(server: str, model: str, rows: list[list[float]]) -> tuple[str, bytes]:
    """The URL path and JSON body each server expects for ``rows``."""
    if server.startswith("amber"):
        flat = [v for r in rows for v in r]
        body = {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [len(rows), len(rows[0])],
                    "datatype": "FP64",
                    "data": flat,
                }
            ]
        }
        return f"/v2/models/{model}/infer", json.dumps(body).encode()
    if server == "mlflow":
        return "/invocations", json.dumps({"inputs": rows}).encode()
    if server.startswith("bentoml"):
        return "/predict", json.dumps({"input": rows}).encode()
    return "/predict", json.dumps({"inputs": rows}).encode()


def predictions(server: str, body: bytes) -> list[Any]:
    data = json.loads(body)
    if server.startswith("amber"):
        return list(data["outputs"][0]["data"])
    if isinstance(data, dict):
        return list(data["predictions"])
    return list(data)


# -- side environments --------------------------------------------------------------------------
def ensure_env(name: str, log: list[str]) -> Path | None:
    """A virtual environment with ``SIDE_ENVS[name]`` (created once); None if it cannot be."""
    env = VENVS / name
    python = env / "bin" / "python"
    module = name
    if python.exists():
        ok = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True)
        if ok.returncode == 0:
            return env
    log.append(f"creating the {name} side environment: pip install {' '.join(SIDE_ENVS[name])}")
    VENVS.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([PY, "-m", "venv", "--clear", str(env)], capture_output=True, text=True)
    if made.returncode != 0:
        log.append(f"{name}: python -m venv failed: {made.stderr.strip()[-500:]}")
        return None
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *SIDE_ENVS[name]],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if pip.returncode != 0:
        lines = [ln for ln in pip.stderr.splitlines() if "is ignored" not in ln]
        log.append(f"{name}: pip install failed: {' | '.join(lines[-6:])}")
        return None
    return env


def mlflow_model(env: Path, joblib_path: str, rows: list[list[float]], target: Path) -> Path:
    """Save the same fitted object as an MLflow model (inside the MLflow environment), pickled
    with cloudpickle as MLflow long did by default (its newer skops format refuses trees)."""
    if (target / "MLmodel").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    code = textwrap.dedent(f"""
        import joblib, numpy as np, mlflow.sklearn
        model = joblib.load({joblib_path!r})
        mlflow.sklearn.save_model(
            model, {str(target)!r}, input_example=np.asarray({rows[:5]!r}),
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        )
    """)
    done = subprocess.run([str(env / "bin" / "python"), "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"saving the MLflow model failed: {done.stderr.strip()[-800:]}")
    return target


BARE_APP = '''\
"""The endpoint a user writes by hand: one route calling predict (no validation, no metrics)."""
import os

import joblib
import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

MODEL = joblib.load(os.environ["BARE_MODEL"])


async def predict(request):
    x = np.asarray(orjson.loads(await request.body())["inputs"], dtype=np.float64)
    return Response(orjson.dumps({"predictions": MODEL.predict(x).tolist()}),
                    media_type="application/json")


app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
'''

BENTO_APP = """\
import os

import bentoml
import joblib
import numpy as np

MODEL = joblib.load(os.environ["BENTO_MODEL"])


@bentoml.service(workers=1, traffic={{"timeout": 120}})
class Svc:
    @bentoml.api(batchable={batch}, max_batch_size=128, max_latency_ms=1000)
    def predict(self, input: np.ndarray) -> np.ndarray:
        return MODEL.predict(input)
"""

FRAMEWORK_APPS = {
    "starlette": BARE_APP,
    "fastapi": """\
import os

import joblib
import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

MODEL = joblib.load(os.environ["BARE_MODEL"])
app = FastAPI()


@app.post("/predict")
async def predict(request: Request):
    x = np.asarray(orjson.loads(await request.body())["inputs"], dtype=np.float64)
    return Response(orjson.dumps({"predictions": MODEL.predict(x).tolist()}),
                    media_type="application/json")
""",
    "fastapi-pydantic": """\
import os

import joblib
import numpy as np
from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
from pydantic import BaseModel

MODEL = joblib.load(os.environ["BARE_MODEL"])
app = FastAPI()


class Body(BaseModel):
    inputs: list[list[float]]


@app.post("/predict")
async def predict(body: Body):
    return ORJSONResponse({"predictions": MODEL.predict(np.asarray(body.inputs)).tolist()})
""",
}


# -- running servers ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    started: float
    cold_start_s: float | None = None
    idle_rss_mb: float | None = None
    log: Path | None = None


def command(
    server: str, model: str, models: dict[str, Any], port: int, envs: dict[str, Path]
) -> tuple[list[str], dict[str, str], Path]:
    """The command line, environment and working folder that start ``server``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    info = models[model]
    host = ["--host", "127.0.0.1", "--port", str(port)]
    if server.startswith("amber"):
        cmd = [PY, "-m", "amber", "serve", f"{model}={info['amber']}", *host]
        if server == "amber-nobatch":
            cmd += ["--batching", "off"]
        return cmd, env, WORK
    if server in FRAMEWORK_APPS or server == "bare":
        app = "starlette" if server == "bare" else server
        module = f"app_{app.replace('-', '_')}"
        (WORK / f"{module}.py").write_text(FRAMEWORK_APPS[app])
        env["BARE_MODEL"] = info["joblib"]
        cmd = [
            PY,
            "-m",
            "uvicorn",
            f"{module}:app",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            *host,
        ]
        return cmd, env, WORK
    if server == "mlflow":
        mdir = mlflow_model(envs["mlflow"], info["joblib"], info["rows"], WORK / f"mlflow-{model}")
        mlflow = str(envs["mlflow"] / "bin" / "mlflow")
        env["PATH"] = f"{envs['mlflow'] / 'bin'}{os.pathsep}{env['PATH']}"
        env["MLFLOW_TRACKING_URI"] = f"file://{WORK / 'mlruns'}"
        cmd = [
            mlflow,
            "models",
            "serve",
            "-m",
            str(mdir),
            "--env-manager",
            "local",
            "-w",
            "1",
            *host,
        ]
        return cmd, env, WORK
    batch = server == "bentoml-batch"
    module = f"bento_{'batch' if batch else 'plain'}"
    (WORK / f"{module}.py").write_text(BENTO_APP.format(batch=batch))
    env["BENTO_MODEL"] = info["joblib"]
    env["BENTOML_HOME"] = str(WORK / "bentoml-home")
    env["BENTOML_DO_NOT_TRACK"] = "true"
    bentoml = str(envs["bentoml"] / "bin" / "bentoml")
    return [bentoml, "serve", f"{module}:Svc", *host], env, WORK


def post(port: int, path: str, body: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def tree_rss_mb(pid: int) -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 1e6
    except psutil.Error:
        return None


def start(
    server: str, model: str, models: dict[str, Any], envs: dict[str, Path], timeout: float = 180.0
) -> Running:
    """Start ``server`` and wait for its first correct answer (that time is the cold start)."""
    port = free_port()
    cmd, env, cwd = command(server, model, models, port, envs)
    log = WORK / f"{server}-{model}.log"
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    run = Running(server, proc, port, started, log=log)
    path, body = payload(server, model, models[model]["rows"][:1])
    expected = models[model]["expected"][:1]
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{server} exited ({proc.returncode}); see {log}")
        try:
            status, answer = post(port, path, body, timeout=10)
        except (OSError, urllib.error.URLError):
            time.sleep(0.02)
            continue
        if status == 200:
            got = predictions(server, answer)
            if got != expected:
                raise RuntimeError(f"{server} answered {got}, expected {expected}")
            run.cold_start_s = time.perf_counter() - started
            break
        time.sleep(0.02)
    else:
        stop(run)
        raise RuntimeError(f"{server} gave no correct answer within {timeout:.0f} s; see {log}")
    time.sleep(2.0)
    run.idle_rss_mb = tree_rss_mb(proc.pid)
    path, body = payload(server, model, models[model]["rows"])
    status, answer = post(port, path, body, timeout=60)
    if status != 200 or predictions(server, answer) != models[model]["expected"]:
        raise RuntimeError(f"{server} answered 100 rows wrongly ({status}: {answer[:200]!r})")
    return run


def stop(run: Running) -> None:
    if run.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.proc.pid, signal.SIGTERM)
        try:
            run.proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()


# -- load generation ----------------------------------------------------------------------------
LUA = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT {{\\"requests\\":%d,\\"us\\":%d,\\"p50\\":%d,\\"p99\\":%d," ..
    "\\"errors\\":%d,\\"non2xx\\":%d}}\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def find_wrk(log: list[str]) -> str | None:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        log.append("wrk missing: apt-get install -y wrk")
        for args in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "wrk"]):
            subprocess.run(args, capture_output=True, timeout=600)
        wrk = shutil.which("wrk")
    if not wrk:
        log.append("wrk could not be installed: using the Python asyncio load generator")
    return wrk


def run_wrk(wrk: str, port: int, path: str, body: bytes, conns: int, seconds: float) -> dict:
    script = WORK / "post.lua"
    script.write_text(LUA.format(body=body.decode()))
    out = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{conns}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    r = json.loads(line[len("RESULT ") :])
    return {
        "rps": r["requests"] / (r["us"] / 1e6),
        "p50_ms": r["p50"] / 1000,
        "p99_ms": r["p99"] / 1000,
        "errors": r["errors"] + r["non2xx"],
    }


async def _py_load(port: int, path: str, body: bytes, conns: int, seconds: float) -> dict:
    """Closed-loop HTTP/1.1 keep-alive clients on raw asyncio streams (the wrk fallback)."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(conns)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "errors": errors,
    }


def measure(wrk: str | None, port: int, path: str, body: bytes, conns: int, secs: float) -> dict:
    if wrk:
        return run_wrk(wrk, port, path, body, conns, secs)
    return asyncio.run(_py_load(port, path, body, conns, secs))


# -- the run ------------------------------------------------------------------------------------
@dataclass
class Report:
    cells: dict[str, dict[str, Any]] = field(default_factory=dict)  # key "server|workload|c"
    startup: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def _median_cell(samples: list[dict]) -> dict:
    out = {k: statistics.median(s[k] for s in samples) for k in ("rps", "p50_ms", "p99_ms")}
    out["errors"] = sum(s["errors"] for s in samples)
    out["rps_range"] = [min(s["rps"] for s in samples), max(s["rps"] for s in samples)]
    return out


def bench_model(
    model: str,
    servers: list[str],
    models: dict[str, Any],
    envs: dict[str, Path],
    wrk: str | None,
    args: argparse.Namespace,
    report: Report,
) -> None:
    """Start every server on ``model`` (one after the other: cold start, idle memory), then
    measure them cell by cell, taking turns, so a change in the machine's load hits all alike."""
    running: dict[str, Running] = {}
    # the first process to import a library pays for reading it from disk: not a server's cost
    subprocess.run(
        [
            PY,
            "-c",
            f"import amber.serving, uvicorn, joblib; joblib.load({models[model]['joblib']!r})",
        ],
        capture_output=True,
    )
    try:
        for server in servers:
            starts: list[Running] = []
            try:
                for _ in range(args.cold_starts):
                    if starts:
                        stop(starts[-1])
                    starts.append(start(server, model, models, envs))
            except Exception as exc:  # a server that cannot start is reported, the rest goes on
                report.notes.append(f"{server} on {model}: not measured: {exc}")
                print(f"  {server} {model}: FAILED {exc}", flush=True)
                if starts:
                    stop(starts[-1])
                continue
            running[server] = starts[-1]
            cold = statistics.median(r.cold_start_s or 0.0 for r in starts)
            rss = statistics.median(r.idle_rss_mb or 0.0 for r in starts)
            print(
                f"  {server:14} {model}: cold start {cold:.2f} s (median of {len(starts)}), "
                f"idle {rss:.0f} MB",
                flush=True,
            )
            report.startup[f"{server}|{model}"] = {
                "cold_start_s": cold,
                "idle_rss_mb": rss,
                "runs": [r.cold_start_s for r in starts],
            }
        for _, rows in (w for w in WORKLOADS if w[0] == model):
            bodies = {s: payload(s, model, models[model]["rows"][:rows]) for s in running}
            for server, run in running.items():  # warm-up
                measure(wrk, run.port, *bodies[server], 8, min(2.0, args.duration))
            for conns in CONCURRENCY:
                samples: dict[str, list[dict]] = {s: [] for s in running}
                for _ in range(args.passes):
                    for server, run in running.items():
                        samples[server].append(
                            measure(wrk, run.port, *bodies[server], conns, args.duration)
                        )
                for server, got in samples.items():
                    cell = _median_cell(got)
                    report.cells[f"{server}|{model}:{rows}|{conns}"] = cell
                    print(
                        f"  {server:14} {model}:{rows:<3} c={conns:<3} {cell['rps']:9.1f} req/s"
                        f"  p99 {cell['p99_ms']:8.1f} ms  errors {cell['errors']}",
                        flush=True,
                    )
    finally:
        for run in running.values():
            stop(run)


def render(report: Report, servers: list[str]) -> str:
    m = report.meta
    lines = [
        "# amber serve: load benchmark",
        "",
        f"- when: {m['when']}; machine: {m['machine']}; load average at start "
        f"{m['load_start']}, at end {m['load_end']}",
        f"- load generator: {m['generator']}; one server worker; {m['duration']} s per cell, "
        f"{m['passes']} pass(es) (median shown); loopback only",
        f"- versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}",
        "",
        "## Throughput (requests/s) and p99 latency",
        "",
        "| workload | server | c=1 | c=8 | c=64 | p50@64 ms | p99@64 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, rows in WORKLOADS:
        for server in servers:
            cells = [report.cells.get(f"{server}|{model}:{rows}|{c}") for c in CONCURRENCY]
            if not any(cells):
                continue
            rps = [f"{c['rps']:.0f}" if c else "-" for c in cells]
            last = cells[-1]
            errors = sum(c["errors"] for c in cells if c)
            lines.append(
                f"| {model}, {rows} row{'s' if rows > 1 else ''} | {server} | {' | '.join(rps)} | "
                f"{last['p50_ms']:.1f} | {last['p99_ms']:.1f} | {errors} |"
                if last
                else f"| {model}, {rows} rows | {server} | {' | '.join(rps)} | - | - | {errors} |"
            )
    lines += [
        "",
        "## Cold start and idle memory",
        "",
        "Cold start: process start to the first correct answer (median of the starts).",
        "",
        "| server | model | cold start s | idle RSS MB |",
        "|---|---|---:|---:|",
    ]
    for model in dict(WORKLOADS):
        for server in servers:
            s = report.startup.get(f"{server}|{model}")
            if s:
                rss = f"{s['idle_rss_mb']:.0f}" if s["idle_rss_mb"] else "?"
                lines.append(f"| {server} | {model} | {s['cold_start_s']:.2f} | {rss} |")
    lines += ["", "## Targets (shown, not asserted)", "", *targets(report)]
    if report.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in report.notes)]
    return "\n".join(lines) + "\n"


def targets(report: Report) -> list[str]:
    out = []
    cell = lambda s, w, c: report.cells.get(f"{s}|{w}|{c}")  # noqa: E731
    for model, rows in WORKLOADS:
        w = f"{model}:{rows}"
        pairs = [(cell("amber", w, c), cell("bare", w, c)) for c in CONCURRENCY]
        if all(a and b for a, b in pairs):
            ratio = ", ".join(
                f"c={c}: {a['rps'] / b['rps']:.2f}x"
                for c, (a, b) in zip(CONCURRENCY, pairs, strict=True)
            )
            ok = all(a["rps"] >= b["rps"] for a, b in pairs)
            out.append(f"- amber >= bare endpoint on {w}: {'yes' if ok else 'NO'} ({ratio})")
    a, m = cell("amber", "rf100:1", 64), cell("mlflow", "rf100:1", 64)
    if a and m:
        ok = a["rps"] >= 10 * m["rps"] and a["p99_ms"] < m["p99_ms"]
        out.append(
            f"- micro-batched 1-row RF at c=64 >= 10x MLflow with lower p99: "
            f"{'yes' if ok else 'NO'} ({a['rps'] / m['rps']:.1f}x; p99 {a['p99_ms']:.0f} "
            f"vs {m['p99_ms']:.0f} ms)"
        )
    a, n = cell("amber", "rf100:1", 64), cell("amber-nobatch", "rf100:1", 64)
    if a and n:
        out.append(
            f"- batching gain, 1-row RF at c=64: {a['rps'] / n['rps']:.1f}x "
            f"({n['rps']:.0f} -> {a['rps']:.0f} req/s)"
        )
    for fw in ("fastapi", "fastapi-pydantic"):
        for model, rows in WORKLOADS:
            w = f"{model}:{rows}"
            pairs = [(cell("bare", w, c), cell(fw, w, c)) for c in CONCURRENCY]
            if all(a and b for a, b in pairs):
                ratio = ", ".join(
                    f"c={c}: {a['rps'] / b['rps']:.2f}x"
                    for c, (a, b) in zip(CONCURRENCY, pairs, strict=True)
                )
                out.append(f"- framework: Starlette / {fw}, the same route, {w}: {ratio}")
    for model in dict(WORKLOADS):
        s, b = report.startup.get(f"amber|{model}"), report.startup.get(f"bare|{model}")
        if s:
            out.append(
                f"- cold start < 2 s, {model}: {'yes' if s['cold_start_s'] < 2 else 'NO'} "
                f"({s['cold_start_s']:.2f} s"
                + (f"; bare endpoint {b['cold_start_s']:.2f} s)" if b else ")")
            )
        if s and b and s["idle_rss_mb"] and b["idle_rss_mb"]:
            r = s["idle_rss_mb"] / b["idle_rss_mb"]
            out.append(
                f"- idle memory <= 1.5x bare, {model}: {'yes' if r <= 1.5 else 'NO'} ({r:.2f}x)"
            )
    return out


def plot(report: Report, servers: list[str], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        report.notes.append("matplotlib missing: no plot")
        return
    fig, axes = plt.subplots(1, len(WORKLOADS), figsize=(5 * len(WORKLOADS), 4.2), sharey=False)
    width = 0.8 / max(1, len(servers))
    for ax, (model, rows) in zip(axes, WORKLOADS, strict=True):
        for i, server in enumerate(servers):
            values = [
                (report.cells.get(f"{server}|{model}:{rows}|{c}") or {}).get("rps", 0)
                for c in CONCURRENCY
            ]
            xs = [j + i * width for j in range(len(CONCURRENCY))]
            ax.bar(xs, values, width, label=server)
        ax.set_xticks([j + width * (len(servers) - 1) / 2 for j in range(len(CONCURRENCY))])
        ax.set_xticklabels([f"c={c}" for c in CONCURRENCY])
        ax.set_yscale("log")
        ax.set_title(f"{model}, {rows} row{'s' if rows > 1 else ''} per request")
        ax.set_ylabel("requests / s (log)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def versions(envs: dict[str, Path]) -> dict[str, str]:
    from importlib.metadata import version

    out = {}
    for dist in ("amber", "starlette", "uvicorn", "scikit-learn"):
        with contextlib.suppress(Exception):
            out[dist] = version(dist)
    for name, env in envs.items():
        got = subprocess.run(
            [
                str(env / "bin" / "python"),
                "-c",
                f"import importlib.metadata as m; print(m.version({name!r}))",
            ],
            capture_output=True,
            text=True,
        )
        if got.returncode == 0:
            out[name] = got.stdout.strip()
    return out


@contextlib.contextmanager
def _section(title: str) -> Iterator[None]:
    print(f"== {title}", flush=True)
    yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s cells, amber and bare only")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per cell (15)")
    parser.add_argument("--passes", type=int, default=1, help="passes; the median is shown")
    parser.add_argument(
        "--cold-starts", type=int, default=3, help="starts per server; the median is shown (3)"
    )
    parser.add_argument("--servers", default=None, help=f"comma-separated subset of {SERVERS}")
    parser.add_argument(
        "--python-load",
        action="store_true",
        help="use the Python load generator even where wrk is installed",
    )
    parser.add_argument(
        "--frameworks",
        action="store_true",
        help="also measure Starlette vs FastAPI for the same route",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 3.0)
        args.cold_starts = 1
    servers = list(args.servers.split(",") if args.servers else SERVERS)
    if args.quick and not args.servers:
        servers = ["amber", "amber-nobatch", "bare"]
    if args.frameworks:
        servers += ["fastapi", "fastapi-pydantic"]  # "bare" is the Starlette one
    report = Report()
    report.meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "duration": args.duration,
        "passes": args.passes,
    }
    WORK.mkdir(parents=True, exist_ok=True)
    wrk = None if args.python_load else find_wrk(report.notes)
    report.meta["generator"] = (
        f"wrk ({subprocess.run([wrk, '-v'], capture_output=True, text=True).stdout.split()[1]}, "
        f"1 thread)"
        if wrk
        else "Python asyncio generator (wrk not used)"
    )
    with _section("models"):
        models = make_models(WORK)
    envs: dict[str, Path] = {}
    for name in ("mlflow", "bentoml"):
        if any(s.startswith(name) for s in servers):
            with _section(f"{name} side environment"):
                env = ensure_env(name, report.notes)
            if env is None:
                servers = [s for s in servers if not s.startswith(name)]
            else:
                envs[name] = env
    for model in dict.fromkeys(m for m, _ in WORKLOADS):
        with _section(model):
            bench_model(model, servers, models, envs, wrk, args, report)
    report.meta["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report.meta["versions"] = versions(envs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(report, servers, RESULTS / "serve.png")
    text = render(report, servers)
    (RESULTS / "serve.md").write_text(text)
    (RESULTS / "serve.json").write_text(
        json.dumps(
            {
                "meta": report.meta,
                "cells": report.cells,
                "startup": report.startup,
                "notes": report.notes,
            },
            indent=2,
        )
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
