"""Pickles written by older library releases, kept in tests/data/legacy (tools/make_legacy.py)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

import amber
from amber.errors import UntrustedTypeError

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


def test_a_name_the_installed_release_lacks_is_not_offered_for_trust() -> None:
    """scikit-learn 1.5 rebuilt its loss classes with Cython reconstructors (also under the
    misnamed '_loss') that later releases no longer have: trusting the name cannot help, and
    the error says why instead."""
    path = LEGACY / "sklearn-1.5.2-poisson.pkl"
    assert b"\x8c\x05_loss\x94\x8c\x20__pyx_unpickle_CyHalfPoissonLoss" in path.read_bytes()
    with pytest.raises(ModuleNotFoundError, match="_loss"), open(path, "rb") as f:
        pickle.load(f)
    with pytest.raises(UntrustedTypeError) as info:
        amber.load(path)
    message = str(info.value)
    assert message.count("__pyx_unpickle_CyHalfPoissonLoss") == 2  # listed, then explained
    assert "does not exist in the installed scikit-learn" in message
    assert "trusting cannot help" in message and "trusted=" not in message
