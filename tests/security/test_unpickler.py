"""safe_loads: refusing code, refusing hostile data in allowed types, round trips of real models."""

from __future__ import annotations

import copy
import pickle
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy._core.multiarray import _reconstruct, scalar
from numpy._core.numeric import _frombuffer
from security_kit import (
    BUILD,
    EMPTY_DICT,
    MARK,
    MEMOIZE,
    NEWOBJ,
    PROTO5,
    REDUCE,
    TUPLE,
    Forged,
    binget,
    binint,
    call,
    crashed,
    crashed_unless_numpy,
    dumps5,
    glob,
    run_python,
    sbu,
    sglob,
    shared_tuple_bomb,
)

from amber.errors import FormatError, UnsafeLoadWarning, UntrustedTypeError
from amber.security import _pickle_scan  # type: ignore[attr-defined]
from amber.security._policy import LoadPolicy
from amber.security._unpickler import safe_loads


def load(data: bytes, buffers: Any = (), **policy: Any) -> Any:
    return safe_loads(data, buffers=buffers, policy=LoadPolicy.make(**policy))


# --------------------------------------------------------------------------- code is refused
def test_os_system_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = PROTO5 + call("os", "system", sbu(f"touch {marker}")) + b"."
    with pytest.raises(UntrustedTypeError) as info:
        load(data)
    assert not marker.exists()
    assert info.value.names == ("os.system",)
    assert "os.system runs code Amber cannot vet" in str(info.value)
    assert "trusted=[" not in str(info.value)  # a code runner is never offered to trusted=


def test_builtins_open_is_refused_and_never_runs(tmp_path: Path) -> None:
    target = tmp_path / "written"
    data = b"\x80\x02" + glob("__builtin__", "open") + sbu(str(target)) + sbu("w")
    data += b"\x86" + REDUCE + b"."
    with pytest.raises(UntrustedTypeError, match=r"builtins.open"):
        load(data)
    assert not target.exists()


def test_every_offending_name_is_listed_at_once(tmp_path: Path) -> None:
    marker = tmp_path / "x"
    data = (
        PROTO5
        + MARK
        + call("subprocess", "getoutput", sbu(f"touch {marker}"))
        + call("collections", "OrderedDict")
        + call("webbrowser", "open", sbu("http://example.invalid"))
        + call("os", "system", sbu(f"touch {marker}"))
        + b"l."
    )
    with pytest.raises(UntrustedTypeError) as info:
        load(data)
    assert info.value.names == ("os.system", "subprocess.getoutput", "webbrowser.open")
    message = str(info.value)
    assert "3 types or functions" in message and "Nothing from the file was run" in message
    assert "trusted=['webbrowser.open']" in message
    assert "os.system, subprocess.getoutput run code Amber cannot vet" in message
    assert not marker.exists()


def test_find_class_refuses_even_if_the_scan_were_bypassed() -> None:
    import io

    from amber.security._scanner import PickleScan
    from amber.security._unpickler import _SafeUnpickler

    unpickler = _SafeUnpickler(
        io.BytesIO(b""), buffers=[], policy=LoadPolicy(), scan=PickleScan((), 5, 0), hooks=[]
    )
    with pytest.raises(UntrustedTypeError, match=r"posix.system"):
        unpickler.find_class("posix", "system")


def test_trusted_admits_a_named_type() -> None:
    from collections import ChainMap

    data = pickle.dumps(ChainMap({"a": 1}), protocol=5)
    with pytest.raises(UntrustedTypeError, match=r"trusted=\['collections.ChainMap'\]"):
        load(data)
    assert load(data, trusted=["collections.ChainMap"]) == ChainMap({"a": 1})
    assert load(data, trusted=["collections:ChainMap"]) == ChainMap({"a": 1})


def test_allow_arbitrary_code_warns_and_uses_plain_pickle() -> None:
    from collections import ChainMap

    data = pickle.dumps(ChainMap({"a": 1}), protocol=5)
    with pytest.warns(UnsafeLoadWarning, match="allow_arbitrary_code=True"):
        assert load(data, allow_arbitrary_code=True) == ChainMap({"a": 1})
    with (
        pytest.warns(UnsafeLoadWarning),
        pytest.raises(FormatError, match="could not be unpickled"),
    ):
        load(b"\x80\x05garbage", allow_arbitrary_code=True)


def test_structural_refusals_come_before_the_allowlist() -> None:
    data = PROTO5 + sglob("os", "system") + EMPTY_DICT + BUILD + b"."
    with pytest.raises(FormatError, match="BUILD would set attributes on a global"):
        load(data)


# --------------------------------------------------------------------------- call gadgets
def test_copyreg_reconstructor_only_with_plain_bases() -> None:
    from collections import Counter

    ok = Forged(__import__("copyreg")._reconstructor, (Counter, dict, {"a": 1}))
    assert load(pickle.dumps(ok, protocol=2)) == Counter(a=1)
    bad = Forged(__import__("copyreg")._reconstructor, (np.ndarray, np.ndarray, (2**40,)))
    with pytest.raises(FormatError, match=r"copyreg._reconstructor with base"):
        load(pickle.dumps(bad, protocol=2))


def test_copyreg_newobj_cannot_allocate_arrays() -> None:
    data = b"\x80\x02" + glob("copyreg", "__newobj__") + glob("numpy", "ndarray")
    data += MARK + binint(2**30) + TUPLE + b"\x86" + REDUCE + b"."
    with pytest.raises(FormatError, match=r"copyreg\.__newobj__ of <class 'numpy\.ndarray'>"):
        load(data)


def test_arrays_cannot_be_constructed_directly() -> None:
    data = PROTO5 + sglob("numpy", "ndarray") + MARK + binint(2**30) + TUPLE + NEWOBJ + b"."
    with pytest.raises(FormatError, match=r"calls numpy.ndarray, which honest pickles only name"):
        load(data)


def test_codecs_encode_is_latin1_only() -> None:
    assert load(pickle.dumps(b"\x00\xffabc", protocol=2)) == b"\x00\xffabc"
    data = PROTO5 + call("_codecs", "encode", sbu("x"), sbu("rot13")) + b"."
    with pytest.raises(FormatError, match="encoding 'rot13'"):
        load(data)


@pytest.mark.parametrize("name", ["bytearray", "bytes"])
def test_binary_types_cannot_allocate_from_a_size(name: str) -> None:
    data = PROTO5 + call("builtins", name, binint(2**31 - 1)) + b"."
    with pytest.raises(FormatError, match=f"{name} called with a int"):
        load(data)
    assert load(pickle.dumps(bytearray(b"ab"), protocol=3)) == bytearray(b"ab")


def test_random_state_round_trips_but_not_with_a_foreign_constructor() -> None:
    rng = np.random.RandomState(3)
    clone = load(pickle.dumps(rng, protocol=5))
    assert clone.randint(1000) == np.random.RandomState(3).randint(1000)
    gen = load(pickle.dumps(np.random.default_rng(5), protocol=5))
    assert gen.integers(1000) == np.random.default_rng(5).integers(1000)
    data = (
        PROTO5
        + sglob("numpy.random._pickle", "__randomstate_ctor")
        + MARK
        + sbu("MT19937")
        + sglob("numpy", "log1p")
        + TUPLE
        + REDUCE
        + b"."
    )
    with pytest.raises(FormatError, match="unexpected constructor"):
        load(data)


