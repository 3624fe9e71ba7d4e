"""Deleting versions while others read them: gc's grace for deleted versions, and what a load
that lost the race says."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from reg_helpers import predicts_like

import amber
from amber.registry import Registry


def test_a_load_of_a_version_deleted_meanwhile_says_so(
    tmp_path: Path, iris_model: Any, other_model: Any
) -> None:
    reg = Registry(tmp_path / "reg")
    reg.push("m", iris_model, alias="prod")
    resolved = reg.get("m@prod")  # a load resolved the alias; then a retention job runs:
    reg.push("m", other_model, alias="prod")
    reg.delete("m", 1)
    assert reg.gc().kept_deleted == 1  # within the grace period: the load can still read it
    with reg._resolved(resolved, "m@prod"):
        assert reg._store.local_path(resolved.hash, resolved.size).is_file()
    assert reg.gc(grace=0).removed == [resolved.hash]
    with (
        pytest.raises(
            amber.ModelNotFound,
            match=r"models:/m/1 \(what 'm@prod' resolved to\) was deleted .* while it was being "
            r"read, and gc removed its blob; resolve 'm@prod' again",
        ),
        reg._resolved(resolved, "m@prod"),
    ):
        reg._store.local_path(resolved.hash, resolved.size)
    reg.close()


def test_a_long_lived_registry_follows_a_catalog_file_that_was_replaced(
    tmp_path: Path, iris_model: Any, other_model: Any
) -> None:
    reg = Registry(tmp_path / "reg")  # as amber.load("models:/...") keeps one per location
    first = reg.push("m", iris_model, alias="prod")
    assert [v.hash for v in reg.versions("m")] == [first.hash]
    shutil.rmtree(tmp_path / "reg")  # the registry folder is wiped and made again
    assert reg.models() == []
    with Registry(tmp_path / "reg") as other:
        again = other.push("m", other_model, alias="prod")
    assert again.hash != first.hash
    assert reg.get("m@prod").hash == again.hash
    assert [v.hash for v in reg.versions("m")] == [again.hash]
    assert predicts_like(reg.load("m@prod"), other_model)
    reg.close()
