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


PARTED = Path(__file__).parent / "data" / "golden" / "v1" / "knn_parts.amber"


def test_a_golden_file_lists_the_digests_of_its_parts(tmp_path: Path) -> None:
    """v1's knn_parts has a 16.8 MB entry, so its manifest lists the XXH3-128 of each 8 MiB part
    (FORMAT.md section 2, ``xxh3_128_parts``). The table as written then is what FORMAT.md says
    it is, and today's reader checks it."""
    import xxhash

    from amber.artifact._reader import ArtifactReader
    from amber.artifact._zip import read_data_offset
    from amber.errors import IntegrityError

    table = amber.inspect(PARTED).manifest["xxh3_128_parts"]
    assert set(table) == {"part_size", "digests"} and table["part_size"] == 8 << 20
    (name,) = table["digests"]
    with ArtifactReader(PARTED) as reader:
        entry = reader.zip_entries[name]
        start = read_data_offset(reader._fd, entry)
    data = PARTED.read_bytes()
    stored = data[start : start + entry.size]
    step = table["part_size"]
    assert table["digests"][name] == [
        xxhash.xxh3_128_hexdigest(stored[i : i + step]) for i in range(0, len(stored), step)
    ]
    assert len(table["digests"][name]) == 3  # 8 MiB, 8 MiB and the 64,000 bytes left
    assert "the xxh3-128 digests of 3 parts" in str(amber.verify(PARTED))

    broken = tmp_path / "broken.amber"
    flipped = bytearray(data)
    flipped[start + step + 12_345] ^= 0x01  # inside the second part
    broken.write_bytes(flipped)
    with pytest.raises(IntegrityError, match=name):
        amber.load(broken, mmap=True)


def test_a_golden_file_stores_tree_nodes_with_their_own_codec() -> None:
    """v1's forest_nodes keeps node arrays stored with nodes-lz4 (FORMAT.md section 4.1): the
    test above loads it and re-runs its probe with today's decoder."""
    path = Path(__file__).parent / "data" / "golden" / "v1" / "forest_nodes.amber"
    entries = amber.inspect(path).manifest["entries"]
    assert [e["compression"] for e in entries.values()].count("nodes-lz4") == 3
