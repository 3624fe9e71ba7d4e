"""XGBoost and LightGBM: native formats, wrapper parameters restored, wrappers allowlisted."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _cases import _lgbm_classifier, _xgb_classifier, data, forge_entry

import amber
from amber.artifact._reader import ArtifactReader
from amber.artifact._rewrite import rewrite
from amber.errors import FormatError, UntrustedTypeError

X, Y = data()


def _same_params(a: Any, b: Any, fills_unset: bool = False) -> None:
    """Equal get_params(); ``fills_unset``: the framework's load_model fills None ones in."""
    pa, pb = a.get_params(), b.get_params()
    assert pa.keys() == pb.keys()
    for k in pa:
        if fills_unset and pa[k] is None:
            continue
        if isinstance(pa[k], float) and np.isnan(pa[k]):
            assert np.isnan(pb[k]), k
        else:
            assert pa[k] == pb[k], k


def test_xgboost_wrapper_params_and_native_entries(tmp_path: Path) -> None:
    xgb = pytest.importorskip("xgboost")
    model = xgb.XGBRegressor(n_estimators=3, max_depth=2, learning_rate=0.3, n_jobs=1)
    model.fit(X, X[:, 3])
    for fmt, entry in (("ubj", "model/model.ubj"), ("json", "model/model.json")):
        path = tmp_path / f"x.{fmt}.amber"
        info = amber.save(model, path, sample=X[:5], format=fmt)
        assert [e for e in info.manifest["entries"] if e.startswith("model/")] == [entry]
        loaded = amber.load(path, probe="always")
        assert type(loaded) is xgb.XGBRegressor
        # XGBoost's own load_model fills unset parameters (base_score...) from the booster
        _same_params(model, loaded, fills_unset=True)
        np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    with ArtifactReader(tmp_path / "x.json.amber") as reader:
        assert bytes(reader.read("model/model.json")).startswith(b"{")


def test_lightgbm_classifier_with_string_labels(tmp_path: Path) -> None:
    lgb = pytest.importorskip("lightgbm")
    labels = np.array(["cat", "dog", "emu"])[np.arange(len(X)) % 3]
    model = lgb.LGBMClassifier(n_estimators=3, min_child_samples=3, verbose=-1, n_jobs=1)
    model.fit(X, labels)
    path = tmp_path / "l.amber"
    amber.save(model, path, sample=X[:6])
    loaded = amber.load(path, probe="always")
    _same_params(model, loaded)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert list(loaded.classes_) == ["cat", "dog", "emu"]
    with ArtifactReader(path) as reader:
        assert bytes(reader.read("model/model.txt")).startswith(b"tree\n")


@pytest.mark.parametrize("framework", ["xgboost", "lightgbm"])
def test_a_wrapper_class_outside_the_list_is_refused(tmp_path: Path, framework: str) -> None:
    pytest.importorskip(framework)
    model, _ = _xgb_classifier() if framework == "xgboost" else _lgbm_classifier()
    path = tmp_path / "m.amber"
    amber.save(model, path)

    def forge(manifest: dict[str, Any]) -> dict[str, Any]:
        manifest["payload"]["wrapper"] = "os.system"
        return manifest

    rewrite(path, path, update=forge)
    with pytest.raises(UntrustedTypeError, match=r"os\.system"):
        amber.load(path)


def test_a_callable_parameter_is_refused_with_a_reason(tmp_path: Path) -> None:
    xgb = pytest.importorskip("xgboost")
    model = xgb.XGBClassifier(n_estimators=2, eval_metric=lambda a, b: 0.0).fit(X, Y)
    with pytest.raises(TypeError, match=r"parameter eval_metric .*plain value"):
        amber.save(model, tmp_path / "m.amber")


def test_an_xgboost_booster_on_categorical_columns_predicts_and_keeps_a_probe(
    tmp_path: Path,
) -> None:
    xgb = pytest.importorskip("xgboost")
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"x": rng.normal(size=60), "c": pd.Categorical(rng.choice(["a", "b", "c"], 60))}
    )
    y = (frame["x"] > 0).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "tree_method": "hist"},
        xgb.DMatrix(frame, y, enable_categorical=True),
        num_boost_round=3,
    )
    want = booster.inplace_predict(frame)
    np.testing.assert_allclose(amber.predict(booster, frame), want)
    path = tmp_path / "cat.amber"
    amber.save(booster, path, sample=frame[:8])
    assert "probe matched" in str(amber.verify(path).probe)


