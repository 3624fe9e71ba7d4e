"""A registry this process can only read (a read-only mount, or a folder baked into an image and
owned by another user): loads, listings and the server work; changes say why they cannot."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reg_helpers import predicts_like

import amber
from amber.cli import main
from amber.registry import CatalogReadOnly, CatalogUnavailable, Registry


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` and everything in it unwritable for this process, then restore it.

    As root (CI), permission bits do not stop writes, so the folder and its files are made
    immutable (``chattr +i``); as another user their write bits are cleared.
    """
    paths = [folder, *folder.rglob("*")]
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in paths}
        for p in reversed(paths):
            p.chmod(modes[p] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield
        finally:
            for p in paths:
                p.chmod(modes[p])
        return
    names = [str(p) for p in paths]
    done = subprocess.run(["chattr", "+i", *names], capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["chattr", "-i", *names], capture_output=True)
        pytest.skip(f"cannot make a folder read-only for root here: {done.stderr.strip()}")
    try:
        assert not os.access(folder, os.W_OK)
        yield
    finally:
        subprocess.run(["chattr", "-i", *names], check=True)


@pytest.fixture
def published(tmp_path: Path, iris_model: Any, other_model: Any) -> Path:
    root = tmp_path / "reg"
    with Registry(root) as reg:
        reg.push("iris", iris_model, alias="production")
        reg.push("iris", other_model)
    return root


def test_a_read_only_registry_loads_lists_and_refuses_changes_clearly(
    published: Path, iris_model: Any, other_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMBER_REGISTRY", str(published))
    before = sorted(p.name for p in published.rglob("*"))
    with read_only(published), Registry(published) as reg:
        assert predicts_like(reg.load("models:/iris@production"), iris_model)
        assert predicts_like(reg.load("models:/iris/2"), other_model)
        assert [v.version for v in reg.versions("iris")] == [1, 2]
        assert reg.aliases("iris") == {"production": 1}
        assert predicts_like(amber.load("models:/iris/1"), iris_model)
        for change in (
            lambda: reg.push("iris", iris_model),
            lambda: reg.set_alias("iris", "production", 2),
            lambda: reg.delete("iris", 2),
            lambda: reg.gc(),
        ):
            with pytest.raises(CatalogReadOnly, match=r"read-only here.*need a writable registry"):
                change()
        assert reg.aliases("iris") == {"production": 1}
    assert sorted(p.name for p in published.rglob("*")) == before


def test_the_cli_lists_a_read_only_registry(
    published: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with read_only(published):
        assert main(["models", "list", "--registry", str(published)]) == 0
        assert "@production=1" in capsys.readouterr().out
        assert main(["models", "alias", "iris", "staging", "2", "--registry", str(published)])
        assert "read-only here" in capsys.readouterr().err


def test_a_read_only_catalog_of_an_older_schema_says_how_to_upgrade_it(published: Path) -> None:
    with sqlite3.connect(published / "catalog.sqlite") as db:
        table = "amber_schema_migrations"
        db.execute(f"DELETE FROM {table} WHERE version = (SELECT max(version) FROM {table})")
    db.close()
    with (
        read_only(published),
        Registry(published) as reg,
        pytest.raises(CatalogUnavailable, match=r"older than .* read-only here: open it once"),
    ):
        reg.versions("iris")
