"""The container: layout, atomic writes, integrity on every byte, compression, memory mapping."""

from __future__ import annotations

import io
import itertools
import mmap
import os
import pickle
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC

import amber
from amber.artifact import _codec, _zip
from amber.artifact._manifest import encode
from amber.artifact._reader import ArtifactReader
from amber.artifact._rewrite import rewrite
from amber.artifact._writer import artifact_writer
from amber.artifact._zip import read_data_offset
from amber.errors import FormatError, IntegrityError

X, Y = load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def svc() -> SVC:
    return SVC(gamma="scale").fit(X, Y)


@pytest.fixture()
def iris_file(tmp_path: Path, svc: SVC) -> Path:
    path = tmp_path / "iris.amber"
    amber.save(svc, path, sample=X[:8])
    return path


def _big_knn(n: int = 4000, d: int = 32) -> KNeighborsClassifier:
    rng = np.random.default_rng(0)
    data = rng.random((n, d))
    return KNeighborsClassifier().fit(data, np.arange(n) % 3)


def _base_of(array: np.ndarray) -> object:
    base: object = array
    while getattr(base, "base", None) is not None:
        base = base.base  # type: ignore[attr-defined]
    if isinstance(base, memoryview):
        base = base.obj
    return base


# -- layout ---------------------------------------------------------------------------------
def test_any_zip_tool_lists_and_extracts_it(iris_file: Path) -> None:
    with zipfile.ZipFile(iris_file) as zf:
        names = zf.namelist()
        assert zf.testzip() is None  # every CRC-32 checks out
        assert names[-1] == "amber.json"
        assert "model/model.pkl" in names
        assert any(n.startswith("probe/") for n in names)
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED


def test_entry_data_is_64_byte_aligned(tmp_path: Path) -> None:
    path = tmp_path / "knn.amber"
    amber.save(_big_knn(), path)
    with ArtifactReader(path, mmap=True) as reader:
        buffers = reader.manifest["payload"]["buffers"]
        assert buffers, "a 1 MB training set must go out of band"
        for name in reader.entries:
            view = reader.read(name)
            address = np.frombuffer(view, dtype=np.uint8).ctypes.data
            file_offset = address - np.frombuffer(reader._mapview, np.uint8).ctypes.data  # type: ignore[arg-type]
            assert file_offset % 64 == 0, name


def test_mmap_hands_back_file_backed_copy_on_write_arrays(tmp_path: Path) -> None:
    knn = _big_knn()
    path = tmp_path / "knn.amber"
    amber.save(knn, path)
    before = path.read_bytes()
    mapped = amber.load(path, mmap=True)
    assert isinstance(_base_of(mapped._fit_X), mmap.mmap)
    other = amber.load(path, mmap=True)
    mapped._fit_X[:] = -1.0  # lands in private pages: not in the file, not in another load
    assert path.read_bytes() == before
    assert (other._fit_X >= 0).all()
    mapped = amber.load(path, mmap=True)
    copied = amber.load(path)
    assert copied._fit_X.flags.writeable
    probe = np.random.default_rng(1).random((50, 32))
    np.testing.assert_array_equal(mapped.predict(probe), knn.predict(probe))
    np.testing.assert_array_equal(copied.predict(probe), knn.predict(probe))


@pytest.mark.parametrize("rows", [1000, 12_000])  # 256 kB (malloc) and 3 MB (its own map)
def test_default_load_copies_arrays_out_of_the_file(tmp_path: Path, rows: int) -> None:
    """Without mmap=True, arrays live in private memory: aligned, writable, and unaffected when
    the file is overwritten in place afterwards (a file-backed map would show the new bytes)."""
    X = np.random.default_rng(0).random((rows, 32))
    knn = KNeighborsClassifier(n_neighbors=3).fit(X, np.arange(rows) % 3)
    path = tmp_path / "knn.amber"
    amber.save(knn, path)
    loaded = amber.load(path)
    fit_x = loaded._fit_X
    assert fit_x.flags.writeable and fit_x.ctypes.data % 64 == 0
    size = path.stat().st_size
    with open(path, "r+b") as f:  # in place: same inode, every byte zero
        f.write(bytes(size))
    np.testing.assert_array_equal(fit_x, X)
    fit_x[:] = 0.5  # writable memory of its own
    assert path.read_bytes() == bytes(size)


# -- atomic writes ----------------------------------------------------------------------------
def test_a_child_forked_after_a_save_and_a_verify_can_do_both(tmp_path: Path) -> None:
    """Threads do not survive fork(): a process that saved and verified a large model (which
    starts the digest threads and blake3's pool), then forked (a server's workers, a
    multiprocessing pool), must still save, verify and hash files in the child instead of
    waiting forever for threads that stayed in the parent."""
    script = f"""
        import os, signal
        import numpy as np
        import amber
        from amber.registry._store import file_blake3

        big = {{"a": np.random.default_rng(0).random(3_000_000)}}  # 24 MB
        amber.save(big, {str(tmp_path / "parent.amber")!r})
        amber.verify({str(tmp_path / "parent.amber")!r})
        pid = os.fork()
        if pid == 0:
            signal.alarm(30)  # a hang kills the child, not the test run
            path = {str(tmp_path / "child.amber")!r}
            amber.save(big, path)
            amber.verify(path)
            file_blake3(path)
            os._exit(0)
        print("child exit status", os.waitpid(pid, 0)[1])
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-800:]
    assert "child exit status 0" in proc.stdout, proc.stdout


def test_a_child_forked_while_another_thread_loads_has_its_collector_and_can_load(
    tmp_path: Path, svc: SVC
) -> None:
    """A load pauses the cyclic collector, counting the loads in progress, under a lock. A child
    forked while another thread was inside a load (and held that lock) has no such load: its
    collector must be on, and its own loads must neither hang nor leave it off."""
    path = tmp_path / "iris.amber"
    amber.save(svc, path)
    script = f"""
        import gc, os, signal, threading
        import amber
        from amber.security import _unpickler

        inside, done = threading.Event(), threading.Event()

        def loading():
            with _unpickler._collector_paused():  # what a load does while it unpickles
                inside.set()
                done.wait()

        thread = threading.Thread(target=loading)
        thread.start()
        inside.wait()
        assert not gc.isenabled()
        with _unpickler._GC_LOCK:  # held at the fork, as a load entering or leaving holds it
            pid = os.fork()
        if pid == 0:
            signal.alarm(30)  # a hang kills the child, not the test run
            on_at_fork = gc.isenabled()
            amber.load({str(path)!r})
            os._exit(0 if on_at_fork and gc.isenabled() else 3)
        done.set()
        thread.join()
        print("child exit status", os.waitpid(pid, 0)[1], "parent collector", gc.isenabled())
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-800:]
    assert "child exit status 0 parent collector True" in proc.stdout, proc.stdout


