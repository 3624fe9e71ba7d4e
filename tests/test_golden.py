"""Golden artifacts of every format version still load, verify and reproduce their probes."""

from __future__ import annotations

from pathlib import Path

import pytest

import amber

GOLDEN = sorted((Path(__file__).parent / "data" / "golden").glob("v*/*.amber"))


def test_golden_files_exist_for_every_version() -> None:
    from amber.artifact._manifest import FORMAT_VERSION

    versions = {p.parent.name for p in GOLDEN}
    assert versions == {f"v{v}" for v in range(1, FORMAT_VERSION + 1)}


@pytest.mark.parametrize("path", GOLDEN, ids=[f"{p.parent.name}/{p.stem}" for p in GOLDEN])
def test_golden_file_loads_and_reproduces_its_probe(path: Path) -> None:
    info = amber.inspect(path)
    assert info.format_version == int(path.parent.name[1:])
    assert info.metadata["golden"] == path.stem
    assert info.untrusted == []
    report = amber.verify(path)
    assert "probe matched" in str(report)
    for mmap in (False, True):
        model = amber.load(path, mmap=mmap, probe="always", parity="raise")
        assert type(model).__module__.startswith("sklearn")
