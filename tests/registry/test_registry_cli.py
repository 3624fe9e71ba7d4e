"""The registry's command line: ``amber.cli.main`` in-process (fast), plus one run of
``python -m amber`` in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from _reg_services import PostgresServer, S3Server
from reg_helpers import Backend, s3_postgresql

from amber.cli import main


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


Cli = Callable[..., Done]


@pytest.fixture
def amber_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Cli:
    """``amber ARGS...`` in tmp_path with extra environment variables; returns what it printed."""
    monkeypatch.chdir(tmp_path)
    for var in ("AMBER_REGISTRY", "AMBER_CATALOG", "AMBER_STORAGE_OPTIONS", "AMBER_CACHE"):
        monkeypatch.delenv(var, raising=False)

    def run(*args: str, env: dict[str, str] | None = None) -> Done:
        with monkeypatch.context() as m:
            for key, value in (env or {}).items():
                m.setenv(key, value)
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse usage errors
                code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Done(code, out, err)

    return run


def ok(done: Done | subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_python_m_amber_runs_the_registry_commands(tmp_path: Path, artifact: Path) -> None:
    env = {**os.environ, "AMBER_REGISTRY": str(tmp_path / "reg")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "amber", *args],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip

    assert "as models:/iris/1" in ok(run("push", str(artifact), "--name", "iris"))
    assert "iris  1 version, latest 1" in ok(run("models", "list"))


def test_push_alias_show_versions_delete_gc(amber_cli: Cli, tmp_path: Path, artifact: Path) -> None:
    env = {"AMBER_REGISTRY": str(tmp_path / "reg")}
    out = ok(
        amber_cli(
            "push", str(artifact), "--name", "iris", "--alias", "staging",
            "--metric", "f1=0.9", "--tag", "team=risk", "--description", "first",
            env=env,
        )
    )  # fmt: skip
    assert "as models:/iris/1 (@staging)" in out and "f1=0.9" in out
    ok(amber_cli("push", str(artifact), "--name", "iris", env=env))
    listed = ok(amber_cli("models", "list", env=env))
    assert "iris  2 versions, latest 2  @staging=1" in listed
    shown = json.loads(ok(amber_cli("models", "show", "iris@staging", "--json", env=env)))
    assert (shown["version"], shown["tags"], shown["description"]) == (1, {"team": "risk"}, "first")
    versions = ok(amber_cli("models", "versions", "iris", env=env))
    assert len(versions.strip().splitlines()) == 2
    moved = ok(amber_cli("models", "alias", "iris", "staging", "2", env=env))
    assert "iris@staging -> 2 (was 1)" in moved
    assert "@staging -> 2" in ok(amber_cli("models", "alias", "iris", env=env))
    history = ok(amber_cli("models", "alias", "iris", "--history", env=env))
    assert "iris@staging -> 1" in history and "iris@staging -> 2 (was 1)" in history
    refused = amber_cli("models", "delete", "iris", "2", env=env)
    assert refused.returncode == 1 and "VersionConflict" in refused.stderr
    assert "deleted models:/iris/2" in ok(
        amber_cli("models", "delete", "iris", "2", "--force", env=env)
    )
    assert "removed 0 unreferenced" in ok(amber_cli("models", "gc", env=env))
    ok(amber_cli("models", "delete", "iris", "1", env=env))
    kept = ok(amber_cli("models", "gc", env=env))
    assert "removed 0 unreferenced" in kept and "1 of versions deleted within" in kept
    assert "removed 1 unreferenced" in ok(amber_cli("models", "gc", "--grace", "0", env=env))


def test_lookup_errors_exit_2_with_the_message(
    amber_cli: Cli, tmp_path: Path, artifact: Path
) -> None:
    reg = ["--registry", str(tmp_path / "reg")]
    ok(amber_cli("push", str(artifact), "--name", "iris", *reg))
    missing = amber_cli("models", "show", "models:/wine/1", *reg)  # (as a missing file)
    assert missing.returncode == 2
    assert "ModelNotFound: no model named 'wine'" in missing.stderr and "iris" in missing.stderr
    bad = amber_cli("models", "show", "models:/iris", *reg)
    assert bad.returncode == 2 and "InvalidURI" in bad.stderr
    usage = amber_cli("push", str(artifact), "--name", "iris", "--metric", "f1", *reg)
    assert usage.returncode == 2 and "write KEY=VALUE" in usage.stderr


def test_keygen_sign_export_import_verify(amber_cli: Cli, tmp_path: Path, artifact: Path) -> None:
    out = ok(amber_cli("keygen", "--out", "alice"))
    assert "key id:" in out
    assert stat.S_IMODE((tmp_path / "alice.key").stat().st_mode) == 0o600
    again = amber_cli("keygen", "--out", "alice")
    assert again.returncode == 2 and "--force" in again.stderr
    ok(amber_cli("keygen", "--out", "mallory"))

    a = ["--registry", str(tmp_path / "a")]
    ok(amber_cli("push", str(artifact), "--name", "iris", "--alias", "production", *a))
    ok(amber_cli("export", "models:/iris@production", "iris-v1.amber", "--key", "alice.key", *a))
    verified = ok(amber_cli("verify", "iris-v1.amber", "--pubkey", "alice.pub"))
    assert "(iris version 1)" in verified
    wrong = amber_cli("verify", "iris-v1.amber", "--pubkey", "mallory.pub")
    assert wrong.returncode == 1 and "not one of the trusted keys" in wrong.stderr

    b = ["--registry", str(tmp_path / "b")]
    imported = ok(amber_cli("import", "iris-v1.amber", "--alias", "production", *b))
    assert "as models:/iris/1" in imported
    renamed = ok(amber_cli("import", "iris-v1.amber", "--name", "iris-eu", *b))
    assert "as models:/iris-eu/1" in renamed

    signed = ok(
        amber_cli(
            "sign", str(artifact), "--key", "mallory.key", "--name", "iris", "--version", "7",
            "--out", "m.amber",
        )
    )  # fmt: skip
    assert "(iris version 7)" in signed
    ok(amber_cli("verify", "m.amber", "--pubkey", "mallory.pub", "--pubkey", "alice.pub"))
    unsigned = amber_cli("verify", str(artifact), "--pubkey", "alice.pub")
    assert unsigned.returncode == 1 and "is not signed" in unsigned.stderr


def test_the_cli_on_s3_and_postgresql(
    amber_cli: Cli, tmp_path: Path, artifact: Path, postgres: PostgresServer, s3: S3Server
) -> None:
    backend: Backend = s3_postgresql(tmp_path, postgres, s3)
    env = backend.env()
    ok(amber_cli("push", str(artifact), "--name", "iris", "--alias", "production", env=env))
    flags = ["--registry", backend.location, "--catalog", backend.catalog or ""]
    del env["AMBER_REGISTRY"], env["AMBER_CATALOG"]
    listed = ok(amber_cli("models", "list", *flags, env=env))
    assert "iris  1 version, latest 1  @production=1" in listed
    ok(amber_cli("export", "models:/iris@production", "out.amber", *flags, env=env))
    assert (tmp_path / "out.amber").is_file()
    no_catalog = amber_cli("models", "list", "--registry", backend.location, env=env)
    assert no_catalog.returncode == 2 and "needs a catalog database" in no_catalog.stderr


def test_inspect_verify_and_scan_take_a_models_uri(
    amber_cli: Cli, tmp_path: Path, artifact: Path
) -> None:
    """As amber.load does: a models:/ URI in the default registry; verify also checks the
    manifest recorded at push. Before, all three said 'no such file'."""
    env = {"AMBER_REGISTRY": str(tmp_path / "reg")}
    ok(amber_cli("push", str(artifact), "--name", "iris", "--alias", "prod", env=env))
    assert "LogisticRegression" in ok(amber_cli("inspect", "models:/iris@prod", env=env))
    verified = ok(amber_cli("verify", "models:/iris/1", env=env))
    assert "the manifest is the one recorded at push" in verified
    assert "verdict: safe" in ok(amber_cli("scan", "models:/iris/latest", env=env))
    missing = amber_cli("verify", "models:/nope@prod", env=env)
    assert missing.returncode == 2 and "ModelNotFound" in missing.stderr


def test_registry_commands_escape_what_a_pusher_wrote(
    amber_cli: Cli, tmp_path: Path, artifact: Path
) -> None:
    """A tag or description is whatever its pusher wrote: printed raw, an escape sequence
    could erase a line of the terminal and write another in its place."""
    env = {"AMBER_REGISTRY": str(tmp_path / "reg")}
    spoof = "ok\x1b[2K\rverdict: approved"
    ok(amber_cli("push", str(artifact), "--name", "iris", "--tag", f"review={spoof}",
                 "--description", spoof, env=env))  # fmt: skip
    for args in (("models", "show", "iris/1"), ("models", "versions", "iris")):
        shown = ok(amber_cli(*args, env=env))
        assert "\x1b" not in shown and "\r" not in shown, shown
    assert "ok\\x1b[2K\\rverdict: approved" in ok(amber_cli("models", "show", "iris/1", env=env))


def test_a_registry_location_that_is_a_file_or_absent_is_said(
    amber_cli: Cli, tmp_path: Path, artifact: Path
) -> None:
    for args in (("models", "list"), ("push", str(artifact), "--name", "iris")):
        done = amber_cli(*args, "--registry", str(artifact))
        assert done.returncode == 2, done
        assert "is a file, not a folder" in done.stderr, done.stderr
    for args in (("models", "list"), ("inspect", "models:/iris/1")):
        done = amber_cli(*args, "--registry", "")
        assert done.returncode == 2 and "--registry is empty" in done.stderr, done
    absent = ok(amber_cli("models", "list", "--registry", str(tmp_path / "typo")))
    assert "no registry there yet" in absent
    assert not (tmp_path / "typo").exists()  # a listing creates nothing
    ok(amber_cli("push", str(artifact), "--name", "iris", "--registry", str(tmp_path / "reg")))
    assert "no registry there yet" not in ok(
        amber_cli("models", "list", "--registry", str(tmp_path / "reg"))
    )


def test_inspect_and_verify_take_a_registry_option_for_a_uri(
    amber_cli: Cli, tmp_path: Path, artifact: Path
) -> None:
    reg = str(tmp_path / "reg")
    ok(amber_cli("push", str(artifact), "--name", "iris", "--registry", reg))
    assert "models:/iris/1: the manifest is the one recorded at push" in ok(
        amber_cli("verify", "models:/iris/1", "--registry", reg)
    )
    assert "LogisticRegression" in ok(amber_cli("inspect", "models:/iris/1", "--registry", reg))
    assert "verdict: safe" in ok(amber_cli("scan", "models:/iris/1", "--registry", reg))
    assert "AMBER_REGISTRY" not in os.environ  # set for the command only
    # without the option, the default registry (./amber-models in tmp_path) has no such model
    assert amber_cli("inspect", "models:/iris/1").returncode != 0


def test_a_folder_is_called_a_folder_and_export_names_the_uri(
    amber_cli: Cli, tmp_path: Path, artifact: Path
) -> None:
    reg = ["--registry", str(tmp_path / "reg")]
    (tmp_path / "adir").mkdir()
    for args in (("push", "adir", "--name", "iris"), ("import", "adir"), ("serve", "adir")):
        done = amber_cli(*args, *reg)
        assert done.returncode == 2 and "is a folder" in done.stderr, done
    ok(amber_cli("push", str(artifact), "--name", "iris", *reg))
    done = amber_cli("export", "models:/iris/9", "out.amber", *reg)
    assert done.returncode == 2, done
    assert "'models:/iris/9': iris has no version 9" in done.stderr, done.stderr
    assert "out.amber" not in done.stderr


def test_alias_history_says_when_there_is_none_and_takes_no_version(
    amber_cli: Cli, tmp_path: Path, artifact: Path
) -> None:
    reg = ["--registry", str(tmp_path / "reg")]
    ok(amber_cli("push", str(artifact), "--name", "iris", *reg))
    said = ok(amber_cli("models", "alias", "iris", "nothing", "--history", *reg))
    assert said.strip() == "no history: iris@nothing was never set"
    for flag in ("--history", "--remove"):
        done = amber_cli("models", "alias", "iris", "staging", "1", flag, *reg)
        assert done.returncode == 2 and f"{flag} takes no VERSION" in done.stderr, done
    assert "staging" not in ok(amber_cli("models", "alias", "iris", *reg))  # nothing was set


def test_converting_is_advised_only_for_what_convert_can_read(
    amber_cli: Cli, tmp_path: Path
) -> None:
    import pickle

    (tmp_path / "empty.amber").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a model\n")
    (tmp_path / "model.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=5))
    ok(amber_cli("keygen", "--out", "k"))
    reg = ["--registry", str(tmp_path / "reg")]
    for name, convertible in (("empty.amber", False), ("notes.txt", False), ("model.pkl", True)):
        for args in (
            ("push", name, "--name", "iris", *reg),
            ("import", name, *reg),
            ("sign", name, "--key", "k.key"),
        ):
            done = amber_cli(*args)
            assert done.returncode != 0, done
            assert ("amber convert" in done.stderr) == convertible, done.stderr
            if not convertible:
                assert "is empty" in done.stderr or "is not a pickle" in done.stderr, done.stderr
