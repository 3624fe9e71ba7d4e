"""Buffer entries read, checked and decoded on a thread of their own, ahead of the unpickler
(ArtifactReader.read_ahead and _nodes.Batch), and Amber's own LZ4 block decoder."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path
from typing import Any

import lz4.block
import numpy as np
import pytest
import xxhash
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

import amber
from amber.artifact import _nodes, _reader
from amber.artifact._reader import ArtifactReader, ReadAhead
from amber.artifact._zip import read_data_offset
from amber.errors import FormatError, IntegrityError

ARRAYS = 12


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "amber-read"]


def _no_thread_left() -> None:
    for t in _threads():
        t.join(5)  # (one past its last job may still be returning)
    assert not _threads()


@pytest.fixture(scope="module")
def arrays_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """An artifact larger than a file read whole (4 MB), of twelve 450 kB arrays: each an entry
    read on the thread."""
    rng = np.random.default_rng(0)
    obj = {f"a{i}": rng.random(56_000 + i) for i in range(ARRAYS)}
    path = tmp_path_factory.mktemp("ahead") / "arrays.amber"
    amber.save(obj, path)
    return path, obj


@pytest.fixture(scope="module")
def forest_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, np.ndarray]:
    """A forest stored with compress="auto": its node arrays nodes-lz4, most value arrays LZ4,
    all decoded on the thread."""
    X, y = make_classification(3000, 10, n_informative=6, flip_y=0.2, random_state=0)
    model = RandomForestClassifier(30, random_state=0).fit(X, y)
    path = tmp_path_factory.mktemp("ahead") / "forest.amber"
    amber.save(model, path, compress="auto")
    return path, model, X


def _buffers(reader: ArtifactReader) -> list[str]:
    return reader.manifest["payload"]["buffers"]


def test_a_large_artifact_of_many_entries_is_read_ahead(
    arrays_file: tuple[Path, dict[str, Any]],
) -> None:
    path, obj = arrays_file
    with ArtifactReader(path) as reader:
        ahead = reader.read_ahead(_buffers(reader))
        assert isinstance(ahead, ReadAhead)
        names = _buffers(reader)
        got = [bytes(ahead.read(n)) for n in names]
        ahead.close()
        assert got == [bytes(reader.read(n)) for n in names]
    loaded = amber.load(path)
    assert loaded.keys() == obj.keys()
    for k, v in obj.items():
        np.testing.assert_array_equal(loaded[k], v)
    _no_thread_left()


def test_lz4_entries_of_a_file_read_in_parts_are_decoded_on_the_thread(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    obj = {f"a{i}": rng.integers(0, 50, 300_000).astype(np.int16) for i in range(10)}
    path = tmp_path / "lz4.amber"
    amber.save(obj, path, compress="lz4")
    assert path.stat().st_size > 4 << 20  # (read entry by entry, not whole)
    with ArtifactReader(path) as reader:
        assert {reader.entries[n]["compression"] for n in _buffers(reader)} == {"lz4"}
        ahead = reader.read_ahead(_buffers(reader))
        assert ahead is not None
        ahead.close()
    loaded = amber.load(path)
    for k, v in obj.items():
        np.testing.assert_array_equal(loaded[k], v)
    _no_thread_left()


def test_small_and_memory_mapped_artifacts_are_not(
    tmp_path: Path, arrays_file: tuple[Path, dict[str, Any]]
) -> None:
    path, _ = arrays_file
    with ArtifactReader(path, mmap=True) as reader:
        assert reader.read_ahead(_buffers(reader)) is None
    small = tmp_path / "small.amber"
    amber.save({f"a{i}": np.arange(5000.0) for i in range(8)}, small)  # read whole: views
    with ArtifactReader(small) as reader:
        assert reader.read_ahead(_buffers(reader)) is None


def test_an_auto_compressed_forest_decodes_on_the_thread(
    forest_file: tuple[Path, Any, np.ndarray],
) -> None:
    path, model, X = forest_file
    with ArtifactReader(path) as reader:
        codecs = {reader.entries[n]["compression"] for n in _buffers(reader)}
        assert codecs == {"nodes-lz4"}
        ahead = reader.read_ahead(_buffers(reader))
        assert ahead is not None
        ahead.close()
    loaded = amber.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    _no_thread_left()


@pytest.mark.parametrize("thread_hashes", [True, False])
@pytest.mark.parametrize("where", ["data", "header"])
def test_a_flipped_byte_of_an_entry_read_ahead_is_caught(
    tmp_path: Path,
    arrays_file: tuple[Path, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    thread_hashes: bool,
    where: str,
) -> None:
    """Checked on the thread (XXH3-128 from the xxhash package's extension) or, without it,
    when the entry is taken; a local header is checked when taken."""
    monkeypatch.setattr(_reader, "_THREAD_HASHES", thread_hashes)
    source, _ = arrays_file
    path = tmp_path / "flipped.amber"
    data = bytearray(source.read_bytes())
    with ArtifactReader(source) as reader:
        entry = reader.zip_entries[_buffers(reader)[7]]
        start = read_data_offset(reader._fd, entry)
    if where == "data":
        data[start + entry.size // 3] ^= 0x10
        expected: type[Exception] = IntegrityError
        message = "000007.bin.* fails its xxh3-128 check"
    else:
        data[entry.header_offset + 14] ^= 0x01  # its CRC-32 as the local header records it
        expected = FormatError
        message = "local header of .*000007.bin.* disagrees with the central directory"
    path.write_bytes(data)
    with pytest.raises(expected, match=message):
        amber.load(path)
    _no_thread_left()


@pytest.mark.parametrize("thread_hashes", [True, False])
def test_a_damaged_compressed_entry_is_an_integrity_error(
    tmp_path: Path,
    forest_file: tuple[Path, Any, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    thread_hashes: bool,
) -> None:
    monkeypatch.setattr(_reader, "_THREAD_HASHES", thread_hashes)
    source, _, _ = forest_file
    with ArtifactReader(source) as reader:
        names = [n for n in _buffers(reader) if reader.entries[n]["compression"] == "nodes-lz4"]
        entry = reader.zip_entries[names[5]]
        start = read_data_offset(reader._fd, entry)
    for offset in (30, entry.size // 2, entry.size - 1):  # (after its 24-byte header)
        data = bytearray(source.read_bytes())
        data[start + offset] ^= 0x5A
        path = tmp_path / f"damaged{offset}.amber"
        path.write_bytes(data)
        with pytest.raises(IntegrityError, match=f"{names[5]}.* fails its xxh3-128 check"):
            amber.load(path)
    _no_thread_left()


def test_a_truncated_file_is_refused_and_the_thread_stopped(
    tmp_path: Path, arrays_file: tuple[Path, dict[str, Any]]
) -> None:
    source, _ = arrays_file
    data = source.read_bytes()
    for cut in (len(data) // 2, len(data) - 100):
        path = tmp_path / "cut.amber"
        path.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            amber.load(path)
    _no_thread_left()


def test_a_load_that_fails_midway_stops_the_thread(
    forest_file: tuple[Path, Any, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error while the unpickler runs (here: the third entry taken) cancels the batch and
    waits for its thread before the file is closed; the next load works. (With no window, the
    thread waits for the third entry to be taken: only the cancel lets it end.)"""
    path, model, X = forest_file
    monkeypatch.setattr(_reader, "_AHEAD_WINDOW", 0)
    real = ReadAhead.read
    taken = []

    def failing(self: ReadAhead, name: str) -> memoryview:
        taken.append(name)
        if len(taken) == 3:
            raise KeyboardInterrupt
        return real(self, name)

    monkeypatch.setattr(ReadAhead, "read", failing)
    with pytest.raises(KeyboardInterrupt):
        amber.load(path)
    _no_thread_left()
    monkeypatch.setattr(ReadAhead, "read", real)
    np.testing.assert_array_equal(amber.load(path).predict(X), model.predict(X))


def _blocks(n_jobs: int, size: int = 5000) -> tuple[list[tuple[Any, ...]], list[bytes]]:
    rng = np.random.default_rng(2)
    datas = [rng.integers(0, 4, size).astype(np.uint8).tobytes() for _ in range(n_jobs)]
    jobs = [(0, lz4.block.compress(d, store_size=False), bytearray(len(d)), 0) for d in datas]
    return jobs, datas


@pytest.mark.parametrize("window", [0, 6000, 1 << 30])
def test_a_batch_stays_within_its_window_and_never_waits_for_a_job_passed(window: int) -> None:
    jobs, datas = _blocks(12)
    batch = _nodes.Batch(jobs, window)
    thread = threading.Thread(target=batch.run)
    thread.start()
    batch.wait(5)  # (jobs 0-4 passed without being waited for: the thread goes on)
    for i in range(6, 12):
        batch.wait(i)
    thread.join(10)
    assert not thread.is_alive() and batch.finished
    assert [bytes(job[2]) for job in jobs] == datas


def test_a_cancelled_batch_says_so_and_the_misuses_are_refused() -> None:
    jobs, _ = _blocks(6)
    batch = _nodes.Batch(jobs, 0)
    batch.cancel()
    batch.run()  # (stops before its first job)
    with pytest.raises(RuntimeError, match="stopped before this job"):
        batch.wait(0)
    with pytest.raises(RuntimeError, match="already run"):
        batch.run()
    with pytest.raises(IndexError):
        batch.wait(6)
    with pytest.raises(IndexError, match="not one taken"):
        batch.digest(3)
    with pytest.raises(TypeError, match="tuple of 4, 6 or 10"):
        _nodes.Batch([(0, b"x")], 0)
    with pytest.raises(ValueError, match="kind 1 with 4 items"):
        _nodes.Batch([(1, b"x", bytearray(1), 0)], 0)
    with pytest.raises(ValueError, match="hash 2"):
        _nodes.Batch([(0, b"x", bytearray(1), 2)], 0)  # (a block is hashed before decoding: 1)
    with pytest.raises(TypeError):
        _nodes.Batch([(0, b"x", b"read-only", 0)], 0)


def test_a_failed_job_reports_its_own_error_and_the_rest_go_on() -> None:
    jobs, datas = _blocks(3)
    damaged = bytearray(jobs[1][1])
    damaged[len(damaged) // 2] ^= 0xFF
    del damaged[-5:]
    jobs[1] = (0, bytes(damaged), bytearray(len(datas[1])), 1)
    jobs[2] = (*jobs[2][:3], 1)
    batch = _nodes.Batch(jobs, 1 << 20)
    batch.run()
    batch.wait(0)
    with pytest.raises(ValueError, match="LZ4 block"):
        batch.wait(1)
    assert batch.digest(1) == xxhash.xxh3_128_hexdigest(bytes(damaged))  # (before decoding)
    batch.wait(2)
    assert bytes(jobs[2][2]) == datas[2]
    assert batch.digest(2) == xxhash.xxh3_128_hexdigest(jobs[2][1])


def test_the_thread_hashes_as_the_xxhash_package_does() -> None:
    assert _reader._THREAD_HASHES  # (the xxhash package's extension exports XXH3_128bits)
    rng = random.Random(3)
    for n in [0, 1, 3, 4, 8, 16, 17, 128, 129, 240, 241, 1024, 100_003, 1 << 20]:
        data = rng.randbytes(n)
        assert _nodes.xxh3_hex(data) == xxhash.xxh3_128_hexdigest(data), n


# -- the LZ4 block decoder --------------------------------------------------------------------
def _samples() -> list[bytes]:
    rng = random.Random(4)
    out = [b"a", bytes(1), os.urandom(15), bytes(100_000), b"abc" * 30_000]
    for size in [*range(1, 80), *(rng.randrange(80, 300_000) for _ in range(60))]:
        kind = size % 5
        if kind == 0:
            out.append(rng.randbytes(size))
        elif kind == 1:
            out.append(bytes(rng.randrange(3) for _ in range(size)))
        elif kind == 2:  # repeats at every distance from 1 to 20 (overlapping matches)
            period = 1 + size % 20
            out.append((rng.randbytes(period) * (size // period + 1))[:size])
        elif kind == 3:  # runs that reach the very end (long matches near the output's end)
            out.append(rng.randbytes(size // 3) + bytes(size - size // 3))
        else:
            words = [rng.randbytes(rng.randrange(1, 30)) for _ in range(40)]
            out.append(b"".join(rng.choice(words) for _ in range(size // 10 + 1))[:size])
    return out


def test_the_lz4_decoder_reads_what_lz4_writes() -> None:
    for data in _samples():
        for mode in ("default", "high_compression", "fast"):
            block = lz4.block.compress(data, mode=mode, store_size=False)
            out = bytearray(len(data))
            _nodes.lz4_decode(block, out)
            assert out == data, (len(data), mode)
    _nodes.lz4_decode(lz4.block.compress(b"", store_size=False), bytearray())


def test_the_lz4_decoder_refuses_damaged_blocks_and_the_wrong_size() -> None:
    data = bytes(np.random.default_rng(5).integers(0, 6, 40_000).astype(np.uint8))
    block = lz4.block.compress(data, store_size=False)
    for out, message in [
        (bytearray(len(data) - 1), "decodes to more than 39999 bytes"),
        (bytearray(len(data) + 1), "decodes to 40000 bytes, not 40001"),
    ]:
        with pytest.raises(ValueError, match=message):
            _nodes.lz4_decode(block, out)
    for damaged, message in [
        (b"", "an empty LZ4 block"),
        (block[:-1], "truncated"),
        (b"\xf0" + b"\xff" * 10, "truncated"),  # literal lengths past the input
        (b"\x10a\x02\x00", "refers 2 bytes back"),  # a match before the output's start
        (b"\x10a\x00\x00", "refers 0 bytes back"),
    ]:
        with pytest.raises(ValueError, match=message):
            _nodes.lz4_decode(damaged, bytearray(len(data)))
    # random damage: refused, or decoded as liblz4 decodes it (never past the buffer: the
    # sanitizer run in docs/PERFORMANCE.md; here, no crash and no other exception)
    rng = random.Random(6)
    refused = 0
    for _ in range(3000):
        b = bytearray(block)
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        if rng.random() < 0.3:
            b = b[: rng.randrange(1, len(b))]
        out = bytearray(len(data))
        try:
            _nodes.lz4_decode(bytes(b), out)
        except ValueError:
            refused += 1
            continue
        try:
            reference = lz4.block.decompress(bytes(b), uncompressed_size=len(data))
        except lz4.block.LZ4BlockError:
            continue  # (liblz4 refuses some blocks that fill the buffer exactly; both are safe)
        assert out == reference
    assert refused > 1000
