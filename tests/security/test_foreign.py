"""Existing pickle and joblib files: sniffing, bounded decompression, scanning, safe loading.

Every file is made in ``tmp_path`` by the real ``pickle.dump`` / ``joblib.dump`` of real, small,
fitted scikit-learn models, or crafted by hand (hostile files) from the same building blocks
joblib uses: a pickled ``NumpyArrayWrapper`` followed by the array's bytes.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import joblib
import joblib.numpy_pickle as jnp
import numpy as np
import pytest
from joblib.numpy_pickle import NumpyArrayWrapper
from joblib.numpy_pickle_compat import NDArrayWrapper

import amber
from amber.errors import FormatError, UnsafeLoadWarning, UntrustedTypeError
from amber.security import _joblib
from amber.security._foreign import (
    ScanReport,
    default_decompression_limit,
    load_foreign,
    load_joblib_file,
    load_pickle_file,
    scan_file,
    sniff,
)
from amber.security._policy import LoadPolicy

COMPRESSORS = ["zlib", "gzip", "bz2", "lzma", "xz", "lz4"]
WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"


# --------------------------------------------------------------------------- models


def _models(multiclass_data: Any, text_data: Any) -> dict[str, tuple[Any, Any]]:
    """Small fitted models and the inputs to predict on."""
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.svm import SVC

    X, y, Xt = multiclass_data.X_train, multiclass_data.y_train, multiclass_data.X_test
    cats = np.array([["paris", "basic"], ["lyon", "pro"], ["nice", "basic"]], dtype=object)
    Xc = cats[np.arange(len(y)) % 3]
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1]})
    return {
        "random_forest": (
            RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(X, y),
            Xt,
        ),
        "svc_pipeline": (make_pipeline(StandardScaler(), SVC()).fit(X, y), Xt),
        "logistic_regression": (LogisticRegression(max_iter=500).fit(X, y), Xt),
        "knn_kd_tree": (KNeighborsClassifier(3, algorithm="kd_tree").fit(X, y), Xt),
        "text_pipeline": (
            make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(
                text_data.X_train, text_data.y_train
            ),
            text_data.X_test,
        ),
        "onehot_object_categories": (
            make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression()).fit(Xc, y),
            Xc[:10],
        ),
        "frame_feature_names": (LogisticRegression().fit(frame, y), frame.iloc[:10]),
    }


@pytest.fixture(scope="module")
def models(multiclass_data: Any, text_data: Any) -> dict[str, tuple[Any, Any]]:
    return _models(multiclass_data, text_data)


def _outputs(model: Any, X: Any) -> list[np.ndarray]:
    out = [np.asarray(model.predict(X))]
    for method in ("predict_proba", "decision_function"):
        if hasattr(model, method):
            out.append(np.asarray(getattr(model, method)(X)))
    return out


def _dump(obj: Any, path: Path, how: str) -> None:
    if how == "pickle":
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    elif how == "joblib":
        joblib.dump(obj, path)
    else:
        joblib.dump(obj, path, compress=(how.removeprefix("joblib-"), 3))


MODEL_NAMES = [
    "random_forest",
    "svc_pipeline",
    "logistic_regression",
    "knn_kd_tree",
    "text_pipeline",
    "onehot_object_categories",
    "frame_feature_names",
]


@pytest.mark.parametrize("how", ["pickle", "joblib", "joblib-zlib"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_real_models_load_with_identical_predictions(
    models: dict[str, tuple[Any, Any]], tmp_path: Path, name: str, how: str
) -> None:
    model, X = models[name]
    path = tmp_path / f"{name}.bin"
    _dump(model, path, how)
    assert sniff(path) == ("pickle" if how == "pickle" else "joblib")
    report = scan_file(path)
    assert report.verdict == "safe", str(report)
    loaded = load_foreign(path)
    assert type(loaded) is type(model)
    for got, want in zip(_outputs(loaded, X), _outputs(model, X), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_every_joblib_compressor(
    models: dict[str, tuple[Any, Any]], tmp_path: Path, compressor: str
) -> None:
    model, X = models["onehot_object_categories"]
    path = tmp_path / "model.joblib"
    joblib.dump(model, path, compress=(compressor, 3))
    report = scan_file(path)
    assert (report.kind, report.compression, report.verdict) == ("joblib", compressor, "safe")
    loaded = load_joblib_file(path)
    for got, want in zip(_outputs(loaded, X), _outputs(model, X), strict=True):
        np.testing.assert_array_equal(got, want)


def _awkward_arrays() -> dict[str, Any]:
    return {
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "big_endian": np.arange(5, dtype=">i4"),
        "structured": np.array([(1.5, b"ab"), (2.5, b"cd")], dtype=[("x", "<f8"), ("s", "S2")]),
        "unicode": np.array(["héllo", "x"]),
        "datetime": np.array(["2020-01-01", "2021-06-30"], dtype="M8[D]"),
        "scalar": np.array(3.5),
        "empty": np.empty((0, 4)),
        "bools": np.array([True, False]),
        "objects": np.array(["a", None, 3], dtype=object),
        "subarray_field": np.zeros(2, dtype=[("v", "<f8", (3,))]),
    }


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_every_protocol_and_awkward_arrays_match_joblib(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "arrays.joblib"
    joblib.dump(_awkward_arrays(), path, protocol=protocol)
    want = joblib.load(path)
    got = load_joblib_file(path)
    assert got.keys() == want.keys()
    for key, array in want.items():
        assert type(got[key]) is np.ndarray, key
        assert got[key].dtype == array.dtype and got[key].shape == array.shape, key
        assert got[key].flags.f_contiguous == array.flags.f_contiguous, key
        assert got[key].flags.writeable, key
        if array.dtype.hasobject:
            assert got[key].tolist() == array.tolist(), key
        else:
            assert got[key].tobytes() == array.tobytes(), key
    assert scan_file(path).protocol == (protocol if protocol >= 2 else None)


def test_joblib_before_1_2_without_alignment_and_sklearn_vendored_joblib(tmp_path: Path) -> None:
    array = np.arange(6, dtype="<i8").reshape(2, 3)
    body = _wrapper(array.shape, array.dtype, before_1_2=True)
    assert b"alignment" not in body
    old = b"\x80\x03" + body + array.tobytes() + b"."
    path = _write(tmp_path, old)
    assert joblib.load(path).tolist() == array.tolist()
    assert load_joblib_file(path).tolist() == array.tolist()
    # scikit-learn < 0.23 vendored joblib as sklearn.externals.joblib
    vendored = old.replace(b"cjoblib.numpy_pickle\n", b"csklearn.externals.joblib.numpy_pickle\n")
    path = _write(tmp_path, vendored, "vendored.pkl")
    assert sniff(path) == "joblib"
    assert load_joblib_file(path).tolist() == array.tolist()
    assert "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper" in scan_file(path).globals


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_matrix_keeps_its_type(tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump(np.matrix([[1, 2], [3, 4]]), path)
    got = load_joblib_file(path, LoadPolicy.make(trusted=["numpy.matrix"]))
    assert type(got) is np.matrix and got.tolist() == [[1, 2], [3, 4]]


def test_compressed_plain_pickle(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump({"w": np.arange(3.0)}, f)
    report = scan_file(path)
    assert (report.kind, report.compression) == ("pickle", "gzip")
    assert load_foreign(path)["w"].tolist() == [0.0, 1.0, 2.0]


# --------------------------------------------------------------------------- scanning


def test_scan_lists_globals_in_order_without_loading(
    models: dict[str, tuple[Any, Any]], tmp_path: Path
) -> None:
    model, _ = models["logistic_regression"]
    path = tmp_path / "lr.joblib"
    joblib.dump(model, path)
    report = scan_file(path)
    assert isinstance(report, ScanReport)
    assert report.globals[0] == "sklearn.linear_model._logistic.LogisticRegression"
    assert {WRAPPER, "numpy.ndarray", "numpy.dtype"} <= set(report.globals)
    assert len(report.globals) == len(set(report.globals))
    assert report.untrusted == ()
    assert report.safe and report.n_arrays >= 3
    text = str(report)
    assert "verdict: safe" in text and "LogisticRegression" in text and "joblib file" in text

    arrays = tmp_path / "arrays.joblib"
    joblib.dump({"w": np.arange(3), "names": np.array(["a", "b"], dtype=object)}, arrays)
    report = scan_file(arrays)
    assert report.globals == (
        WRAPPER,
        "numpy.ndarray",
        "numpy.dtype",
        f"{np.ndarray.__reduce__(np.array([]))[0].__module__}._reconstruct",
    )
    assert report.n_arrays == 2 and report.protocol == pickle.DEFAULT_PROTOCOL

    plain = tmp_path / "lr.pkl"
    _dump(model, plain, "pickle")
    assert "sklearn.linear_model._logistic.LogisticRegression" in scan_file(plain).globals


def test_public_api_routes_foreign_files(
    models: dict[str, tuple[Any, Any]], tmp_path: Path
) -> None:
    model, X = models["random_forest"]
    path = tmp_path / "rf.joblib"
    joblib.dump(model, path, compress=3)
    assert amber.scan(path).safe
    np.testing.assert_array_equal(amber.load(path).predict(X), model.predict(X))


def test_allow_arbitrary_code_warns(tmp_path: Path) -> None:
    path = tmp_path / "a.joblib"
    joblib.dump([np.arange(3)], path)
    with pytest.warns(UnsafeLoadWarning):
        got = load_joblib_file(path, LoadPolicy.make(allow_arbitrary_code=True))
    assert got[0].tolist() == [0, 1, 2]


# --------------------------------------------------------------------------- joblib is never run


def test_joblib_unpickler_is_never_instantiated(
    models: dict[str, tuple[Any, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[object] = []

    class Sentinel(jnp.NumpyUnpickler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            created.append(self)
            super().__init__(*args, **kwargs)

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("joblib's NumpyArrayWrapper.read was called")

    monkeypatch.setattr(jnp, "NumpyUnpickler", Sentinel)
    path = tmp_path / "m.joblib"
    joblib.dump(models["onehot_object_categories"][0], path, compress=3)
    with monkeypatch.context() as patch:
        patch.setattr(NumpyArrayWrapper, "read", never)
        load_foreign(path)
        scan_file(path)
    assert created == []
    assert not issubclass(_joblib._Machine, jnp.NumpyUnpickler)
    joblib.load(path)  # the control: the sentinel does see joblib's own loads
    assert len(created) == 1


def test_loading_a_joblib_file_never_imports_joblib(tmp_path: Path) -> None:
    path = tmp_path / "arrays.joblib"
    joblib.dump(_awkward_arrays(), path, compress=("lz4", 3))
    code = (
        "import sys\n"
        "from amber.security._foreign import load_foreign, scan_file\n"
        "obj = load_foreign(sys.argv[1]); scan_file(sys.argv[1])\n"
        "assert obj['fortran'].shape == (3, 4)\n"
        "print('joblib' in sys.modules)\n"
    )
    root = str(Path(amber.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *(p for p in sys.path if p)])}
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- crafting by hand


def _wrapper(
    shape: Any, dtype: Any, *, align: int | None = 16, before_1_2: bool = False, **state: Any
) -> bytes:
    """A NumpyArrayWrapper pickled as joblib pickles it, without PROTO and STOP (protocol 3)."""
    wrapper = NumpyArrayWrapper(
        np.ndarray, shape, "C", np.dtype(dtype), numpy_array_alignment_bytes=align
    )
    wrapper.__dict__.update(state)
    if before_1_2:  # joblib < 1.2 had no alignment attribute and wrote no padding
        del wrapper.numpy_array_alignment_bytes
    data = pickle.dumps(wrapper, protocol=3)
    return data[2:-1]


def _raw(prefix: bytes, payload: bytes, align: int = 16) -> bytes:
    pad = align - ((len(prefix) + 1) % align)
    return bytes([pad]) + b"\xff" * pad + payload


def _array_stream(array: np.ndarray, *, body: bytes = b"") -> bytes:
    """A joblib stream holding ``array`` then ``body`` opcodes, then STOP."""
    prefix = b"\x80\x03" + _wrapper(array.shape, array.dtype)
    return prefix + _raw(prefix, array.tobytes()) + body + b"."


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _write(tmp_path: Path, data: bytes, name: str = "crafted.joblib") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


class _Hostile:
    """Pickles as a call of ``func(*args)``: what an attacker's payload looks like."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def test_crafted_stream_is_what_joblib_reads(tmp_path: Path) -> None:
    array = np.arange(7.0)
    path = _write(tmp_path, _array_stream(array))
    assert joblib.load(path).tolist() == array.tolist()  # the crafting is faithful
    assert load_joblib_file(path).tolist() == array.tolist()


