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


def test_versions_from_before_content_digests_are_still_recognised(
    tmp_path: Path, iris_model: Any
) -> None:
    """A catalog made before schema step 3 has no content digest for its versions: an import
    of the same model (its manifest now carrying a registry field) must still be that version,
    also after a delete, not 'another model'."""
    import sqlalchemy as sa

    from amber.registry._schema import t

    source = Registry(tmp_path / "source")
    source.push("m", iris_model)
    source.export("m/1", tmp_path / "e1.amber")
    reg = Registry(tmp_path / "reg")
    assert reg.import_(tmp_path / "e1.amber").version == 1
    with reg.catalog._tx(True, "forget") as conn:  # what an old catalog looks like
        conn.execute(sa.delete(t.version_content))
    assert reg.import_(tmp_path / "e1.amber").version == 1  # the same model: no new version
    assert [v.version for v in reg.versions("m")] == [1]
    reg.delete("m", 1)
    assert reg.import_(tmp_path / "e1.amber").version == 1  # its own number back
    reg.close()
    source.close()


def test_an_import_takes_the_tags_an_older_registry_wrote(tmp_path: Path, iris_model: Any) -> None:
    """Tag keys with '=' are refused at push (search could never find them), but a file
    exported by a registry that accepted them is imported as it is."""
    from amber.artifact._rewrite import rewrite

    source = Registry(tmp_path / "source")
    source.push("m", iris_model, tags={"team": "risk"})
    source.export("m/1", tmp_path / "e1.amber")

    def old_tags(manifest: dict[str, Any]) -> dict[str, Any]:
        manifest["registry"]["tags"] = {"lr=0.1": "yes"}
        return manifest

    rewrite(tmp_path / "e1.amber", tmp_path / "e1.amber", update=old_tags)
    reg = Registry(tmp_path / "reg")
    assert reg.import_(tmp_path / "e1.amber").tags == {"lr=0.1": "yes"}
    with pytest.raises(TypeError, match="contains '='"):
        reg.push("m", iris_model, tags={"a=b": "c"})
    reg.close()
    source.close()
