"""PyTorch handler: safetensors weights, the audited export program, trusted classes, mmap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import _nets  # noqa: E402

import amber  # noqa: E402
from amber.artifact._reader import ArtifactReader  # noqa: E402
from amber.artifact._writer import artifact_writer  # noqa: E402
from amber.errors import UntrustedTypeError  # noqa: E402

X = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)


def rewrite(path: Path, name: str, change: Any) -> None:
    """Re-write one entry through Amber's own writer (digests recomputed: a forged file)."""
    with ArtifactReader(path) as reader:
        manifest = {k: v for k, v in reader.manifest.items() if k != "entries"}
        entries = {n: bytes(reader.read(n)) for n in reader.entries}
    entries[name] = change(entries[name])
    with artifact_writer(path) as writer:
        for n, data in entries.items():
            writer.add(n, data)
        writer.finish(manifest)


@pytest.fixture(scope="module")
def net() -> Any:
    torch.manual_seed(0)
    return _nets.TwoLayer(5, 16, 3)


def test_user_class_must_be_trusted(tmp_path: Path, net: Any) -> None:
    path = tmp_path / "net.amber"
    with pytest.warns(UserWarning, match=r"trusted=\['_nets.TwoLayer'\]"):
        info = amber.save(net, path, format="class")
    assert info.manifest["payload"]["init"] == {"n_in": 5, "hidden": 16, "n_out": 3}
    assert set(info.manifest["entries"]) == {"model/weights.safetensors"}
    with pytest.raises(UntrustedTypeError, match=r"_nets.TwoLayer"):
        amber.load(path)
    loaded = amber.load(path, trusted=["_nets.TwoLayer"])
    assert type(loaded) is _nets.TwoLayer and loaded.training == net.training
    np.testing.assert_array_equal(amber.predict(loaded, X), amber.predict(net, X))


def test_export_needs_no_trust_and_never_calls_torch_load(
    tmp_path: Path, net: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "net.amber"
    info = amber.save(net, path, sample=X[:4])
    assert info.manifest["payload"]["rebuild"] == "export"
    assert "torch.ops.aten.linear.default" in info.globals and not info.untrusted

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)
    loaded = amber.load(path, probe="always")
    # the exported program has a dynamic batch dimension
    np.testing.assert_array_equal(amber.predict(loaded, X), amber.predict(net, X))


@pytest.mark.parametrize(
    ("old", "new", "refused"),
    [
        ("torch.ops.aten.tanh.default", "torch.load", "torch.load"),
        ("Symbol('s", "__import__('os').system('s", "torch.export.ExportedProgram"),
    ],
    ids=["call-target", "sympy-expression"],
)
def test_a_forged_program_is_refused_before_deserializing(
    tmp_path: Path, net: Any, old: str, new: str, refused: str
) -> None:
    path = tmp_path / "net.amber"
    amber.save(net, path, sample=X[:4])
    rewrite(path, "model/program.json", lambda b: b.replace(old.encode(), new.encode()))
    with pytest.raises(UntrustedTypeError, match=refused.replace(".", r"\.")):
        amber.load(path)


def test_without_sample_or_attributes_the_error_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"width .*Save with sample=.*get_config"):
        amber.save(_nets.Opaque(4), tmp_path / "o.amber")
    # with a sample it exports
    info = amber.save(_nets.Opaque(4), tmp_path / "o.amber", sample=X[:4])
    assert info.manifest["payload"]["rebuild"] == "export"


def test_tied_weights_are_stored_once_and_stay_tied(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = _nets.Tied()
    path = tmp_path / "tied.amber"
    with pytest.warns(UserWarning):
        info = amber.save(model, path, format="class")
    assert info.manifest["payload"]["aliases"] == {"out.weight": "dec.weight"}
    loaded = amber.load(path, trusted=["_nets.Tied"])
    assert loaded.out.weight is loaded.dec.weight
    np.testing.assert_array_equal(amber.predict(loaded, X), amber.predict(model, X))


def test_mmap_tensors_view_the_file_and_writes_stay_private(tmp_path: Path) -> None:
    torch.manual_seed(2)
    big = torch.nn.Linear(512, 512)
    path = tmp_path / "big.amber"
    amber.save(big, path)
    raw = path.read_bytes()
    loaded = amber.load(path, mmap=True)
    weight = loaded.weight.detach()
    if Path("/proc/self/maps").exists():  # the weight lies in a mapping of the file itself
        ptr = weight.data_ptr()
        spans = [
            [int(a, 16) for a in line.split()[0].split("-")]
            for line in Path("/proc/self/maps").read_text().splitlines()
            if line.endswith(str(path.resolve()))
        ]
        assert any(lo <= ptr < hi for lo, hi in spans), spans
    np.testing.assert_array_equal(weight.numpy(), big.weight.detach().numpy())
    with torch.no_grad():
        loaded.weight.mul_(2)  # copy-on-write: the process keeps running, the file is unchanged
    assert path.read_bytes() == raw
    np.testing.assert_array_equal(
        amber.predict(amber.load(path), X[:, :1].repeat(512, 1)),
        amber.predict(big, X[:, :1].repeat(512, 1)),
    )


def test_weights_entry_is_plain_safetensors(tmp_path: Path) -> None:
    from safetensors.numpy import load

    model = torch.nn.Linear(5, 2)
    path = tmp_path / "lin.amber"
    amber.save(model, path)
    with ArtifactReader(path) as reader:
        tensors = load(bytes(reader.read("model/weights.safetensors")))
        header = json.loads(reader.manifest_bytes)["payload"]
    assert header["rebuild"] == "class" and header["class"] == "torch.nn.modules.linear.Linear"
    np.testing.assert_array_equal(tensors["weight"], model.weight.detach().numpy())