@pytest.mark.parametrize("compress", [0, 3])
def test_reduce_of_os_system_and_open_never_runs(tmp_path: Path, compress: int) -> None:
    victim = tmp_path / "touched"
    payload = {
        "weights": np.arange(4.0),
        "system": _Hostile(os.system, f"touch {victim}"),
        "open": _Hostile(open, str(victim), "w"),
        "eval": _Hostile(eval, "1"),
    }
    path = tmp_path / "evil.joblib"
    joblib.dump(payload, path, compress=compress)
    report = scan_file(path)
    expected = {f"{os.system.__module__}.system", f"{open.__module__}.open", "builtins.eval"}
    assert expected <= set(report.untrusted)
    assert report.verdict.startswith("unsafe: ")
    assert "UNTRUSTED" in str(report)
    with pytest.raises(UntrustedTypeError) as err:
        load_foreign(path)
    assert expected <= set(err.value.names)  # every offending name, at once
    assert not victim.exists()
    # trusting one name is not enough: the others are still reported
    with pytest.raises(UntrustedTypeError) as err:
        load_foreign(path, LoadPolicy.make(trusted=[f"{open.__module__}.open"]))
    assert f"{open.__module__}.open" not in err.value.names
    assert "builtins.eval" in err.value.names
    assert not victim.exists()
    # and a code runner cannot be trusted at all
    with pytest.raises(ValueError, match=r"cannot admit builtins\.eval"):
        LoadPolicy.make(trusted=["builtins.eval"])


