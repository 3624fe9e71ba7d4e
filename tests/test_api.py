"""The verbs' contracts: probe and parity, environment drift, signatures, metadata, errors."""

from __future__ import annotations

import datetime
import json
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

import amber
from amber import _env
from amber.artifact._reader import ArtifactReader
from amber.artifact._writer import artifact_writer
from amber.errors import (
    EnvironmentMismatch,
    EnvironmentMismatchError,
    FormatError,
    ParityError,
    UnsafeLoadWarning,
    UntrustedTypeError,
)

X, Y = load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def svc() -> SVC:
    return SVC(gamma="scale").fit(X, Y)


def rewrite(path: Path, change: Callable[[str, bytes], bytes]) -> None:
    """Re-write an artifact entry by entry through Amber's own writer (digests recomputed)."""
    with ArtifactReader(path) as reader:
        manifest = {k: v for k, v in reader.manifest.items() if k != "entries"}
        entries = {name: bytes(reader.read(name)) for name in reader.entries}
    with artifact_writer(path) as writer:
        for name, data in entries.items():
            writer.add(name, change(name, data))
        writer.finish(manifest)


def shift_probe_output(name: str, data: bytes) -> bytes:
    if name != "probe/output.decision_function.npy":
        return data
    return data[:-8] + (np.frombuffer(data[-8:], np.float64) + 1e-3).tobytes()


