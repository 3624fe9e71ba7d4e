"""The allowlist data and its lookups: exact names, nothing denied, cheap to load."""

from __future__ import annotations

import importlib.util
import json
import types
import warnings
from pathlib import Path
from typing import Any

import pytest
from security_kit import run_python

from amber.errors import FormatError, HandlerNotAvailable, UntrustedTypeError
from amber.security import _validators
from amber.security._allowlist import _PATH, entries, is_allowed, resolve
from amber.security._policy import LoadPolicy

TOOL = Path(__file__).resolve().parents[2] / "tools" / "make_allowlist.py"


def _tool() -> Any:
    spec = importlib.util.spec_from_file_location("make_allowlist", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL_MODULE = _tool()


def test_no_entry_is_denied() -> None:
    slipped = [f"{m}.{n}: {why}" for (m, n) in entries() if (why := TOOL_MODULE.denied(m, n))]
    assert slipped == []


@pytest.mark.parametrize(
    "name",
    [
        "builtins.eval", "builtins.exec", "builtins.compile", "builtins.open",
        "builtins.setattr", "builtins.__import__", "builtins.globals",
        "builtins.vars", "builtins.type", "os.system", "posix.system", "subprocess.Popen",
        "sys.modules", "importlib.import_module", "pickle.loads", "_pickle.loads",
        "marshal.loads", "numpy.load", "numpy.lib.format.read_array", "numpy.fromfile",
        "numpy.memmap", "joblib.load", "joblib.numpy_pickle.load", "sklearn.utils._joblib.load",
        "functools.reduce", "operator.attrgetter", "operator.methodcaller",
        "operator.itemgetter", "types.FunctionType", "ctypes.CDLL", "codecs.open",
        "shutil.rmtree", "webbrowser.open", "runpy.run_path", "code.interact", "pydoc.locate",
        "numpy._core._internal._ctypes", "numpy.core._ufunc_reconstruct", "copyreg.__reduce__",
        "sklearn.datasets.fetch_openml", "scipy.io.loadmat", "pandas.read_pickle",
    ],
)  # fmt: skip
def test_the_denylist_catches_dangerous_names(name: str) -> None:
    module, _, attr = name.rpartition(".")
    assert TOOL_MODULE.denied(module, attr), name
    assert not is_allowed(module, attr, LoadPolicy())


def _this_release() -> set[tuple[str, str]]:
    """The names of ``allowlist.json``: made with the releases installed here."""
    raw = json.loads(_PATH.read_text(encoding="utf-8"))
    return {(e["module"], e["name"]) for e in raw["entries"]}


def _resolved(module: str, name: str) -> Any:
    """``module.name`` as this release has it; None for a name only an older release has
    (allowed by its release file, absent here)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return resolve(module, name, LoadPolicy())
    except (FormatError, HandlerNotAvailable):
        if (module, name) in _this_release():
            raise
        return None


@pytest.mark.parametrize(
    "name", ["asarray", "ascontiguousarray", "diff", "repeat", "tile", "broadcast_to"]
)
def test_numpy_functions_that_size_their_work_by_a_parameter_are_denied(name: str) -> None:
    """A FunctionTransformer's kw_args come from the file: np.asarray with dtype "U2000000000"
    asks 8 GB a value, np.diff with n=10**12 loops that many times."""
    assert TOOL_MODULE.denied("numpy", name) == "name is denied"
    assert ("numpy", name) not in entries()


def test_entries_are_exact_types_and_functions_that_resolve() -> None:
    raw = json.loads(_PATH.read_text(encoding="utf-8"))
    assert raw["format"] == 1
    assert len(raw["entries"]) == len(_this_release()) > 400
    assert _this_release() <= set(entries())
    validators = {v.__name__ for v in _validators.OBJECT_VALIDATORS.values()}
    for entry in entries().values():
        obj = _resolved(entry.module, entry.name)
        if obj is None:
            continue
        assert not isinstance(obj, types.ModuleType), entry
        assert entry.kind == ("class" if isinstance(obj, type) else entry.kind), entry
        assert entry.kind in {"class", "function", "constant"}
        assert isinstance(entry.frozen_safe, bool)
        assert entry.validator is None or entry.validator in validators


def test_what_the_brief_names_is_there() -> None:
    for name in [
        "numpy._core.multiarray._reconstruct", "numpy._core.numeric._frombuffer", "numpy.dtype",
        "numpy.ndarray", "numpy._core.multiarray.scalar", "numpy.core.multiarray._reconstruct",
        "numpy.float64", "numpy.log1p", "builtins.slice", "builtins.set", "builtins.frozenset",
        "builtins.complex", "builtins.bytearray", "collections.OrderedDict",
        "collections.defaultdict", "copyreg._reconstructor", "builtins.object",
        "joblib.numpy_pickle.NumpyArrayWrapper", "joblib.numpy_pickle_compat.NDArrayWrapper",
        "scipy.sparse._csr.csr_matrix", "scipy.sparse._csc.csc_array",
        "sklearn.tree._tree.Tree", "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.feature_selection._univariate_selection.f_classif",
        "sklearn.svm._classes.SVC", "sklearn.feature_extraction.text.TfidfVectorizer",
    ]:  # fmt: skip
        module, _, attr = name.rpartition(".")
        assert (module, attr) in entries(), name
    assert any(m.startswith("sklearn._loss") for m, _ in entries())


def test_validated_classes_are_marked_under_every_name() -> None:
    by_class = {}
    for key, fn in _validators.OBJECT_VALIDATORS.items():
        try:
            by_class[id(resolve(*key, LoadPolicy.make([":".join(key)])))] = fn.__name__
        except (FormatError, HandlerNotAvailable):
            continue  # a name this library version lacks
    for entry in entries().values():
        obj = _resolved(entry.module, entry.name)
        if obj is not None:
            assert entry.validator == by_class.get(id(obj)), entry


def test_loading_the_allowlist_imports_no_framework() -> None:
    proc = run_python(
        """
        import sys
        from amber.security._allowlist import entries, is_allowed
        from amber.security._policy import LoadPolicy
        assert len(entries()) > 400
        assert is_allowed("sklearn.svm._classes", "SVC", LoadPolicy())
        print(sorted(m for m in ("sklearn", "scipy", "pandas", "joblib") if m in sys.modules))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_is_allowed_and_trusted() -> None:
    policy = LoadPolicy()
    assert is_allowed("builtins", "slice", policy)
    assert not is_allowed("collections", "ChainMap", policy)
    trusting = LoadPolicy.make(["collections.ChainMap"])
    assert is_allowed("collections", "ChainMap", trusting)
    assert not is_allowed("collections", "UserDict", trusting)
    with pytest.warns(UserWarning):
        LoadPolicy.make(allow_arbitrary_code=True).warn_if_unsafe("x")
    assert is_allowed("os", "system", LoadPolicy.make(allow_arbitrary_code=True))


def test_resolve() -> None:
    from collections import ChainMap

    assert resolve("builtins", "slice", LoadPolicy()) is slice
    with pytest.raises(UntrustedTypeError) as info:
        resolve("os", "system", LoadPolicy())
    assert info.value.names == ("os.system",)
    # a code runner is never offered to trusted=, and trusted= refuses it
    assert "trusted=" not in str(info.value).split("Nothing from the file was run.")[1][:20]
    assert "os.system runs code Amber cannot vet" in str(info.value)
    with pytest.raises(ValueError, match=r"cannot admit os\.system.*allow_arbitrary_code=True"):
        LoadPolicy.make(["os.system"])
    with pytest.raises(UntrustedTypeError, match=r"trusted=\['collections.ChainMap'\]"):
        resolve("collections", "ChainMap", LoadPolicy())
    assert resolve("collections", "ChainMap", LoadPolicy.make(["collections.ChainMap"])) is ChainMap


def test_tensors_pickled_by_torch_are_not_offered_to_trusted(tmp_path: Any) -> None:
    """torch.storage._load_from_bytes runs torch.load on nested bytes: trusting it would trust
    anything. Neither the save warning nor the refusal suggests it, and trusted= refuses it."""
    torch = pytest.importorskip("torch")
    import amber

    holder = {"weights": [torch.ones(3)], "note": "not a state dict"}
    with pytest.warns(UserWarning) as warned:
        amber.save(holder, tmp_path / "t.amber")
    text = " ".join(str(w.message) for w in warned)
    assert "torch.storage._load_from_bytes runs code Amber cannot vet" in text
    assert "_load_from_bytes'" not in text  # never inside a trusted=[...] list
    with pytest.raises(UntrustedTypeError, match="no trusted= admits"):
        amber.load(tmp_path / "t.amber")
    with pytest.raises(ValueError, match=r"cannot admit torch\.storage\._load_from_bytes"):
        amber.load(tmp_path / "t.amber", trusted=["torch.storage._load_from_bytes"])


def test_resolve_legacy_numpy_names_without_warnings() -> None:
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recon = resolve("numpy.core.multiarray", "_reconstruct", LoadPolicy())
    assert recon is np._core.multiarray._reconstruct


def test_resolve_reports_missing_modules_and_names() -> None:
    policy = LoadPolicy.make(["amber_no_such_module.Thing", "builtins:no_such_name"])
    with pytest.raises(HandlerNotAvailable, match="amber_no_such_module"):
        resolve("amber_no_such_module", "Thing", policy)
    with pytest.raises(FormatError, match="does not exist in the installed version"):
        resolve("builtins", "no_such_name", policy)


def test_models_that_need_a_denied_name_are_recorded() -> None:
    raw = json.loads(_PATH.read_text(encoding="utf-8"))
    refused = raw["refused_references"]
    assert refused == {}, refused


def test_guarded_names_enter_only_with_their_validator_or_stand_in() -> None:
    # functools is denied wholesale; partial is admitted only with a validator that checks
    # the function it wraps (HistGradientBoosting's categorical preprocessor stores one).
    # getattr is denied too, and admitted only as the unpickler's stand-in, which reaches
    # str's methods alone (CountVectorizer(tokenizer=str.split)).
    from amber.security._unpickler import GUARDED

    assert {("functools", "partial"), ("builtins", "getattr")} == TOOL_MODULE.GUARDED
    assert entries()[("functools", "partial")].validator == "validate_partial"
    assert ("builtins", "getattr") in GUARDED
    assert TOOL_MODULE.denied("functools", "reduce")
    assert TOOL_MODULE.denied("builtins", "setattr")


@pytest.mark.parametrize(
    "name",
    ["posix.execv", "os.spawnvp", "posix.posix_spawn", "runpy.run_path", "builtins.getattr",
     "torch.serialization._load", "ctypes.CDLL"],
)  # fmt: skip
def test_code_runners_are_never_trusted(name: str) -> None:
    with pytest.raises(ValueError, match="cannot admit"):
        LoadPolicy.make([name])


def test_older_releases_widen_the_allowlist_by_names_only() -> None:
    """allowlist-<release>.json files (tools/make_allowlist.py --release in those releases)
    add what their pickles name; a name several list is admitted as the most careful says."""
    from amber.security._allowlist import release_files

    files = release_files()
    assert {p.name for p in files} >= {
        "allowlist-sklearn-1.5.2-numpy-1.26.4.json",
        "allowlist-sklearn-1.6.1-numpy-2.1.3.json",
    }
    for path in files:
        raw = json.loads(path.read_text(encoding="utf-8"))
        env = raw["environment"]
        assert path.name == f"allowlist-sklearn-{env['scikit-learn']}-numpy-{env['numpy']}.json"
        assert raw["refused_references"] == {}
        for e in raw["entries"]:
            merged = entries()[(e["module"], e["name"])]
            assert merged.frozen_safe <= e["frozen_safe"]
            assert merged.validator == (merged.validator or e.get("validator"))
    added = set(entries()) - _this_release()
    assert ("sklearn.compose._column_transformer", "_RemainderColsList") in added  # 1.5, 1.6
    assert ("numpy._core._multiarray_umath", "log1p") in added  # numpy 2.1's ufunc path
    assert ("numpy.core._multiarray_umath", "log1p") in added  # numpy 1.26's
