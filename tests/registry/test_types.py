"""The records the catalog hands back."""

from __future__ import annotations

import dataclasses

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