def test_scan_and_load_never_import_an_unknown_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "amber_canary_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Thing:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    body = _global("amber_canary_mod", "Thing") + b")\x81" + b"\x86"  # (array, Thing())
    for path in (
        _write(tmp_path, _array_stream(np.arange(3), body=body)),
        _write(tmp_path, b"\x80\x02" + _global("amber_canary_mod", "Thing") + b")\x81.", "p.pkl"),
    ):
        assert scan_file(path).untrusted == ("amber_canary_mod.Thing",)
        with pytest.raises(UntrustedTypeError, match=r"amber_canary_mod\.Thing"):
            load_foreign(path)
    assert not marker.exists()
    assert "amber_canary_mod" not in sys.modules


def test_object_array_whose_nested_pickle_is_hostile(tmp_path: Path) -> None:
    victim = tmp_path / "touched"
    array = np.array([_Hostile(os.system, f"touch {victim}")], dtype=object)
    data = b"\x80\x03" + _wrapper((1,), object) + pickle.dumps(array, protocol=5) + b"."
    path = _write(tmp_path, data)
    assert f"{os.system.__module__}.system" in scan_file(path).untrusted
    with pytest.raises(UntrustedTypeError, match="system"):
        load_joblib_file(path)
    assert not victim.exists()


@pytest.mark.parametrize(
    ("name", "data"),
    [
        (
            "huge_shape_few_bytes",
            b"\x80\x03" + _wrapper((10**12,), "f8") + b"\x00" + b"\x00" * 16 + b".",
        ),
        (
            "shape_product_overflows",
            b"\x80\x03" + _wrapper((2**40, 2**40), "f8") + b"\x00" + b"\x00" * 16 + b".",
        ),
        ("negative_shape", b"\x80\x03" + _wrapper((-1,), "f8") + b"\x00" + b"."),
        ("shape_not_ints", b"\x80\x03" + _wrapper(("3",), "f8") + b"\x00" + b"."),
        (
            "bad_padding_bytes",
            b"\x80\x03" + _wrapper((1,), "f8") + b"\x03\x00\x00\x00" + b"\x00" * 8 + b".",
        ),
        ("padding_too_long", b"\x80\x03" + _wrapper((1,), "f8") + b"\x40" + b"\xff" * 72 + b"."),
        (
            "unexpected_wrapper_state",
            b"\x80\x03" + _wrapper((1,), "f8", align=None, evil=1) + b"\x00" * 8 + b".",
        ),
        (
            "nested_pickle_is_not_that_array",
            b"\x80\x03" + _wrapper((1,), object) + pickle.dumps([1], protocol=5) + b".",
        ),
        (
            "wrapper_inside_nested_pickle",
            b"\x80\x03"
            + _wrapper((1,), object)
            + b"\x80\x03"
            + _wrapper((1,), "f8", align=None)
            + b"\x00" * 8
            + b"."
            + b".",
        ),
        ("trailing_junk", _array_stream(np.arange(3)) + b"JUNK"),
        ("truncated", _array_stream(np.arange(3))[:-9]),
        ("no_stop", _array_stream(np.arange(3))[:-1]),
        ("persid", _array_stream(np.arange(3), body=b"P1\n")),
        ("binpersid", _array_stream(np.arange(3), body=b"NQ")),
        ("ext1", _array_stream(np.arange(3), body=b"\x82\x01")),
        ("ext4", _array_stream(np.arange(3), body=b"\x84\x01\x00\x00\x00")),
        ("inst", _array_stream(np.arange(3), body=b"(ibuiltins\nlist\n")),
        ("obj", _array_stream(np.arange(3), body=b"(" + _global("numpy", "ndarray") + b"o")),
        ("next_buffer", _array_stream(np.arange(3), body=b"\x97")),
        ("memo_put_far_away", _array_stream(np.arange(3), body=b"r\x00\x00\x00\x80")),
        ("binbytes_longer_than_file", _array_stream(np.arange(3), body=b"B\x00\xca\x9a\x3b")),
        (
            "bytearray8_longer_than_file",
            _array_stream(np.arange(3), body=b"\x96" + struct.pack("<Q", 2**40)),
        ),
        ("frame_longer_than_file", _array_stream(np.arange(3), body=b"\x95" + b"\xff" * 8)),
        (
            "build_on_a_class",
            _array_stream(
                np.arange(3),
                body=_global("sklearn.linear_model._logistic", "LogisticRegression")
                + b"N}"
                + _unicode("amber_pwned")
                + b"K\x01s\x86b",
            ),
        ),
        (
            "reduce_on_a_non_global",
            _array_stream(
                np.arange(3),
                body=_global("numpy", "dtype") + _unicode("f8") + b"\x85R)R",
            ),
        ),
        (
            "newobj_on_a_non_global",
            _array_stream(
                np.arange(3), body=_global("numpy", "dtype") + _unicode("f8") + b"\x85R)\x81"
            ),
        ),
        (
            "append_to_a_global",
            _array_stream(np.arange(3), body=_global("numpy", "ndarray") + b"Na"),
        ),
        (
            "wrapper_called_by_reduce",
            b"\x80\x03" + _wrapper((1,), "f8", align=None).replace(b")\x81", b")R", 1),
        ),
        ("wrapper_built_twice", _array_stream(np.arange(3), body=b"h\x01}b")),
        (
            "wrapper_duplicated",
            b"\x80\x03" + _wrapper((1,), "f8", align=None).replace(b")\x81", b")\x812", 1),
        ),
    ],
)
def test_hostile_joblib_streams_are_refused(tmp_path: Path, name: str, data: bytes) -> None:
    from sklearn.linear_model import LogisticRegression

    path = _write(tmp_path, data)
    assert sniff(path) == "joblib"
    assert scan_file(path).verdict.startswith("malformed: ")
    with pytest.raises(FormatError):
        load_foreign(path)
    # The load-mode machine refuses them too, even without the scan that runs first.
    with pytest.raises((FormatError, UntrustedTypeError)):
        machine = _joblib._Machine(
            _joblib._Reader(data), mode="load", shared=_joblib._Shared(), policy=LoadPolicy()
        )
        machine.load()
        if machine._reader.remaining:
            raise FormatError("trailing data")
    assert not hasattr(LogisticRegression, "amber_pwned")