def _saved_in(
    env_change: Callable[[dict[str, Any]], dict[str, Any]],
    path: Path,
    svc: SVC,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """``svc`` saved at ``path`` with a manifest whose environment ``env_change`` rewrote."""
    real = _env.capture
    monkeypatch.setattr(_env, "capture", lambda m, extra=(): env_change(real(m, extra)))
    amber.save(svc, path, sample=X[:16])
    monkeypatch.setattr(_env, "capture", real)
    return path


@pytest.fixture()
def saved_elsewhere(tmp_path: Path, svc: SVC, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An artifact whose manifest says it was saved with another scikit-learn version."""
    return _saved_in(
        lambda env: {**env, "packages": {**env["packages"], "scikit-learn": "0.0.1"}},
        tmp_path / "elsewhere.amber",
        svc,
        monkeypatch,
    )


# -- the probe --------------------------------------------------------------------------------
def test_same_environment_load_skips_the_probe_but_always_checks_it_on_request(
    tmp_path: Path, svc: SVC
) -> None:
    path = tmp_path / "m.amber"
    amber.save(svc, path, sample=X[:16])
    rewrite(path, shift_probe_output)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        amber.load(path)  # hashes prove the bytes; the probe is not re-run by default
    with pytest.raises(ParityError, match="decision_function: values differ"):
        amber.load(path, probe="always")
    with pytest.raises(ParityError, match="in the environment that saved it"):
        amber.verify(path)


def test_other_environment_reruns_the_probe_and_names_the_versions(
    saved_elsewhere: Path, svc: SVC
) -> None:
    with pytest.warns(EnvironmentMismatch, match=r"scikit-learn 0\.0\.1 -> .*still matched"):
        model = amber.load(saved_elsewhere)
    np.testing.assert_array_equal(model.predict(X), svc.predict(X))
    report = amber.verify(saved_elsewhere)
    assert any("scikit-learn 0.0.1" in c for c in report.environment_changes)


def test_other_environment_probe_mismatch_raises_unless_relaxed(saved_elsewhere: Path) -> None:
    rewrite(saved_elsewhere, shift_probe_output)
    with pytest.raises(ParityError, match=r"scikit-learn 0.0.1.*parity='warn'"):
        amber.load(saved_elsewhere)
    with pytest.warns(EnvironmentMismatch, match="no longer reproduces"):
        amber.load(saved_elsewhere, parity="warn")
    with pytest.raises(EnvironmentMismatchError, match="environment='strict'"):
        amber.load(saved_elsewhere, environment="strict")


@pytest.fixture()
def saved_on_another_processor(tmp_path: Path, svc: SVC, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An artifact whose manifest says it was saved on another processor, same packages."""
    return _saved_in(
        lambda env: {**env, "cpu": "SomeVendor AVX2"},
        tmp_path / "other-cpu.amber",
        svc,
        monkeypatch,
    )


def test_another_processor_alone_reruns_the_probe_quietly(
    saved_on_another_processor: Path, svc: SVC
) -> None:
    """The same packages on another processor: nothing to install and nothing to warn about,
    but the probe is re-run (BLAS computes in other last bits there), and strict still loads."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = amber.load(saved_on_another_processor)
        amber.load(saved_on_another_processor, environment="strict")
    np.testing.assert_array_equal(model.predict(X), svc.predict(X))
    report = amber.verify(saved_on_another_processor)
    assert report.environment_changes == [f"cpu SomeVendor AVX2 -> {_env.capture([])['cpu']}"]
    assert "within rtol" in str(report.probe)
    rewrite(saved_on_another_processor, shift_probe_output)
    with pytest.raises(ParityError, match="On this processor the model computes differently"):
        amber.load(saved_on_another_processor)


def test_probe_never_skips_but_still_warns_about_the_environment(saved_elsewhere: Path) -> None:
    rewrite(saved_elsewhere, shift_probe_output)
    with pytest.warns(EnvironmentMismatch, match="probe='never' skipped"):
        amber.load(saved_elsewhere, probe="never")


def test_probe_records_every_available_output(tmp_path: Path) -> None:
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y)
    info = amber.save(model, tmp_path / "p.amber", sample=X[:10])
    outputs = info.manifest["probe"]["outputs"]
    assert set(outputs) == {"predict", "predict_proba", "decision_function"}
    assert info.signature == {
        "inputs": {"kind": "ndarray", "dtype": "float64", "shape": [None, 4]},
        "outputs": {
            "predict": {"kind": "ndarray", "dtype": "int64", "shape": [None]},
            "predict_proba": {"kind": "ndarray", "dtype": "float64", "shape": [None, 3]},
            "decision_function": {"kind": "ndarray", "dtype": "float64", "shape": [None, 3]},
        },
    }


def test_dataframe_sample_records_columns_and_round_trips(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "age": np.arange(60) % 50 + 18,
            "income": np.linspace(1.0, 9.0, 60),
            "city": np.array(["paris", "lyon", "nice"])[np.arange(60) % 3],
        }
    )
    target = (frame["age"] > 40).to_numpy()
    model = make_pipeline(
        ColumnTransformer(
            [("num", StandardScaler(), ["age", "income"]), ("cat", OneHotEncoder(), ["city"])]
        ),
        LogisticRegression(),
    ).fit(frame, target)
    path = tmp_path / "frame.amber"
    info = amber.save(model, path, sample=frame.head(12))
    columns = info.signature["inputs"]["columns"]  # type: ignore[index]
    assert [c["name"] for c in columns] == ["age", "income", "city"]
    assert columns[0]["dtype"] == "int64"
    assert "city" in str(amber.inspect(path))
    report = amber.verify(path)
    assert "predict_proba: identical" in str(report)


def _probe_round_trip(tmp_path: Path, value: Any) -> Any:
    from amber import _probe

    manifest = {"format": "amber", "format_version": 1, "payload": {}, "environment": {}}
    with artifact_writer(tmp_path / "probe.amber") as writer:
        spec = _probe._encode(value, "x", writer)
        writer.finish({**manifest, "handler": "sklearn"})
    with ArtifactReader(tmp_path / "probe.amber") as reader:
        return _probe._decode(spec, reader)


@pytest.mark.parametrize("columns", ["integers", "multiindex"])
def test_dataframe_sample_keeps_labels_that_are_not_strings(tmp_path: Path, columns: str) -> None:
    """Arrow names columns by strings: a model fitted on pd.DataFrame(array) (labels 0, 1, ...)
    and probed with "0", "1", ... would warn that it sees feature names it was not fitted with."""
    frame = pd.DataFrame(X)
    if columns == "multiindex":
        frame.columns = pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1), ("b", 2)])
    model = LogisticRegression(max_iter=500).fit(frame, Y)
    path = tmp_path / "frame.amber"
    amber.save(model, path, sample=frame.head(10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's feature-name warning fails the test
        assert "identical" in str(amber.verify(path))
    pd.testing.assert_frame_equal(_probe_round_trip(tmp_path, frame.head(10)), frame.head(10))
    for name in (None, 3):
        series = frame.iloc[:10, 0].rename(name)
        pd.testing.assert_series_equal(_probe_round_trip(tmp_path, series), series)


def test_a_sample_that_is_the_models_own_training_array_verifies(tmp_path: Path) -> None:
    """KernelRidge keeps its training array; with that very array as the sample, numpy
    multiplied it by itself through its symmetric routine at save and through the general one
    after a reload (no shared memory then): the last bits differed and verify raised
    ParityError on an honest model."""
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.semi_supervised import LabelPropagation

    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(60, 5))) + 0.1
    y = X[:, 0] * 2 + rng.normal(size=60) * 0.1
    for k, model in enumerate(
        [KernelRidge().fit(X, y), LabelPropagation().fit(X, (y > np.median(y)).astype(int))]
    ):
        assert np.shares_memory(model.X_fit_ if k == 0 else model.X_, X)
        path = tmp_path / f"m{k}.amber"
        amber.save(model, path, sample=X)
        report = amber.verify(path)
        assert report.ok
        amber.load(path, probe="always")


def test_a_fortran_ordered_sample_verifies(tmp_path: Path) -> None:
    """The probe stores the sample C-ordered; outputs computed on the caller's Fortran-ordered
    array took another BLAS path than the reloaded sample does, and verify raised ParityError
    (last bits of decision_function and predict_proba)."""
    rng = np.random.default_rng(0)
    X = np.asfortranarray(rng.normal(size=(60, 4)))
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    path = tmp_path / "f.amber"
    amber.save(model, path, sample=X[:10])
    assert amber.verify(path).ok


@pytest.mark.parametrize("solver", ["randomized", "arpack"])
def test_a_model_holding_strided_views_verifies(tmp_path: Path, solver: str) -> None:
    """PCA keeps components_ as a transposed (randomized) or reversed (ARPACK) view; pickling
    stores it contiguous, BLAS then takes another path, and the reload differed from the
    object in the last bits: verify raised ParityError. The probe records the model as read
    back from its pickle."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(120, 5))) + 0.1
    model = PCA(3, whiten=True, svd_solver=solver, random_state=0).fit(X)
    assert not model.components_.flags.c_contiguous
    path = tmp_path / "pca.amber"
    amber.save(model, path, sample=X[:10])
    assert amber.verify(path).ok
    np.testing.assert_allclose(amber.load(path).transform(X), model.transform(X), rtol=1e-12)


def test_a_model_that_scales_its_input_in_place_verifies(tmp_path: Path) -> None:
    """StandardScaler(copy=False) scales the array it is given: every probe call gets a fresh
    copy of the sample, at save and at verify (verify ran each method on the sample the one
    before had scaled, and raised ParityError)."""
    from sklearn.decomposition import PCA

    X, y = load_iris(return_X_y=True)
    for k, model in enumerate(
        [
            make_pipeline(StandardScaler(copy=False), LogisticRegression()).fit(X.copy(), y),
            make_pipeline(StandardScaler(copy=False), PCA(2)).fit(X.copy()),
        ]
    ):
        path = tmp_path / f"m{k}.amber"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "changes when pickled" warning either
            amber.save(model, path, sample=X[:10].copy())
        assert amber.verify(path).ok


def test_a_float32_model_holding_strided_views_saves_without_a_warning(tmp_path: Path) -> None:
    """float32 outputs of a re-laid-out array differ from the object's by more than 1e-6: the
    comparison with the object is loose, so an honest float32 PCA is not warned about."""
    from sklearn.decomposition import PCA

    X = np.random.default_rng(0).normal(size=(600, 300)).astype(np.float32)
    model = PCA(10, random_state=0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        amber.save(model, tmp_path / "pca32.amber", sample=X[:20])
    assert amber.verify(tmp_path / "pca32.amber").ok


class _Forgetful:
    """Its pickling drops the offset its predictions use."""

    def fit(self, X: Any) -> _Forgetful:
        self.offset = 1.0
        return self

    def predict(self, X: Any) -> Any:
        return np.asarray(X).sum(axis=1) + getattr(self, "offset", 0.0)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "offset"}


class _Unreadable:
    def __init__(self) -> None:
        self.w = 1.0

    def predict(self, X: Any) -> Any:
        return np.asarray(X).sum(axis=1) * self.w

    def __setstate__(self, state: dict[str, Any]) -> None:
        raise RuntimeError("this state cannot be restored")


def test_a_model_whose_pickle_cannot_be_read_back_is_not_saved(tmp_path: Path) -> None:
    """Found by the probe's round trip (a small object is round-tripped)."""
    path = tmp_path / "u.amber"
    with (
        pytest.raises(TypeError, match=r"its pickle cannot be read back .*cannot be restored"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # the untrusted-type warning of a test class
        amber.save(_Unreadable(), path, sample=np.ones((2, 3)))
    assert not path.exists()


def test_a_model_whose_pickling_drops_state_is_warned_about(tmp_path: Path) -> None:
    X = np.ones((4, 3))
    with pytest.warns(UserWarning) as caught:
        amber.save(_Forgetful().fit(X), tmp_path / "f.amber", sample=X)
    said = [str(w.message) for w in caught]
    assert any("changes when the model is pickled and read back" in m for m in said), said


def test_a_randomized_search_with_scipy_distributions_says_what_to_save(tmp_path: Path) -> None:
    """The search keeps its param_distributions: scipy.stats' own are stored as data
    (tests/test_scipy_stats.py), others (here a histogram) are scipy's pickles, not on the
    allowlist: the save says to store search.best_estimator_, and that loads without trust."""
    from scipy.stats import rv_histogram
    from sklearn.model_selection import RandomizedSearchCV

    X, y = load_iris(return_X_y=True)
    search = RandomizedSearchCV(
        LogisticRegression(max_iter=200), {"C": rv_histogram(np.histogram([0.1, 1.0, 10.0]))},
        n_iter=2, cv=3, random_state=0,
    ).fit(X, y)  # fmt: skip
    with pytest.warns(UserWarning, match=r"save search\.best_estimator_"):
        amber.save(search, tmp_path / "search.amber")
    amber.save(search.best_estimator_, tmp_path / "best.amber", sample=X[:5])
    assert amber.verify(tmp_path / "best.amber").ok


def test_a_method_the_loader_cannot_admit_is_named_when_saving(tmp_path: Path) -> None:
    """A bound method pickles as getattr(owner, name): the safe loader's getattr reaches only
    str's methods, so saving another says now that loading will need allow_arbitrary_code."""
    from sklearn.preprocessing import FunctionTransformer

    model = FunctionTransformer(func=np.random.RandomState(0).permutation).fit(X)
    with pytest.warns(UserWarning, match=r"builtins\.getattr .*allow_arbitrary_code=True"):
        amber.save(model, tmp_path / "m.amber")
    with pytest.raises(FormatError, match=r"asks for RandomState\.permutation"):
        amber.load(tmp_path / "m.amber")


def test_string_labels_and_text_input_probe(tmp_path: Path) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = ["red apple", "green apple", "blue sky", "grey sky", "red sky", "green leaf"] * 5
    labels = np.array(["fruit", "fruit", "sky", "sky", "sky", "plant"] * 5, dtype=object)
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(docs, labels)
    path = tmp_path / "text.amber"
    info = amber.save(model, path, sample=docs[:6])
    assert info.signature["inputs"] == {"kind": "list", "item_types": ["str"], "shape": [None]}  # type: ignore[index]
    amber.verify(path)
    assert list(amber.load(path, probe="always").predict(docs)) == list(model.predict(docs))


@pytest.mark.parametrize("vectorizer", ["dict", "hasher"])
def test_records_sample_probe(tmp_path: Path, vectorizer: str) -> None:
    """A list of dicts (DictVectorizer's and FeatureHasher's input) is stored as JSON data,
    numpy scalars as plain numbers, and re-run by verify."""
    from sklearn.feature_extraction import DictVectorizer, FeatureHasher

    rng = np.random.default_rng(0)
    rows = [
        {"age": int(a), "income": float(i), "city": c, "score": np.float32(s), "n": np.int64(a)}
        for a, i, c, s in zip(
            rng.integers(18, 80, 60),
            rng.normal(3e4, 1e4, 60),
            rng.choice(["Paris", "Rome", "Oslo"], 60),
            rng.normal(size=60),
            strict=True,
        )
    ]
    rows[3] = {"age": 40, "city": "Lima"}  # keys differ from row to row
    first = DictVectorizer() if vectorizer == "dict" else FeatureHasher(n_features=32)
    y = np.array([r["age"] > 45 for r in rows])
    model = make_pipeline(first, LogisticRegression(max_iter=1000)).fit(rows, y)
    path = tmp_path / "records.amber"
    info = amber.save(model, path, sample=tuple(rows[:8]))
    assert info.signature["inputs"] == {  # type: ignore[index]
        "kind": "records",
        "keys": {
            "age": ["int"],
            "income": ["float"],
            "city": ["str"],
            "score": ["float"],
            "n": ["int"],
        },
        "shape": [None],
    }
    spec = info.manifest["probe"]["input"]
    assert spec == {"kind": "records", "entry": "probe/input.json", "tuple": True}
    from amber import _probe

    with ArtifactReader(path) as reader:
        stored = _probe._decode(spec, reader)
    assert isinstance(stored, tuple) and stored[3] == {"age": 40, "city": "Lima"}
    assert type(stored[0]["score"]) is float and stored[0]["score"] == float(rows[0]["score"])
    assert type(stored[0]["n"]) is int
    report = str(amber.verify(path).probe)
    assert "predict_proba: identical" in report and "predict: identical" in report
    loaded = amber.load(path, probe="always")
    assert (loaded.predict_proba(rows) == model.predict_proba(rows)).all()
    assert "records {age:int, city:str" in str(amber.inspect(path))


def test_records_that_json_cannot_keep_are_refused_and_forged_ones_are_format_errors(
    tmp_path: Path,
) -> None:
    from amber import _probe

    model = SVC().fit(X, Y)  # the sample is refused before the model sees it
    for rows, message in [
        ([{1: 2.0}], "has the key 1, not a string"),
        ([{"a": [1, 2]}], "holds a list under 'a'"),
        ([{"a": 1}, {"when": np.datetime64("2026-01-01")}], "row 1 .* holds a date"),
        ([{"\ud800": 1}], "holds a lone surrogate"),
        ([{"age": 10**30}], "holds an integer beyond 64 bits under 'age'"),
    ]:
        with pytest.raises(TypeError, match=message):
            amber.save(model, tmp_path / "r.amber", sample=rows)
    assert not (tmp_path / "r.amber").exists()
    odd = [{"name": "caf\u00e9 \ud800", "n": 1}]  # a lone surrogate survives, escaped
    stored = _probe._AsStored()
    spec = _probe._encode(odd, "input", stored)  # type: ignore[arg-type]
    raw = bytes(stored.read(spec["entry"]))
    assert raw.isascii() and _probe._records_from_json(memoryview(raw)) == odd
    wide = _probe.describe([{f"k{i}": i for i in range(300)}])
    assert len(wide["keys"]) == 256 and wide["more_keys"] == 44 and "k0" in wide["keys"]
    # a list of dicts of arrays is a model's several inputs, not records
    assert _probe.describe([{"a": X[:2]}])["kind"] == "sequence"
    # not-a-number and infinities are kept, as Python's JSON writes them
    nan = float("nan")
    text = _probe._plain_records([{"x": nan, "y": float("inf"), "z": None, "b": True}])
    assert _probe._records_from_json(memoryview(json.dumps(text).encode()))[0]["y"] == np.inf
    for forged in [b'{"a": 1}', b"[]", b'[{"a": [1]}]', b"[1]", b"[{", b"\xff"]:
        with pytest.raises((FormatError, ValueError)):
            _probe._records_from_json(memoryview(forged))


def test_outputs_of_several_arrays_are_stored_one_by_one(tmp_path: Path) -> None:
    """A multi-output classifier's predict_proba is a list of arrays of different widths: each
    is stored as its own array and compared one by one (numpy cannot stack them)."""
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_iris(return_X_y=True)
    Y = np.column_stack([y, y % 2])  # 3 classes and 2 classes
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, Y)
    path = tmp_path / "multi.amber"
    info = amber.save(model, path, sample=X[:7])
    proba = info.manifest["probe"]["outputs"]["predict_proba"]
    assert proba["kind"] == "sequence" and len(proba["items"]) == 2
    assert [d["shape"] for d in proba["signature"]["items"]] == [[None, 3], [None, 2]]
    assert "predict_proba: identical" in str(amber.verify(path).probe)
    # a reloaded model whose second output changed is caught, item by item
    from amber import _probe

    with ArtifactReader(path) as reader:
        stored = _probe._decode(proba, reader)
    assert isinstance(stored, list) and stored[1].shape == (7, 2)
    changed = [stored[0], stored[1][:, ::-1]]
    assert "output 1: values differ" in str(_probe._compare(stored, changed, exact=True))
    assert "1 outputs, expected 2" in str(_probe._compare(stored, changed[:1], exact=True))


def test_an_object_column_of_numbers_keeps_its_dtype_in_the_probe(tmp_path: Path) -> None:
    """Arrow types an object column of Python ints as int64: read back so, the encoder fitted
    on object categories failed (isnan on objects) and verify called the honest file broken."""
    rng = np.random.default_rng(0)
    zone = rng.choice([1, 2, 3], 60)
    frame = pd.DataFrame({"x": rng.normal(size=60), "zone": pd.Series(list(zone), dtype=object)})
    model = make_pipeline(
        ColumnTransformer(
            [("c", OneHotEncoder(handle_unknown="ignore"), ["zone"])], remainder="passthrough"
        ),
        LogisticRegression(),
    ).fit(frame, (zone == 3).astype(int))
    path = tmp_path / "obj.amber"
    info = amber.save(model, path, sample=frame.iloc[:8])
    assert info.manifest["probe"]["input"]["object_columns"] == [1]
    assert "probe matched" in str(amber.verify(path).probe)


def test_probe_items_may_not_share_an_entry(tmp_path: Path) -> None:
    """One stored array named by every item would decode as many copies (64 x the file)."""
    from amber.artifact._rewrite import rewrite as rewrite_manifest

    X, y = load_iris(return_X_y=True)
    path = tmp_path / "p.amber"
    amber.save(LogisticRegression(max_iter=500).fit(X, y), path, sample=X[:5])

    def repeat(manifest: dict[str, Any]) -> dict[str, Any]:
        one = manifest["probe"]["input"]
        manifest["probe"]["input"] = {"kind": "sequence", "items": [one] * 8}
        return manifest

    rewrite_manifest(path, path, update=repeat)
    with pytest.raises(FormatError, match="share entries"):
        amber.verify(path)

    def nested(manifest: dict[str, Any]) -> dict[str, Any]:  # the copies one level down
        one = manifest["probe"]["input"]["items"][0]
        inner = {"kind": "sequence", "items": [one] * 8}
        manifest["probe"]["input"] = {"kind": "sequence", "items": [inner, inner]}
        return manifest

    rewrite_manifest(path, path, update=nested)
    with pytest.raises(FormatError, match="share entries"):
        amber.verify(path)

    def deeper(manifest: dict[str, Any]) -> dict[str, Any]:  # containers two levels down
        one = manifest["probe"]["input"]["items"][0]["items"][0]
        inner = {"kind": "sequence", "items": [{"kind": "sequence", "items": [one]}]}
        manifest["probe"]["input"] = {"kind": "sequence", "items": [inner]}
        return manifest

    rewrite_manifest(path, path, update=deeper)
    with pytest.raises(FormatError, match="nested more than 1 level"):
        amber.verify(path)


def test_a_sparse_sample_is_not_changed_by_the_save(tmp_path: Path) -> None:
    import scipy.sparse as sp

    X = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([4, 1, 0]), np.array([0, 2, 3])), (2, 5))
    assert not X.has_sorted_indices
    model = LogisticRegression().fit(sp.vstack([X] * 5), [0, 1] * 5)
    amber.save(model, tmp_path / "sp.amber", sample=X)
    assert X.indices.tolist() == [4, 1, 0] and X.data.tolist() == [1.0, 2.0, 3.0]
    assert "probe matched" in str(amber.verify(tmp_path / "sp.amber").probe)


@pytest.mark.parametrize(
    ("column", "why"),
    [
        (pd.Series([1, "SW1A", 3], dtype=object), "Arrow cannot store"),
        (pd.Series([1j, 2j, 3j]), "Arrow cannot store"),
        (pd.Series(["a", "b", "a"], dtype=pd.ArrowDtype(__import__("pyarrow").dictionary(
            __import__("pyarrow").int8(), __import__("pyarrow").string()))),
         "pandas cannot read back"),
    ],
    ids=["mixed", "complex", "arrow-dictionary"],
)  # fmt: skip
def test_a_sample_column_the_probe_cannot_keep_is_refused_at_save(
    tmp_path: Path, column: pd.Series, why: str
) -> None:
    """Refused with the usual TypeError at save, never a raw pyarrow error, and never a file
    whose verify then calls its own probe malformed."""
    frame = pd.DataFrame({"x": [0.5, 1.5, 2.5], "c": column})
    model = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), ["x"])]), LogisticRegression()
    ).fit(frame, [0, 1, 0])
    with pytest.raises(TypeError, match=f"cannot be stored as a probe: .*{why}"):
        amber.save(model, tmp_path / "c.amber", sample=frame)
    assert not (tmp_path / "c.amber").exists()