def test_loading_an_artifact_imports_no_pickle_or_joblib_reader(tmp_path: Path, svc: SVC) -> None:
    """The readers of foreign files (pickle, joblib, their decompressors) are imported only for
    such files: importing them in an artifact's first load took 2.4 MB and its time."""
    amber.save(svc, tmp_path / "m.amber")
    script = f"""
        import sys
        import amber
        amber.load({str(tmp_path / "m.amber")!r})
        print(sorted(m for m in sys.modules if m.startswith(("amber.security._foreign",
                                                            "amber.security._joblib"))))
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-800:]
    assert proc.stdout.strip() == "[]", proc.stdout


def test_save_and_load_work_in_an_atexit_handler(tmp_path: Path) -> None:
    """A checkpoint saved at exit (and a large file loaded there): Python refuses new threads
    once it is shutting down, so the digests and the two-thread read run on the caller's."""
    script = f"""
        import atexit
        import numpy as np
        import amber

        big = {{"weights": np.arange(5_000_000, dtype=np.float64)}}  # 40 MB: a two-thread read
        amber.save(big, {str(tmp_path / "big.amber")!r})

        @atexit.register
        def at_exit():
            # 160 kB of weights: hashed on worker threads
            state = {{"step": 7, "weights": np.arange(20_000, dtype=np.float64)}}
            amber.save(state, {str(tmp_path / "checkpoint.amber")!r})
            assert amber.load({str(tmp_path / "checkpoint.amber")!r})["step"] == 7
            loaded = amber.load({str(tmp_path / "big.amber")!r})
            assert np.array_equal(loaded["weights"], big["weights"])
            print("saved and loaded at exit")
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120
    )
    assert "saved and loaded at exit" in proc.stdout, proc.stderr[-1500:]


def test_a_save_keeps_the_mode_and_follows_a_symlink(tmp_path: Path, svc: SVC) -> None:
    path = tmp_path / "private.amber"
    amber.save(svc, path)
    path.chmod(0o600)
    amber.save(svc, path, metadata={"v": 2})
    assert path.stat().st_mode & 0o777 == 0o600
    assert amber.inspect(path).metadata == {"v": 2}
    (tmp_path / "releases").mkdir()
    release = tmp_path / "releases" / "v1.amber"
    amber.save(svc, release, metadata={"v": 1})
    current = tmp_path / "current.amber"
    current.symlink_to(Path("releases") / "v1.amber")
    amber.save(svc, current, metadata={"v": 2})  # as open(current, "wb") would: through the link
    assert current.is_symlink() and amber.inspect(release).metadata == {"v": 2}
    long_name = tmp_path / ("m" * 244 + ".amber")  # 250 bytes: the longest names still save
    amber.save(svc, long_name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["private.amber", "releases", "current.amber", long_name.name]
    )


def test_a_save_that_cannot_write_says_why(tmp_path: Path, svc: SVC) -> None:
    """Without the right to write (as a user, or as root without its override capability)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv to drop the override capability")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    amber.save(svc, tmp_path / "locked.amber")
    (tmp_path / "locked.amber").chmod(0o444)
    (tmp_path / "ro").mkdir()
    amber.save(svc, tmp_path / "ro" / "m.amber")
    (tmp_path / "ro").chmod(0o555)
    script = f"""
        import pickle, amber
        model = pickle.loads({pickle.dumps(svc)!r})
        for target in ({str(tmp_path / "locked.amber")!r}, {str(tmp_path / "ro" / "m.amber")!r}):
            try:
                amber.save(model, target)
            except PermissionError as exc:
                print(exc)
    """
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", textwrap.dedent(script)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert "the file is read-only; make it writable first" in proc.stdout, proc.stderr[-800:]
    assert "the folder" in proc.stdout and "is not writable" in proc.stdout, proc.stdout
    assert sorted(p.name for p in (tmp_path / "ro").iterdir()) == ["m.amber"]  # nothing left


