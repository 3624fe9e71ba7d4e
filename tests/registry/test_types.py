"""The records the catalog hands back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from reg_helpers import IRIS_X
from sklearn.preprocessing import StandardScaler

import amber
from amber.registry import RegisteredModel, Registry
from amber.registry._lookup import _VERSION_COLUMNS, _row_to_version
from amber.registry._types import ModelVersion


def test_rows_become_the_same_records_as_the_constructor_makes() -> None:
    row = (
        "iris", 7, 3, "ab" * 32, 1234, "2026-11-28T22:00:00+00:00", "alice",
        '{"accuracy": 0.97}', '{"team": "risk"}', "first", "scikit-learn",
        "sklearn.svm.SVC", "cd" * 32, '{"python": "3.11"}', None, None,
    )  # fmt: skip
    assert len(row) == len(_VERSION_COLUMNS)
    fast = _row_to_version(row, ("production",))
    slow = ModelVersion(
        name="iris", version=3, hash="ab" * 32, size=1234,
        created="2026-11-28T22:00:00+00:00", created_by="alice",
        metrics={"accuracy": 0.97}, tags={"team": "risk"}, description="first",
        aliases=("production",), framework="scikit-learn", object_type="sklearn.svm.SVC",
        manifest_hash="cd" * 32, summary_json='{"python": "3.11"}',
    )  # fmt: skip
    assert fast == slow
    assert set(vars(fast)) == {f.name for f in dataclasses.fields(ModelVersion)}
    assert fast.summary == {"python": "3.11"} and fast.uri == "models:/iris/3"
    assert hash(fast.aliases) and fast.to_dict()["metrics"] == {"accuracy": 0.97}


def test_versions_and_models_are_hashable_and_stay_read_only(tmp_path: Path) -> None:
    """Frozen records: usable in sets and as dict keys; their dicts refuse changes."""
    artifact = tmp_path / "m.amber"
    amber.save(StandardScaler().fit(IRIS_X), artifact)
    with Registry(tmp_path / "reg") as reg:
        v = reg.push("iris", artifact, metrics={"acc": 0.9}, tags={"team": "risk"}, alias="prod")
        reg.push("wine", artifact)
        assert hash(v) == hash(reg.get("models:/iris/1")) and v == reg.get("models:/iris/1")
        assert len({*reg.search(), *reg.search(name="iris")}) == 2
        assert {v: "seen"}[reg.versions("iris")[0]] == "seen"
        models = reg.models()
        assert len(set(models)) == 2 and hash(models[0]) == hash(reg.models()[0])
        assert models[0].aliases == {"prod": 1} and isinstance(models[0].aliases, dict)
        with pytest.raises(TypeError, match="read-only"):
            models[0].aliases["staging"] = 1  # type: ignore[index]
    made = RegisteredModel("iris", 1, 1, {"prod": 1}, "c", "u")
    assert hash(made) == hash(RegisteredModel("iris", 1, 1, {"prod": 1}, "c", "u"))