def test_outputs_that_cannot_be_stored_are_blamed_not_the_sample(tmp_path: Path) -> None:
    # the output mixes floats and bytes in an object array: plain data holds no bytes
    frame = pd.DataFrame({"x": [0.5, 1.5, 2.5], "city": [b"paris", b"rome", b"oslo"]})
    model = ColumnTransformer(
        [("num", StandardScaler(), ["x"]), ("keep", "passthrough", ["city"])]
    ).fit(frame)
    with pytest.raises(ValueError, match="answers on sample=, but none of its outputs can be"):
        amber.save(model, tmp_path / "ct.amber", sample=frame)
    # floats and strings are stored, each value with its type
    frame["city"] = ["paris", "rome", "oslo"]
    model.fit(frame)
    amber.save(model, tmp_path / "ct.amber", sample=frame)
    assert "transform: identical" in str(amber.verify(tmp_path / "ct.amber").probe)


class _Outer:
    class Scaler(StandardScaler):
        pass


def test_nested_and_script_classes_get_names_that_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name a warning or refusal offers for trusted= is one that loads: the colon form for a
    nested class, and a class of __main__ says where it must be defined."""
    import sys

    X, _ = load_iris(return_X_y=True)
    path = tmp_path / "nested.amber"
    with pytest.warns(UserWarning, match=r"trusted=\['test_api:_Outer\.Scaler'\]"):
        amber.save(_Outer.Scaler().fit(X), path)
    with pytest.raises(UntrustedTypeError, match=r"trusted=\['test_api:_Outer\.Scaler'\]"):
        amber.load(path)
    assert amber.load(path, trusted=["test_api:_Outer.Scaler"]).mean_.shape == (4,)

    class Script(StandardScaler):
        pass

    Script.__module__, Script.__qualname__ = "__main__", "Script"
    monkeypatch.setattr(sys.modules["__main__"], "Script", Script, raising=False)
    path = tmp_path / "main.amber"
    with pytest.warns(UserWarning, match="must be defined by any program that loads it"):
        amber.save(Script().fit(X), path)
    assert type(amber.load(path, trusted=["__main__.Script"])) is Script
    monkeypatch.delattr(sys.modules["__main__"], "Script")
    with pytest.raises(amber.errors.HandlerNotAvailable, match="define it here before loading"):
        amber.load(path, trusted=["__main__.Script"])


def test_unusable_sample_is_explained(tmp_path: Path, svc: SVC) -> None:
    with pytest.raises(TypeError, match="cannot be stored as a probe"):
        amber.save(svc, tmp_path / "x.amber", sample={"not": "an array"})
    # rows are what a model of several features takes: one row, or one value, is named as such
    with pytest.raises(ValueError, match=r"1-d array of shape \(4,\).* sample.reshape\(1, -1\)"):
        amber.save(svc, tmp_path / "x.amber", sample=X[0])
    with pytest.raises(ValueError, match="sample= is a single str, but the SVC takes rows of 4"):
        amber.save(svc, tmp_path / "x.amber", sample="hello")
    # the methods of a model fail alike: scikit-learn's several-line message, once, on one line
    with pytest.raises(ValueError) as info:
        amber.save(svc, tmp_path / "x.amber", sample=X[:5, :3])
    message = str(info.value)
    assert message.count("X has 3 features") == 1 and "\n" not in message, message
    assert not (tmp_path / "x.amber").exists()


def test_an_unfitted_estimator_and_a_huge_probe_are_warned_about(
    tmp_path: Path, svc: SVC, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.warns(UserWarning, match="this SVC is not fitted, so the file holds its param"):
        amber.save(SVC(), tmp_path / "template.amber")
    assert amber.load(tmp_path / "template.amber").get_params() == SVC().get_params()
    from amber import _api

    monkeypatch.setattr(_api, "_LARGE_PROBE", 10_000)  # 16 MB in earnest
    with pytest.warns(UserWarning, match=r"the probe .* takes 0.0 MB.*\(sample=X\[:32\]\)"):
        amber.save(svc, tmp_path / "big.amber", sample=np.tile(X, (3, 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        amber.save(svc, tmp_path / "fine.amber", sample=X[:8])


# -- metadata, arguments ----------------------------------------------------------------------
def test_metadata_round_trips_and_must_be_json(tmp_path: Path, svc: SVC) -> None:
    meta = {"metrics": {"accuracy": 0.97}, "tags": {"team": "risk"}, "description": "iris"}
    amber.save(svc, tmp_path / "m.amber", metadata=meta)
    assert amber.inspect(tmp_path / "m.amber").metadata == meta
    # each refusal names where the value is, what it is, and what to store instead
    for bad, message in [
        ({"when": object()}, r"\['when'\] is an object, which JSON cannot hold: metadata holds"),
        ({"loss": float("nan")}, r"\['loss'\] is nan: JSON has no NaN"),
        ({"day": datetime.date(2026, 1, 2)}, r"datetime.date, .* store its .isoformat\(\)"),
        ({"tags": {"a", "b"}}, r"\['tags'\] is a set, .* store a sorted list"),
        ({"n": [np.int64(3)]}, r"\['n'\]\[0\] is a numpy.int64: convert it with .item\(\)"),
        ({"ok": np.bool_(True)}, r"is a numpy.bool_?: convert it"),
        ({"raw": b"x"}, r"is bytes, which JSON cannot hold: store a string"),
        ({"text": "caf\udce9"}, r"\['text'\] holds a character that is not Unicode text"),
        ({"caf\udce9": 1}, r"has a key that holds a character that is not Unicode text"),
        ({"w": np.arange(3)}, r"\['w'\] is a numpy.ndarray: convert it with .tolist\(\)"),
        (_holding_itself(), r"\['self'\] is a container that holds itself \(a cycle\)"),
    ]:
        with pytest.raises(TypeError, match=message):
            amber.save(svc, tmp_path / "n.amber", metadata=bad)
    assert not (tmp_path / "n.amber").exists()
    # tuples load as lists, subclasses as their base type (a shape, an OrderedDict)
    amber.save(svc, tmp_path / "n.amber", metadata={"shape": (3, 4), "f": np.float64(0.5)})
    assert amber.inspect(tmp_path / "n.amber").metadata == {"shape": [3, 4], "f": 0.5}


def _holding_itself() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


def test_metadata_that_json_would_change_is_refused(tmp_path: Path, svc: SVC) -> None:
    """Integer keys would come back as strings and integers beyond 64 bits as floats."""
    edges = {"seed": 2**64 - 1, "low": -(2**63), "nested": [{"k": [1, 2]}]}
    amber.save(svc, tmp_path / "m.amber", metadata=edges)
    assert amber.inspect(tmp_path / "m.amber").metadata == edges
    for bad, message in [
        ({"seeds": [1, 2**94]}, r"metadata\['seeds'\]\[1\] is 19807.* beyond 64 bits"),
        ({"by_fold": {1: 0.9}}, r"metadata\['by_fold'\] has the key 1, not a string"),
    ]:
        with pytest.raises(TypeError, match=message):
            amber.save(svc, tmp_path / "n.amber", metadata=bad)
    deep: dict[str, Any] = {}
    for _ in range(5000):
        deep = {"d": deep}
    # the same error on every Python (3.11's json gives up on recursion long before 3.13's)
    with pytest.raises(TypeError, match="deeper than the 200 levels a reader accepts"):
        amber.save(svc, tmp_path / "n.amber", metadata=deep)
    with pytest.raises(TypeError, match="deeper than the 200 levels a reader accepts"):
        amber.save(svc, tmp_path / "n.amber", metadata=_nested(201))
    amber.save(svc, tmp_path / "n.amber", metadata=_nested(150))
    assert amber.inspect(tmp_path / "n.amber").metadata == _nested(150)
    (tmp_path / "n.amber").unlink()
    assert not (tmp_path / "n.amber").exists()


def test_a_manifest_no_reader_would_accept_is_never_written(
    tmp_path: Path, svc: SVC, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amber.artifact import _writer

    path = tmp_path / "m.amber"
    amber.save(svc, path, metadata={"v": 1})
    monkeypatch.setattr(_writer, "MAX_MANIFEST_BYTES", 16_384)  # the reader's limit is 64 MiB
    with pytest.raises(ValueError, match="metadata is too large"):
        amber.save(svc, path, metadata={"notes": "x" * 20_000})
    assert amber.inspect(path).metadata == {"v": 1}  # the previous file is intact


def test_a_named_handler_must_fit_the_model(tmp_path: Path, svc: SVC) -> None:
    with pytest.raises(ValueError, match=r"handler='nope' is not a handler this Amber knows"):
        amber.save(svc, tmp_path / "m.amber", handler="nope")
    with pytest.raises(TypeError, match=r"the 'xgboost' handler cannot save a sklearn\.svm"):
        amber.save(svc, tmp_path / "m.amber", handler="xgboost")
    amber.save(svc, tmp_path / "m.amber", handler="sklearn")
    assert not [p for p in tmp_path.iterdir() if p.name != "m.amber"]


def test_naming_an_uninstalled_handler_for_another_frameworks_model_says_it_cannot_save_it(
    tmp_path: Path, svc: SVC, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installing xgboost would not let its handler save an SVC: the error says so, not
    "install xgboost"; for a model of its own framework the install hint stays."""
    import sys

    from amber import handlers
    from amber.errors import HandlerNotAvailable

    monkeypatch.setitem(sys.modules, "xgboost", None)  # import xgboost raises ImportError
    monkeypatch.setitem(sys.modules, "amber.handlers.xgboost", None)
    monkeypatch.delitem(handlers._LOADED, "xgboost", raising=False)
    with pytest.raises(TypeError, match=r"the 'xgboost' handler cannot save a sklearn\.svm"):
        amber.save(svc, tmp_path / "m.amber", handler="xgboost")

    class Booster:  # stands for a model of xgboost's own
        __module__ = "xgboost.core"

    with pytest.raises(HandlerNotAvailable, match=r"install it with: pip install"):
        handlers.handler_for(Booster(), "xgboost")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"probe": "sometimes"}, "probe='sometimes' is not valid"),
        ({"parity": "ignore"}, "parity='ignore' is not valid"),
        ({"environment": "lenient"}, "environment='lenient' is not valid"),
        ({"trusted": "pkg.Mod"}, r"trusted=\['pkg.Mod'\]"),
        ({"mmap": "yes"}, "mmap must be True or False"),
    ],
)
def test_bad_load_arguments_say_what_to_pass(
    tmp_path: Path, svc: SVC, kwargs: dict[str, Any], message: str
) -> None:
    path = tmp_path / "m.amber"
    amber.save(svc, path)
    with pytest.raises((ValueError, TypeError), match=message):
        amber.load(path, **kwargs)