_WRAPPER = _global("joblib.numpy_pickle", "NumpyArrayWrapper")


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        # the wrapper class next to the array it made: the load's stand-in (no behaviour)
        # would be in the tuple where joblib puts its class
        ("wrapper_class_as_a_value", _array_stream(np.arange(3), body=_WRAPPER + b"\x86"),
         "holds joblib.numpy_pickle.NumpyArrayWrapper as a value"),
        # a wrapper made but never built: no array follows it
        ("wrapper_without_its_array", _array_stream(np.arange(3), body=_WRAPPER + b")\x81\x86"),
         "1 of joblib's array wrappers have no array"),
        ("guarded_callable_as_a_value",
         _array_stream(np.arange(3), body=_global("numpy", "dtype") + b"\x86"),
         "holds numpy.dtype as a value"),
    ],
)  # fmt: skip
def test_a_joblib_stream_never_leaves_a_stand_in_in_the_model(
    tmp_path: Path, name: str, data: bytes, fragment: str
) -> None:
    path = _write(tmp_path, data)
    assert fragment in scan_file(path).verdict
    with pytest.raises(FormatError, match=fragment):
        load_foreign(path)


# --------------------------------------------------------------------------- decompression


def _zeros_lz4(n_mib: int) -> bytes:
    import lz4.frame

    compressor = lz4.frame.LZ4FrameCompressor()
    zeros = bytes(1 << 20)
    return (
        compressor.begin()
        + b"".join(compressor.compress(zeros) for _ in range(n_mib))
        + compressor.flush()
    )


def test_decompression_bomb_is_refused_by_default(tmp_path: Path) -> None:
    data = _zeros_lz4(300)
    assert default_decompression_limit(len(data)) < 300 << 20
    path = _write(tmp_path, data, "bomb.joblib")
    with pytest.raises(FormatError, match="decompression bomb"):
        load_foreign(path)
    with pytest.raises(FormatError, match="decompression bomb"):
        scan_file(path)


def _compress(method: str, data: bytes) -> bytes:
    if method == "zlib":
        return zlib.compress(data)
    if method == "gzip":
        return gzip.compress(data)
    if method == "bz2":
        return bz2.compress(data)
    if method == "xz":
        return lzma.compress(data)
    if method == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE)
    import lz4.frame

    return lz4.frame.compress(data)