# --------------------------------------------------------------------------- getattr
def test_getattr_reaches_the_string_methods_of_a_text_pipeline_only(tmp_path: Path) -> None:
    """pickle writes str.split as getattr(str, "split"); the loader's getattr is a stand-in
    that reaches str's methods a tokenizer or preprocessor is given, and nothing else."""
    assert load(pickle.dumps(str.split, protocol=5)) is str.split
    assert load(pickle.dumps([str.lower, str.strip], protocol=2)) == [str.lower, str.strip]
    marker = tmp_path / "pwned"
    for obj, name in [
        (str, "format"),  # a method, but not one of a tokenizer's
        (str, "__class__"),
        (object, "__subclasses__"),
        (bytes, "split"),
        (np.ndarray, "tofile"),
    ]:
        with pytest.raises((FormatError, UntrustedTypeError)):
            load(pickle.dumps(Forged(getattr, (obj, name)), protocol=5))

    # a str subclass for the name (numpy's, allowed): its __eq__ and __hash__ could be anything
    with pytest.raises(FormatError, match="only reaches the string methods"):
        load(pickle.dumps(Forged(getattr, (str, np.str_("split"))), protocol=5))
    # held as a value instead of called: the model would hold the stand-in
    held = PROTO5 + glob("builtins", "getattr") + MEMOIZE + b"."
    with pytest.raises(FormatError):
        load(held)
    # os.system reached through getattr of an allowed module: the module is not a global
    data = PROTO5 + call("builtins", "getattr", sglob("os", "path") + sbu("system")) + b"."
    with pytest.raises((FormatError, UntrustedTypeError)):
        load(data)
    assert not marker.exists()
    with pytest.raises(ValueError, match="cannot admit"):
        LoadPolicy.make(["builtins.getattr"])  # trusting the real one stays refused


def test_getattr_reaches_a_boosting_models_own_raw_predict(tmp_path: Path) -> None:
    """HistGradientBoosting fitted with early stopping and a scorer keeps its bound _raw_predict
    in its __dict__, which plain pickle and joblib write as getattr(model, "_raw_predict"):
    such files load, with the class's own method bound to the model; no other name, object or
    class does."""
    import joblib
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    import amber

    rng = np.random.default_rng(0)
    X, y = rng.random((60, 4)), np.arange(60) % 3
    for cls in (HistGradientBoostingClassifier, HistGradientBoostingRegressor):
        fitted = cls(
            max_iter=10,
            early_stopping=True,
            scoring="r2" if "Reg" in cls.__name__ else "accuracy",
            validation_fraction=0.25,
            random_state=0,
        ).fit(X, y)
        assert "_raw_predict" in vars(fitted)
        back = load(pickle.dumps(fitted, protocol=5))
        assert back._raw_predict.__self__ is back
        assert back._raw_predict.__func__ is cls._raw_predict
        assert np.array_equal(back.predict(X), fitted.predict(X))
        joblib.dump(fitted, tmp_path / "m.joblib", compress=3)
        assert np.array_equal(amber.load(tmp_path / "m.joblib").predict(X), fitted.predict(X))
    model = HistGradientBoostingClassifier()
    for obj, name in [
        (model, "predict"),  # its own, but not the one it keeps
        (model, "__class__"),
        (model, "_raw_predict\x00"),
        (np.ones(2), "_raw_predict"),
        (HistGradientBoostingClassifier, "_raw_predict"),  # the class: an unbound function
    ]:
        with pytest.raises((FormatError, UntrustedTypeError)):
            load(pickle.dumps(Forged(getattr, (obj, name)), protocol=5))


# --------------------------------------------------------------------------- numpy random
def _with_state(obj: Any, change: Callable[[dict[str, Any]], None]) -> Forged:
    """``obj`` pickled as itself, but with its (bit generator's) state changed."""
    func, args, state = obj.__reduce__()[:3]
    state = copy.deepcopy(state)
    change(state[0] if isinstance(state, tuple) else state)  # numpy 2: (state, seed sequence)
    return Forged(func, args, state)


def _mt_pos(state: dict[str, Any]) -> None:
    state["state"]["pos"] = 10**9


def _philox_pos(state: dict[str, Any]) -> None:
    state["buffer_pos"] = -6


def test_a_random_state_reading_outside_its_buffer_is_refused() -> None:
    """numpy before 2.5 takes MT19937's position without a range check: the first draw from
    a RandomState at pos 10**9 reads far outside its 624-word key (plain pickle crashes)."""
    hostile = pickle.dumps(_with_state(np.random.RandomState(0), _mt_pos), protocol=5)
    proc = run_python(f"import pickle; pickle.loads({hostile!r}).random_sample(3)")
    assert crashed_unless_numpy(proc, fixed=(2, 5)), proc  # 2.4.6 and 1.26.4: SIGSEGV
    # numpy 2.5 refuses the state itself ("state position must be between 0 and 624")
    with pytest.raises(FormatError, match=r"position 1000000000 is outside|between 0 and 624"):
        load(hostile)
    for bit_generator, change in [
        (np.random.MT19937(1), _mt_pos),
        (np.random.Philox(1), _philox_pos),
    ]:
        bare = pickle.dumps(_with_state(bit_generator, change), protocol=5)
        with pytest.raises(FormatError, match=r"outside its|must be between"):
            load(bare)
        from numpy.random._pickle import __generator_ctor as generator_ctor

        wrapped = pickle.dumps(Forged(generator_ctor, (_with_state(bit_generator, change),)))
        with pytest.raises(FormatError, match=r"outside its|must be between"):
            load(wrapped)
    # honest ones load, drawing what the originals draw
    assert np.array_equal(
        load(pickle.dumps(np.random.RandomState(3), protocol=5)).random_sample(4),
        np.random.RandomState(3).random_sample(4),
    )
    for make in (np.random.MT19937, np.random.PCG64, np.random.Philox, np.random.SFC64):
        rng = np.random.Generator(make(3))
        rng.random(5)  # part-way through Philox's buffer
        again = load(pickle.dumps(rng, protocol=5))
        assert np.array_equal(again.random(7), rng.random(7))


# --------------------------------------------------------------------------- numpy data
def test_object_array_state_from_raw_bytes_is_refused() -> None:
    # numpy would refuse raw bytes for object arrays itself; Amber's state check comes first
    hostile = Forged(
        _reconstruct, (np.ndarray, (0,), b"b"), (1, (3,), np.dtype("O"), False, b"A" * 24)
    )
    with pytest.raises(FormatError, match="needs 3 objects, the file holds bytes"):
        load(pickle.dumps(hostile, protocol=5))


def test_object_array_with_a_short_list_is_refused() -> None:
    """numpy 2.4 reads past a too-short object list inside ndarray.__setstate__ itself."""
    state = (1, (100_000,), np.dtype("O"), False, [1, 2, 3])
    data = pickle.dumps(Forged(_reconstruct, (np.ndarray, (0,), b"b"), state), protocol=5)
    proc = run_python(f"import pickle; pickle.loads({data!r})")
    assert crashed(proc), proc
    with pytest.raises(FormatError, match="needs 100000 objects, the file holds 3"):
        load(data)


def test_malformed_dtype_state_is_refused_before_numpy_reads_it() -> None:
    """numpy.dtype.__setstate__ dereferences a NULL ``names`` for an old 6-tuple state."""
    # found by fuzzing Amber's loader
    data = pickle.dumps(_hostile_dtype((3, "<", (None, None), -1, -1, 0), "i4"), protocol=5)
    proc = run_python(f"import pickle; pickle.loads({data!r})")
    # numpy 2.4.6 crashes; 2.5.5 raises a ValueError ("6-tuple state requires version 0 or 1")
    assert crashed_unless_numpy(proc, fixed=(2, 5)), proc
    with pytest.raises(FormatError, match="not an 8- or 9-tuple"):
        load(data)
    bad_fields = (3, "|", None, ("a",), {"a": 5}, 8, 1, 0)
    with pytest.raises(FormatError, match="field 'a' is not"):
        load(pickle.dumps(_hostile_dtype(bad_fields, "V8"), protocol=5))