def test_a_save_never_puts_a_file_in_place_of_a_pipe_or_a_device(tmp_path: Path, svc: SVC) -> None:
    """The rename would replace them with a regular file (as root, even /dev/null reached
    through a link): a save refuses, and they stay what they were."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    specials = [(fifo, "a named pipe", stat.S_ISFIFO)]
    if os.geteuid() == 0:  # a copy of /dev/null's node, here (never the real one)
        null = tmp_path / "null"
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        link = tmp_path / "link-to-null"
        link.symlink_to(null)
        specials += [(null, "a character device", stat.S_ISCHR)]
        specials += [(link, "a character device", stat.S_ISCHR)]
    for path, kind, test in specials:
        with pytest.raises(FileExistsError, match=f"it is {kind}, not a regular file"):
            amber.save(svc, path)
        assert test(os.stat(path).st_mode)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file


def test_save_says_what_it_was_given_instead_of_a_model_or_a_path(tmp_path: Path, svc: SVC) -> None:
    path = tmp_path / "m.amber"
    with pytest.raises(TypeError, match=r"given None, not a model"):
        amber.save(None, path)
    with pytest.raises(
        TypeError, match=r"the class SVC, not a model: pass the fitted object \(SVC\(\)\.fit"
    ):
        amber.save(SVC, path)
    with pytest.raises(
        TypeError, match=r"got a value of type SVC; the arguments are amber.save\(model, path\)"
    ):
        amber.save(str(path), svc)  # type: ignore[arg-type]
    assert not path.exists()


def test_load_says_what_it_was_given_instead_of_a_path(tmp_path: Path, svc: SVC) -> None:
    path = tmp_path / "m.amber"
    amber.save(svc, path)
    with pytest.raises(
        TypeError, match=r"got a value of type bytes: .* write them to a file first"
    ) as info:
        amber.load(path.read_bytes())  # type: ignore[arg-type]
    assert len(str(info.value)) < 300  # not the file's bytes in the message
    with pytest.raises(IsADirectoryError, match="is a folder, not a model file"):
        amber.load(tmp_path)  # not "not a TensorFlow SavedModel folder"
    for url in ("https://example.com/m.amber", "s3://bucket/m.amber", "file:///tmp/m.amber"):
        with pytest.raises(ValueError, match=f"{url!r} is a URL: .* download the file first"):
            amber.load(url)


def test_failed_save_leaves_previous_file_intact(tmp_path: Path, svc: SVC) -> None:
    path = tmp_path / "model.amber"
    amber.save(svc, path)
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            raise TypeError("cannot pickle this on purpose")

    with pytest.raises(TypeError, match="cannot be pickled"):
        amber.save(Unpicklable(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.amber"]  # no temp file left
    np.testing.assert_array_equal(amber.load(path).predict(X), svc.predict(X))


def test_an_object_the_loader_would_refuse_is_not_saved(tmp_path: Path, svc: SVC) -> None:
    path = tmp_path / "model.amber"
    amber.save(svc, path)
    before = path.read_bytes()
    itself = np.empty(2, dtype=object)
    itself[0], itself[1] = itself, 5  # pickle writes it; the safe loader refuses the stream
    with pytest.raises(TypeError, match=r"would refuse its pickle stream .* no file was written"):
        amber.save({"model": svc, "cycle": itself}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.amber"]


def test_failed_probe_leaves_previous_file_intact(tmp_path: Path, svc: SVC) -> None:
    path = tmp_path / "model.amber"
    amber.save(svc, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="answers none of"):
        amber.save(svc, path, sample=np.zeros((3, 7)))  # wrong width: every method fails
    assert path.read_bytes() == before


def test_killed_save_leaves_previous_file_intact(tmp_path: Path, svc: SVC) -> None:
    path = tmp_path / "model.amber"
    amber.save(svc, path)
    before = path.read_bytes()
    script = textwrap.dedent(
        f"""
        import numpy as np, amber, sys
        from sklearn.neighbors import KNeighborsClassifier
        data = np.random.default_rng(0).random((400_000, 100))  # 320 MB
        knn = KNeighborsClassifier().fit(data, np.arange(400_000) % 2)
        print("ready", flush=True)
        amber.save(knn, {str(path)!r})
        print("saved", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    # Kill it while it is writing: wait until the temporary file exists and is growing.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        if temps and temps[0].stat().st_size > 1 << 20:
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the saving process ended before it could be killed mid-write"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path.read_bytes() == before
    np.testing.assert_array_equal(amber.load(path).predict(X), svc.predict(X))


# -- integrity ------------------------------------------------------------------------------
def _outcome(path: Path, svc: SVC) -> str:
    try:
        model = amber.load(path, probe="always")
    except (FormatError, IntegrityError):
        return "refused"
    np.testing.assert_array_equal(model.predict(X), svc.predict(X))
    return "same model"


def test_every_single_bit_flip_is_refused_or_harmless(tmp_path: Path, svc: SVC) -> None:
    path = tmp_path / "iris.amber"
    amber.save(svc, path, sample=X[:8])
    original = path.read_bytes()
    harmless = 0
    for offset in range(0, len(original), 3):
        corrupt = bytearray(original)
        corrupt[offset] ^= 1 << (offset % 8)
        path.write_bytes(corrupt)
        if _outcome(path, svc) == "same model":
            harmless += 1
    # Only fields nobody reads (timestamps, padding, "version made by") may flip unnoticed.
    assert harmless < len(original) // 3 // 10


def test_truncation_anywhere_is_refused(tmp_path: Path, svc: SVC) -> None:
    path = tmp_path / "iris.amber"
    amber.save(svc, path)
    original = path.read_bytes()
    for length in [0, 1, 4, 21, 22, *range(30, len(original), 97), len(original) - 1]:
        path.write_bytes(original[:length])
        with pytest.raises((FormatError, IntegrityError)):
            amber.load(path)


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (None, None, ""),
        ("name", FormatError, "name differs from the directory"),
        ("extra length", FormatError, "overlaps the next entry"),
        ("truncated", IntegrityError, "truncated"),
    ],
)
def test_entries_of_a_large_file_are_read_with_their_local_headers(
    tmp_path: Path, damage: str | None, error: type[Exception] | None, message: str
) -> None:
    """Over 4 MB a file is read entry by entry, each local header and its data in one call
    where the data ends at the next header (read_packed); a header that disagrees or a short
    read falls back to reading the header alone, which says what is wrong."""
    knn = _big_knn(20_000)  # 5 MB of training data
    path = tmp_path / "knn.amber"
    amber.save(knn, path)
    assert path.stat().st_size > 4 << 20
    with ArtifactReader(path) as reader:
        name = max(reader.entries, key=lambda n: reader.entries[n]["size"])
        entry = reader.zip_entries[name]
    data = bytearray(path.read_bytes())
    if damage == "name":
        data[entry.header_offset + 30] ^= 0x01
    elif damage == "extra length":  # the header now claims 4 bytes more than the gap it has
        at = entry.header_offset + 28
        data[at : at + 2] = (int.from_bytes(data[at : at + 2], "little") + 4).to_bytes(2, "little")
    elif damage == "truncated":  # cut inside the entry after the reader has its directory
        with ArtifactReader(path) as reader, pytest.raises(error, match=message):
            os.truncate(path, entry.limit - 100)
            reader.read(name)
        return
    path.write_bytes(data)
    if error is None:
        np.testing.assert_array_equal(amber.load(path)._fit_X, knn._fit_X)
        return
    with pytest.raises(error, match=message):
        amber.load(path)


@pytest.mark.parametrize(
    ("where", "message"),
    [("before", "unexpected data before"), ("after", "after the end")],
)
def test_junk_around_the_archive_is_refused(
    tmp_path: Path, iris_file: Path, where: str, message: str
) -> None:
    data = iris_file.read_bytes()
    junk = b"PK\x03\x04 junk " * 3
    iris_file.write_bytes(junk + data if where == "before" else data + junk)
    with pytest.raises(FormatError, match=message):
        amber.load(iris_file)


