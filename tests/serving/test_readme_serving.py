"""The README's serving examples run as written against a real server (only the port differs)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from servetest_helpers import Server, save, stopped_cleanly

README = Path(__file__).resolve().parents[2] / "README.md"
VOLATILE = {"id", "model_version"}


def _examples() -> list[tuple[str, str | None]]:
    section = README.read_text().split("## Serving", 1)[1].split("\n## ", 1)[0]
    pairs = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        lines = block.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("curl "):
                nxt = lines[i + 1] if i + 1 < len(lines) else ""
                pairs.append((line, nxt[2:] if nxt.startswith("# {") else None))
    return pairs


def _strip(value: object) -> object:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    return value


def test_readme_curl_examples(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.svm import SVC

    X, y = load_iris(return_X_y=True)
    path = save(SVC(gamma="scale").fit(X, y), tmp_path / "iris.amber", X[:32])
    examples = _examples()
    assert len(examples) >= 4 and all(expected for _, expected in examples)
    srv = Server([str(path)], tmp_path)
    try:
        srv.wait_ready()
        for command, expected in examples:
            command = command.replace("localhost:8080", f"127.0.0.1:{srv.port}")
            out = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            assert expected is not None
            assert _strip(json.loads(out.stdout)) == _strip(json.loads(expected)), command
    finally:
        assert stopped_cleanly(srv)