def test_frombuffer_with_object_dtype_is_refused() -> None:
    hostile = Forged(_frombuffer, (b"A" * 24, np.dtype("O"), (3,), "C"))
    with pytest.raises(FormatError, match="cannot create an OBJECT array from memory buffer"):
        load(pickle.dumps(hostile, protocol=5))


def test_scalar_of_object_dtype_from_bytes_is_refused() -> None:
    hostile = Forged(scalar, (np.dtype("O"), b"AAAAAAAA"))
    with pytest.raises(FormatError, match="other than its 0-d array"):
        load(pickle.dumps(hostile, protocol=5))
    structured = Forged(scalar, (np.dtype([("a", "i4"), ("b", "O")]), b"A" * 12))
    with pytest.raises(FormatError, match="other than its 0-d array"):
        load(pickle.dumps(structured, protocol=5))


def test_structured_array_with_object_fields_from_bytes_is_refused() -> None:
    dtype = np.dtype([("a", "i4"), ("b", "O")])
    hostile = Forged(_reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), dtype, False, b"A" * 12))
    with pytest.raises(FormatError, match="needs 1 objects, the file holds bytes"):
        load(pickle.dumps(hostile, protocol=5))


@pytest.mark.parametrize(
    "state",
    [
        (1, (2**40,), np.dtype("f8"), False, b"A" * 8),  # huge shape, tiny data
        (1, (2**62, 2**62), np.dtype("f8"), False, b"A" * 8),  # overflowing shape
        (1, (-1,), np.dtype("f8"), False, b"A" * 8),
    ],
)
def test_array_shapes_must_match_their_data(state: tuple[Any, ...]) -> None:
    hostile = Forged(_reconstruct, (np.ndarray, (0,), b"b"), state)
    with pytest.raises(FormatError):
        load(pickle.dumps(hostile, protocol=5))


def test_reconstruct_cannot_preallocate() -> None:
    hostile = Forged(_reconstruct, (np.ndarray, (2**33,), b"O"))
    with pytest.raises(FormatError, match="preallocated shape"):
        load(pickle.dumps(hostile, protocol=5))


def test_failed_array_state_corrupts_numpy_heap() -> None:
    """Found by fuzzing: numpy's __setstate__ swaps the dtype before refusing the data, so
    the preallocated block is later filed in numpy's cache under a larger size. numpy
    raises a clean ValueError, yet the process aborts soon after; Amber refuses first."""
    state = (1, (1,), np.dtype("V100"), False, b"")
    data = pickle.dumps(Forged(_reconstruct, (np.ndarray, (8,), b"b"), state), protocol=5)
    proc = run_python(
        f"""
        import pickle, numpy as np
        try:
            pickle.loads({data!r})
        except ValueError:
            pass
        arrays = [np.ones(100) for _ in range(50)]
        del arrays
        """
    )
    assert crashed_unless_numpy(proc, fixed=(2, 5)), proc  # 2.4.6 aborts; 2.5.5 survives
    with pytest.raises(FormatError, match="preallocated shape"):
        load(data)
    honest_shape = Forged(_reconstruct, (np.ndarray, (0,), b"b"), state)
    with pytest.raises(FormatError, match="needs 100 bytes, the file holds 0"):
        load(pickle.dumps(honest_shape, protocol=5))


def test_frombuffer_shape_must_match_the_buffer() -> None:
    hostile = Forged(_frombuffer, (b"A" * 8, np.dtype("f8"), (10**6,), "C"))
    with pytest.raises(FormatError, match="cannot reshape"):
        load(pickle.dumps(hostile, protocol=5))


def _hostile_dtype(state: tuple[Any, ...], base: str = "V12") -> Forged:
    return Forged(np.dtype, (base, False, True), state)


OBJECT_FIELD_FLAGS_0 = (
    3,
    "|",
    None,
    ("a", "b"),
    {"a": (np.dtype("i4"), 0), "b": (np.dtype("O"), 4)},
    12,
    1,
    0,
)
HOSTILE_DTYPE_STATES = {
    "object field hidden by flags=0": (OBJECT_FIELD_FLAGS_0, "V12"),
    "field offset past the item": (
        (3, "|", None, ("a",), {"a": (np.dtype("i8"), 2**40)}, 4, 1, 0),
        "V4",
    ),
    "sub-array larger than the item": (
        (3, "|", (np.dtype("f8"), (10**8,)), None, None, 16, 8, 0),
        "V16",
    ),
    "field that is not a tuple": ((3, "|", None, ("a",), {"a": 5}, 8, 1, 0), "V8"),
    "unicode item size not a multiple of 4": ((3, "<", None, None, None, 3, 4, 8), "U1"),
}


@pytest.mark.parametrize("case", HOSTILE_DTYPE_STATES)
def test_hostile_dtype_states_are_refused(case: str) -> None:
    state, base = HOSTILE_DTYPE_STATES[case]
    data = pickle.dumps(_hostile_dtype(state, base), protocol=5)
    with pytest.raises(FormatError, match="numpy dtype in the file is inconsistent"):
        load(data)


def test_hostile_dtype_really_crashes_plain_pickle() -> None:
    """numpy.dtype.__setstate__ trusts its input: an object field with flags=0 is read as a
    raw pointer. Shown in a subprocess; Amber refuses the same bytes."""
    array = Forged(
        _frombuffer, (b"\x00" * 4 + b"\x41" * 8, _hostile_dtype(OBJECT_FIELD_FLAGS_0), (1,), "C")
    )
    data = pickle.dumps(array, protocol=5)
    proc = run_python(f"import pickle; a = pickle.loads({data!r}); print(a['b'])")
    assert crashed(proc), proc
    with pytest.raises(FormatError, match="numpy dtype"):
        load(data)


def test_dtype_built_after_use_is_caught() -> None:
    """The dtype is first used by an array and only then given its hostile state: the scan
    refuses a BUILD on a validated object that was used (through the memo) before it."""
    dtype = sglob("numpy", "dtype") + MARK + sbu("V12") + b"\x89\x88" + TUPLE + REDUCE
    use = (  # _frombuffer(b"\0" * 12, <the dtype from the memo>, (1,), "C"), then dropped
        sglob("numpy._core.numeric", "_frombuffer")
        + MARK
        + b"C\x0c"
        + b"\x00" * 12
        + binget(0)
        + MARK
        + binint(1)
        + TUPLE
        + sbu("C")
        + TUPLE
        + REDUCE
        + b"0"
    )
    state = pickle.dumps(OBJECT_FIELD_FLAGS_0, protocol=2)[2:-1]  # the state as opcodes
    data = PROTO5 + dtype + MEMOIZE + use + state + BUILD + b"."
    assert pickle.loads(data).fields is not None  # plain pickle accepts it
    with pytest.raises(FormatError, match="after a copy of it was used"):
        load(data)


def test_dtype_singletons_are_never_handed_out() -> None:
    data = pickle.dumps(
        Forged(np.dtype, ("f8", False, False), (3, ">", None, None, None, -1, -1, 0)), protocol=5
    )
    loaded = load(data)
    assert loaded is not np.dtype("f8")
    assert np.dtype("f8").byteorder == "=" and np.dtype("f8").flags == 0


@pytest.mark.parametrize("dtype", ["<f8", ">i4", "U7", "S3", "M8[ns]", "m8[s]", "c16", "?", "O"])
def test_ordinary_dtypes_round_trip(dtype: str) -> None:
    for protocol in (2, 5):
        assert load(pickle.dumps(np.dtype(dtype), protocol=protocol)) == np.dtype(dtype)