def test_changed_entry_fails_the_checksum_even_with_a_fixed_crc(tmp_path: Path, svc: SVC) -> None:
    # Rewrite a probe entry through a real zip writer so that its zip CRC is right again:
    # only Amber's own digest can notice.
    path = tmp_path / "iris.amber"
    amber.save(svc, path, sample=X[:8])
    forged = tmp_path / "forged.amber"
    with zipfile.ZipFile(path) as src, open(forged, "wb") as f:
        dst = _zip.ZipWriter(f)  # aligned, as the format requires
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "probe/input.npy":
                data = data[:-8] + np.float64(1e9).tobytes()
            dst.add(info.filename, data, zlib.crc32(data))
        dst.close()
    with pytest.raises(IntegrityError, match=r"probe/input.npy"):
        amber.verify(forged)


def test_verify_checks_the_zip_crc_too(tmp_path: Path, svc: SVC) -> None:
    """FORMAT.md 1: an entry's CRC-32 is that of its stored bytes, so that zip tools can test
    the archive. A wrong one (in both headers) with the bytes and digests intact is what no
    writer makes: verify refuses it, as `zipfile.testzip` does; a load, which checks the
    XXH3-128 of what it reads, is not affected."""
    path = tmp_path / "iris.amber"
    amber.save(svc, path, sample=X[:8])
    forged = tmp_path / "forged.amber"
    with zipfile.ZipFile(path) as src, open(forged, "wb") as f:
        dst = _zip.ZipWriter(f)
        for info in src.infolist():
            data = src.read(info)
            wrong = info.filename == "model/model.pkl"
            dst.add(info.filename, data, zlib.crc32(data) ^ (1 if wrong else 0))
        dst.close()
    with zipfile.ZipFile(forged) as z:
        assert z.testzip() == "model/model.pkl"
    with pytest.raises(IntegrityError, match=r"'model/model.pkl' .* fails the CRC-32 check"):
        amber.verify(forged)
    np.testing.assert_array_equal(amber.load(forged).predict(X), svc.predict(X))


