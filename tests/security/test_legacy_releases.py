"""Pickles written by older library releases, kept in tests/data/legacy (tools/make_legacy.py)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

import amber
from amber.errors import FormatError, UntrustedTypeError

LEGACY = Path(__file__).parents[1] / "data" / "legacy"


@pytest.mark.parametrize(
    ("name", "loss"), [("hgb", "CyHalfSquaredError"), ("poisson", "CyHalfPoissonLoss")]
)
def test_scikit_learn_1_6_loss_classes_are_read_under_their_real_module(
    name: str, loss: str
) -> None:
    """scikit-learn 1.6 pickled its Cython loss classes as '_loss.Cy...': pickle itself cannot
    read those files in any later release, and Amber refused them as untrusted."""
    path = LEGACY / f"sklearn-1.6.1-{name}.pkl"
    assert b"\x8c\x05_loss" in path.read_bytes()  # the misnamed module, as 1.6.1 wrote it
    with pytest.raises(ModuleNotFoundError, match="_loss"), open(path, "rb") as f:
        pickle.load(f)
    scan = amber.scan(path)
    assert scan.verdict == "safe"
    assert f"sklearn._loss._loss.{loss}" in scan.globals
    assert not any(g.startswith("_loss.") for g in scan.globals)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's InconsistentVersionWarning
        model = amber.load(path)
    x = np.load(LEGACY / "X.npy")
    assert np.allclose(model.predict(x), np.load(LEGACY / f"sklearn-1.6.1-{name}.predict.npy"))


def test_the_real_module_is_still_the_allowlists_decision(tmp_path: Path) -> None:
    """The name is mapped, not trusted: a '_loss' name that is no allowed loss class is refused
    under the name it means."""
    data = (LEGACY / "sklearn-1.6.1-poisson.pkl").read_bytes()
    forged = data.replace(b"\x8c\x11CyHalfPoissonLoss", b"\x8c\x11CyHalfPoissonLosz")
    assert forged != data
    path = tmp_path / "forged.pkl"
    path.write_bytes(forged)
    with pytest.raises(UntrustedTypeError, match=r"sklearn\._loss\._loss\.CyHalfPoissonLosz"):
        amber.load(path)


def test_a_name_the_installed_release_lacks_is_not_offered_for_trust(tmp_path: Path) -> None:
    """scikit-learn 1.5 rebuilt its loss classes with Cython reconstructors (also under the
    misnamed '_loss') that later releases no longer have: allowed (1.5's allowlist file), the
    load says the installed release lacks them; a name on no allowlist that the release lacks
    is not offered for trust, which cannot help."""
    path = LEGACY / "sklearn-1.5.2-poisson.pkl"
    data = path.read_bytes()
    assert b"\x8c\x05_loss\x94\x8c\x20__pyx_unpickle_CyHalfPoissonLoss" in data
    with pytest.raises(ModuleNotFoundError, match="_loss"), open(path, "rb") as f:
        pickle.load(f)
    with pytest.raises(FormatError, match=r"__pyx_unpickle_CyHalfPoissonLoss, which does not "):
        amber.load(path)
    forged = tmp_path / "forged.pkl"
    forged.write_bytes(data.replace(b"unpickle_CyHalfPoissonLoss", b"unpickle_CyHalfPoissonLosz"))
    with pytest.raises(UntrustedTypeError) as info:
        amber.load(forged)
    message = str(info.value)
    assert message.count("__pyx_unpickle_CyHalfPoissonLosz") == 2  # listed, then explained
    assert "does not exist in the installed scikit-learn" in message
    assert "trusting cannot help" in message and "trusted=" not in message


# numpy 1.26.4's pickle of np.random.default_rng(0) after three draws: the generator constructor
# is called with the bit generator's name and its constructor, held as a value
_NUMPY_1_GENERATOR = bytes.fromhex(
    "800595c5000000000000008c146e756d70792e72616e646f6d2e5f7069636b6c65948c105f5f67656e657261"
    "746f725f63746f729493948c0550434736349468008c145f5f6269745f67656e657261746f725f63746f7294"
    "9394869452947d94288c0d6269745f67656e657261746f72948c055043473634948c057374617465947d9428"
    "680b8a104ef65f0e7dbbca5d8eb330783756230e8c03696e63948a10a9737844bc338158821af73adbda8d41"
    "758c0a6861735f75696e743332944b008c0875696e7465676572944b0075622e"
)


def test_a_numpy_1_random_generator_loads() -> None:
    """numpy 1.26 hands __bit_generator_ctor to __generator_ctor as an argument: the scanner
    refused it as a value ('honest pickles only call it'), so every model holding a
    Generator (MLP, gradient boosting, GaussianProcess) could not be saved or loaded there."""
    from amber.security._policy import LoadPolicy
    from amber.security._unpickler import safe_loads

    rng = safe_loads(_NUMPY_1_GENERATOR, policy=LoadPolicy())
    assert isinstance(rng, np.random.Generator)
    np.testing.assert_allclose(rng.random(2), [0.01652764, 0.81327024], rtol=1e-6)  # as printed


def test_the_held_bit_generator_constructor_builds_only_numpys_own() -> None:
    """Held as a value, the constructor is Amber's stand-in: it builds bit generators by name
    from numpy's own table and nothing else, and __generator_ctor takes no other."""
    from amber.errors import FormatError
    from amber.security._policy import LoadPolicy
    from amber.security._unpickler import safe_loads

    forged = _NUMPY_1_GENERATOR.replace(b"\x8c\x05PCG64\x94h\x00", b"\x8c\x05posix\x94h\x00")
    assert forged != _NUMPY_1_GENERATOR
    with pytest.raises(FormatError, match="unknown numpy bit generator 'posix'"):
        safe_loads(forged, policy=LoadPolicy())


def test_a_scikit_learn_1_6_joblib_file_is_read_like_its_pickle() -> None:
    """joblib's reader (Amber's own, for joblib files) mapped Python 2 names but not the
    misnamed '_loss': the same model that loaded from its pickle was refused from joblib."""
    path = LEGACY / "sklearn-1.6.1-hgb.joblib"
    assert b"\x8c\x05_loss" in path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's InconsistentVersionWarning
        model = amber.load(path)
    x = np.load(LEGACY / "X.npy")
    assert np.allclose(model.predict(x), np.load(LEGACY / "sklearn-1.6.1-hgb.predict.npy"))


def test_joblibs_reader_takes_the_numpy_1_random_generator_too() -> None:
    """Amber's joblib reader keeps its own list of what may only be called: it refused the
    numpy 1.x Generator as the unpickler did (found under numpy 1.26 with tools/compat.sh)."""
    from amber.security._joblib import load_joblib
    from amber.security._policy import LoadPolicy

    rng, _ = load_joblib(_NUMPY_1_GENERATOR, policy=LoadPolicy(), source="a numpy 1 joblib")
    assert isinstance(rng, np.random.Generator)


def test_explaining_a_refused_name_imports_nothing_it_names() -> None:
    """Looking up whether the installed release has a refused name must not run the lazy
    imports of a package's module __getattr__ (scipy.odr, loaded on first attribute access)."""
    import subprocess
    import sys

    code = (
        "import sys, scipy\n"
        "from amber.errors import UntrustedTypeError\n"
        "from amber.security._policy import LoadPolicy\n"
        "from amber.security._unpickler import safe_loads\n"
        "assert 'scipy.odr' not in sys.modules\n"
        "try:\n"
        "    safe_loads(b'\\x80\\x04\\x8c\\x05scipy\\x8c\\x03odr\\x93.', policy=LoadPolicy())\n"
        "except UntrustedTypeError as exc:\n"
        "    print('scipy.odr' in sys.modules, 'trusted=' in str(exc))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert out.split() == ["False", "True"]
