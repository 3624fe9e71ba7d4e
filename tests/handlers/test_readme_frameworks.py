"""The README's "Deep learning and boosted trees" examples run as written."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
NEEDED = ("torch", "xgboost", "keras", "tensorflow")


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in NEEDED), reason="frameworks not installed"
)
def test_framework_examples_run_in_a_fresh_folder(tmp_path: Path) -> None:
    section = README.read_text().split("## Deep learning and boosted trees", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    assert len(blocks) == 2
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "net.amber").exists() and (tmp_path / "clf_tf.amber").exists()
