"""A probe's numpy object array (what ``df.to_numpy()`` gives for a categorical column with gaps)
and its list of lists of any lengths (token lists, label sets) are stored as JSON values and come
back with each value's type: a string, an integer, a float, a boolean, None or NaN, as an
encoder sees them. Before, such samples could not be stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import amber
from amber import _probe
from amber.artifact._reader import ArtifactReader
from amber.errors import FormatError


def _cities() -> np.ndarray:
    rng = np.random.default_rng(0)
    city = rng.choice(np.array(["paris", "lyon", "nice"], dtype=object), 200)
    city[::7] = None
    city[3::11] = np.nan
    age = rng.integers(18, 80, 200).astype(object)
    return np.column_stack([city, age])


def _stored(path: Path, name: str = "input") -> object:
    spec = amber.inspect(path).manifest["probe"]
    with ArtifactReader(path) as reader:
        return _probe._decode(spec["input"] if name == "input" else spec["outputs"][name], reader)


def test_an_encoder_of_an_object_array_with_gaps_is_probed(tmp_path: Path) -> None:
    """TargetEncoder tells None from NaN: the stored outputs are its outputs on the sample as
    given, and verify reproduces them from the stored sample."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import TargetEncoder

    X = _cities()
    # a target the city tells, None among the positives and NaN not (TargetEncoder's folds are
    # shuffled at random: a target the city does not tell can leave its weight near zero)
    y = np.array([v is None or v == "paris" for v in X[:, 0]], dtype=int)
    model = make_pipeline(TargetEncoder(), LogisticRegression()).fit(X, y)
    sample = X[:40]
    as_nan = sample.copy()
    as_nan[[v is None for v in as_nan[:, 0]], 0] = np.nan
    assert not np.allclose(model.predict_proba(sample), model.predict_proba(as_nan))
    path = tmp_path / "te.amber"
    amber.save(model, path, sample=sample)
    assert amber.inspect(path).manifest["probe"]["input"]["kind"] == "objects"
    decoded = _stored(path)
    assert isinstance(decoded, np.ndarray) and decoded.dtype == object
    assert decoded.shape == sample.shape
    assert all(map(_probe._same_value, decoded.ravel(), sample.ravel()))
    assert [type(v) for v in decoded[:, 0]] == [
        type(None) if v is None else type(v) for v in sample[:, 0]
    ]
    assert "predict_proba: identical" in str(amber.verify(path).probe)
    assert np.array_equal(
        amber.load(path, probe="always").predict_proba(sample), model.predict_proba(sample)
    )


@pytest.mark.parametrize(
    "make",
    ["OneHotEncoder", "OrdinalEncoder", "SimpleImputer", "FunctionTransformer"],
)
def test_object_outputs_are_stored_and_compared_value_by_value(tmp_path: Path, make: str) -> None:
    from sklearn import impute, preprocessing

    X = np.array(
        [["a", None, 3], ["b", "c", np.nan], ["a", "c", np.int64(7)], [np.nan, "d", True]],
        dtype=object,
    )
    model = {
        "OneHotEncoder": lambda: preprocessing.OneHotEncoder(handle_unknown="ignore"),
        "OrdinalEncoder": lambda: preprocessing.OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2
        ),
        # these give back objects: None is not a missing value to SimpleImputer's default
        "SimpleImputer": lambda: impute.SimpleImputer(strategy="constant", fill_value="zz"),
        "FunctionTransformer": lambda: preprocessing.FunctionTransformer(),
    }[make]().fit(X)
    path = tmp_path / "m.amber"
    amber.save(model, path, sample=X)
    assert "transform: identical" in str(amber.verify(path).probe)
    if make == "FunctionTransformer":  # the output is the input: every type kept
        assert all(map(_probe._same_value, _stored(path, "transform").ravel(), X.ravel()))


def test_object_values_compare_by_type_and_value() -> None:
    objects = np.array(["a", None, np.nan, 3, 3.0, True], dtype=object)
    assert _probe._compare(objects, objects.copy(), exact=True) is None  # NaN is itself
    for k, other in enumerate([b"a", np.nan, None, "3", 3, 1]):
        changed = objects.copy()
        changed[k] = other
        assert _probe._compare(objects, changed, exact=True) == "1 of 6 values differ", other


