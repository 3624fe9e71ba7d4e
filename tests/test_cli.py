"""The command line, run as a user runs it: a subprocess of ``python -m amber``."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

import amber

X, Y = load_iris(return_X_y=True)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amber", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.fixture(scope="module")
def forest() -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=5, random_state=0).fit(X, Y)


def test_inspect_verify_and_json(tmp_path: Path, forest: RandomForestClassifier) -> None:
    path = tmp_path / "rf.amber"
    amber.save(forest, path, sample=X[:8], metadata={"metrics": {"accuracy": 1.0}})
    shown = run("inspect", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "sklearn.ensemble._forest.RandomForestClassifier" in shown.stdout
    assert "scikit-learn==" in shown.stdout
    as_json = json.loads(run("inspect", "--json", str(path)).stdout)
    assert as_json["metadata"] == {"metrics": {"accuracy": 1.0}}
    checked = run("verify", str(path))
    assert checked.returncode == 0, checked.stderr
    assert "probe matched" in checked.stdout


def test_verify_fails_with_status_1_on_corruption(
    tmp_path: Path, forest: RandomForestClassifier
) -> None:
    path = tmp_path / "rf.amber"
    amber.save(forest, path)
    data = bytearray(path.read_bytes())
    data[200] ^= 0x40
    path.write_bytes(data)
    result = run("verify", str(path))
    assert result.returncode == 1
    assert "Error" in result.stderr and "rf.amber" in result.stderr
    assert "Traceback" not in result.stderr


def test_scan_and_convert_a_legacy_pickle(tmp_path: Path, forest: RandomForestClassifier) -> None:
    legacy = tmp_path / "legacy.pkl"
    legacy.write_bytes(pickle.dumps(forest, protocol=4))
    scanned = run("scan", str(legacy))
    assert scanned.returncode == 0, scanned.stderr
    assert "RandomForestClassifier" in scanned.stdout and "safe" in scanned.stdout
    np.save(tmp_path / "sample.npy", X[:10])
    converted = run(
        "convert", str(legacy), str(tmp_path / "rf.amber"), "--sample", str(tmp_path / "sample.npy")
    )
    assert converted.returncode == 0, converted.stderr
    model = amber.load(tmp_path / "rf.amber", probe="always")
    np.testing.assert_array_equal(model.predict_proba(X), forest.predict_proba(X))


def test_scan_flags_an_unsafe_pickle_with_status_1(tmp_path: Path) -> None:
    marker = tmp_path / "touched"
    # builtins.open(marker, "w"): would create the marker file if anything ran it.
    stream = (
        b"\x80\x04cbuiltins\nopen\n"
        b"X" + len(str(marker)).to_bytes(4, "little") + str(marker).encode()
        + b"X\x01\x00\x00\x00w\x86R."
    )  # fmt: skip
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(stream)
    result = run("scan", str(bad))
    assert result.returncode == 1
    assert "builtins.open" in result.stdout
    loaded = run("convert", str(bad), str(tmp_path / "bad.amber"))
    assert loaded.returncode == 1
    assert "UntrustedTypeError" in loaded.stderr and "builtins.open" in loaded.stderr
    assert not marker.exists()
    assert not (tmp_path / "bad.amber").exists()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("inspect").returncode == 2
    missing = run("inspect", str(tmp_path / "absent.amber"))
    assert missing.returncode == 2
    assert "no such file" in missing.stderr


@pytest.mark.parametrize(
    ("argv", "usage", "extra"),
    [
        (["inspect", "model.amber", "extra"], "usage: amber inspect ", "extra"),
        (["verify", "--bogus", "model.amber"], "usage: amber verify ", "--bogus"),
        (["models", "list", "x", "y"], "usage: amber models list ", "x y"),
        (["models", "show", "iris", "--bogus"], "usage: amber models show ", "--bogus"),
    ],
)
def test_unrecognized_arguments_show_the_subcommands_usage(
    argv: list[str], usage: str, extra: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from amber.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    assert f"amber {' '.join(usage.split()[2:])}: error: unrecognized arguments: {extra}\n" in err


def test_output_piped_into_a_reader_that_quits_is_not_an_error(
    tmp_path: Path, forest: RandomForestClassifier
) -> None:
    """`amber scan FILE | head -1`: the reader closing the pipe is not a usage error (it was
    exit status 2 and 'error: [Errno 32] Broken pipe', depending on timing)."""
    path = tmp_path / "legacy.pkl"
    path.write_bytes(pickle.dumps(forest, protocol=5))
    proc = subprocess.Popen(
        [sys.executable, "-m", "amber", "scan", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # nobody reads: the first write fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Broken pipe" not in err and "Traceback" not in err


def test_allow_arbitrary_code_on_the_command_line(tmp_path: Path) -> None:
    """``amber.load(allow_arbitrary_code=True)`` had no command-line form: a file one made
    oneself holding a class outside the allowlist could be neither converted nor verified
    (the error said to pass a keyword no command takes)."""
    legacy = tmp_path / "ns.pkl"
    legacy.write_bytes(pickle.dumps(types.SimpleNamespace(a=1), protocol=5))
    target = tmp_path / "ns.amber"
    refused = run("convert", str(legacy), str(target))
    assert refused.returncode == 1 and "types.SimpleNamespace" in refused.stderr
    assert not target.exists()
    converted = run("convert", str(legacy), str(target), "--allow-arbitrary-code")
    assert converted.returncode == 0, converted.stderr
    assert "UnsafeLoadWarning" in converted.stderr
    with pytest.warns(amber.errors.UnsafeLoadWarning):
        assert amber.load(target, allow_arbitrary_code=True) == types.SimpleNamespace(a=1)
    assert run("verify", str(target)).returncode == 1
    checked = run("verify", str(target), "--allow-arbitrary-code")
    assert checked.returncode == 0, checked.stderr
    assert "WITHOUT the allowlist" in checked.stdout and "UnsafeLoadWarning" in checked.stderr


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


def test_an_unvettable_pickle_names_the_command_line_flag(tmp_path: Path) -> None:
    """The refusal said "only allow_arbitrary_code=True loads such a file": a keyword of
    amber.load, which the command line spells --allow-arbitrary-code."""
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_RunsCode()))
    said = run("convert", str(evil), str(tmp_path / "ev.amber"))
    assert said.returncode == 1 and "posix.system" in said.stderr
    assert "only --allow-arbitrary-code loads such a file" in said.stderr
    assert "allow_arbitrary_code" not in said.stderr


def test_every_convert_option_is_described() -> None:
    from amber.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    convert = sub.choices["convert"]
    undescribed = [a.dest for a in convert._actions if not a.help]
    assert undescribed == []
    assert "compress the artifact's entries" in convert.format_help()
