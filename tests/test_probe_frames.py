"""A probe's data frame comes back with the missing values it was given: Arrow keeps only that a
value is missing, and pandas 3 reads a missing string back as NaN where pandas 2 gave None."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import amber
from amber import _probe
from amber.artifact._reader import ArtifactReader


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    city = rng.choice(np.array(["paris", "lyon", "nice"], dtype=object), 200)
    city[::7] = None
    # object, not the string dtype pandas 3 infers (whose missing value is NaN)
    return pd.DataFrame({"city": pd.Series(city, dtype=object), "age": rng.integers(18, 80, 200)})


def test_a_model_that_tells_none_from_nan_is_probed_on_none(tmp_path: Path) -> None:
    """TargetEncoder fitted with None as a category: the stored outputs are its outputs on the
    sample as given (None), and verify reproduces them from the stored sample."""
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import TargetEncoder

    X = _frame()
    # a target the city tells (None among the positives): TargetEncoder's folds are shuffled at
    # random, and with a target the city did not tell (age > 50) the model came out flat in one
    # run, answering 0.5 whatever the city, None or NaN
    y = (X["city"].isna() | (X["city"] == "paris")).to_numpy().astype(int)
    model = make_pipeline(
        make_column_transformer((TargetEncoder(), ["city"]), remainder="drop"),
        LogisticRegression(),
    ).fit(X, y)
    sample = X.iloc[:30]
    with_nan = sample.assign(city=sample["city"].where(sample["city"].notna(), np.nan))
    assert not np.allclose(model.predict_proba(sample), model.predict_proba(with_nan))
    path = tmp_path / "te.amber"
    amber.save(model, path, sample=sample)
    with ArtifactReader(path) as reader:
        spec = amber.inspect(path).manifest["probe"]
        stored = _probe._decode(spec["outputs"]["predict_proba"], reader)
        decoded = _probe._decode(spec["input"], reader)
    assert np.array_equal(stored, model.predict_proba(sample))
    assert decoded["city"].tolist() == sample["city"].tolist()  # None where it was None
    assert "predict_proba: identical" in str(amber.verify(path).probe)


@pytest.mark.parametrize(
    "nulls",
    [[None, None], [np.nan, np.nan], [None, np.nan], [pd.NA, None], [pd.NaT, np.nan]],
    ids=["none", "nan", "mixed", "na-none", "nat-nan"],
)
def test_missing_values_of_object_columns_come_back_as_given(tmp_path: Path, nulls: list) -> None:
    from sklearn.compose import make_column_transformer

    column = np.array(["a", nulls[0], "b", nulls[1]], dtype=object)
    frame = pd.DataFrame({"s": pd.Series(column, dtype=object), "x": [1.0, 2.0, np.nan, 4.0]})
    model = make_column_transformer(("passthrough", ["x"])).fit(frame)
    path = tmp_path / "f.amber"
    amber.save(model, path, sample=frame)
    with ArtifactReader(path) as reader:
        back = _probe._decode(amber.inspect(path).manifest["probe"]["input"], reader)
    for got, want in zip(back["s"], column, strict=True):
        if want is pd.NA or want is pd.NaT:
            assert pd.isna(got)  # another kind of missing value: as pandas reads it
        elif isinstance(want, float):
            assert isinstance(got, float) and np.isnan(got)
        else:
            assert got is want or got == want
    assert back["x"].isna().tolist() == [False, False, True, False]