def test_a_sample_of_other_objects_is_still_refused(tmp_path: Path) -> None:
    from sklearn.preprocessing import FunctionTransformer

    X = np.empty((2, 1), dtype=object)
    X[0, 0], X[1, 0] = ["a"], "b"
    with pytest.raises(TypeError, match=r"object array holding list, str cannot be stored"):
        amber.save(FunctionTransformer().fit(X), tmp_path / "m.amber", sample=X)
    assert not (tmp_path / "m.amber").exists()


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        (b'["a", 1]', [3]),  # fewer values than the shape holds
        (b'["a", [1]]', [2]),  # a nested list
        (b'["a", {"b": 1}]', [2]),  # an object
        (b'["a", 1]', [2, -1]),  # a negative side
        (b'["a", 1]', "2"),  # not a list of sides
        (b'["a", 1]', [2.0]),  # not an integer
        (b'{"a": 1}', [1]),  # not a list of values
        (b"[1]", [1] * 33),  # more sides than a sample could have
    ],
)
def test_a_malformed_object_entry_is_refused(text: bytes, shape: object) -> None:
    with pytest.raises(FormatError, match="object array must be a JSON list"):
        _probe._objects_from_json(memoryview(text), shape)


# -- rows: lists of lists of plain values, of any lengths -----------------------------------------
def test_token_lists_of_any_lengths_are_probed(tmp_path: Path) -> None:
    """FeatureHasher(input_type="string") takes a list of token lists, ragged: sample= could not
    store it ("a ragged list")."""
    from sklearn.feature_extraction import FeatureHasher

    tokens = [["dog", "cat"], ["fish"], [], ["dog", "dog", "emu", "cat"]]
    model = FeatureHasher(n_features=16, input_type="string")
    path = tmp_path / "fh.amber"
    amber.save(model, path, sample=tokens)
    spec = amber.inspect(path).manifest["probe"]["input"]
    assert spec["kind"] == "rows" and spec["rows"] == "list" and spec["tuple"] is False
    assert _stored(path) == tokens
    assert "transform: identical" in str(amber.verify(path).probe)


def test_label_sets_come_back_as_tuples(tmp_path: Path) -> None:
    from sklearn.preprocessing import MultiLabelBinarizer

    labels = (("sci-fi", "thriller"), ("comedy",), ("comedy", "sci-fi", "drama"))
    model = MultiLabelBinarizer().fit(labels)
    path = tmp_path / "mlb.amber"
    amber.save(model, path, sample=labels)
    assert _stored(path) == labels  # a tuple of tuples, as given
    assert "transform: identical" in str(amber.verify(path).probe)


def test_rows_of_mixed_values_keep_their_types(tmp_path: Path) -> None:
    from sklearn.preprocessing import OrdinalEncoder

    rows = [["a", 1], ["b", 3], [None, 3.0], ["a", float("nan")]]
    model = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1).fit(
        np.array(rows, dtype=object)
    )
    path = tmp_path / "oe.amber"
    amber.save(model, path, sample=rows)
    back = _stored(path)
    assert [[type(v) for v in row] for row in back] == [[type(v) for v in row] for row in rows]
    assert all(
        map(
            _probe._same_value,
            np.ravel(np.array(back, dtype=object)),
            np.ravel(np.array(rows, dtype=object)),
        )
    )
    assert "transform: identical" in str(amber.verify(path).probe)


def test_rows_of_other_objects_are_still_refused(tmp_path: Path) -> None:
    from sklearn.feature_extraction import FeatureHasher

    pairs = [[("dog", 1.0)], [("cat", 2.0), ("emu", 0.5)]]  # input_type="pair": one level more
    with pytest.raises(TypeError, match="sample= cannot be stored as a probe"):
        amber.save(FeatureHasher(8, input_type="pair"), tmp_path / "p.amber", sample=pairs)
    assert not (tmp_path / "p.amber").exists()


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        (b"[]", {"rows": "list"}),  # no rows
        (b'[["a"], "b"]', {"rows": "list"}),  # a row that is not a list
        (b'[["a", ["b"]]]', {"rows": "list"}),  # a value that is a list
        (b'[["a", {"b": 1}]]', {"rows": "list"}),  # a value that is an object
        (b'[["a"]]', {"rows": "set"}),  # rows of an unknown kind
        (b'{"a": 1}', {"rows": "list"}),  # not a list
    ],
)
def test_malformed_rows_are_refused(text: bytes, spec: dict) -> None:
    with pytest.raises(FormatError, match="rows must be a non-empty JSON list of lists"):
        _probe._rows_from_json(memoryview(text), spec)


def test_a_probe_kind_this_amber_does_not_know_says_to_upgrade() -> None:
    """Value kinds are added as codecs are (docs/FORMAT.md, section 7): an older reader meeting
    one refuses it with a message to upgrade, not as a damaged file."""
    with pytest.raises(FormatError, match="a newer Amber may have written it; upgrade Amber"):
        _probe._decode({"kind": "tensor-of-the-future", "entry": "probe/input.bin"}, None)
