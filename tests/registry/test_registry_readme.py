"""The README's registry examples run as written (the embedded registry; the S3 + PostgreSQL
snippets need servers and are run by the conformance suite instead)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def registry_examples() -> str:
    section = README.read_text().split("## Registry\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    runnable = [b for b in blocks if "s3://" not in b]
    assert runnable, "the registry section lost its examples"
    return "\n".join(runnable)


def test_registry_examples_run_in_a_fresh_folder(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMBER_")}
    done = subprocess.run(
        [sys.executable, "-c", registry_examples()],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "models:/iris/1 ('staging',)" in done.stdout
    assert "models:/iris/2" in done.stdout
    # gc() keeps the blob of a version deleted within its grace period; gc(grace=0) removes it
    assert (
        "removed 1 unreferenced blob" in done.stdout
        or "1 of versions deleted within the grace period" in done.stdout
    )
    assert (tmp_path / "amber-models" / "catalog.sqlite").is_file()
    assert (tmp_path / "iris-v2.amber").is_file()