@pytest.mark.parametrize("method", COMPRESSORS)
def test_every_decompressor_is_bounded(tmp_path: Path, method: str) -> None:
    stream = pickle.dumps(bytes(4 << 20), protocol=4)
    path = _write(tmp_path, _compress(method, stream), "big.pkl")
    assert load_pickle_file(path, max_decompressed_size=5 << 20) == bytes(4 << 20)
    with pytest.raises(FormatError, match="decompression bomb"):
        load_pickle_file(path, max_decompressed_size=1 << 20)
    with pytest.raises(FormatError, match="trailing data"):
        load_pickle_file(_write(tmp_path, path.read_bytes() + b"junk", "junk.pkl"))
    with pytest.raises(FormatError, match=r"truncated|not valid"):
        sniff(path.read_bytes()[:-16])


def test_default_decompression_limit() -> None:
    assert default_decompression_limit(1) == 256 << 20
    assert default_decompression_limit(10 << 20) == 640 << 20
    assert default_decompression_limit(1 << 30) == 4 << 30


# --------------------------------------------------------------------------- formats


def test_sniff_recognises_and_explains(tmp_path: Path) -> None:
    assert sniff(pickle.dumps([1], protocol=0)) == "pickle"
    assert sniff(pickle.dumps([1], protocol=1)) == "pickle"
    assert sniff(pickle.dumps([1], protocol=5)) == "pickle"
    assert sniff(_array_stream(np.arange(2))) == "joblib"
    with zipfile.ZipFile(tmp_path / "a.amber", "w") as z:
        z.writestr("amber.json", "{}")
    assert sniff(tmp_path / "a.amber") == "amber"
    with pytest.raises(FormatError, match=r"amber\.load"):
        load_foreign(tmp_path / "a.amber")
    buf = io.BytesIO()
    np.save(buf, np.arange(3))
    with pytest.raises(FormatError, match=r"NumPy \.npy"):
        sniff(buf.getvalue())
    with pytest.raises(FormatError, match="empty"):
        sniff(b"")
    with pytest.raises(FormatError, match=r"not a pickle, joblib or Amber file.*joblib\.dump"):
        sniff(b"hello world")
    with pytest.raises(FormatError, match="once gzip-decompressed"):
        sniff(gzip.compress(b"hello world"))


def test_pickle_loader_points_joblib_files_elsewhere(tmp_path: Path) -> None:
    path = _write(tmp_path, _array_stream(np.arange(2)))
    with pytest.raises(FormatError, match="load_joblib_file"):
        load_pickle_file(path)
    assert load_joblib_file(_write(tmp_path, pickle.dumps({"a": 1}), "p.pkl")) == {"a": 1}


def _zfile(stream: bytes, *, declared: int | None = None) -> bytes:
    length = hex(len(stream) if declared is None else declared).encode()
    return b"ZF" + length.ljust(len(hex(2**64))) + zlib.compress(stream)


def test_old_zfile_format(tmp_path: Path) -> None:
    path = _write(tmp_path, _zfile(pickle.dumps({"a": [1, 2]}, protocol=2)), "old.pkl")
    assert sniff(path) == "joblib"
    assert scan_file(path).compression == "zfile"
    assert load_foreign(path) == {"a": [1, 2]}
    with pytest.raises(FormatError, match="declares"):
        sniff(_zfile(pickle.dumps([1]), declared=2**40))
    with pytest.raises(FormatError, match="declares"):
        sniff(_zfile(pickle.dumps([1]), declared=3))


@pytest.mark.parametrize("zfile", [False, True])
def test_legacy_multi_file_joblib_is_refused_clearly(tmp_path: Path, zfile: bool) -> None:
    stream = pickle.dumps({"w": NDArrayWrapper("model.pkl_01.npy", np.ndarray)}, protocol=2)
    path = _write(tmp_path, _zfile(stream) if zfile else stream, "legacy.pkl")
    (tmp_path / "model.pkl_01.npy").write_bytes(b"")
    report = scan_file(path)
    assert report.verdict.startswith("unsupported: ")
    assert "joblib.numpy_pickle_compat.NDArrayWrapper" in report.globals
    with pytest.raises(FormatError, match=r"joblib < 0\.10.*companion file"):
        load_foreign(path)


def test_hostile_tree_data_in_a_joblib_file_is_validated(
    models: dict[str, tuple[Any, Any]], tmp_path: Path
) -> None:
    forest, _ = models["random_forest"]
    path = tmp_path / "forest.joblib"
    joblib.dump(forest, path)
    nodes = forest.estimators_[0].tree_.__getstate__()["nodes"]
    data = path.read_bytes()
    assert data.count(nodes.tobytes()) == 1
    evil = nodes.copy()
    evil["left_child"][0] = 10**9  # a child far outside the node array
    path.write_bytes(data.replace(nodes.tobytes(), evil.tobytes()))
    assert scan_file(path).safe  # the names are fine: only the data is hostile
    with pytest.raises(FormatError, match="inconsistent"):
        load_foreign(path)


# -- hostile numpy states inside joblib files ---------------------------------------------------
def _hostile_states() -> dict[str, Any]:
    from numpy._core.multiarray import _reconstruct
    from security_kit import Forged

    flags_0 = (3, "|", None, ("a", "b"), {"a": (np.dtype("i4"), 0), "b": (np.dtype("O"), 4)})
    return {
        "dtype with an object field hidden by flags=0": Forged(
            np.dtype, ("V12", False, True), (*flags_0, 12, 1, 0)
        ),
        "dtype state of the pre-2006 6-tuple form": Forged(
            np.dtype, ("i4", False, True), (3, "<", (None, None), -1, -1, 0)
        ),
        "object array shorter than its shape": Forged(
            _reconstruct, (np.ndarray, (0,), b"b"), (1, (100_000,), np.dtype("O"), False, [1, 2])
        ),
    }