def test_missing_file_is_explained(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        amber.load(tmp_path / "absent.amber")
    with pytest.raises(FileNotFoundError, match="the path is empty"):
        amber.load("")


def test_verify_of_a_pickle_says_how_to_convert_it(tmp_path: Path, svc: SVC) -> None:
    for name, out in [("m.pkl", "m.amber"), ("m.amber", "m-converted.amber")]:
        path = tmp_path / name
        path.write_bytes(pickle.dumps(svc))
        with pytest.raises(FormatError, match=f"amber convert {path} {tmp_path / out}"):
            amber.verify(path)


# -- custom types ---------------------------------------------------------------------------------
class Doubler:
    """A user-defined model type: not on the allowlist."""

    def __init__(self) -> None:
        self.factor = np.float64(2.0)

    def predict(self, values: np.ndarray) -> np.ndarray:
        return values[:, 0] * self.factor


def test_user_types_need_trust_and_then_load(tmp_path: Path) -> None:
    path = tmp_path / "custom.amber"
    with pytest.warns(UserWarning, match="types or functions outside Amber's allowlist"):
        info = amber.save(Doubler(), path, sample=X[:4])
    name = f"{__name__}.Doubler"
    assert info.untrusted == [name]
    with pytest.raises(UntrustedTypeError, match=rf"trusted=\['{name}'\]") as excinfo:
        amber.load(path)
    assert excinfo.value.names == (name,)
    assert str(excinfo.value).startswith(f"{str(path)!r} references")  # names the file
    model = amber.load(path, trusted=[name], probe="always")
    np.testing.assert_array_equal(model.predict(X), X[:, 0] * 2.0)


# -- errors from outside the file -------------------------------------------------------------
@pytest.mark.parametrize("where", ["entry read", "validator"])
def test_an_error_from_outside_the_file_is_not_blamed_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A timeout raised by the caller's signal handler (an OSError) in the middle of a load
    reaches the caller as itself, not as a FormatError calling an intact file damaged."""
    from sklearn.ensemble import RandomForestClassifier

    from amber.security import _validators

    path = tmp_path / "forest.amber"
    rows = np.random.default_rng(0).random((3000, 4))
    forest = RandomForestClassifier(3, random_state=0).fit(rows, np.arange(3000) % 2)
    amber.save(forest, path)  # trees of over 32 kB: their node arrays are entries of their own

    def too_slow(*args: Any, **kwargs: Any) -> Any:
        raise TimeoutError("the caller's deadline passed")

    if where == "entry read":  # the node arrays are read while the stream is unpickled
        read = ArtifactReader.read

        def slow_buffers(self: ArtifactReader, name: str, **kwargs: Any) -> Any:
            return too_slow() if "buffers" in name else read(self, name, **kwargs)

        monkeypatch.setattr(ArtifactReader, "read", slow_buffers)
    else:
        monkeypatch.setitem(_validators._BY_TYPE, ("sklearn.tree._tree", "Tree"), too_slow)
        monkeypatch.setattr(_validators, "_CLASS_INFO", {})  # a cache of _BY_TYPE by class
    with pytest.raises(TimeoutError, match="deadline"):
        amber.load(path)
    monkeypatch.undo()
    amber.verify(path)
    amber.load(path)


# -- manifests that lie ---------------------------------------------------------------------------
def _sparse_probe(m: dict[str, Any], **change: Any) -> dict[str, Any]:
    return {**m, "probe": {**m["probe"], "input": {**m["probe"]["input"], **change}}}


_MANIFEST_DAMAGE: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "stream is a list": lambda m: {**m, "payload": {**m["payload"], "stream": ["x"]}},
    "stream missing": lambda m: {**m, "payload": {**m["payload"], "stream": None}},
    "probe is text": lambda m: {**m, "probe": "probe"},
    "probe outputs are a list": lambda m: {**m, "probe": {**m["probe"], "outputs": []}},
    "sparse probe of two entries": lambda m: _sparse_probe(
        m, entries=m["probe"]["input"]["entries"][:2]
    ),
    "sparse probe of an unknown format": lambda m: _sparse_probe(m, format="xyz"),
    "sparse probe of 300 million columns": lambda m: _sparse_probe(
        m, shape=[10, 300_000_000], format="csc"
    ),
    "sparse probe of more rows than stored": lambda m: _sparse_probe(m, shape=[11, 4]),
    "globals that are a number": lambda m: {**m, "globals": 3},
    "packages that are a list": lambda m: {
        **m,
        "environment": {**m["environment"], "packages": ["numpy"]},
    },
    "metadata nested 300 deep": lambda m: {**m, "metadata": _nested(300)},
    "probe without outputs": lambda m: {**m, "probe": {"input": m["probe"]["input"]}},
}


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"d": value}
    return value


@pytest.mark.parametrize("damage", list(_MANIFEST_DAMAGE))
def test_a_manifest_that_lies_is_a_format_error(tmp_path: Path, damage: str) -> None:
    """Digests cover entries, not the manifest's own fields: a crafted manifest gets a clean
    FormatError from load, verify and scan, never a raw KeyError or a huge allocation."""
    import scipy.sparse as sp

    from amber.artifact._rewrite import rewrite

    sample = sp.csr_matrix(X[:10])
    path = tmp_path / "m.amber"
    amber.save(LogisticRegression(max_iter=500).fit(sp.csr_matrix(X), Y), path, sample=sample)
    rewrite(path, path, update=_MANIFEST_DAMAGE[damage])
    calls: list[Callable[[], Any]] = [lambda: amber.verify(path)]
    if damage.startswith("stream"):
        calls += [lambda: amber.load(path), lambda: amber.scan(path)]
    else:
        calls += [lambda: amber.load(path, probe="always")]
    for call in calls:
        with pytest.raises(FormatError, match="malformed"):
            call()


def test_a_probe_table_that_pandas_would_blow_up_is_refused(tmp_path: Path) -> None:
    """A null or run-end-encoded column holds hundreds of millions of rows in a few bytes; the
    conversion to pandas would make them all. Only the column types the writer produces pass,
    and no more cells than the entry's bytes can describe."""
    import io as _io

    import pyarrow as pa

    from amber import _probe

    def arrow(table: Any) -> bytes:
        sink = _io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as stream:
            stream.write_table(table)
        return sink.getvalue()

    def compressed(table: Any) -> bytes:
        sink = _io.BytesIO()
        options = pa.ipc.IpcWriteOptions(compression="zstd")
        with pa.ipc.new_stream(sink, table.schema, options=options) as stream:
            stream.write_table(table)
        return sink.getvalue()

    nulls = pa.table({"a": pa.nulls(10_000_000)})
    runs = pa.table({"a": pa.RunEndEncodedArray.from_arrays([10_000_000], [1.5])})
    path = tmp_path / "probe.amber"
    with artifact_writer(path) as writer:
        writer.add("probe/nulls.arrow", arrow(nulls))
        writer.add("probe/runs.arrow", arrow(runs))
        writer.add("probe/fine.arrow", arrow(pa.table({"a": [1.0, 2.0], "b": ["x", "y"]})))
        writer.add("probe/zstd.arrow", compressed(pa.table({"a": np.zeros(1_000_000)})))
        writer.finish({"format": "amber", "format_version": 1, "payload": {},
                       "environment": {}, "handler": "sklearn"})  # fmt: skip
    lists = pd.DataFrame({"l": [[1], [2]]})  # what a reader would refuse is refused at save
    unfitted = pytest.warns(UserWarning, match="is not fitted")  # warned before the refusal
    with pytest.raises(TypeError, match="sample column 'l' holds list<item: int64>"), unfitted:
        amber.save(LogisticRegression(), tmp_path / "l.amber", sample=lists)
    with ArtifactReader(path) as reader:
        for name, kind in (("nulls", "null"), ("runs", "run_end_encoded")):
            spec = {"kind": "dataframe", "entry": f"probe/{name}.arrow"}
            with pytest.raises(FormatError, match=f"has the type {kind}"):
                _probe._decode(spec, reader)
        with pytest.raises(FormatError, match="compressed Arrow bodies"):  # 8 MB from 1 kB
            _probe._decode({"kind": "dataframe", "entry": "probe/zstd.arrow"}, reader)
        fine = _probe._decode({"kind": "dataframe", "entry": "probe/fine.arrow"}, reader)
        assert list(fine["b"]) == ["x", "y"]


def test_inspect_escapes_what_a_manifest_would_print_to_the_terminal(tmp_path: Path) -> None:
    from amber.artifact._rewrite import rewrite

    path = tmp_path / "m.amber"
    amber.save(LogisticRegression(max_iter=500).fit(X, Y), path)
    evil = "sk\x1b]0;title\x07\r\x1b[K"
    rewrite(path, path, update=lambda m: {**m, "object_type": evil, "untrusted": [evil]})
    shown = str(amber.inspect(path))
    assert "\x1b" not in shown and "\r" not in shown
    assert "sk\\x1b]0;title\\x07\\r\\x1b[K" in shown


def test_inspect_shows_each_input_and_output_of_several() -> None:
    """A model of several inputs (or outputs) was shown as 'sequence ()'."""
    from amber._info import _describe

    two = {
        "kind": "sequence",
        "items": [
            {"kind": "ndarray", "dtype": "float32", "shape": [None, 4]},
            {
                "kind": "mapping",
                "items": {"h": {"kind": "ndarray", "dtype": "int64", "shape": [None]}},
            },
        ],
    }
    assert _describe(two) == "(ndarray float32 (n, 4), {h: ndarray int64 (n)})"


def test_a_frame_sample_with_columns_the_model_never_saw_is_warned_about(tmp_path: Path) -> None:
    """The signature records every sample column: a server would require them."""
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    columns = make_column_transformer((StandardScaler(), ["a", "b", "c", "d"]))  # drops others
    model = make_pipeline(columns, LogisticRegression(max_iter=500)).fit(frame, Y)
    with pytest.warns(UserWarning, match=r"1 column the model was not fitted on \('e'\)"):
        amber.save(model, tmp_path / "m.amber", sample=frame.head(5).assign(e=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        amber.save(model, tmp_path / "m.amber", sample=frame.head(5))


def test_an_object_nested_past_the_recursion_limit_is_refused_clearly(tmp_path: Path) -> None:
    """pickle raises RecursionError; amber.save (and so `amber convert` of a legacy file that
    holds such a list) says what is wrong and writes nothing."""
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(TypeError, match="nests containers more deeply than pickle can write"):
        amber.save(deep, tmp_path / "deep.amber")
    assert not list(tmp_path.iterdir())


def test_save_warns_when_a_safe_load_will_refuse_the_fitted_state(tmp_path: Path) -> None:
    """A gradient boosting model with its own init estimator saves faithfully, but a safe load
    refuses it (Amber checks the output width of the default init estimators only): the save
    says so, instead of the first load."""
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = load_iris(return_X_y=True)
    custom = make_pipeline(
        StandardScaler(),
        GradientBoostingClassifier(n_estimators=3, init=LogisticRegression(max_iter=500)),
    ).fit(X, y)
    path = tmp_path / "custom.amber"
    with pytest.warns(UserWarning, match="safe load will refuse it") as caught:
        amber.save(custom, path)
    (message,) = [str(w.message) for w in caught if "safe load" in str(w.message)]
    assert "init_ is a LogisticRegression" in message
    assert "allow_arbitrary_code=True" in message
    with pytest.raises(FormatError, match="init_ is a LogisticRegression"):
        amber.load(path)
    with pytest.warns(UnsafeLoadWarning):
        reloaded = amber.load(path, allow_arbitrary_code=True)
    assert np.array_equal(reloaded.predict(X), custom.predict(X))

    default = make_pipeline(StandardScaler(), GradientBoostingClassifier(n_estimators=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        amber.save(default.fit(X, y), tmp_path / "default.amber")
    assert np.array_equal(amber.load(tmp_path / "default.amber").predict(X), default.predict(X))


def test_fitted_refusals_cost_nothing_without_a_checked_class() -> None:
    from amber.security._fitted import refusals

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    assert refusals(model, [("sklearn.linear_model._logistic", "LogisticRegression")]) == []
    # named but consistent: walked and checked, nothing found
    scaled = make_pipeline(StandardScaler(), KNeighborsClassifier()).fit(X, y)
    named = [("sklearn.neighbors._classification", "KNeighborsClassifier")]
    assert refusals(scaled, named) == []
    scaled[-1]._y = scaled[-1]._y + 10  # labels past its classes: a load refuses this
    (found,) = refusals(scaled, named)
    assert "an encoded label (_y) is not one of its classes" in found
