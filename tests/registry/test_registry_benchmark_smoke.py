"""Smoke test of ``benchmarks/registry.py --quick``: it runs end to end and writes its report.

No timing is asserted (the numbers depend on the machine); the concurrency check is: every
version present, none duplicated.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "registry.py"


def test_quick_registry_benchmark_writes_its_report(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "registry-quick.md").read_text()
    for heading in ("Push + load vs save + load", "Catalog queries at 500 versions", "Concurrent"):
        assert heading in report
    assert "| versions: all present, none duplicated | yes |" in report
    assert "registry / plain" in report and "get('models:/one@production')" in report