@pytest.mark.parametrize("with_array", [False, True], ids=["plain route", "joblib route"])
@pytest.mark.parametrize("case", list(_hostile_states()))
def test_hostile_numpy_states_in_a_joblib_file_are_refused(
    case: str, with_array: bool, tmp_path: Path
) -> None:
    # joblib pickles these through its own pickler (REDUCE + BUILD with the hostile state);
    # numpy would apply the state unchecked and crash later. Amber checks it first, on both
    # routes: a file with no wrapped array is read as a plain pickle, one with an array (a
    # NumpyArrayWrapper) by the joblib reader.
    path = tmp_path / "hostile.joblib"
    content: dict[str, Any] = {"x": _hostile_states()[case]}
    if with_array:
        content["weights"] = np.arange(10.0)
    joblib.dump(content, path)
    assert (b"NumpyArrayWrapper" in path.read_bytes()) == with_array
    with pytest.raises(FormatError, match="inconsistent"):
        amber.load(path)


def test_the_joblib_reader_calls_only_what_pickles_call_and_never_refills_an_array(
    tmp_path: Path,
) -> None:
    from security_kit import Forged

    path = tmp_path / "hostile.joblib"
    joblib.dump({"x": Forged(np.add, (np.arange(3.0), np.arange(3.0))), "a": np.ones(3)}, path)
    with pytest.raises(FormatError, match=r"calls numpy\.add, which honest pickles only name"):
        amber.load(path)
    array = np.arange(4)
    stream = io.BytesIO()
    pickler = pickle.Pickler(stream, protocol=2)
    pickler.dump({"a": array, "NumpyArrayWrapper": 0})  # the name routes it to the reader
    index = pickler.memo.copy()[id(array)][0]
    setitem = b"h" + bytes([index]) + b"J\x00\x00\x00\x00J\x63\x00\x00\x00s0."
    path.write_bytes(stream.getvalue()[:-1] + setitem)  # a[0] = 99 after a's check
    with pytest.raises(FormatError, match="would modify a validated object"):
        amber.load(path)


def test_the_joblib_reader_refuses_a_tuple_of_shared_copies_too(tmp_path: Path) -> None:
    from security_kit import binint, sbu, shared_tuple_bomb

    path = tmp_path / "bomb.pkl"  # the wrapper's name routes the file to the joblib reader
    path.write_bytes(shared_tuple_bomb(extra=sbu("NumpyArrayWrapper") + binint(0) + b"s"))
    with pytest.raises(FormatError, match="a tuple repeats shared items into"):
        amber.load(path)
    assert "a tuple repeats shared items" in amber.scan(path).verdict


def test_the_joblib_reader_bounds_the_work_of_values_added_to_called_objects(
    tmp_path: Path,
) -> None:
    """A list appended over and over to an object the stream made: each append vets the whole
    list for stand-ins, steps quadratic in the stream's length (the audit's 80 kB file, a
    50,000-item list appended 10,000 times, ran for minutes); they are now bounded by it."""
    body = (
        b"(" + b"N" * 20_000 + b"l" + b"q\xc8" + b"0"  # a list of 20,000 Nones in memo 200
        + _global("builtins", "list") + b")R"  # an object made by a call
        + b"h\xc8a" * 200  # APPEND memo[200] to it, 200 times: 4 million steps
        + b"0"
    )  # fmt: skip
    path = _write(tmp_path, _array_stream(np.arange(3.0), body=body))
    message = "adds the same values to objects over and over"
    assert message in amber.scan(path).verdict
    with pytest.raises(FormatError, match=message):
        amber.load(path)
    once = body.replace(b"h\xc8a" * 200, b"h\xc8a")
    verdict = amber.scan(_write(tmp_path, _array_stream(np.arange(3.0), body=once), "1.joblib"))
    assert verdict.verdict == "safe", verdict.verdict


def test_the_joblib_reader_refuses_tuples_nested_past_a_thousand_levels(tmp_path: Path) -> None:
    """As the C scanner does (hashing nests as deeply: a dict key of a million levels crashed
    the process); the audit's 9 MB file of nested tuples also took 29 s and 2.6 GB here."""
    from security_kit import binint, sbu

    for levels, refused in ((1000, False), (1001, True), (1_000_000, True)):
        path = tmp_path / f"deep{levels}.pkl"  # the wrapper's name routes it to the joblib reader
        key = b"N" + b"\x85" * levels
        path.write_bytes(b"\x80\x05}" + sbu("NumpyArrayWrapper") + binint(0) + b"s" + key + b"Ks.")
        verdict = amber.scan(path).verdict
        assert ("tuples nest more than 1000 levels deep" in verdict) is refused, verdict


def test_the_opcodes_of_a_compressed_joblib_file_are_bounded_by_its_size(tmp_path: Path) -> None:
    """A gzip file of 64 kB inflated to 32 million harmless opcodes, which this reader (Python,
    a microsecond an opcode) worked through for minutes, in scan and again in load. The
    opcodes (the stream without its arrays' bytes) may take 64 times the compressed size, at
    least 8 MiB; max_decompressed_size= sets the bound instead."""
    import gzip

    from amber.security._foreign import _open
    from amber.security._joblib import PICKLE_FLOOR, pickle_budget, scan_joblib

    assert pickle_budget(None) is None  # an uncompressed stream: its own length bounds it
    assert pickle_budget(1000) == PICKLE_FLOOR
    assert pickle_budget(1 << 30) == 64 << 30
    assert pickle_budget(1000, limit=5) == 5
    bomb = _array_stream(np.arange(3.0), body=b"N0" * (1 << 20))  # 2 MiB of opcodes
    path = _write(tmp_path, gzip.compress(bomb, mtime=0), "bomb.joblib.gz")
    opened = _open(path, None)
    assert opened.kind == "joblib" and opened.budget == PICKLE_FLOOR
    assert _open(path, 3 << 20).budget == 3 << 20
    assert scan_joblib(bomb, budget=PICKLE_FLOOR).error is None
    error = scan_joblib(bomb, budget=1 << 20).error
    assert error is not None and "its pickle opcodes run past 1 MiB once decompressed" in error
    # array bytes are read in bulk and do not count: 8 MiB of them pass a 1 MiB bound
    big = np.arange(1 << 20, dtype=np.float64)
    assert scan_joblib(_array_stream(big, body=b"N0" * 1000), budget=1 << 20).error is None