@pytest.mark.parametrize("mmap", [False, True])
def test_entry_data_that_is_not_aligned_is_refused(tmp_path: Path, svc: SVC, mmap: bool) -> None:
    """docs/FORMAT.md: every entry's data starts at a multiple of 64, and readers refuse what
    breaks a rule. Found by fuzzing: a file repacked by Python's zipfile (same bytes, same
    digests, no padding) loaded, and mmap=True then handed numpy misaligned views."""
    path = tmp_path / "iris.amber"
    amber.save(svc, path)
    repacked = tmp_path / "repacked.amber"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(repacked, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with pytest.raises(FormatError, match="is not 64-byte aligned"):
        amber.load(repacked, mmap=mmap)


def test_verify_catches_a_blake3_mismatch_that_xxh3_would_miss(tmp_path: Path, svc: SVC) -> None:
    path = tmp_path / "iris.amber"
    amber.save(svc, path)
    with ArtifactReader(path) as reader:
        manifest = dict(reader.manifest)
        entries = {k: dict(v) for k, v in reader.entries.items()}
        payload = {name: bytes(reader.read(name)) for name in entries}
    entries["model/model.pkl"]["blake3"] = "0" * 64
    manifest.pop("entries")
    with artifact_writer(path) as writer:
        for name, data in payload.items():
            writer.add(name, data)
        writer.entries["model/model.pkl"]["blake3"] = "0" * 64
        writer.finish(manifest)
    amber.load(path)  # the fast checksum still matches
    with pytest.raises(IntegrityError, match="blake3"):
        amber.verify(path)


def test_newer_format_version_says_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "future.amber"
    with artifact_writer(path) as writer:
        writer.finish(
            {
                "format": "amber",
                "format_version": 99,
                "handler": "sklearn",
                "payload": {},
                "environment": {},
            }
        )
    with pytest.raises(FormatError, match=r"format version 99.*upgrade Amber"):
        amber.load(path)


def test_manifest_listing_a_missing_entry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.amber"
    raw = encode({"format": "amber", "format_version": 1, "handler": "sklearn", "payload": {},
                  "environment": {}, "entries": {"model/model.pkl": {"size": 1, "stored_size": 1,
                  "compression": "none", "xxh3_128": "0", "blake3": "0"}}})  # fmt: skip
    with open(path, "wb") as f:
        writer = _zip.ZipWriter(f)
        writer.add("amber.json", raw, zlib.crc32(raw))
        writer.close()
    with pytest.raises(IntegrityError, match="lacks entries"):
        amber.load(path)


def test_a_zip_of_no_entries_has_an_empty_directory_and_is_no_artifact(tmp_path: Path) -> None:
    path = tmp_path / "empty.amber"
    with open(path, "wb") as f:
        _zip.ZipWriter(f).close()
    data = path.read_bytes()
    assert _zip.read_directory(lambda n, at: data[at : at + n], len(data)) == {}
    with pytest.raises(FormatError):
        amber.load(path)


@pytest.mark.parametrize("field", ["size", "stored_size"])
@pytest.mark.parametrize("value", [True, False, 1.0, -1, 1 << 64, "1"])
def test_an_entry_size_must_be_a_plain_integer(tmp_path: Path, field: str, value: object) -> None:
    """JSON's ``true`` is an integer to Python (``isinstance(True, int)``): refused all the same."""
    path = tmp_path / "bad.amber"
    body = b"x"
    entry = {"size": 1, "stored_size": 1, "compression": "none", "xxh3_128": "0", "blake3": "0"}
    entry[field] = value
    raw = encode({"format": "amber", "format_version": 1, "handler": "sklearn", "payload": {},
                  "environment": {}, "entries": {"model/model.pkl": entry}})  # fmt: skip
    with open(path, "wb") as f:
        writer = _zip.ZipWriter(f)
        writer.add("model/model.pkl", body, zlib.crc32(body))
        writer.add("amber.json", raw, zlib.crc32(raw))
        writer.close()
    for call in (amber.load, amber.inspect, amber.verify):
        with pytest.raises(FormatError, match="invalid sizes"):
            call(path)


def test_not_an_artifact_nor_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, I am not a model\n")
    with pytest.raises(FormatError):
        amber.load(path)
    with pytest.raises(FormatError, match="not an Amber artifact"):
        amber.inspect(path)


# -- compression ------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", ["zlib", "lzma", "lz4", "zstd", "auto"])
def test_every_codec_round_trips(tmp_path: Path, codec: str) -> None:
    model = LogisticRegression(max_iter=500).fit(np.repeat(X, 200, axis=0), np.repeat(Y, 200))
    model.big_ = np.repeat(np.arange(1000.0), 100)  # compressible, out of band
    path = tmp_path / f"{codec}.amber"
    info = amber.save(model, path, compress=codec, sample=X[:5])
    used = {e["compression"] for e in info.manifest["entries"].values()}
    assert used - {"none"}, f"nothing was compressed with {codec}: {used}"
    loaded = amber.load(path, probe="always")
    np.testing.assert_array_equal(loaded.big_, model.big_)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.big_.flags.writeable


def test_auto_leaves_noise_alone_and_compresses_an_entry_once(tmp_path: Path) -> None:
    noise = memoryview(np.random.default_rng(0).random(200_000).tobytes())
    assert _codec.choose_codec(noise) == ("none", None)
    zeros = memoryview(bytes(1 << 20))
    codec, packed = _codec.choose_codec(zeros)  # the sample is the whole entry: kept
    assert codec in ("lz4", "zstd") and packed is not None
    assert _codec.decompress(codec, memoryview(packed), zeros.nbytes, "zeros") == zeros
    codec, packed = _codec.choose_codec(memoryview(bytes(4 << 20)))  # sampled: not kept
    assert codec in ("lz4", "zstd") and packed is None


def test_a_size_the_manifest_merely_claims_allocates_nothing() -> None:
    """A crafted artifact can record consistent digests and any decoded ``size``: the decoders
    check it against what the data can hold before reserving memory for it."""
    import lz4.block
    import zstandard

    data = memoryview(bytes(1000))
    framed = memoryview(_codec.compress("zstd", data))
    unframed = memoryview(zstandard.ZstdCompressor(write_content_size=False).compress(data))
    block = memoryview(_codec.compress("lz4", data))
    cases = [
        ("zstd", framed, 3 << 30, "the frame holds 1000 bytes, the manifest records 3221225472"),
        ("zstd", framed, 1 << 60, "the frame holds 1000 bytes"),
        ("zstd", unframed, 1000, "the frame does not record its size"),
        ("lz4", block, 3 << 30, "cannot decode to 3221225472"),
        ("lz4", block, 1 << 60, "cannot decode to"),
    ]
    for codec, stored, size, message in cases:
        with pytest.raises(IntegrityError, match=message):
            _codec.decompress(codec, stored, size, "model/model.pkl")
    assert bytes(_codec.decompress("lz4", block, 1000, "x")) == bytes(data)
    assert lz4.block.decompress(block, uncompressed_size=1000) == bytes(data)


@pytest.mark.parametrize("name", [b"../../model.pkl", b"model/../../.pk", b"/model/model.pk"])
def test_entry_names_that_escape_a_folder_are_refused(
    tmp_path: Path, svc: SVC, name: bytes
) -> None:
    path = tmp_path / "a.amber"
    amber.save(svc, path)
    amber.load(path)  # "model/model.pkl" passes
    data = path.read_bytes()
    assert len(name) == len(b"model/model.pkl") and data.count(b"model/model.pkl") >= 2
    path.write_bytes(data.replace(b"model/model.pkl", name))
    with pytest.raises(FormatError, match="unsafe or malformed entry name"):
        amber.load(path)
    with pytest.raises(FormatError), artifact_writer(tmp_path / "b.amber") as writer:
        writer.add(name.decode(), b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.amber"]  # nothing else written


def test_a_write_that_never_finishes_keeps_the_previous_file(tmp_path: Path, svc: SVC) -> None:
    path = tmp_path / "a.amber"
    amber.save(svc, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match=r"without writer\.finish"), artifact_writer(path) as w:
        w.add("model/model.pkl", b"half an artifact")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.amber"]


def test_corrupt_compressed_entry_is_refused(tmp_path: Path) -> None:
    model = LogisticRegression(max_iter=1000).fit(X, Y)
    model.big_ = np.zeros(100_000)
    path = tmp_path / "z.amber"
    amber.save(model, path, compress="zstd")
    with ArtifactReader(path) as reader:
        entry = reader.zip_entries["model/buffers/000000.bin"]
        start = read_data_offset(reader._fd, entry)
    data = bytearray(path.read_bytes())
    data[start + entry.size // 2] ^= 0xFF
    path.write_bytes(data)
    with pytest.raises((IntegrityError, FormatError)):
        amber.load(path)


@pytest.fixture(scope="module")
def two_large_buffers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LogisticRegression]:
    """A model whose two arrays (6.4 and 5.6 MB) are read and checked in parts, and which,
    memory-mapped, are checked ahead on two threads."""
    rng = np.random.default_rng(1)
    model = LogisticRegression(max_iter=1000).fit(X, Y)
    model.big_a_ = rng.random(800_000)
    model.big_b_ = rng.random(700_000)
    path = tmp_path_factory.mktemp("large") / "big.amber"
    amber.save(model, path)
    return path, model


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize(("entry_no", "where"), [(0, 0), (0, 256 << 10), (1, -1), (1, 300_001)])
def test_a_flipped_byte_anywhere_in_a_large_entry_is_caught(
    tmp_path: Path,
    two_large_buffers: tuple[Path, LogisticRegression],
    mmap: bool,
    entry_no: int,
    where: int,
) -> None:
    source, model = two_large_buffers
    loaded = amber.load(source, mmap=mmap)
    assert np.array_equal(loaded.big_a_, model.big_a_)
    assert np.array_equal(loaded.big_b_, model.big_b_)
    del loaded
    name = f"model/buffers/{entry_no:06d}.bin"
    with ArtifactReader(source) as reader:
        entry = reader.zip_entries[name]
        assert entry.size > 5 << 20
        start = read_data_offset(reader._fd, entry)
    data = bytearray(source.read_bytes())
    data[start + where % entry.size] ^= 0x01
    path = tmp_path / "flipped.amber"
    path.write_bytes(data)
    with pytest.raises(IntegrityError, match=rf"entry '{name}' .* fails its xxh3-128 check"):
        amber.load(path, mmap=mmap)


@pytest.fixture(scope="module")
def parted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LogisticRegression]:
    """A model with a 20 MB array: an entry large enough to have its parts' digests recorded."""
    model = LogisticRegression(max_iter=1000).fit(X, Y)
    model.big_ = np.random.default_rng(2).random(2_500_000)
    path = tmp_path_factory.mktemp("parted") / "big.amber"
    amber.save(model, path)
    return path, model


def _big_entry(path: Path) -> tuple[str, int, int]:
    """The name, data offset and size of the one entry with parts."""
    with ArtifactReader(path) as reader:
        (name,) = reader.parts
        entry = reader.zip_entries[name]
        return name, read_data_offset(reader._fd, entry), entry.size


def _with_manifest(source: Path, target: Path, edit: Any) -> None:
    """``source``'s entries byte for byte, under a manifest ``edit`` changed in place."""
    with ArtifactReader(source) as reader:
        manifest = dict(reader.manifest)
        raws = {name: bytes(reader.raw_entry(name)) for name in reader.entries}
    edit(manifest)
    raw = encode(manifest)
    with open(target, "wb") as f:
        writer = _zip.ZipWriter(f)
        for name, data in raws.items():
            writer.add(name, data, zlib.crc32(data))
        writer.add("amber.json", raw, zlib.crc32(raw))
        writer.close()


def test_a_large_entry_has_the_digests_of_its_parts(
    parted: tuple[Path, LogisticRegression],
) -> None:
    path, model = parted
    name, start, size = _big_entry(path)
    data = path.read_bytes()[start : start + size]
    with ArtifactReader(path) as reader:
        assert reader.part_size == 8 << 20
        assert reader.parts == {
            name: [
                xxhash.xxh3_128_hexdigest(data[i : i + (8 << 20)]) for i in range(0, size, 8 << 20)
            ]
        }
        assert len(reader.parts[name]) == 3  # (the last part shorter)
    assert "and the xxh3-128 digests of 3 parts" in str(amber.verify(path))
    with ArtifactReader(path, mmap=True) as reader:
        assert reader.read(name) == data
    for mapped in (False, True):
        assert np.array_equal(amber.load(path, mmap=mapped).big_, model.big_)


@pytest.mark.parametrize("where", [0, (8 << 20) + 5, -1])
def test_a_flipped_byte_in_any_part_is_caught(
    tmp_path: Path, parted: tuple[Path, LogisticRegression], where: int
) -> None:
    source, _ = parted
    name, start, size = _big_entry(source)
    data = bytearray(source.read_bytes())
    data[start + where % size] ^= 0x10
    path = tmp_path / "flipped.amber"
    path.write_bytes(data)
    for mapped in (False, True):
        with pytest.raises(IntegrityError, match=rf"entry '{name}' .* fails its xxh3-128 check"):
            amber.load(path, mmap=mapped)
    with pytest.raises(IntegrityError, match=rf"entry '{name}' .* fails its blake3 check"):
        amber.verify(path)


def test_a_wrong_digest_of_a_part_is_caught_by_a_mapped_load_and_verify(
    tmp_path: Path, parted: tuple[Path, LogisticRegression]
) -> None:
    source, model = parted
    name, _, _ = _big_entry(source)
    path = tmp_path / "forged.amber"
    _with_manifest(
        source, path, lambda m: m["xxh3_128_parts"]["digests"][name].__setitem__(1, "0" * 32)
    )
    # a load that reads the entry afresh checks it whole, against its intact digest
    assert np.array_equal(amber.load(path).big_, model.big_)
    with pytest.raises(IntegrityError, match=rf"entry '{name}' .* fails its xxh3-128 check"):
        amber.load(path, mmap=True)
    with pytest.raises(IntegrityError, match=rf"entry '{name}' .* fails its xxh3-128 check"):
        amber.verify(path)
    # one mapped entry read on its own (what other handlers do) checks its parts as well
    failed = pytest.raises(IntegrityError, match=rf"entry '{name}' .* fails its xxh3-128 check")
    with ArtifactReader(path, mmap=True) as reader, failed:
        reader.read(name)


def test_a_rewrite_keeps_the_parts_digests_and_refuses_wrong_ones(
    tmp_path: Path, parted: tuple[Path, LogisticRegression]
) -> None:
    """A rewrite (sign, export) copies the parts' digests as they were, checked against the
    bytes: a wrong one is refused, not carried into a file that is then signed, nor silently
    made afresh (a manifest that differs from the source's breaks a signature over it)."""
    source, _ = parted
    name, _, _ = _big_entry(source)
    # (a table the update adds is not written: the writer makes it from the entries)
    table = {"part_size": 1 << 20, "digests": {}}
    rewrite(source, tmp_path / "copy.amber", update=lambda m: {**m, "xxh3_128_parts": table})
    with ArtifactReader(source) as before, ArtifactReader(tmp_path / "copy.amber") as after:
        assert (after.parts, after.part_size) == (before.parts, before.part_size)
    amber.verify(tmp_path / "copy.amber")
    forged = tmp_path / "forged.amber"
    _with_manifest(
        source, forged, lambda m: m["xxh3_128_parts"]["digests"][name].__setitem__(1, "0" * 32)
    )
    with pytest.raises(IntegrityError, match=rf"entry '{name}' does not match its parts"):
        rewrite(forged, tmp_path / "out.amber")
    assert not (tmp_path / "out.amber").exists()


def _set_parts(value: Any) -> Any:
    return lambda m: m.__setitem__("xxh3_128_parts", value(m))


def _parts_of(m: dict[str, Any]) -> tuple[str, list[str]]:
    ((name, digests),) = m["xxh3_128_parts"]["digests"].items()
    return name, digests


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (lambda m: [], "not a part size and a table of digests"),
        (lambda m: {**m["xxh3_128_parts"], "extra": 1}, "not a part size and a table"),
        (lambda m: {**m["xxh3_128_parts"], "part_size": 3 << 20}, "part size 3145728, not a power"),
        (lambda m: {**m["xxh3_128_parts"], "part_size": 1 << 19}, "not a power of two from 1 MiB"),
        (lambda m: {**m["xxh3_128_parts"], "part_size": True}, "part size True"),
        (lambda m: {**m["xxh3_128_parts"], "digests": []}, "no table of digests"),
        (lambda m: {"part_size": 8 << 20, "digests": {"nope": ["0"] * 3}}, "lists 'nope', which"),
        (
            lambda m: {"part_size": 8 << 20, "digests": {_parts_of(m)[0]: _parts_of(m)[1][:2]}},
            r"not a list of 3 digests \(one for each 8,388,608 bytes of its 20,000,\d+\)",
        ),
        (
            lambda m: {"part_size": 16 << 20, "digests": dict([_parts_of(m)])},
            "not a list of 2 digests",
        ),
        (
            lambda m: {"part_size": 8 << 20, "digests": {_parts_of(m)[0]: [1, 2, 3]}},
            "not a list of 3 digests",
        ),
    ],
)
def test_a_malformed_table_of_parts_is_refused(
    tmp_path: Path, parted: tuple[Path, LogisticRegression], value: Any, message: str
) -> None:
    path = tmp_path / "forged.amber"
    _with_manifest(parted[0], path, _set_parts(value))
    for mapped in (False, True):
        with pytest.raises(FormatError, match=rf"malformed manifest: .*{message}"):
            amber.load(path, mmap=mapped)