def test_structured_and_aligned_dtypes_round_trip() -> None:
    for d in [
        np.dtype([("a", "i4"), ("b", "O"), ("c", "f8", (2, 3))]),
        np.dtype({"names": ["x", "y"], "formats": ["u1", "f8"]}, align=True),
        np.dtype({"names": ["x"], "formats": ["i2"], "offsets": [4], "itemsize": 12}),
        np.dtype([(("title", "t"), "i4")]),
        np.dtype(("i4", (2, 2))),
    ]:
        arrays = np.zeros(3, dtype=d)
        assert load(pickle.dumps(d, protocol=5)) == d
        assert load(pickle.dumps(arrays, protocol=2)).dtype == arrays.dtype


# --------------------------------------------------------------------------- round trips
def _models() -> dict[str, tuple[Any, Any]]:
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    X, y = make_classification(200, 6, n_informative=4, random_state=0)
    texts = [f"word{i % 7} word{i % 3} other{i % 5}" for i in range(60)]
    import pandas as pd

    df = pd.DataFrame({"num": X[:, 0], "cat": np.array(["a", "b", "c", "d"])[y * 2 % 4]})
    ct = make_pipeline(
        ColumnTransformer([("n", StandardScaler(), ["num"]), ("c", OneHotEncoder(), ["cat"])]),
        LogisticRegression(),
    )
    return {
        "tree": (DecisionTreeClassifier(random_state=0).fit(X, y), X),
        "forest": (RandomForestClassifier(20, random_state=0).fit(X, y), X),
        "hgb": (HistGradientBoostingClassifier(max_iter=20).fit(X, y), X),
        "knn-kd": (KNeighborsClassifier(algorithm="kd_tree").fit(X, y), X),
        "knn-ball": (KNeighborsClassifier(algorithm="ball_tree").fit(X, y), X),
        "svc": (SVC(random_state=0).fit(X, y), X),
        "logreg": (LogisticRegression().fit(X, y), X),
        "tfidf": (make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, y[:60]), texts),
        "columns": (ct.fit(df, y), df),
    }


MODELS = _models()


@pytest.mark.parametrize("name", MODELS)
def test_fitted_models_round_trip_with_identical_predictions(name: str) -> None:
    model, X = MODELS[name]
    data, buffers = dumps5(model)
    clone = load(data, [b.raw() for b in buffers])
    assert type(clone) is type(model)
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    if hasattr(model, "predict_proba") and name != "svc":
        np.testing.assert_array_equal(clone.predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize("name", ["forest", "hgb", "knn-kd", "tfidf"])
def test_in_band_and_old_protocols_round_trip(name: str) -> None:
    model, X = MODELS[name]
    for protocol in (2, 4, 5):
        clone = load(pickle.dumps(model, protocol=protocol))
        np.testing.assert_array_equal(clone.predict(X), model.predict(X))


def test_read_only_buffers_are_enough() -> None:
    model, X = MODELS["forest"]
    data, buffers = dumps5(model)
    frozen = [memoryview(bytes(b.raw())).toreadonly() for b in buffers]
    np.testing.assert_array_equal(load(data, frozen).predict(X), model.predict(X))


def test_buffers_must_match_the_stream() -> None:
    model, _ = MODELS["logreg"]
    data, buffers = dumps5(model)
    raw = [b.raw() for b in buffers]
    with pytest.raises(FormatError, match="were supplied"):
        load(data, [*raw, raw[0]])
    with pytest.raises(FormatError, match="NEXT_BUFFER"):
        load(data, raw[:-1])


def test_buffers_are_fetched_lazily() -> None:
    model, X = MODELS["forest"]
    data, buffers = dumps5(model)
    fetched: list[int] = []

    class Lazy:
        def __len__(self) -> int:
            return len(buffers)

        def __iter__(self) -> Any:
            for i, b in enumerate(buffers):
                fetched.append(i)
                yield b.raw()

    assert fetched == []
    np.testing.assert_array_equal(load(data, Lazy()).predict(X), model.predict(X))
    assert fetched == list(range(len(buffers)))


def test_large_framed_stream_with_many_validated_objects() -> None:
    """Validation hooks are inserted inside frames; the frames must be grown to match."""
    model, X = MODELS["forest"]
    data = pickle.dumps([model] * 1 + [np.dtype(">f8")] * 3 + list(range(30_000)), protocol=5)
    assert data.count(b"\x95") > 1
    clone = load(data)
    np.testing.assert_array_equal(clone[0].predict(X), model.predict(X))


# --------------------------------------------------------------------------- fuzzing
_SEED_MODEL = pickle.dumps(MODELS["tree"][0], protocol=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, len(_SEED_MODEL) - 1), st.integers(0, 255)), min_size=1, max_size=4
    )
)
def test_mutated_model_streams_fail_cleanly(edits: list[tuple[int, int]]) -> None:
    data = bytearray(_SEED_MODEL)
    for position, value in edits:
        data[position] = value
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load(bytes(data))
    except (FormatError, UntrustedTypeError):
        pass