def test_lightgbm_keeps_best_iteration_and_score(tmp_path: Path) -> None:
    lgb = pytest.importorskip("lightgbm")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = X[:, 0] + rng.normal(scale=0.5, size=300)
    model = lgb.LGBMRegressor(n_estimators=200, learning_rate=0.3, verbose=-1).fit(
        X[:200],
        y[:200],
        eval_set=[(X[200:], y[200:])],
        callbacks=[lgb.early_stopping(5, verbose=False)],
    )
    assert 0 < model.best_iteration_ < 200
    for obj in (model, model.booster_):
        path = tmp_path / "es.amber"
        amber.save(obj, path)
        back = amber.load(path)
        if obj is model.booster_:
            assert back.best_iteration == obj.best_iteration == model.best_iteration_
        else:
            assert back.best_iteration_ == model.best_iteration_
            assert back.best_score_ == {
                k: {m: float(v) for m, v in s.items()} for k, s in model.best_score_.items()
            }
            np.testing.assert_array_equal(back.predict(X), model.predict(X))


def test_a_dict_parameter_with_number_keys_round_trips(tmp_path: Path) -> None:
    lgb = pytest.importorskip("lightgbm")
    X, y = data()
    model = lgb.LGBMClassifier(n_estimators=3, class_weight={0: 1.0, 1: 2.0}, verbose=-1).fit(X, y)
    path = tmp_path / "cw.amber"
    amber.save(model, path)
    back = amber.load(path)
    assert back.get_params()["class_weight"] == {0: 1.0, 1: 2.0}
    np.testing.assert_array_equal(back.predict(X), model.predict(X))


def test_a_numpy_array_parameter_round_trips(tmp_path: Path) -> None:
    """XGBoost's documentation passes quantile_alpha as a numpy array; saving it was refused
    ("cannot be stored as JSON")."""
    xgb = pytest.importorskip("xgboost")
    X, y = data()
    alphas = np.array([0.1, 0.5, 0.9])
    model = xgb.XGBRegressor(
        n_estimators=3, objective="reg:quantileerror", quantile_alpha=alphas
    ).fit(X, y.astype(float))
    path = tmp_path / "q.amber"
    info = amber.save(model, path, sample=X[:5])
    assert info.manifest["payload"]["params"]["quantile_alpha"] == {
        "$array": {"dtype": "<f8", "shape": [3], "data": [0.1, 0.5, 0.9]}
    }
    back = amber.load(path)
    got = back.get_params()["quantile_alpha"]
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_array_equal(got, alphas)
    np.testing.assert_array_equal(back.predict(X), model.predict(X))
    assert amber.verify(path).ok


@pytest.mark.parametrize(
    "spec",
    [
        {"dtype": "O", "shape": [1], "data": [1]},  # objects
        {"dtype": "V8", "shape": [1], "data": [1]},  # raw bytes
        {"dtype": "<f8", "shape": [5], "data": [1.0]},  # a shape the data does not fill
        {"dtype": "<f8", "shape": [1], "data": ["x"]},
        {"dtype": "<i1", "shape": [1], "data": [1000]},
        {"dtype": "<f8", "shape": [70000], "data": [0.0] * 70000},  # too large for a parameter
    ],
)
def test_a_malformed_array_parameter_is_a_format_error(spec: dict[str, Any]) -> None:
    from amber.handlers._common import decode_params

    with pytest.raises(FormatError, match="malformed parameter array"):
        decode_params({"p": {"$array": spec}})


def _tree(doc: dict[str, Any], k: int = 0) -> dict[str, Any]:
    tree: dict[str, Any] = doc["learner"]["gradient_booster"]["model"]["trees"][k]
    return tree


# Each of these crashed the process (segfault, heap corruption) in XGBoost's load_model or
# predict, or hung it, when a forged file carried it.
_XGB_FORGERIES: dict[str, Callable[[dict[str, Any]], None]] = {
    "child past the tree": lambda d: _tree(d)["left_children"].__setitem__(0, 1000),
    "negative child": lambda d: _tree(d)["left_children"].__setitem__(0, -7),
    "cycle": lambda d: _tree(d)["left_children"].__setitem__(1, 1),
    "child back to the root": lambda d: _tree(d)["right_children"].__setitem__(0, 0),
    "feature past the model's": lambda d: _tree(d)["split_indices"].__setitem__(0, 10**6),
    "tree of a class that does not exist": lambda d: d["learner"]["gradient_booster"]["model"][
        "tree_info"
    ].__setitem__(0, 50),
    "10**8 classes": lambda d: d["learner"]["learner_model_param"].__setitem__(
        "num_class", "100000000"
    ),
    "category segment past the list": lambda d: _tree(d).update(
        split_type=[1] + [0] * (len(_tree(d)["split_type"]) - 1),
        categories=[1],
        categories_nodes=[0],
        categories_segments=[100],
        categories_sizes=[50],
    ),
    "fewer children than nodes": lambda d: _tree(d).__setitem__("left_children", [1]),
    # XGBoost indexes nodes by their parents at load, and puts each tree where its id says
    "parent past the tree": lambda d: _tree(d)["parents"].__setitem__(1, 2_000_000_000),
    "parent that is not the node's": lambda d: _tree(d)["parents"].__setitem__(1, 1),
    "two trees of one id": lambda d: _tree(d, 1).__setitem__("id", 0),
    # the wrappers predict up to best_iteration + 1, which XGBoost takes as given
    "negative best iteration": lambda d: (
        d["learner"].setdefault("attributes", {}).__setitem__("best_iteration", "-100000000")
    ),
}