def test_a_file_without_parts_digests_loads_mapped(
    tmp_path: Path, parted: tuple[Path, LogisticRegression]
) -> None:
    """What an Amber before the parts' digests wrote: the whole entry's digest is checked."""
    source, model = parted
    path = tmp_path / "older.amber"
    _with_manifest(source, path, lambda m: m.pop("xxh3_128_parts"))
    with ArtifactReader(path) as reader:
        assert reader.parts == {}
    assert np.array_equal(amber.load(path, mmap=True).big_, model.big_)
    amber.verify(path)


def test_unknown_compress_option_is_explained(tmp_path: Path, svc: SVC) -> None:
    with pytest.raises(ValueError, match=r"compress='gzip'.*'zstd'"):
        amber.save(svc, tmp_path / "x.amber", compress="gzip")
    assert not list(tmp_path.iterdir())


def test_save_into_missing_folder_is_explained(tmp_path: Path, svc: SVC) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        amber.save(svc, tmp_path / "nope" / "x.amber")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        amber.save(svc, tmp_path / "file" / "x.amber")
    for folder in (tmp_path, f"{tmp_path}{os.sep}"):
        with pytest.raises(IsADirectoryError, match="give a file name"):
            amber.save(svc, folder)
    with pytest.raises(FileNotFoundError, match="the path is empty; give a file name"):
        amber.save(svc, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no temporary file left


def test_large_zip64_offsets_are_read_back(tmp_path: Path) -> None:
    # A directory with more than 65535 entries needs the ZIP64 end records.
    path = tmp_path / "many.amber"
    with artifact_writer(path) as writer:
        for i in range(70_000):
            writer.add(f"e/{i}", b"x")
        writer.finish({"format": "amber", "format_version": 1, "handler": "sklearn",
                       "payload": {}, "environment": {}})  # fmt: skip
    assert writer.file_size == path.stat().st_size  # counted, not asked of the file system
    with ArtifactReader(path) as reader:
        assert len(reader.entries) == 70_000
        assert bytes(reader.read("e/69999")) == b"x"
        # the zip layer's own bytes, ZIP64 end records included, are what the writer wrote
        _zip.check_layout(reader._slice, reader.zip_entries, reader.file_size)
    with zipfile.ZipFile(path) as zf:
        assert len(zf.namelist()) == 70_001


def test_a_large_save_is_sent_to_disk_in_chunks_as_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries are handed to the disk chunk by chunk while the rest is written (one entry larger
    than a chunk is written in pieces); the ranges cover the file's start without gaps, and the
    bytes that land are the ones saved."""
    sent: list[tuple[int, int]] = []
    real = _zip._writeback.start

    def spy(fd: int, offset: int, nbytes: int) -> bool:
        sent.append((offset, nbytes))
        return real(fd, offset, nbytes)

    monkeypatch.setattr(_zip._writeback, "start", spy)
    big = np.arange(5 * _zip.WRITEBACK_CHUNK // 16, dtype=np.float64) * 0.5  # 2.5 chunks
    small = np.arange(1000, dtype=np.int64)
    path = tmp_path / "big.amber"
    amber.save({"big": big, "small": small}, path)
    assert len(sent) >= 2
    assert sent[0][0] == 0
    for (offset, n), (following, _) in itertools.pairwise(sent):
        assert following == offset + n
    assert sent[-1][0] + sent[-1][1] <= path.stat().st_size
    assert all(n >= _zip.WRITEBACK_CHUNK for _, n in sent)
    back = amber.load(path)
    np.testing.assert_array_equal(back["big"], big)
    np.testing.assert_array_equal(back["small"], small)
    amber.verify(path)
    # a writer into memory (no file descriptor) writes the same zip without it
    sent.clear()
    buf = io.BytesIO()
    zw = _zip.ZipWriter(buf)
    zw.add("a", memoryview(big).cast("B"), 0)
    assert not sent and buf.tell() > big.nbytes


def test_writeback_start_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        _zip._writeback.start(-1, 0, 10)
    with pytest.raises(TypeError, match="three integers"):
        _zip._writeback.start(1, 2)


def test_file_size_matches_info(tmp_path: Path, svc: SVC) -> None:
    info = amber.save(svc, tmp_path / "a.amber")
    assert info.file_size == os.path.getsize(tmp_path / "a.amber")


# -- bytes outside every digest, and decoders given the run of the machine ------------------------
def _with_eocd(data: bytes, **change: int) -> bytes:
    """``data`` (a zip without ZIP64 records) with fields of its end record changed."""
    fields = list(struct.unpack("<IHHHHIIH", data[-22:]))
    names = ["sig", "disk", "cd_disk", "n_disk", "n", "cd_size", "cd_start", "comment_len"]
    for name, value in change.items():
        fields[names.index(name)] = value
    return data[:-22] + struct.pack("<IHHHHIIH", *fields)


def test_bytes_no_digest_covers_are_refused(iris_file: Path) -> None:
    """A comment, a gap before the directory, or header flags Amber never sets: bytes a
    signature would not cover, or that other zip readers would interpret."""
    data = iris_file.read_bytes()
    cd_start = struct.unpack("<I", data[-6:-2])[0]
    cases = {
        "comment": (_with_eocd(data, comment_len=5) + b"hello", "carries a 5-byte comment"),
        "gap before the directory": (
            _with_eocd(data[:cd_start] + bytes(100) + data[cd_start:], cd_start=cd_start + 100),
            "100 bytes lie between entry",
        ),
        "local flags": (data[:6] + struct.pack("<H", 0x2800) + data[8:], "bad local header"),
    }
    for damaged, message in cases.values():
        iris_file.write_bytes(damaged)
        with pytest.raises(FormatError, match=message):
            amber.verify(iris_file)
        with pytest.raises(FormatError, match=message):
            amber.load(iris_file, probe="always")


def test_zlib_is_bounded_by_the_recorded_size_even_when_it_is_zero() -> None:
    import zlib

    packed = memoryview(zlib.compress(bytes(50 << 20)))  # 50 MB of zeros in 50 kB
    with pytest.raises(IntegrityError, match="zlib stream longer than recorded"):
        _codec.decompress("zlib", packed, 0, "model/model.pkl")


@pytest.mark.parametrize(
    ("codec", "encode"),
    [
        ("zlib", lambda raw: zlib.compress(raw) + b"junk after the stream"),
        ("lzma", lambda raw: _lzma(raw) + b"junk after the stream"),
        ("lzma", lambda raw: _lzma(raw, legacy=True)),
    ],
    ids=["zlib-trailing", "lzma-trailing", "lzma-legacy-alone"],
)
def test_a_stored_entry_is_one_stream_of_its_codec_and_nothing_else(
    codec: str, encode: Any
) -> None:
    """FORMAT.md 3: the stored bytes are the codec's output for the whole content: bytes after
    the stream, or the legacy .lzma format instead of .xz, are refused, as zstd and lz4
    refuse them."""
    raw = bytes(range(256)) * 64
    with pytest.raises(IntegrityError, match=f"does not decompress with {codec}"):
        _codec.decompress(codec, memoryview(encode(raw)), len(raw), "model/model.pkl")
    packed = _codec.compress(codec, memoryview(raw))
    assert _codec.decompress(codec, memoryview(packed), len(raw), "x") == raw


def _lzma(raw: bytes, *, legacy: bool = False) -> bytes:
    import lzma

    return lzma.compress(raw, format=lzma.FORMAT_ALONE if legacy else lzma.FORMAT_XZ)


def test_npy_entries_must_hold_what_their_header_promises(tmp_path: Path) -> None:
    """300 million zero-byte items, or a shape the data does not fill, in a few bytes."""
    header = b"{'descr': '|S0', 'fortran_order': False, 'shape': (300000000,), }"
    zero_size = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
    short = io.BytesIO()
    np.save(short, np.arange(10.0))
    entries = {"probe/zero.npy": zero_size, "probe/short.npy": short.getvalue()[:-8]}
    path = tmp_path / "npy.amber"
    with artifact_writer(path) as writer:
        for name, raw in entries.items():
            writer.add(name, raw)
        writer.finish({"format": "amber", "format_version": 1, "payload": {},
                       "environment": {}, "handler": "sklearn"})  # fmt: skip
    with ArtifactReader(path) as reader:
        for name in entries:
            with pytest.raises(FormatError, match="header promises"):
                reader.read_array(name)


@pytest.mark.parametrize("size", [0, 1, 63, 64, 1000, 4097, (1 << 20) - 1, 1 << 20])
def test_read_buffers_are_aligned_writable_and_of_the_asked_size(size: int) -> None:
    from amber.artifact import _reader

    views = [_reader.aligned_empty(size) for _ in range(3)]
    for view in views:
        assert view.nbytes == size and not view.readonly and view.contiguous
        if size:
            address = np.frombuffer(view, np.uint8).__array_interface__["data"][0]
            assert address % 64 == 0
            view[:] = b"\x5a" * size  # every byte can be written, and is its own
    assert all(bytes(v) == b"\x5a" * size for v in views)


def test_aligned_buffers_refuse_a_bad_size_or_alignment() -> None:
    from amber.artifact import _writeback

    assert _writeback.aligned(10, 4096).nbytes == 10
    for size, alignment in [(-1, 64), (10, 0), (10, 48), (2**62, 2**62)]:
        with pytest.raises(ValueError, match="power of two"):
            _writeback.aligned(size, alignment)


def test_a_read_fills_the_buffer_or_says_the_file_ended(tmp_path: Path) -> None:
    from amber.artifact import _reader

    size = (1 << 20) + 12_345
    data = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        out = _reader.aligned_empty(size)
        _reader._pread_into(fd, out, 0)
        assert out == data
        with pytest.raises(IntegrityError, match="truncated"):
            _reader._pread_into(fd, _reader.aligned_empty(size), 1000)
    finally:
        os.close(fd)


def test_a_zip_another_library_wrote_is_not_an_artifact(tmp_path: Path) -> None:
    """Named as such, before any rule of Amber's own zips (its entries are not aligned)."""
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.txt", "hello " * 20)
    for call in (amber.inspect, amber.load, amber.verify):
        with pytest.raises(FormatError, match=r"has no amber\.json: it is not an Amber artifact"):
            call(path)


def test_every_error_of_load_and_verify_names_the_file(
    tmp_path: Path, svc: SVC, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncated zip's 'no end-of-central-directory record found' named no file from load
    and verify (inspect named it): a batch job over many files could not tell which."""
    path = tmp_path / "cut.amber"
    amber.save(svc, path)
    path.write_bytes(path.read_bytes()[:-100])
    for call in (amber.load, amber.verify, amber.inspect):
        with pytest.raises(FormatError, match=f"^{re.escape(repr(str(path)))}: no zip end"):
            call(path)
    monkeypatch.chdir(tmp_path)  # the default registry: ./amber-models
    monkeypatch.delenv("AMBER_REGISTRY", raising=False)
    amber.Registry().push("iris", svc)
    (blob,) = (tmp_path / "amber-models" / "blobs").rglob("*.amber")
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-100])
    for call in (amber.load, amber.verify):
        with pytest.raises(FormatError, match=r"^'models:/iris/1': no zip end"):
            call("models:/iris/1")
