"""Smoke test of ``benchmarks/persist.py --quick``: it runs end to end and writes its outputs.

No timing is asserted: the numbers depend on the machine. The test checks that the report and
the plot exist and that the table has a row for every method of every model it was asked for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "persist.py"
METHODS = (
    "amber", "amber mmap", "amber auto", "pickle", "joblib", "joblib z3", "cloudpickle", "skops",
)  # fmt: skip

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("skops")
pytest.importorskip("cloudpickle")


def test_quick_benchmark_writes_table_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--models", "tiny,mlp", "--out", str(out),
         "--workdir", str(tmp_path / "files")],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ},
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "persist.md").read_text()
    png = out / "persist.png"
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for model in ("tiny", "mlp"):
        for method in METHODS:
            rows = [ln for ln in table.splitlines() if ln.startswith(f"| {model} | {method} |")]
            assert len(rows) == 1, f"no single row for {model}/{method}:\n{table}"
            assert "error" not in rows[0], rows[0]
            assert rows[0].rstrip().endswith("| ok |"), rows[0]  # predictions identical
        assert f"| {model} | " in table.split("## Amber against the others")[1]
    assert "## Targets" in table and ("PASS" in table or "MISS" in table)
    assert "rf" not in [ln.split("|")[1].strip() for ln in table.splitlines() if ln.count("|") > 3]
    assert proc.stdout.strip().startswith("# Amber persistence benchmark")