def _value_spots(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of every integer argument and binary payload in a stream."""
    import pickletools

    spots = []
    for op, arg, pos in pickletools.genops(data):
        if op.name in ("BININT", "BININT1", "BININT2"):
            spots.append((pos + 1, {"BININT": 4, "BININT1": 1, "BININT2": 2}[op.name]))
        elif op.name in ("BYTEARRAY8", "BINBYTES8") and arg:
            spots.append((pos + 9, len(arg)))
        elif op.name in ("BINBYTES", "SHORT_BINBYTES") and arg:
            spots.append((pos + (5 if op.name == "BINBYTES" else 2), len(arg)))
    return spots


def _value_seeds() -> list[tuple[Any, bytes, list[tuple[int, int]]]]:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier

    X, y = MODELS["tree"][1], MODELS["tree"][0].predict(MODELS["tree"][1])
    models = [
        RandomForestClassifier(2, max_depth=3, random_state=0).fit(X, y),
        KNeighborsClassifier(algorithm="kd_tree", leaf_size=20).fit(X, y),
        HistGradientBoostingClassifier(max_iter=2, random_state=0).fit(X, y),
    ]
    seeds = []
    for model in models:
        for protocol in (2, 5):
            data = pickle.dumps(model, protocol=protocol)
            seeds.append((model, data, _value_spots(data)))
    return seeds


_VALUE_SEEDS = _value_seeds()
_INTERESTING = [0, 1, 2, 3, 7, 255, 2**15, 2**31 - 1, 2**32 - 1, 2**40, 2**63 - 1]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, len(_VALUE_SEEDS) - 1),
    st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from([1, 2, 4, 8])),
        min_size=1,
        max_size=3,
    ),
    st.lists(st.sampled_from([*_INTERESTING, -1, -2, -(2**31)]), min_size=3, max_size=3),
)
def test_mutated_values_fail_cleanly_and_loaded_models_are_safe_to_use(
    which: int, edits: list[tuple[float, int]], values: list[int]
) -> None:
    """Node indices, features, shapes and sizes changed in place: refused, or safe to use."""
    _model, seed, spots = _VALUE_SEEDS[which]
    data = bytearray(seed)
    for (where, width), value in zip(edits, values, strict=False):
        start, length = spots[int(where * len(spots))]
        width = min(width, length)
        data[start : start + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    X = MODELS["tree"][1]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clone = load(bytes(data))
    except (FormatError, UntrustedTypeError):
        return
    for use in ("predict", "decision_path", "kneighbors", "feature_importances_"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                attr = getattr(clone, use)
                if callable(attr):
                    attr(X)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError, ArithmeticError):
            pass


def _reference_splice(data: bytes, scan: Any) -> bytes:
    """The splicing as it was first written in Python: what splice_hooks must reproduce."""
    import bisect

    keys = sorted({(name, kind) for _, _, name, kind in scan.hook_sites})
    number = {key: k for k, key in enumerate(keys)}
    events: list[tuple[int, int, int, bytes]] = []
    for start, end, name, kind in scan.hook_sites:
        push = f"camber.security._unpickler.hook\n{number[(name, kind)]}\n".encode()
        events.append((start, 1, -end, push))
        events.append((end, 0, -start, b"\x85R"))
    forget = scan.forget
    for k in range(0, len(forget), 16):  # memo stores nothing reads: NONE <store> POP
        off, end = (int.from_bytes(forget[k + h : k + h + 8], "little") for h in (0, 8))
        events.append((off, 3, 0, b"N"))
        events.append((end, -1, 0, b"0"))
    events.sort(key=lambda e: e[:3])
    view = memoryview(data)
    positions = [e[0] for e in events]
    grown = {}
    for frame in scan.frames:
        length = int.from_bytes(view[frame + 1 : frame + 9], "little")
        lo, hi = (
            bisect.bisect_left(positions, frame + 9),
            bisect.bisect_left(positions, frame + 9 + length),
        )
        extra = sum(len(events[k][3]) for k in range(lo, hi))
        if extra:
            grown[frame] = length + extra
    cuts = events + [(f, 2, 0, b"\x95" + grown[f].to_bytes(8, "little")) for f in grown]
    cuts.sort(key=lambda e: e[:3])
    pieces: list[bytes | memoryview] = []
    pos = 0
    for at, order, _, insert in cuts:
        pieces.append(view[pos:at])
        pieces.append(insert)
        pos = at + 9 if order == 2 else at
    pieces.append(view[pos:])
    return b"".join(pieces)


@pytest.mark.parametrize("protocol", range(6))
def test_splice_hooks_matches_the_reference(protocol: int) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.tree import DecisionTreeClassifier

    from amber.security._pickle_scan import splice_hooks
    from amber.security._scanner import scan_pickle
    from amber.security._unpickler import _HOOK_BYTES, _with_hooks, hooked_names

    def numbers_of(scan: Any) -> list[int]:
        keys = sorted({(name, kind) for _, _, name, kind in scan.hook_sites})
        return [keys.index((name, kind)) for _, _, name, kind in scan.hook_sites]

    X = np.random.default_rng(0).standard_normal((200, 4))
    y = (X[:, 0] > 0).astype(int)
    models = [
        HistGradientBoostingClassifier(max_iter=5).fit(X, y),
        [DecisionTreeClassifier(max_depth=3).fit(X, y), {"dtype": np.dtype("f4")}],
        {"arrays": [np.arange(n) for n in range(5)], "big": np.zeros(70_000)},
    ]
    forgotten = frames_seen = 0
    for model in models:
        data = pickle.dumps(model, protocol=protocol)
        scan = scan_pickle(data, n_buffers=0, hooks=hooked_names())
        assert scan.hook_sites
        forgotten += len(scan.forget)
        spliced, hooks = _with_hooks(data, scan)
        assert spliced == _reference_splice(data, scan)
        assert hooks
        # in place, over the stream itself, in a buffer with room after it
        room = bytearray(len(spliced) + 7)
        room[: len(data)] = data
        args = (scan.hook_sites, numbers_of(scan), scan.frames, _HOOK_BYTES, scan.forget)
        assert splice_hooks(memoryview(room)[: len(data)], *args, room) == len(spliced)
        assert room[: len(spliced)] == spliced
        # frames out of stream order (the scanner never gives them so) are sorted, not trusted
        backwards = (*args[:2], scan.frames[::-1], *args[3:])
        assert splice_hooks(data, *backwards) == spliced
        frames_seen = max(frames_seen, len(scan.frames))
        short = bytearray(data) + bytearray(len(spliced) - len(data) - 1)
        assert splice_hooks(memoryview(short)[: len(data)], *args, short) is None
        assert short[: len(data)] == data  # untouched
    assert forgotten  # the 70,000-float array's stores
    assert frames_seen > 1 or protocol < 4  # the merge of frame headers into the cuts ran


def test_splice_hooks_refuses_sites_it_cannot_place() -> None:
    from amber.security._pickle_scan import splice_hooks

    data = pickle.dumps({"a": 1}, protocol=5)
    assert data[2] == 0x95  # a FRAME header at offset 2
    module = b"amber.security._unpickler.hook"
    with pytest.raises(ValueError, match="inside a frame header"):
        sites = [(4, 5, ("m", "n"), 0), (12, 13, ("m", "n"), 0)]  # the second grows the frame
        splice_hooks(data, sites, [0, 0], [2], module)
    with pytest.raises(ValueError, match="outside the stream"):
        splice_hooks(data, [(3, len(data) + 1, ("m", "n"), 0)], [0], [], module)
    with pytest.raises(ValueError, match="not a FRAME"):
        splice_hooks(data, [], [], [3], module)


# --------------------------------------------------------------------------- memo stores
def _out_of_band(obj: Any) -> tuple[bytes, list[bytes]]:
    raws: list[bytes] = []

    def keep(buf: pickle.PickleBuffer) -> bool:
        if buf.raw().nbytes < 64 * 1024:
            return True  # in band
        raws.append(bytes(buf.raw()))
        return False

    return pickle.dumps(obj, protocol=5, buffer_callback=keep), raws


def test_large_buffers_are_freed_as_soon_as_their_consumer_copied_them() -> None:
    """The memo must not hold each tree's node array until the whole load ends."""
    import weakref

    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 4))
    y = rng.integers(0, 2, 3000)
    trees = [DecisionTreeClassifier(random_state=k).fit(X, y) for k in range(4)]
    stream, raws = _out_of_band(trees)
    assert len(raws) == 4  # one node array per tree (each over 64 KiB)
    refs: list[weakref.ref[np.ndarray]] = []

    class Feed:
        """Hands out each buffer in fresh memory; checks the earlier ones are gone."""

        def __len__(self) -> int:
            return len(raws)

        def __iter__(self) -> Any:
            for raw in raws:
                view = None
                assert all(r() is None for r in refs), "a buffer outlived the tree that copied it"
                arr = np.frombuffer(bytearray(raw), dtype=np.uint8)
                refs.append(weakref.ref(arr))
                view = memoryview(arr)
                del arr
                yield view

    loaded = safe_loads(stream, buffers=Feed(), policy=LoadPolicy())
    assert len(refs) == 4
    for tree, original in zip(loaded, trees, strict=True):
        np.testing.assert_array_equal(tree.predict(X), original.predict(X))


def test_a_large_object_read_back_from_the_memo_keeps_its_identity() -> None:
    from amber.security._scanner import scan_pickle

    big = np.arange(20_000, dtype=np.float64)  # 160 kB
    obj = {"a": big, "b": big, "c": [np.zeros(20_000)]}
    stream, raws = _out_of_band(obj)
    scan = scan_pickle(stream, n_buffers=len(raws))
    assert scan.forget  # the second array's stores (nothing reads them back)
    loaded = safe_loads(stream, buffers=raws, policy=LoadPolicy())
    assert loaded["a"] is loaded["b"]
    np.testing.assert_array_equal(loaded["a"], big)
    np.testing.assert_array_equal(loaded["c"][0], np.zeros(20_000))
    # in band too: BINBYTES of at least 64 KiB
    stream = pickle.dumps(obj, protocol=5)
    scan = scan_pickle(stream)
    assert scan.forget
    loaded = safe_loads(stream, policy=LoadPolicy())
    assert loaded["a"] is loaded["b"]