def test_a_compressed_pickle_is_bounded_in_checked_objects_and_scan_memory(
    tmp_path: Path,
) -> None:
    """numpy.dtype("f8") called 1.1 million times through memo copies, 6 bytes each, from a
    gzip file of a few kB: each call is a validated site (the audit's 49 kB file took 24 s and
    2 GB). A memo of 64 million stores, whose scan needs more memory than the process may
    have, is a refusal, not a MemoryError."""
    import gzip

    pre = b"\x80\x02cnumpy\ndtype\nq\x010X\x02\x00\x00\x00f8\x89\x88\x87q\x020"
    calls = _write(tmp_path, gzip.compress(pre + b"h\x01h\x02R0" * 1_100_000 + b"N."), "c.pkl.gz")
    with pytest.raises(FormatError, match="asks for 1,100,000 checked objects, more than"):
        amber.load(calls)
    few = _write(tmp_path, gzip.compress(pre + b"h\x01h\x02R0" * 1000 + b"N."), "few.pkl.gz")
    assert amber.load(few) is None
    from security_kit import run_python

    memo_stream = b"\x80\x04N" + b"\x94" * (64 << 20) + b"."
    # from a compressed file, the memo is bounded as its opcodes are (64 times the file, at
    # least 8 Mi entries): the audit's 255 kB file of 250 million stores took 6.3 GB to scan
    squeezed = _write(tmp_path, gzip.compress(memo_stream), "m.pkl.gz")
    assert "MEMOIZE index 8388608 is beyond" in amber.scan(squeezed).verdict
    memo = _write(tmp_path, memo_stream, "m.pkl")  # uncompressed: 64 million stores, 1.5 GB
    # 16 million empty lists appended to one: 1.2 GB to build, from 32 kB
    lists = _write(tmp_path, gzip.compress(b"\x80\x04]" + b"]a" * (16 << 20) + b"."), "l.pkl.gz")
    proc = run_python(
        f"""
        import resource, amber
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        print(amber.scan({str(memo)!r}).verdict)
        try:
            amber.load({str(lists)!r})
        except amber.AmberError as exc:
            print("refused:", exc)
        """
    )
    assert "checking it needs more memory than is available" in proc.stdout, proc.stderr[-500:]
    # the error is made once what was built is freed (it escaped as a bare MemoryError)
    assert "refused: " in proc.stdout and "asks for more memory" in proc.stdout, proc.stderr[-500:]


def test_the_joblib_reader_refuses_a_global_name_of_megabytes(tmp_path: Path) -> None:
    """As the C scanner does (a name over 1,000 characters), instead of echoing 8 MB into the
    report and the error."""
    name = "x" * (8 << 20)
    data = (
        b"\x80\x04" + sbu_("NumpyArrayWrapper") + b"0" + sbu_("numpy")
        + b"\x8d" + len(name).to_bytes(8, "little") + name.encode() + b"\x93."
    )  # fmt: skip
    verdict = amber.scan(_write(tmp_path, data, "long.pkl")).verdict
    assert "a global's name is 8,388,608 characters long (at most 1,000)" in verdict
    assert len(verdict) < 1000


def sbu_(text: str) -> bytes:
    return b"\x8c" + bytes([len(text)]) + text.encode() + b"\x94"


# --------------------------------------------------------------------------- large plain pickles
def test_a_large_plain_pickle_is_read_into_a_map_of_its_own(
    multiclass_data: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From 64 kB a plain pickle is read into a private map with room after it (hooks spliced
    in place, pages given back as read); loading it gives what pickle gives."""
    from sklearn.ensemble import RandomForestClassifier

    import amber.security._unpickler as unpickler
    from amber.security import _foreign

    files: list[Any] = []
    real = unpickler._input_file
    monkeypatch.setattr(
        unpickler, "_input_file", lambda d, room: files.append(real(d, room)) or files[-1]
    )

    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(
        multiclass_data.X_train, multiclass_data.y_train
    )
    path = tmp_path / "forest.pkl"
    path.write_bytes(pickle.dumps(model, protocol=5))
    assert path.stat().st_size > 64 << 10
    opened = _foreign._read_with_room(path, None)
    assert opened is not None
    assert opened.room is not None and opened.kind == "pickle"
    assert bytes(opened.data) == path.read_bytes()
    loaded = load_foreign(path)
    assert isinstance(files[-1], unpickler._Consuming)  # spliced in place, read from the map
    for got, want in zip(
        _outputs(loaded, multiclass_data.X_test),
        _outputs(model, multiclass_data.X_test),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)
    # an array held in band: its bytes come out of the map, not views of it
    weights = np.random.default_rng(0).normal(size=(300, 100))
    path.write_bytes(pickle.dumps({"w": weights}, protocol=5))
    back = load_foreign(path)["w"]
    np.testing.assert_array_equal(back, weights)
    assert back.flags.writeable


@pytest.mark.parametrize("compress", [0, 3])
def test_a_large_joblib_file_is_told_from_a_pickle_by_its_refusal(
    tmp_path: Path, compress: int
) -> None:
    """A large uncompressed joblib file is first read as a pickle (no search of every byte for
    joblib's wrappers); the scan refuses its raw array bytes and it is read again as joblib."""
    arrays = {"a": np.arange(50_000, dtype=np.float64), "b": np.ones((300, 40), np.float32)}
    path = tmp_path / "big.joblib"
    joblib.dump(arrays, path, compress=compress)
    assert path.stat().st_size > 64 << 10 or compress
    back = amber.load(path)
    for key, value in arrays.items():
        np.testing.assert_array_equal(back[key], value)
        assert back[key].dtype == value.dtype


def test_a_large_hostile_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    victim = tmp_path / "touched"
    payload = {"padding": np.zeros(20_000), "system": _Hostile(os.system, f"touch {victim}")}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=5))
    assert path.stat().st_size > 64 << 10
    with pytest.raises(UntrustedTypeError) as err:
        load_foreign(path)
    assert f"{os.system.__module__}.system" in err.value.names
    assert not victim.exists()
    # damaged in the middle: a clean FormatError, nothing run
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 8] = b"\xff" * 8
    raw[-40:] = b"R" * 40  # REDUCE with nothing sensible under it
    path.write_bytes(bytes(raw))
    with pytest.raises((FormatError, UntrustedTypeError)):
        load_foreign(path)
    assert not victim.exists()