def test_xgboost_documents_that_overrun_or_exhaust_are_refused() -> None:
    """A vector leaf wider than num_target overran XGBoost's output (heap corruption); a
    UBJSON array of 2**40 nulls from a few bytes ran the parser out of memory."""
    import json

    import xgboost as xgb

    from amber.handlers._common import SizeBounds
    from amber.handlers._xgb_check import check_model

    def check(doc: Any, bounds: SizeBounds) -> None:
        check_model(json.dumps(doc).encode(), "json", bounds)

    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 4))
    model = xgb.XGBRegressor(n_estimators=1, multi_strategy="multi_output_tree", n_jobs=1)
    model.fit(X, np.c_[X[:, 0], X[:, 1]])
    doc = json.loads(bytes(model.get_booster().save_raw("json")))
    check(doc, SizeBounds("test"))
    tree = _tree(doc)
    tree["tree_param"]["size_leaf_vector"] = "64"
    tree["leaf_weights"] = [0.0] * 64 * (len(tree["leaf_weights"]) // 2)
    tree["base_weights"] = [0.0] * 64 * len(tree["left_children"])
    with pytest.raises(FormatError, match="leaf vector is not 2 wide"):
        check(doc, SizeBounds("test"))
    wide = json.loads(bytes(model.get_booster().save_raw("json")))
    wide["learner"]["learner_model_param"]["num_feature"] = str(300_000_000)
    with pytest.raises(FormatError, match=r"300,000,000 features wide .* without as many"):
        check(wide, SizeBounds("test"))  # 4.9 GB at predict on one thread
    lifted = SizeBounds("test", lifted=True)  # a file the caller made: a warning at the end
    check(wide, lifted)
    assert lifted.found and "300,000,000" in lifted.found[0]
    nulls = b"[$Z#L" + (2**40).to_bytes(8, "big")
    with pytest.raises(FormatError, match="without data"):
        check_model(nulls, "ubj", SizeBounds("test"))
    with pytest.raises(FormatError, match="longer than the data"):
        check_model(b"[#L" + (2**40).to_bytes(8, "big"), "ubj", SizeBounds("test"))


def test_an_xgboost_document_giving_a_key_twice_is_refused() -> None:
    """The check would read one value, XGBoost perhaps the other."""
    from amber.handlers._common import SizeBounds
    from amber.handlers._xgb_check import check_model

    with pytest.raises(FormatError, match="gives a key twice"):
        check_model(b'{"learner": {"a": 1, "a": 2}}', "json", SizeBounds("test"))
    twice = b"{" + (b"L" + (1).to_bytes(8, "big") + b"a" + b"Z") * 2 + b"}"
    with pytest.raises(FormatError, match="gives a key twice"):
        check_model(twice, "ubj", SizeBounds("test"))


@pytest.mark.parametrize("forgery", sorted(_XGB_FORGERIES))
@pytest.mark.parametrize("fmt", ["json", "ubj"])
def test_a_forged_xgboost_tree_is_refused_before_xgboost_reads_it(
    tmp_path: Path, forgery: str, fmt: str
) -> None:
    import json

    import xgboost as xgb

    from amber.handlers._common import SizeBounds
    from amber.handlers._xgb_check import check_model

    model, _ = _xgb_classifier()
    path = tmp_path / "m.amber"
    amber.save(model, path, format=fmt)
    entry = f"model/model.{fmt}"

    def forge(raw: bytes) -> bytes:
        doc = json.loads(bytes(xgb.Booster(model_file=bytearray(raw)).save_raw("json")))
        check_model(raw, fmt, SizeBounds("test"))  # the honest document passes
        assert doc["learner"]["learner_model_param"]["num_class"] == "0"
        _XGB_FORGERIES[forgery](doc)
        if fmt == "json":
            return json.dumps(doc).encode()
        # the same document in UBJSON, untyped: the checks read both spellings
        return _ubjson(doc)

    forge_entry(path, entry, forge)
    with pytest.raises(FormatError, match="XGBoost model is malformed"):
        amber.load(path)
    with pytest.raises(FormatError, match="XGBoost model is malformed"):
        amber.verify(path)


def _ubjson(value: Any) -> bytes:
    """A minimal UBJSON writer (untyped containers), for forging the binary format."""
    import struct

    if isinstance(value, bool):
        return b"T" if value else b"F"
    if isinstance(value, int):
        return b"L" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"D" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode()
        return b"SL" + struct.pack(">q", len(raw)) + raw
    if isinstance(value, list):
        return b"[" + b"".join(_ubjson(v) for v in value) + b"]"
    if isinstance(value, dict):
        body = b"".join(
            b"L" + struct.pack(">q", len(k.encode())) + k.encode() + _ubjson(v)
            for k, v in value.items()
        )
        return b"{" + body + b"}"
    if value is None:
        return b"Z"
    raise TypeError(type(value))


def test_honest_xgboost_models_of_every_kind_pass_the_tree_check(tmp_path: Path) -> None:
    """Vector-leaf trees, categorical splits, dart, gblinear and random forests are what the
    check must not refuse."""
    import pandas as pd
    import xgboost as xgb

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    frame = pd.DataFrame({"a": X[:, 0], "c": pd.Categorical(rng.integers(0, 30, 200))})
    models = [
        (xgb.XGBClassifier(n_estimators=3, max_depth=3, n_jobs=1), X, y),
        (xgb.XGBRegressor(booster="dart", n_estimators=3, n_jobs=1), X, X[:, 0]),
        (xgb.XGBClassifier(booster="gblinear", n_estimators=3, n_jobs=1), X, y),
        (xgb.XGBRFClassifier(n_estimators=3, n_jobs=1), X, y),
        (
            xgb.XGBRegressor(
                n_estimators=2, tree_method="hist", multi_strategy="multi_output_tree"
            ),
            X,
            np.c_[X[:, 0], -X[:, 0], X[:, 1]],
        ),
        (
            xgb.XGBClassifier(
                n_estimators=3, enable_categorical=True, max_cat_to_onehot=1, n_jobs=1
            ),
            frame,
            y,
        ),
        # one leaf vector per class (num_class=3, num_target=1): refused by a first check
        (xgb.XGBClassifier(n_estimators=2, multi_strategy="multi_output_tree", n_jobs=1), X, y),
    ]
    for k, (model, inputs, target) in enumerate(models):
        model.fit(inputs, target)
        for fmt in ("ubj", "json"):
            path = tmp_path / f"m{k}.{fmt}.amber"
            amber.save(model, path, sample=inputs[:8], format=fmt)
            loaded = amber.load(path)
            np.testing.assert_array_equal(loaded.predict(inputs), model.predict(inputs))


def _first_tree_line(key: str, value: str) -> Callable[[bytes], bytes]:
    """Set ``key=`` of the model text's first tree (tree_sizes dropped, as if written so)."""

    def change(raw: bytes) -> bytes:
        text = raw.decode()
        head, _, trees = text.partition("\nTree=0\n")
        head = "\n".join(ln for ln in head.split("\n") if not ln.startswith("tree_sizes="))
        lines = trees.split("\n")
        k = next(i for i, ln in enumerate(lines) if ln.startswith(f"{key}="))
        lines[k] = f"{key}={value}"
        return (head + "\nTree=0\n" + "\n".join(lines)).encode()

    return change


def _first_tree_text(change_lines: Callable[[list[str]], list[str]]) -> Callable[[bytes], bytes]:
    """Rewrite the lines of the model text's first tree (tree_sizes dropped)."""

    def change(raw: bytes) -> bytes:
        text = raw.decode()
        head, _, trees = text.partition("\nTree=0\n")
        head = "\n".join(ln for ln in head.split("\n") if not ln.startswith("tree_sizes="))
        first, sep, rest = trees.partition("\n\n")
        return (
            head + "\nTree=0\n" + "\n".join(change_lines(first.split("\n"))) + sep + rest
        ).encode()

    return change


def _first_token(key: str, token: str) -> Callable[[list[str]], list[str]]:
    def change(lines: list[str]) -> list[str]:
        return [
            f"{key}={token} {ln.split('=', 1)[1].partition(' ')[2]}".rstrip()
            if ln.startswith(f"{key}=")
            else ln
            for ln in lines
        ]

    return change


def _without_end_blank_lines(raw: bytes) -> bytes:
    """No empty line between the last tree and 'end of trees' (tree_sizes dropped)."""
    text = raw.decode()
    text = "\n".join(ln for ln in text.split("\n") if not ln.startswith("tree_sizes="))
    body, sep, tail = text.partition("\nend of trees")
    return (body.rstrip("\n") + sep + tail).encode()


def _header_line(key: str, value: str) -> Callable[[bytes], bytes]:
    def change(raw: bytes) -> bytes:
        lines = raw.decode().split("\n")
        k = next(i for i, ln in enumerate(lines) if ln.startswith(f"{key}="))
        lines[k] = f"{key}={value}"
        return "\n".join(lines).encode()

    return change


# Each crashed the process (segfault, floating-point exception, abort) in LightGBM, or hung it.
_LGB_FORGERIES: dict[str, Callable[[bytes], bytes]] = {
    "child past the tree": _first_tree_line("left_child", "1 -1 -2 99"),
    "cycle": _first_tree_line("left_child", "0 -1 -2 -3"),
    "feature past the model's": _first_tree_line("split_feature", "100000 0 0 0"),
    "no leaves": _first_tree_line("num_leaves", "0"),
    "zero trees per iteration": _header_line("num_tree_per_iteration", "0"),
    "tree sizes that lie": _header_line("tree_sizes", "10 10 10 10"),
    # a key given twice: the check must not read one value and LightGBM the other
    "repeated key": _first_tree_line("num_leaves", "5\nleft_child=1 -1 -2 99"),
    # LightGBM ends a line at \r too, and reads "0_1" or an Arabic-Indic digit as 0: the
    # check read 1 where LightGBM saw 0 (a child back to the root: a hang)
    "carriage return": _header_line("label_index", "0\rnum_tree_per_iteration=0"),
    "digits Python reads otherwise": _first_tree_line("left_child", "0_1 -1 -2 -3"),
    "Arabic-Indic digit": _first_tree_line("left_child", "\u0661 -1 -2 -3"),
    # predict sizes its output by the objective's own class count (heap corruption)
    "objective's class count": _header_line("objective", "binary sigmoid:1 num_class:100000"),
    # LightGBM loads trees on several threads when tree_sizes is given: a value it cannot
    # parse, or a field it needs, missing or empty, ends the process there (std::terminate)
    "word where a number belongs": _first_tree_text(_first_token("leaf_value", "abc")),
    "number with two points": _first_tree_text(_first_token("threshold", "1.2.3")),
    "empty leaf_weight": _first_tree_text(
        lambda lines: [("leaf_weight=" if ln.startswith("leaf_weight=") else ln) for ln in lines]
    ),
    "no num_cat": _first_tree_text(lambda ls: [ln for ln in ls if not ln.startswith("num_cat=")]),
    # its tree reader scans for '=' past a tree that does not end with an empty line
    "no empty line after the last tree": _without_end_blank_lines,
    # it reads 22 lines of a tree: a check that read more would check what it never reads
    "more lines than LightGBM reads": _first_tree_text(
        lambda lines: [lines[0], *(f"x{k}=1" for k in range(30)), *lines[1:]]
    ),
    "line that is not key=value": _first_tree_text(lambda lines: [*lines, "oops"]),
    # predict sizes a row's output by num_class and writes a value per tree of an iteration
    "fewer classes than trees per iteration": _header_line("num_tree_per_iteration", "2"),
    # Booster reads its parameters back, and a line without a colon crashed it
    "parameter line without a colon": lambda raw: raw.replace(b"\n[boosting: ", b"\n[x]\n[q: "),
    # LightGBM reads the objective's first word, and its dump each feature_infos entry's parts
    "empty objective": _header_line("objective", ""),
    "feature_infos entry without its range": lambda raw: raw.replace(
        b"\nfeature_infos=[", b"\nfeature_infos=[1] [", 1
    ).replace(b"] [", b"] ", 1),
}


@pytest.mark.parametrize("forgery", sorted(_LGB_FORGERIES))
def test_a_forged_lightgbm_text_is_refused_before_lightgbm_reads_it(
    tmp_path: Path, forgery: str
) -> None:
    import lightgbm as lgb

    X, y = data()
    model = lgb.LGBMClassifier(n_estimators=4, num_leaves=5, min_child_samples=5, verbose=-1)
    model.fit(X, y)
    path = tmp_path / "m.amber"
    amber.save(model, path)
    forge_entry(path, "model/model.txt", _LGB_FORGERIES[forgery])
    with pytest.raises(FormatError, match="LightGBM model is malformed"):
        amber.load(path)


def test_a_lightgbm_wrapper_asking_for_100000_threads_is_refused(tmp_path: Path) -> None:
    model, _ = _lgbm_classifier()
    path = tmp_path / "m.amber"
    amber.save(model, path)

    def forge(manifest: dict[str, Any]) -> dict[str, Any]:
        manifest["payload"]["params"]["n_jobs"] = 100_000  # segfaulted LightGBM
        return manifest

    rewrite(path, path, update=forge)
    with pytest.raises(FormatError, match=r"n_jobs=100000"):
        amber.load(path)

    def as_array(manifest: dict[str, Any]) -> dict[str, Any]:  # a parameter array, read too
        manifest["payload"]["params"]["n_jobs"] = {
            "$array": {"dtype": "<i8", "shape": [], "data": [100_000]}
        }
        return manifest

    rewrite(path, path, update=as_array)
    with pytest.raises(FormatError, match=r"n_jobs=100000"):
        amber.load(path)


def test_honest_lightgbm_models_of_every_kind_pass_the_text_check(tmp_path: Path) -> None:
    import lightgbm as lgb
    import pandas as pd

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    frame = pd.DataFrame({"a": X[:, 0], "c": pd.Categorical(rng.integers(0, 30, 300))})
    kw: dict[str, Any] = {"n_estimators": 3, "min_child_samples": 5, "verbose": -1}
    models = [
        (lgb.LGBMClassifier(**kw), X, y),
        (lgb.LGBMRegressor(linear_tree=True, **kw), X, X[:, 0]),
        (lgb.LGBMRegressor(boosting_type="dart", **kw), X, X[:, 0]),
        (lgb.LGBMRegressor(**kw), X, np.ones(300)),  # one-leaf trees
        (lgb.LGBMClassifier(**kw), frame, y),  # categorical splits
    ]
    for k, (model, inputs, target) in enumerate(models):
        model.fit(inputs, target)
        path = tmp_path / f"m{k}.amber"
        amber.save(model, path, sample=inputs[:8])
        np.testing.assert_array_equal(amber.load(path).predict(inputs), model.predict(inputs))


def test_a_lightgbm_wrapper_whose_classes_are_not_as_fitting_leaves_them_is_refused(
    tmp_path: Path,
) -> None:
    """The label encoder is rebuilt from the stored classes without refitting it: classes
    that fitting would have sorted or merged are refused rather than silently reordered."""
    import io

    model, sample = _lgbm_classifier()
    path = tmp_path / "m.amber"
    amber.save(model, path, sample=sample)
    loaded = amber.load(path)
    assert list(loaded.classes_) == ["no", "yes"] and loaded._class_map == {"no": 0, "yes": 1}
    np.testing.assert_array_equal(loaded.predict_proba(sample), model.predict_proba(sample))

    def reversed_classes(raw: bytes) -> bytes:
        out = io.BytesIO()
        np.save(out, np.load(io.BytesIO(raw))[::-1])
        return out.getvalue()

    forge_entry(path, "model/classes.npy", reversed_classes)
    with pytest.raises(FormatError, match="classes are not distinct and sorted"):
        amber.load(path)


def _xgb_chain(depth: int) -> dict[str, Any]:
    """An XGBoost model document of one tree ``depth`` splits deep, each split's left child a
    leaf (a chain: what a forged file uses to overflow XGBoost's recursive code)."""
    import json

    import xgboost as xgb

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    model = xgb.XGBRegressor(n_estimators=1, max_depth=1).fit(X, X[:, 0])
    doc: dict[str, Any] = json.loads(bytes(model.get_booster().save_raw("json")))
    n = 2 * depth + 1
    left = [-1] * n
    right = [-1] * n
    parents = [2**31 - 1] + [0] * (n - 1)
    for j in range(depth):
        left[2 * j], right[2 * j] = 2 * j + 1, 2 * j + 2
        parents[2 * j + 1] = parents[2 * j + 2] = 2 * j
    tree = _tree(doc)
    tree.update(
        left_children=left, right_children=right, parents=parents,
        split_indices=[0] * n, split_conditions=[0.0] * n, default_left=[0] * n,
        split_type=[0] * n, base_weights=[0.0] * n, loss_changes=[0.0] * n,
        sum_hessian=[1.0] * n, categories=[], categories_nodes=[],
        categories_segments=[], categories_sizes=[],
    )  # fmt: skip
    tree["tree_param"]["num_nodes"] = str(n)
    return doc


def _lgb_chain(depth: int) -> bytes:
    """A LightGBM model text whose one tree is ``depth`` splits deep (a chain)."""
    import lightgbm as lgb

    X, y = data()
    model = lgb.LGBMRegressor(n_estimators=1, num_leaves=2, min_child_samples=5, verbose=-1)
    text = model.fit(X, y.astype(float)).booster_.model_to_string()
    head, _, rest = text.partition("\nTree=0\n")
    head = "\n".join(ln for ln in head.split("\n") if not ln.startswith("tree_sizes="))
    _, _, tail = rest.partition("\nend of trees")
    inner, leaves = depth, depth + 1

    def row(values: list[Any]) -> str:
        return " ".join(str(v) for v in values)

    fields = {
        "num_leaves": leaves, "num_cat": 0, "split_feature": row([0] * inner),
        "split_gain": row([1] * inner), "threshold": row([0.5] * inner),
        "decision_type": row([2] * inner),
        "left_child": row([~j for j in range(inner)]),
        "right_child": row([j + 1 for j in range(inner - 1)] + [~inner]),
        "leaf_value": row([0.0] * leaves), "leaf_weight": row([1] * leaves),
        "leaf_count": row([1] * leaves), "internal_value": row([0] * inner),
        "internal_weight": row([1] * inner), "internal_count": row([1] * inner),
        "is_linear": 0, "shrinkage": 1,
    }  # fmt: skip
    tree = "\n".join(f"{k}={v}" for k, v in fields.items())
    return f"{head}\nTree=0\n{tree}\n\n\nend of trees{tail}".encode()


def test_trees_deeper_than_the_bound_are_refused_unless_trusted() -> None:
    """XGBoost's and LightGBM's SHAP contributions and XGBoost's dump recurse on a tree's
    depth: a forged chain 100,000 splits deep overflowed their stacks. A tree over 2,048 splits
    deep is refused unless the caller trusts the file; honest trees are far shallower."""
    import json

    from amber.handlers._common import MAX_DEPTH, SizeBounds
    from amber.handlers._lgb_check import check_model_text
    from amber.handlers._xgb_check import check_model

    for depth in (MAX_DEPTH, MAX_DEPTH + 1):
        raw = json.dumps(_xgb_chain(depth)).encode()
        text = _lgb_chain(depth)
        if depth <= MAX_DEPTH:
            check_model(raw, "json", SizeBounds("t"))
            check_model_text(text, SizeBounds("t"))
            continue
        with pytest.raises(FormatError, match="2,049 splits deep"):
            check_model(raw, "json", SizeBounds("t"))
        with pytest.raises(FormatError, match="2,049 splits deep"):
            check_model_text(text, SizeBounds("t"))
        lifted = SizeBounds("t", lifted=True)
        check_model(raw, "json", lifted)
        check_model_text(text, lifted)
        assert len(lifted.found) == 2


def test_categorical_sets_wider_than_the_bound_are_refused_unless_trusted() -> None:
    """XGBoost gives each categorical split a bitset as wide as its largest category: a 9 kB
    file of splits on category 2**24 - 1 took 4 GB at load."""
    import json

    from amber.handlers._common import SizeBounds
    from amber.handlers._xgb_check import check_model

    doc = _xgb_chain(20)
    tree = _tree(doc)
    inner = [i for i, child in enumerate(tree["left_children"]) if child != -1]
    tree["split_type"] = [1 if i in inner else 0 for i in range(len(tree["split_type"]))]
    tree.update(
        categories=[2**24 - 1] * len(inner), categories_nodes=inner,
        categories_segments=list(range(len(inner))), categories_sizes=[1] * len(inner),
    )  # fmt: skip
    raw = json.dumps(doc).encode()
    with pytest.raises(FormatError, match="335,544,320 categories in all"):
        check_model(raw, "json", SizeBounds("t"))
    lifted = SizeBounds("t", lifted=True)
    check_model(raw, "json", lifted)
    assert lifted.found and "categorical splits" in lifted.found[0]


def _multi_output_xgb() -> Any:
    import xgboost as xgb

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    return xgb.XGBRegressor(
        n_estimators=3, max_depth=3, tree_method="hist", multi_strategy="multi_output_tree",
        n_jobs=1,
    ).fit(X, np.c_[X[:, 0] * 2, -X[:, 1]])  # fmt: skip


# A vector-leaf tree without its statistics crashed load_model (segfault); with fewer than one a
# node, XGBoost read past them (heap bytes in save_raw): it checks their lengths on scalar trees
_XGB_STATISTICS = {
    "no sum_hessian": lambda t: t.pop("sum_hessian"),
    "no loss_changes": lambda t: t.pop("loss_changes"),
    "one loss change": lambda t: t.__setitem__("loss_changes", t["loss_changes"][:1]),
    "sum_hessian one short": lambda t: t.__setitem__("sum_hessian", t["sum_hessian"][:-1]),
}


@pytest.mark.parametrize("fmt", ["json", "ubj"])
@pytest.mark.parametrize("forgery", sorted(_XGB_STATISTICS))
def test_a_vector_leaf_tree_needs_its_statistics_for_every_node(
    tmp_path: Path, forgery: str, fmt: str
) -> None:
    import json

    model = _multi_output_xgb()
    path = tmp_path / "m.amber"
    amber.save(model, path, format=fmt)
    amber.load(path)  # the honest file loads

    def forge(raw: bytes) -> bytes:
        doc = json.loads(bytes(model.get_booster().save_raw("json")))
        _XGB_STATISTICS[forgery](_tree(doc, 1))
        return json.dumps(doc).encode() if fmt == "json" else _ubjson(doc)

    forge_entry(path, f"model/model.{fmt}", forge)
    with pytest.raises(FormatError, match="XGBoost model is malformed: tree 1"):
        amber.load(path)


def _linear_lightgbm() -> Any:
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    return lgb.LGBMRegressor(
        n_estimators=3, num_leaves=4, linear_tree=True, verbose=-1, n_jobs=1
    ).fit(X, X[:, 0] * 2 + X[:, 1])


def _last_tree_token(key: str, token: str) -> Callable[[bytes], bytes]:
    """Replace the first value of ``key=`` in the last tree, and re-count tree_sizes: LightGBM
    then loads the trees on several threads, where an exception ends the process."""

    def change(raw: bytes) -> bytes:
        text = raw.decode()
        head, sep, trees = text.rpartition("\nTree=")
        lines = trees.split("\n")
        k = next(i for i, ln in enumerate(lines) if ln.startswith(f"{key}="))
        values = lines[k].split("=", 1)[1].split(" ")
        lines[k] = f"{key}=" + " ".join([token, *values[1:]])
        text = head + sep + "\n".join(lines)
        starts = [m.start() + 1 for m in re.finditer(r"\nTree=", text)]
        ends = [*starts[1:], text.index("end of trees")]
        sizes = " ".join(str(b - a) for a, b in zip(starts, ends, strict=True))
        return re.sub(r"(?m)^tree_sizes=.*$", f"tree_sizes={sizes}", text).encode()

    return change


@pytest.mark.parametrize(
    ("key", "token"),
    [("leaf_const", "1e309"), ("leaf_const", "1e-320"), ("leaf_const", "1e-99999"),
     ("leaf_coeff", "2.2250738585072011e-308"), ("leaf_coeff", "9" * 400)],
)  # fmt: skip
def test_a_linear_leaf_number_that_is_no_double_is_refused(
    tmp_path: Path, key: str, token: str
) -> None:
    """LightGBM reads a linear tree's leaf_const and leaf_coeff with std::stod, which throws
    where strtod reports a value out of range: on its loading threads that ended the process
    (SIGABRT) before the check refused them."""
    model = _linear_lightgbm()
    path = tmp_path / "m.amber"
    amber.save(model, path)
    forge_entry(path, "model/model.txt", _last_tree_token(key, "0.5"))
    amber.load(path)  # an in-range value, tree_sizes re-counted: loads
    forge_entry(path, "model/model.txt", _last_tree_token(key, token))
    with pytest.raises(FormatError, match=f"{key} holds a number outside the range of a double"):
        amber.load(path)


def test_a_lightgbm_wrapper_asking_for_more_threads_than_the_machine_is_refused(
    tmp_path: Path,
) -> None:
    """4,096 threads (the earlier bound) ended the process under a 6 GB address-space limit:
    OpenMP could not start them at predict."""
    from amber.handlers._lgb_check import _MAX_THREADS

    model, _ = _lgbm_classifier()
    path = tmp_path / "m.amber"
    amber.save(model, path)
    for n_jobs, refused in ((64, False), (-1, False), (_MAX_THREADS + 1, True), (4096, True)):
        if n_jobs == 4096 and _MAX_THREADS >= 4096:
            continue  # a machine of 4,096 CPUs runs them

        def forge(manifest: dict[str, Any], n: int = n_jobs) -> dict[str, Any]:
            manifest["payload"]["params"]["n_jobs"] = n
            return manifest

        rewrite(path, path, update=forge)
        if refused:
            with pytest.raises(FormatError, match=rf"n_jobs={n_jobs} threads, more than"):
                amber.load(path)
        else:
            assert amber.load(path).n_jobs == n_jobs