def test_only_stores_of_containers_objects_and_buffers_are_rewritten() -> None:
    """A stored string or number is held by whatever uses it: forgetting it frees nothing."""
    import pickletools

    from amber.security._pickle_scan import splice_hooks
    from amber.security._scanner import scan_pickle

    assert scan_pickle(pickle.dumps("x" * 1000, protocol=5)).forget == b""
    stream = pickle.dumps(["a" * 100, "b" * 100, 10**30], protocol=5)
    forget = scan_pickle(stream).forget
    assert len(forget) == 16  # the list's store alone
    offset = int.from_bytes(forget[:8], "little")
    ops = {pos: op.name for op, _, pos in pickletools.genops(stream)}
    assert ops[offset] == "MEMOIZE" and ops[offset - 1] == "EMPTY_LIST"
    with pytest.raises(ValueError, match="out of order"):  # pairs must come in stream order
        splice_hooks(stream, [], [], [], b"m", forget[8:16] + forget[:8])


# --------------------------------------------------------------------------- streams in place
def _in_a_map(data: bytes, spare: int) -> tuple[memoryview, Any]:
    import mmap

    block = mmap.mmap(-1, len(data) + spare, flags=mmap.MAP_PRIVATE)
    block[: len(data)] = data
    return memoryview(block)[: len(data)], block


