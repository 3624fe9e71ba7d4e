"""Arguments the registry refuses, with what was wrong and what to do; and what it says about
versions that are gone or blobs that were altered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import amber
from amber.registry import Registry


@pytest.fixture
def reg(tmp_path: Path) -> Any:
    registry = Registry(tmp_path / "reg")
    yield registry
    registry.close()


@pytest.mark.parametrize("grace", [float("inf"), float("nan"), 1e15, -1.0])
def test_gc_refuses_a_grace_that_is_not_a_sane_number_of_seconds(
    reg: Registry, artifact: Path, grace: float
) -> None:
    reg.push("iris", artifact)
    with pytest.raises(
        ValueError, match=rf"grace must be a number of seconds from 0 .*got {grace}"
    ):
        reg.gc(grace=grace)


def test_the_cli_gc_refuses_an_infinite_grace_without_a_traceback(
    tmp_path: Path, artifact: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "amber", "models", "gc", "--grace", "inf",
         "--registry", str(tmp_path / "reg")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "grace must be a number of seconds" in done.stderr


@pytest.mark.parametrize("value", [float("inf"), -float("inf"), float("nan")])
def test_a_metric_that_is_not_finite_is_named(
    reg: Registry, artifact: Path, iris_model: Any, value: float
) -> None:
    for model in (artifact, iris_model):
        with pytest.raises(TypeError, match=rf"metric 'loss' is {value}; metrics must be finite"):
            reg.push("m", model, metrics={"loss": value})
    assert reg.models() == []


def test_an_integer_metric_beyond_64_bits_is_refused(reg: Registry, artifact: Path) -> None:
    with pytest.raises(TypeError, match=r"metric 'n' is 10{30}, beyond 64 bits.*float\(value\)"):
        reg.push("m", artifact, metrics={"n": 10**30})
    assert reg.push("m", artifact, metrics={"n": 2**64 - 1}).metrics == {"n": 2**64 - 1}


@pytest.mark.parametrize("limit", [0, -1, 1.5, "2", True])
def test_search_refuses_a_limit_that_is_not_a_positive_integer(
    reg: Registry, artifact: Path, limit: Any
) -> None:
    reg.push("m", artifact)
    with pytest.raises(ValueError, match=r"limit must be a positive integer or None, got"):
        reg.search(limit=limit)
    with pytest.raises(ValueError, match=r"limit must be a positive integer or None, got"):
        reg.versions("m", limit=limit)
    assert len(reg.search(limit=1)) == 1


def test_a_tag_key_with_an_equals_sign_is_refused_at_push(reg: Registry, artifact: Path) -> None:
    with pytest.raises(TypeError, match=r"tag key 'k=v' contains '='.*could never find it"):
        reg.push("m", artifact, tags={"k=v": "x"})
    assert reg.models() == []


def test_a_model_whose_versions_were_all_deleted_is_gone_everywhere(
    reg: Registry, artifact: Path
) -> None:
    reg.push("iris", artifact)
    reg.push("wine", artifact)
    reg.delete("iris", 1)
    gone = r"model 'iris' has no versions left .* up to version 1, were deleted.*models there: wine"
    for call in (
        lambda: reg.get("iris"),
        lambda: reg.versions("iris"),
        lambda: reg.versions("iris", limit=1),
        lambda: reg.aliases("iris"),
    ):
        with pytest.raises(amber.ModelNotFound, match=gone):
            call()
    assert [m.name for m in reg.models()] == ["wine"]
    assert reg.push("iris", artifact).version == 2


def test_a_blob_replaced_by_other_bytes_is_named_as_altered(reg: Registry, iris_model: Any) -> None:
    v = reg.push("m", iris_model, alias="prod")
    blob = reg._store.blob_path(v.hash)
    blob.chmod(0o644)
    blob.write_bytes(b"\x80\x04garbage" * 50)
    altered = r"the blob of models:/m/1 in registry .* is not an Amber artifact any more .*Restore"
    for call in (lambda: reg.load("m@prod"), lambda: reg.verify("m@prod")):
        with pytest.raises(amber.IntegrityError, match=altered):
            call()


def test_changes_to_models_on_a_mistyped_path_create_no_registry(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "typo")
    absent = r"no model named 'iris'.*its folder .*typo' does not exist: check the path"
    for call in (
        lambda: reg.set_alias("iris", "prod", 1),
        lambda: reg.remove_alias("iris", "prod"),
        lambda: reg.delete("iris", 1),
    ):
        with pytest.raises(amber.ModelNotFound, match=absent):
            call()
    done = subprocess.run(
        [sys.executable, "-m", "amber", "models", "alias", "iris", "prod", "1",
         "--registry", str(tmp_path / "typo")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "does not exist: check the path" in done.stderr
    assert not (tmp_path / "typo").exists()