def test_a_large_joblib_file_of_empty_arrays_without_padding_is_read_as_joblib(
    tmp_path: Path,
) -> None:
    """joblib before 1.2 (or joblib writing to a stream without tell()) pads nothing: a file whose
    arrays are all empty is then a valid pickle of wrapper objects, read first as a plain pickle
    when large. The wrapper names in its scan send it to the joblib reader, which gives arrays."""

    class NoTell(io.RawIOBase):
        def __init__(self) -> None:
            self.buf = io.BytesIO()

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            return self.buf.write(b)

        def tell(self) -> int:
            raise io.UnsupportedOperation("tell")

    obj = {
        "names": [f"w{i}" for i in range(10_000)],
        "empty": np.array([], dtype=np.float64),
        "empty2d": np.zeros((0, 8), dtype=np.uint32),
    }
    sink = NoTell()
    joblib.dump(obj, sink)
    path = tmp_path / "nopad.joblib"
    path.write_bytes(sink.buf.getvalue())
    assert path.stat().st_size > 64 << 10
    back = amber.load(path)
    for key in ("empty", "empty2d"):
        assert type(back[key]) is np.ndarray
        assert back[key].dtype == obj[key].dtype and back[key].shape == obj[key].shape
    assert back["names"] == obj["names"]


def test_a_fifo_is_not_opened_to_be_looked_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The large-pickle path does not open a named pipe to look at it: without a writer the open
    would block, and with one, closing it unread could cost the writer its data."""
    from amber.security import _foreign

    fifo = tmp_path / "model.pkl"
    os.mkfifo(fifo)
    real_open = os.open

    def no_fifo_open(path: Any, *args: Any, **kwargs: Any) -> int:
        assert Path(path) != fifo, "the FIFO was opened to be looked at"
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_fifo_open)
    assert _foreign._read_with_room(fifo, None) is None


@pytest.mark.parametrize("kind", ["pickle", "amber"])
def test_amber_load_reads_a_named_pipe_once(tmp_path: Path, kind: str) -> None:
    """A named pipe is copied to a file before anything looks at it: opening it to tell an
    artifact from a pickle, closing it and opening it again lost what the writer had written
    (the second open then waited for a writer that had gone)."""
    import threading

    weights = np.arange(50_000, dtype=np.float64)
    if kind == "amber":
        amber.save({"w": weights}, tmp_path / "m.amber")
        data = (tmp_path / "m.amber").read_bytes()
    else:
        data = pickle.dumps({"w": weights}, protocol=5)
    fifo = tmp_path / "model"
    os.mkfifo(fifo)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with open(fifo, "wb") as f:
                f.write(data)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    result: list[Any] = []
    loader = threading.Thread(target=lambda: result.append(amber.load(fifo)), daemon=True)
    loader.start()
    loader.join(30)
    assert not loader.is_alive(), "amber.load of the named pipe hung"
    writer.join(10)
    assert not errors
    np.testing.assert_array_equal(result[0]["w"], weights)


@pytest.mark.parametrize("kind", ["pickle", "joblib"])
def test_a_class_the_saving_script_defined_is_named_as_such(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose class lived in the saving script's __main__: the refusal says so (not
    "written with another release"), and so does the load that trusts the name, naming the
    file, as the error it is (HandlerNotAvailable), not a malformed stream."""

    class ScriptModel:
        pass

    ScriptModel.__module__ = "__main__"
    ScriptModel.__qualname__ = "ScriptModel"
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "ScriptModel", ScriptModel, raising=False)
    path = tmp_path / f"model.{kind}"
    if kind == "pickle":
        path.write_bytes(pickle.dumps(ScriptModel()))
    else:
        joblib.dump(ScriptModel(), path)
    monkeypatch.delattr(main, "ScriptModel")
    with pytest.raises(
        UntrustedTypeError, match="defined by the script or notebook that saved"
    ) as info:
        amber.load(path)
    assert "another release" not in str(info.value)
    with pytest.raises(amber.HandlerNotAvailable, match=f"{path.name}.*saving script or notebook"):
        amber.load(path, trusted=["__main__.ScriptModel"])


def test_scan_of_a_truncated_pickle_names_its_protocol(tmp_path: Path) -> None:
    """The PROTO header is read even when the rest of the stream is not ("protocol 0 or 1"
    was said of every stream the scanner refused)."""
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(np.arange(1000.0), protocol=4)[:600])
    report = str(amber.scan(path))
    assert "pickle protocol 4" in report and "verdict: malformed" in report, report