@pytest.fixture
def input_files(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The file objects the unpickler reads from, in order, as safe_loads makes them."""
    import amber.security._unpickler as unpickler

    files: list[Any] = []
    real = unpickler._input_file
    monkeypatch.setattr(
        unpickler, "_input_file", lambda d, room: files.append(real(d, room)) or files[-1]
    )
    return files


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_a_stream_is_rewritten_in_place_and_given_back_as_it_is_read(
    protocol: int, input_files: list[Any]
) -> None:
    from sklearn.tree import DecisionTreeClassifier

    import amber.security._unpickler as unpickler

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4))
    y = (X[:, 0] > 0).astype(int)
    obj = {
        "trees": [DecisionTreeClassifier(max_depth=4, random_state=k).fit(X, y) for k in range(3)],
        "pad": [np.arange(k, k + 2000) for k in range(150)],  # 2.4 MB in band
    }
    data = pickle.dumps(obj, protocol=protocol)
    stream, block = _in_a_map(data, len(data) // 2 + (1 << 20))
    loaded = safe_loads(stream, policy=LoadPolicy(), room=block, release=True)
    (file,) = input_files
    assert isinstance(file, unpickler._Consuming)
    assert file._given >= file._size - 2 * unpickler._GIVE_BACK_STEP  # read, and given back
    for got, want in zip(loaded["trees"], obj["trees"], strict=True):
        np.testing.assert_array_equal(got.predict(X), want.predict(X))
    for got, want in zip(loaded["pad"], obj["pad"], strict=True):
        np.testing.assert_array_equal(got, want)
    # too little room: the stream is spliced into a copy instead, with the same result
    input_files.clear()
    stream, block = _in_a_map(data, 8)
    again = safe_loads(stream, policy=LoadPolicy(), room=block)
    assert not isinstance(input_files[0], unpickler._Consuming)
    np.testing.assert_array_equal(again["trees"][0].predict(X), obj["trees"][0].predict(X))
    assert block[: len(data)] == data  # untouched


@pytest.mark.parametrize(
    ("pads", "big"),
    [
        (150, 400_000),  # a 2.4 MB stream, 3.2 MB out of band: the file is not read whole
        (12, 600_000),  # a 190 kB stream (mapped too: a copy of it would outlive its use)
    ],
)
def test_amber_load_reads_a_large_stream_in_place(
    tmp_path: Path, input_files: list[Any], pads: int, big: int
) -> None:
    from sklearn.tree import DecisionTreeClassifier

    import amber
    import amber.security._unpickler as unpickler

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4))
    y = (X[:, 0] > 0).astype(int)
    obj = {
        "tree": DecisionTreeClassifier(max_depth=4).fit(X, y),
        "pad": [rng.standard_normal(2000) for _ in range(pads)],
        "big": rng.standard_normal(big),
    }
    path = tmp_path / "obj.amber"
    amber.save(obj, path)
    loaded = amber.load(path)
    assert isinstance(input_files[0], unpickler._Consuming), "a stream over 64 kB is read in place"
    np.testing.assert_array_equal(loaded["tree"].predict(X), obj["tree"].predict(X))
    for got, want in zip(loaded["pad"], obj["pad"], strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loaded["big"], obj["big"])
    # a hostile tree in such a stream is refused like anywhere else, after the pages before it
    # were given back
    hostile = copy.deepcopy(obj["tree"])
    hostile.tree_.children_left[0] = 10**6  # a child index past the node array
    amber.save({"pad": obj["pad"], "tree": hostile, "big": obj["big"]}, path)
    input_files.clear()
    with pytest.raises(FormatError, match="child index"):
        amber.load(path)
    assert isinstance(input_files[0], unpickler._Consuming)
    assert input_files[0]._given > 0


# --------------------------------------------------------------------------- named, not called
@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("numpy", "add"),  # broadcasting two vectors: memory that grows as the file's square
        ("sklearn.cluster._kmeans", "_kmeans_single_lloyd"),  # a kernel that trusts its shapes
        ("sklearn.utils.validation", "check_array"),
        ("numpy", "void"),  # numpy.void(2**30): a gigabyte scalar from a few bytes
        ("numpy", "float64"),
        ("numpy.random._generator", "Generator"),
    ],
)
def test_allowed_functions_and_numpy_scalar_types_are_never_called(module: str, name: str) -> None:
    """Allowed functions are estimator parameters (FunctionTransformer(func=np.log1p)) and
    numpy scalars are rebuilt by ``scalar``: an honest pickle names them, never calls them."""
    for data in (
        PROTO5 + call(module, name, binint(2**27)) + b".",
        PROTO5 + sglob(module, name) + MARK + binint(2**27) + TUPLE + NEWOBJ + b".",
    ):
        with pytest.raises(FormatError, match=rf"calls {module}\.{name}, which honest pickles"):
            load(data)
    newobj = PROTO5 + call("copyreg", "__newobj__", sglob(module, name), binint(2**27)) + b"."
    if name in ("void", "float64", "Generator"):  # classes: refused by the helper as well
        with pytest.raises(FormatError, match=r"copyreg\.__newobj__ of"):
            load(newobj)
    assert load(pickle.dumps({"f": np.log1p, "s": np.add}, protocol=5)) == {
        "f": np.log1p,
        "s": np.add,
    }


def test_numpy_scalars_are_rebuilt_from_exactly_their_bytes() -> None:
    honest = [np.float64(1.5), np.str_("abc"), np.void(b"abcd"), np.datetime64("2020-01-01")]
    assert load(pickle.dumps(honest, protocol=5)) == honest
    huge = sglob("numpy", "dtype") + MARK + sbu("V100000000") + TUPLE + REDUCE
    for args in (huge, huge + b"C\x02ab"):  # no data (numpy would zero 100 MB), too little
        data = PROTO5 + sglob("numpy._core.multiarray", "scalar") + MARK + args + TUPLE
        with pytest.raises(FormatError, match="numpy scalar"):
            load(data + REDUCE + b".")


def _honest_array_then(tail: bytes) -> bytes:
    """A pickled array, then ``tail`` run on a memo copy of it; the array stays the result."""
    import io

    array = np.arange(4, dtype=np.int64)
    f = io.BytesIO()
    pickler = pickle.Pickler(f, protocol=2)
    pickler.dump(array)
    index = pickler.memo.copy()[id(array)][0]
    return f.getvalue()[:-1] + binget(index) + tail + b"0."  # ... POP STOP


def test_an_array_is_never_refilled_after_its_check() -> None:
    """The array's state is checked when it is built; a second BUILD on a memo copy (or item
    assignment) would change it under the tree or predictor already validated with it."""
    state = pickle.dumps(np.arange(4, dtype=np.int64).__reduce__()[2], protocol=2)[2:-1]
    with pytest.raises(FormatError, match="BUILD on a memo copy of a validated object"):
        load(_honest_array_then(state + BUILD))
    with pytest.raises(FormatError, match="SETITEM would modify a validated object"):
        load(_honest_array_then(binint(0) + binint(99) + b"s"))
    np.testing.assert_array_equal(load(_honest_array_then(b"")), np.arange(4))


def test_a_sparse_matrix_is_never_constructed_from_a_shape() -> None:
    """csr_matrix((10**9, 10**9)) allocates its index pointer before any check sees it: 15 GB
    from a sixty-byte stream. Honest pickles make sparse matrices with NEWOBJ and set state."""
    shape = MARK + MARK + binint(10**9) + binint(10**9) + TUPLE + TUPLE
    for cls in ("csr_matrix", "csr_array"):
        data = PROTO5 + sglob("scipy.sparse._csr", cls) + shape + REDUCE + b"."
        with pytest.raises(FormatError, match=rf"constructs scipy\.sparse\._csr\.{cls} with"):
            load(data)
    import scipy.sparse as sp

    honest = sp.csr_matrix(np.eye(3))
    for protocol in (0, 2, 5):
        assert (load(pickle.dumps(honest, protocol=protocol)) != honest).nnz == 0


def test_a_fraction_is_rebuilt_only_from_its_own_text() -> None:
    from fractions import Fraction

    assert load(pickle.dumps([Fraction(-3, 4), Fraction(5)], protocol=5)) == [
        Fraction(-3, 4),
        Fraction(5),
    ]
    assert load(PROTO5 + call("fractions", "Fraction", sbu("-3/4")) + b".") == Fraction(-3, 4)
    # "1e99999999" would have Fraction compute a hundred-million-digit integer (minutes)
    with pytest.raises(FormatError, match=r"fractions\.Fraction called with \('1e99999999'\)"):
        load(PROTO5 + call("fractions", "Fraction", sbu("1e99999999")) + b".")
    huge = b"\x8b" + struct.pack("<i", 40_000) + b"\x7f" * 40_000  # LONG4: a 320,000-bit integer
    with pytest.raises(FormatError, match=r"Fraction called with \(an int of 319999 bits, 3\)"):
        load(PROTO5 + call("fractions", "Fraction", huge, binint(3)) + b".")


def test_numbers_and_decimals_are_rebuilt_only_as_pickles_write_them() -> None:
    """int(Decimal("1e200000000")) builds a two-hundred-million-digit integer from a fifty-byte
    stream: int, float and str are literals in a pickle and never called; Decimal and complex
    take what their own pickles hold."""
    from decimal import Decimal

    honest = [Decimal("1.5E+10"), Decimal("-0.001"), Decimal("Infinity"), complex(1, 2), int, str]
    for protocol in (0, 2, 5):
        assert load(pickle.dumps(honest, protocol=protocol)) == honest
    big = call("decimal", "Decimal", sbu("1e200000000"))
    for data, message in [
        (call("builtins", "int", sbu("12")), r"calls builtins\.int, which honest pickles only"),
        (call("builtins", "str", sbu("x")), r"calls builtins\.str, which honest pickles only"),
        (big, r"decimal\.Decimal called with '1e200000000'"),
        (call("builtins", "complex", sbu("1+2j")), "complex called with 1 argument"),
    ]:
        with pytest.raises(FormatError, match=message):
            load(PROTO5 + data + b".")


def test_a_tuple_of_shared_copies_cannot_grow_past_its_stream() -> None:
    with pytest.raises(FormatError, match="a tuple repeats shared items into"):
        load(shared_tuple_bomb())
    small = load(shared_tuple_bomb(levels=3))  # (((l, l), (l, l)), ...): fine
    (key,) = small
    assert key[0][0] == ("leaf", "leaf")
    shared = (1, 2)
    honest = [shared] * 1000 + [(shared, shared)] * 1000
    assert load(pickle.dumps(honest, protocol=5)) == honest


def _nested_key(levels: int, frozen: bool = False) -> bytes:
    """A dict whose key is ``levels`` nested 1-tuples (or frozensets of one)."""
    # MARK ... MARK None FROZENSET ... FROZENSET, or None TUPLE1 ... TUPLE1
    key = b"(" * levels + b"N" + b"\x91" * levels if frozen else b"N" + b"\x85" * levels
    return b"\x80\x05}" + key + b"K\x01s."


def test_tuples_nest_at_most_a_thousand_levels(tmp_path: Path) -> None:
    """CPython hashes a tuple by hashing its items recursively, without a depth check: a dict
    key of a million nested 1-tuples (a 1 MB stream) ends plain pickle's load when it stores
    the key. Honest pickles never nest tuples or frozensets anywhere near 1,000 levels."""
    bomb = _nested_key(1_000_000)
    path = tmp_path / "deep.pkl"
    path.write_bytes(bomb)
    proc = run_python(f"import pickle; pickle.loads(open({str(path)!r}, 'rb').read())")
    assert crashed(proc), (proc.returncode, proc.stderr[-300:])
    for data in (bomb, _nested_key(1001), _nested_key(1001, frozen=True)):
        with pytest.raises(FormatError, match="nest more than 1000 levels deep"):
            load(data)
    (key,) = load(_nested_key(1000))  # the deepest a stream may nest them
    assert hash(key) == hash(pickle.loads(_nested_key(1000)).popitem()[0])
    (key,) = load(_nested_key(1000, frozen=True))
    assert len(key) == 1


def test_tuples_are_never_made_by_a_call(tmp_path: Path) -> None:
    """Honest pickles write tuples with TUPLE opcodes, whose nesting the scan bounds; a tuple
    made by calling builtins.tuple (REDUCE, NEWOBJ, copyreg's helpers) would nest without a
    bound: 200,000 levels of tuple((t,)) as a dict key end plain pickle's load."""
    get = b"cbuiltins\ntuple\nq\x01" + b"0"  # the global, kept in memo 1
    reduce = b"\x80\x02}" + get + b"h\x01" * 200_000 + b"N" + b"\x85\x85R" * 200_000 + b"K\x01s."
    path = tmp_path / "tuples.pkl"
    path.write_bytes(reduce)
    proc = run_python(f"import pickle; pickle.loads(open({str(path)!r}, 'rb').read())")
    assert crashed(proc), (proc.returncode, proc.stderr[-300:])
    newobj = b"\x80\x02}" + get + b"h\x01N\x85\x85\x81K\x01s."
    helper = b"\x80\x02}" + get + b"ccopyreg\n__newobj__\nh\x01N\x85\x86RK\x01s."
    rebuilt = b"\x80\x02}" + get + b"ccopyreg\n_reconstructor\nh\x01h\x01N\x85\x87RK\x01s."
    for data, message in (
        (reduce, "calls builtins.tuple, which honest pickles only name"),
        (newobj, "calls builtins.tuple, which honest pickles only name"),
        (helper, "copyreg.__newobj__ of <class 'tuple'>"),
        (rebuilt, "copyreg._reconstructor of <class 'tuple'>"),
    ):
        with pytest.raises(FormatError, match=message):
            load(data)
    assert load(pickle.dumps({(1, (2, tuple)): frozenset({(3,)})}, protocol=2)) == {
        (1, (2, tuple)): frozenset({(3,)})
    }  # named, and frozensets (REDUCE of builtins.frozenset below protocol 4), still load


def test_a_large_read_is_copied_and_given_back_in_steps() -> None:
    """An array held in the stream is read with one readinto; copied whole, its pages and the
    unpickler's bytearray were both in memory at once (a 264 MB pickle took 510 MB)."""
    import mmap

    import amber.security._unpickler as unpickler

    size = 3 * unpickler._COPY_STEP + 12_345
    data = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    block = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    block[:] = data
    file = unpickler._Consuming(block, size)
    marks: list[int] = []
    advance = file._advance
    file._advance = lambda end: (advance(end), marks.append(file._given))[0]  # type: ignore[method-assign]
    out = bytearray(size)
    assert file.readinto(out) == size
    assert out == data
    assert len(marks) == 4 and marks == sorted(marks) and marks[0] > 0  # given back as it went
    assert block[: unpickler._COPY_STEP] == bytes(unpickler._COPY_STEP)  # those pages are gone


# -- one array per buffer -------------------------------------------------------------------
class _OnBuffer:
    """Pickles as an array that numpy's _frombuffer makes on ``args`` (a buffer, a dtype, a
    shape and an order): two of them on one buffer are what a crafted stream can make."""

    def __init__(self, args: tuple[Any, ...]) -> None:
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return (_frombuffer, self.args)


class _SetFrom:
    """Pickles as an empty array whose ``__setstate__`` gets ``raw`` as its data."""

    def __init__(self, raw: bytes, dtype: Any) -> None:
        self.raw, self.dtype = raw, np.dtype(dtype)

    def __reduce__(self) -> tuple[Any, ...]:
        state = (1, (len(self.raw) // self.dtype.itemsize,), self.dtype, False, self.raw)
        return (_reconstruct, (np.ndarray, (0,), b"b"), state)


def _aliases(objs: list[Any]) -> bool:
    return any(np.shares_memory(a, b) for i, a in enumerate(objs) for b in objs[i + 1 :])


def test_a_bytearray_is_the_data_of_one_array_only() -> None:
    """Two arrays of different dtypes on one bytearray of the stream (the memo read twice):
    writing through one (an SGD's coefficients updated by partial_fit) would rewrite the
    other after the loader checked it (a neighbours tree's indices)."""
    buf = bytearray(np.arange(16, dtype=np.int64).tobytes())
    two = [
        _OnBuffer((buf, np.dtype(np.int64), (16,), "C")),
        _OnBuffer((buf, np.dtype("f8"), (16,), "C")),
    ]
    stream = pickle.dumps(two, protocol=5)
    assert _aliases(pickle.loads(stream))  # what plain pickle makes of it
    with pytest.raises(FormatError, match="already the data of another array"):
        load(stream)
    # each array on bytes of its own, as honest pickles are: loads
    honest = [np.arange(16), np.arange(16.0), np.arange(3)]
    got = load(pickle.dumps(honest, protocol=5))
    assert all(np.array_equal(a, b) for a, b in zip(got, honest, strict=True))
    assert not _aliases(got)
    # one array held twice is one object, not two views
    shared = np.arange(5)
    got = load(pickle.dumps([shared, shared], protocol=5))
    assert got[0] is got[1]


def test_an_out_of_band_buffer_is_the_data_of_one_array_only() -> None:
    buffers: list[pickle.PickleBuffer] = []
    args = (pickle.PickleBuffer(bytearray(128)), np.dtype(np.int64), (16,), "C")
    # one argument tuple, used twice (the memo): two arrays on the one buffer
    stream = pickle.dumps(
        [_OnBuffer(args), _OnBuffer(args)], protocol=5, buffer_callback=buffers.append
    )
    assert len(buffers) == 1
    assert _aliases(pickle.loads(stream, buffers=[bytearray(128)]))
    with pytest.raises(FormatError, match="released memoryview"):
        load(stream, buffers=[memoryview(bytearray(128))])
    # the buffer itself read from the memo is refused by the scan, before anything is built
    dup = b"\x80\x05\x97\x94" + b"\x68\x00" + b"\x86."  # NEXT_BUFFER MEMOIZE BINGET 0 TUPLE2
    with pytest.raises(
        FormatError, match="out-of-band buffer: honest pickles use each buffer once"
    ):
        load(dup, buffers=[memoryview(bytearray(8))])
    # honest out-of-band arrays load, each on its own buffer
    honest = [np.arange(16), np.arange(16.0)]
    buffers = []
    stream = pickle.dumps(honest, protocol=5, buffer_callback=buffers.append)
    got = load(stream, buffers=[memoryview(bytearray(b.raw())) for b in buffers])
    assert all(np.array_equal(a, b) for a, b in zip(got, honest, strict=True))


@pytest.mark.parametrize("protocol", [2, 5])
def test_bytes_are_the_data_of_one_array_only(protocol: int) -> None:
    """numpy's __setstate__ keeps data of more than 1,000 bytes in place, writable: one bytes
    object in two states (or under a _frombuffer array too) makes two arrays on one memory."""
    raw = np.arange(200, dtype=np.int64).tobytes()
    cases = [[_SetFrom(raw, np.int64), _SetFrom(raw, np.float64)]]
    if protocol == 5:
        cases.append([_OnBuffer((raw, np.dtype(np.int64), (200,), "C")), _SetFrom(raw, "f8")])
    for objs in cases:
        stream = pickle.dumps(objs, protocol=protocol)
        assert _aliases(pickle.loads(stream))
        with pytest.raises(FormatError, match="already the data of another array"):
            load(stream)
    # small data is copied by numpy: two states may share it
    small = np.arange(100, dtype=np.int64).tobytes()
    got = load(pickle.dumps([_SetFrom(small, np.int64), _SetFrom(small, "f8")], protocol=protocol))
    assert not _aliases(got)
    # read-only arrays on small bytes objects, which CPython shares (the empty and the one-byte
    # ones), are not aliases anyone can write through: they load
    frozen = [np.zeros(0), np.zeros(0, np.int64), np.zeros(1, np.uint8), np.zeros(1, np.uint8)]
    for a in frozen:
        a.setflags(write=False)
    got = load(pickle.dumps(frozen, protocol=protocol))
    assert [a.tolist() for a in got] == [[], [], [0], [0]]
    # the load's claims end with it: the bytes under its array are no longer held as claimed
    (array,) = load(pickle.dumps([_SetFrom(raw, np.int64)], protocol=protocol))
    assert np.array_equal(array, np.arange(200)) and type(array.base) is bytes
    assert _pickle_scan.claim_bytes(array.base)  # claimed anew: no load holds it
    assert not _pickle_scan.claim_bytes(array.base)
    _pickle_scan.release_claims()


def test_running_short_of_memory_in_the_check_after_the_load_frees_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The FormatError is made once what was built is freed: when the check after the load runs
    short, the model is held by ``obj`` and by the check's frames in the traceback."""
    import weakref

    from sklearn.preprocessing import StandardScaler

    from amber.security import _unpickler

    built: list[weakref.ref[Any]] = []

    def short(obj: Any, *args: Any, **kwargs: Any) -> None:
        built.append(weakref.ref(obj))
        raise MemoryError

    monkeypatch.setattr(_unpickler, "validate_loaded", short)
    stream = pickle.dumps(StandardScaler().fit([[0.0], [1.0]]), protocol=5)
    with pytest.raises(FormatError, match="asks for more memory than is available") as caught:
        safe_loads(stream, policy=LoadPolicy())
    # freed while the error, its traceback and the MemoryError behind it are still held
    assert caught.value.__context__ is not None
    assert len(built) == 1 and built[0]() is None
