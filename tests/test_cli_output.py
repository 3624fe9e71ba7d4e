"""What the command line writes, and its exit status, whatever happens to its output: readers
that go away, encodings that cannot show a character, names from a hostile file, pipes and
devices as input. Each test runs ``python -m amber`` as a user runs it."""

from __future__ import annotations

import os
import pickle
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier

import amber
from amber.errors import FormatError

X, Y = load_iris(return_X_y=True)
AMBER = [sys.executable, "-m", "amber"]
# builtins.open is outside the allowlist: scanning this stream (never loading it) says unsafe
UNSAFE = b"\x80\x04cbuiltins\nopen\nX\x01\x00\x00\x00xX\x01\x00\x00\x00w\x86R."


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AMBER, *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        env={**os.environ, **env},
    )


@pytest.fixture(scope="module")
def forest() -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=5, random_state=0).fit(X, Y)


class Outer:
    class Inner:  # pickled as the global test_cli_output:Outer.Inner (protocol 4)
        pass


# -- 3, 4: readers that go away ------------------------------------------------------------------
def test_scan_of_an_unsafe_file_exits_1_when_its_reader_goes_away(tmp_path: Path) -> None:
    """`amber scan unsafe.pkl | head -1` exited 0: any BrokenPipeError was mapped to 0, so a
    script testing the pipeline's status took an unsafe file for a safe one."""
    bad = tmp_path / "unsafe.pkl"
    bad.write_bytes(UNSAFE)
    proc = subprocess.Popen(
        [*AMBER, "scan", str(bad)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # nobody reads: the first write fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1, err
    assert "Broken pipe" not in err and "Traceback" not in err


def _closed_stderr(*args: str) -> tuple[int, str]:
    """Run with a standard error whose reader is gone; return the status and standard output."""
    proc = subprocess.Popen([*AMBER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stderr.close()
    out = proc.stdout.read().decode()
    return proc.wait(timeout=120), out


def test_a_warning_to_a_closed_stderr_does_not_end_verify() -> None:
    """A BrokenPipeError raised writing a warning ended verify with status 0: a file that
    fails verification was reported as good."""
    random_model = DummyClassifier(strategy="stratified").fit(X, Y)
    with TemporaryDirectory() as folder:
        failing = Path(folder) / "random.amber"
        with pytest.warns(UserWarning, match="computes at random"):  # random_state=None
            amber.save(random_model, failing, sample=X[::5])
        # --allow-arbitrary-code warns (UnsafeLoadWarning) before the probe fails
        status, _ = _closed_stderr("verify", str(failing), "--allow-arbitrary-code")
    assert status == 1


def test_a_warning_to_a_closed_stderr_does_not_spoil_convert(tmp_path: Path) -> None:
    """The BrokenPipeError of a warning written during convert's probe was recorded as the
    probe's mismatch: a good pickle failed to convert (exit 1, no message)."""
    import pandas as pd

    # a forest fitted on a table, probed with an array: it warns that the array has no feature
    # names (a CSV sample for a forest fitted on an array is now given as an array: no warning)
    named = RandomForestClassifier(n_estimators=5, random_state=0)
    named.fit(pd.DataFrame(X, columns=["a", "b", "c", "d"]), Y)
    legacy = tmp_path / "rf.pkl"
    legacy.write_bytes(pickle.dumps(named, protocol=5))
    sample = tmp_path / "sample.npy"
    np.save(sample, X[:8])
    target = tmp_path / "rf.amber"
    status, out = _closed_stderr("convert", str(legacy), str(target), "--sample", str(sample))
    assert status == 0 and "(verified)" in out
    with pytest.warns(UserWarning, match="feature names"):
        amber.verify(target)


# -- output that cannot be written ---------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("buffered", [False, True], ids=["unbuffered", "buffered"])
def test_output_that_cannot_be_written_is_named_not_the_input(
    tmp_path: Path, forest: RandomForestClassifier, buffered: bool
) -> None:
    """`amber inspect m.amber > /dev/full` said "'m.amber': no space left on device": the
    input was blamed for the output's failure. Block-buffered (no PYTHONUNBUFFERED), the last
    flush failed after main() returned: a traceback and status 120."""
    artifact, legacy = tmp_path / "rf.amber", tmp_path / "rf.pkl"
    amber.save(forest, artifact)
    legacy.write_bytes(pickle.dumps(forest, protocol=5))
    env = {k: v for k, v in os.environ.items() if not (buffered and k == "PYTHONUNBUFFERED")}
    for args in (("inspect", artifact), ("inspect", "--json", artifact), ("scan", legacy)):
        with open("/dev/full", "w") as full:
            done = subprocess.run(
                [*AMBER, *map(str, args)], stdout=full, stderr=subprocess.PIPE, text=True,
                env=env, timeout=120,
            )  # fmt: skip
        assert done.returncode == 2, (args, done.stderr)
        said = done.stderr
        assert said.startswith(f"amber {args[0]}: error: writing to standard output failed: ")
        assert "no space left on device" in said and "send the output elsewhere" in said
        assert str(args[-1]) not in said and "Traceback" not in said and said.count("\n") == 1


# -- 9: encodings --------------------------------------------------------------------------------
def test_output_the_encoding_cannot_show_is_replaced(
    tmp_path: Path, forest: RandomForestClassifier
) -> None:
    """verify's check marks under cp1252 (Windows' encoding for a redirected stdout), and a
    file name with an accent under ASCII, made the commands exit 2 with a codec error."""
    path = tmp_path / "forêt.amber"
    amber.save(forest, path, sample=X[:8])
    checked = run("verify", str(path), PYTHONIOENCODING="cp1252")
    assert checked.returncode == 0, checked.stderr
    assert "  ? format 1: zip structure" in checked.stdout and "probe matched" in checked.stdout
    for command in ("inspect", "scan", "verify"):
        shown = run(command, str(path), PYTHONIOENCODING="ascii")
        assert shown.returncode == 0, (command, shown.stderr)
        assert "for?t.amber" in shown.stdout
    missing = run("verify", str(tmp_path / "absent-é.amber"), PYTHONIOENCODING="ascii")
    assert missing.returncode == 2 and "absent-" in missing.stderr


# -- 5, 6: what scan shows -----------------------------------------------------------------------
def test_scan_marks_an_untrusted_nested_class(tmp_path: Path) -> None:
    """The table compared the dotted spelling mod.Outer.Inner with the untrusted one
    mod:Outer.Inner, and showed the class as ok under an unsafe verdict."""
    path = tmp_path / "nested.pkl"
    path.write_bytes(pickle.dumps(Outer.Inner(), protocol=4))
    scanned = run("scan", str(path))
    assert scanned.returncode == 1
    assert f"UNTRUSTED  {__name__}:Outer.Inner" in scanned.stdout
    assert " ok " not in scanned.stdout


def test_names_from_a_hostile_file_cannot_drive_the_terminal(tmp_path: Path) -> None:
    """A global named "system\\r\\x1b[2Kverdict: safe" erased scan's unsafe verdict on a
    terminal; the same went for UntrustedTypeError's text and for file names."""
    hostile = b"system\r\x1b[2Kverdict: safe"
    path = tmp_path / "hostile\x1b[32m.pkl"
    path.write_bytes(b"\x80\x02cos\n" + hostile + b"\n.")
    scanned = run("scan", str(path))
    assert scanned.returncode == 1
    assert "\x1b" not in scanned.stdout and "\r" not in scanned.stdout
    assert "os.system\\r\\x1b[2Kverdict: safe" in scanned.stdout
    assert "hostile\\x1b[32m.pkl" in scanned.stdout
    converted = run("convert", str(path), str(tmp_path / "out.amber"))
    assert converted.returncode == 1 and "UntrustedTypeError" in converted.stderr
    assert "\x1b" not in converted.stderr and "\r" not in converted.stderr
    assert "os.system\\r\\x1b[2Kverdict: safe" in converted.stderr


# -- 2: artifacts whose payload is not a pickle --------------------------------------------------
def test_scan_of_a_framework_artifact_lists_its_manifest_names(tmp_path: Path) -> None:
    """scan said 'verdict: safe', 'globals (0)' and exit 0 for a torch artifact naming a class
    outside the allowlist, which inspect shows UNTRUSTED and verify refuses."""
    torch = pytest.importorskip("torch")
    xgboost = pytest.importorskip("xgboost")
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)

    class Net(torch.nn.Module):
        def __init__(self, n: int = 4) -> None:
            super().__init__()
            self.n = n
            self.lin = torch.nn.Linear(n, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x)

    Net.__module__, Net.__qualname__ = "mymodels", "Net"  # a user's own module
    path = tmp_path / "net.amber"
    with pytest.warns(UserWarning, match="outside Amber's allowlist"):
        amber.save(Net(), path, format="class")
    assert amber.inspect(path).untrusted == ["mymodels.Net"]
    scanned = run("scan", str(path))
    assert scanned.returncode == 1, scanned.stderr
    assert "verdict: unsafe" in scanned.stdout and "UNTRUSTED  mymodels.Net" in scanned.stdout
    assert "torch payload" in scanned.stdout
    assert run("verify", str(path)).returncode == 1
    booster = xgboost.XGBClassifier(n_estimators=2).fit(x, (x[:, 0] > 0).astype(int))
    safe = tmp_path / "xgb.amber"
    amber.save(booster, safe)
    scanned = run("scan", str(safe))
    assert scanned.returncode == 0, scanned.stderr
    assert "verdict: safe" in scanned.stdout
    assert "ok         xgboost.sklearn.XGBClassifier" in scanned.stdout


# -- 10, 11: pipes and devices -------------------------------------------------------------------
def test_scan_and_inspect_read_a_pipe_once(tmp_path: Path, forest: RandomForestClassifier) -> None:
    """Sniffing the format consumed the first 4 bytes of a pipe, and the path was opened again:
    a good pickle was 'not a pickle', a good artifact 'not an Amber artifact'."""
    data = pickle.dumps(forest, protocol=4)
    scanned = subprocess.run(
        [*AMBER, "scan", "/dev/stdin"], input=data, capture_output=True, timeout=120
    )
    assert scanned.returncode == 0, scanned.stderr
    assert b"verdict: safe" in scanned.stdout and b"RandomForestClassifier" in scanned.stdout
    artifact = tmp_path / "rf.amber"
    amber.save(forest, artifact, sample=X[:4])
    for command in ("inspect", "scan"):
        shown = subprocess.run(
            [*AMBER, command, "/dev/stdin"],
            input=artifact.read_bytes(),
            capture_output=True,
            timeout=120,
        )
        assert shown.returncode == 0, (command, shown.stderr)
        assert b"RandomForestClassifier" in shown.stdout
        assert b"/dev/stdin" in shown.stdout and b"amber-" not in shown.stdout


def test_an_endless_device_is_refused_at_once() -> None:
    """`amber scan /dev/zero` read it whole into memory, then a MemoryError traceback."""

    def limit_memory() -> None:  # should it read on, it fails in the child, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    started = time.monotonic()
    scanned = subprocess.run(
        [*AMBER, "scan", "/dev/zero"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_memory,
    )
    assert scanned.returncode == 1
    assert "/dev/zero is not a pickle, joblib or Amber file" in scanned.stderr
    assert "Traceback" not in scanned.stderr
    assert time.monotonic() - started < 60


def test_an_endless_pipe_is_read_only_up_to_the_limit(tmp_path: Path) -> None:
    """A pipe that looks like a pickle and never ends is refused after ``limit`` bytes."""
    from amber.security._foreign import read_stream

    fifo = tmp_path / "endless"
    os.mkfifo(fifo)
    stop = threading.Event()

    def feed() -> None:
        try:
            with open(fifo, "wb") as f:
                f.write(b"\x80\x04")
                while not stop.is_set():
                    f.write(b"(" * 65536)
        except BrokenPipeError:
            pass  # the reader stopped: what is under test

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        with pytest.raises(FormatError, match="more than 1048576 bytes"):
            read_stream(fifo, limit=1 << 20)
    finally:
        stop.set()
        writer.join(timeout=10)


def test_a_pipe_longer_than_the_limit_is_an_input_error(tmp_path: Path) -> None:
    """A pipe refused for its length exited 1, the status of a failed check; it is an input
    that cannot be read, 2. The limit (4 GiB) is lowered to 1 MiB in the child, as the
    constant it is, so that the refusal comes after 1 MiB instead of 4 GiB."""
    child = (
        "import sys, amber.security._foreign as f; f.STREAM_LIMIT = 1 << 20; "
        "from amber.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    long_pickle = b"\x80\x04" + b"(" * (2 << 20)
    for args in (["scan"], ["inspect"], ["convert", "/dev/stdin", str(tmp_path / "o.amber")]):
        args = args if len(args) > 1 else [*args, "/dev/stdin"]
        done = subprocess.run(
            [sys.executable, "-c", child, *args], input=long_pickle, capture_output=True,
            timeout=120,
        )  # fmt: skip
        said = done.stderr.decode()
        assert done.returncode == 2, (args, said)
        assert "/dev/stdin is a pipe or device that gave more than 1048576 bytes" in said
        assert "give that file instead" in said
    assert list(tmp_path.iterdir()) == []


def _process_state(pid: int) -> str:
    """The kernel's view of a stuck process: its state, where it waits, its signal masks."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError as exc:
        return f"(no /proc: {exc})"
    keep = ("State", "SigBlk", "SigIgn", "SigCgt", "SigPnd", "ShdPnd", "Threads")
    return f"wchan={wchan} " + " ".join(line for line in status if line.startswith(keep))


def _wait_for_reader(fifo: Path, proc: subprocess.Popen[bytes]) -> int:
    """The write end of ``fifo``, once ``proc`` has opened it to read."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.005)


def _sigint_as_by_default() -> None:
    """In the child, before exec: SIGINT as a terminal's Ctrl-C finds it. A job that a
    non-interactive shell starts in the background (CI's) ignores SIGINT, and its children
    inherit that: Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("command", ["scan", "inspect", "convert"])
def test_a_signal_removes_the_temporary_files(tmp_path: Path, command: str, signum: int) -> None:
    """SIGTERM while scan or inspect read a pipe left its copy (amber-*/stream in the
    temporary folder), and during convert the .convert file beside the target: only SIGINT
    unwound the command, and it printed KeyboardInterrupt's traceback. Both now remove them,
    then end by the signal they got, quietly."""
    fifo, tmp, target = tmp_path / "pipe", tmp_path / "tmp", tmp_path / "out.amber"
    os.mkfifo(fifo)
    tmp.mkdir()
    args = [command, str(fifo)] + ([str(target)] if command == "convert" else [])
    proc = subprocess.Popen(
        [*AMBER, *args],
        stderr=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmp)},
        preexec_fn=_sigint_as_by_default,
    )
    fd = _wait_for_reader(fifo, proc)
    try:
        os.write(fd, b"\x80\x04(")  # a pickle's start: the command reads on, waiting for more
        # the temporary files are made before the pipe is opened: they are there now (the
        # pipe's copy, amber-*/stream, and for convert the .convert file beside the target)
        made = [*tmp.rglob("*"), *tmp_path.glob(".out.amber.*")]
        assert len(made) == (3 if command == "convert" else 2), made
        proc.send_signal(signum)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # say where it was stuck (seen once in a CI run)
            state = _process_state(proc.pid)
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"{command} did not end on signal {signum}: {state}; {err[-2000:]!r}")
    finally:
        os.close(fd)
    assert proc.returncode == -signum, err
    assert list(tmp.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "pipe",
        "tmp",
    ]
    assert b"Traceback" not in err


def test_text_in_any_script_is_shown_as_written(tmp_path: Path) -> None:
    """The escaping took every character str.isprintable() rejects: Japanese's ideographic
    space and Persian's zero-width non-joiner came out as \\u3000 and \\u200c. Only what can
    drive the terminal is escaped (controls, separators, bidirectional overrides)."""
    from amber._info import printable_line

    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # mi\u200ckhaham
    for text in ("モデル\u3000最終", persian, "no\u00a0break", "soft\u00adhyphen"):
        assert printable_line(text) == text
    assert printable_line("a\x1b[2K\rb\u2028c\u202ed") == "a\\x1b[2K\\rb\\u2028c\\u202ed"
    name = "モデル\u3000最終"
    (tmp_path / f"{name}.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=5))
    done = subprocess.run(
        [sys.executable, "-m", "amber", "scan", f"{name}.pkl"],
        capture_output=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{name}.pkl".encode() in done.stdout


# -- usability audit: inspect's text -------------------------------------------------------------
def test_inspect_shortens_long_metadata_and_counts_in_words(tmp_path: Path) -> None:
    """A 20 MB metadata string was printed whole (``--json`` keeps it whole); an artifact with
    no globals said "globals     0 referenced:" over an empty list."""
    path = tmp_path / "m.amber"
    huge = "y" * 20_000_000
    amber.save(DummyClassifier().fit(X, Y), path, metadata={"huge": huge, "n": 1})
    shown = run("inspect", str(path))
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout) < 5_000
    assert f'"huge": "{"y" * 199}' in shown.stdout
    assert "... (20,000,000 characters; `amber inspect --json` shows it whole)" in shown.stdout
    assert '"n": 1' in shown.stdout
    whole = run("inspect", "--json", str(path))
    assert whole.returncode == 0 and huge in whole.stdout
    info = amber.inspect(path)
    one_entry = {
        **info.manifest,
        "globals": [],
        "entries": dict(list(info.manifest["entries"].items())[:1]),
    }
    text = str(amber.ArtifactInfo(path, one_entry, info.file_size))
    assert "  globals     none referenced" in text and "referenced:" not in text
    assert "  entries     1 entry (" in text


def test_counts_agree_with_their_nouns() -> None:
    from amber._info import _describe

    records = {"kind": "records", "keys": {"a": "int"}, "more_keys": 1}
    assert _describe(records) == "records {a:int, +1 more key}"
    assert _describe({**records, "more_keys": 2}) == "records {a:int, +2 more keys}"
