"""The README's quick start runs as written, so it cannot drift from the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start_code() -> str:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2, "the quick start lost its examples"
    return "\n".join(blocks)


def test_quick_start_runs_in_a_fresh_folder(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", quick_start_code()],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "probe matched" in result.stdout
    assert "sklearn.svm._classes.SVC" in result.stdout
    assert (tmp_path / "iris.amber").exists() and (tmp_path / "legacy_model.joblib").exists()


def test_readme_names_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text and "benchmarks/persist.py" in text
