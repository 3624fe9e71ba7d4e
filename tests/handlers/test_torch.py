"""PyTorch handler: safetensors weights, the audited export program, trusted classes, mmap."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import _nets  # noqa: E402
from _cases import forge_entry as rewrite  # noqa: E402

import amber  # noqa: E402
from amber.artifact._reader import ArtifactReader  # noqa: E402
from amber.errors import FormatError, UnsafeLoadWarning, UntrustedTypeError  # noqa: E402

X = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)


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
        (
            '"guards_code": []',
            "\"guards_code\": [\"__import__('os').system('true') == 0\"]",
            "torch.export.ExportedProgram",
        ),
        # from_file reads, creates or writes any path; PyTorch's checker counts it pure
        ("torch.ops.aten.tanh.default", "torch.ops.aten.from_file.default", "from_file"),
    ],
    ids=["call-target", "sympy-expression", "guard-code", "file-op"],
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


def test_a_transposed_weight_keeps_its_layout_and_outputs(tmp_path: Path) -> None:
    """Stored in memory order with its strides recorded: the reloaded weight has the same
    strides, so the same kernel runs and outputs are bit-identical (a row-major copy changed
    them in the last bits, and verify called the honest file broken)."""
    torch.manual_seed(0)
    net = _nets.Transposed()
    x = np.random.default_rng(1).normal(size=(16, 8)).astype(np.float32)
    for fmt, trusted in (("export", None), ("class", ["_nets.Transposed"])):
        path = tmp_path / f"{fmt}.amber"
        info = amber.save(net, path, sample=x, format=fmt)
        assert info.manifest["payload"]["layouts"] == {"w": [[8, 4], [1, 8]]}
        assert "probe matched" in str(amber.verify(path, trusted=trusted).probe)
        for mmap in (False, True):
            back = amber.load(path, trusted=trusted, mmap=mmap)
            w = dict(back.named_parameters())["w"]
            assert w.stride() == (1, 8)
            np.testing.assert_array_equal(amber.predict(back, x), amber.predict(net, x))


def test_a_layout_that_reaches_outside_the_tensor_is_refused() -> None:
    from amber.errors import FormatError
    from amber.handlers import _safetensors

    tensors = {"w": torch.zeros(8, 4)}
    for bad in ([[8, 4], [1, 9]], [[8, 4], [1, 1]], [[16, 4], [1, 16]], [[8], [1]], "x"):
        with pytest.raises(FormatError, match="layout"):
            _safetensors.restore_layouts(dict(tensors), {"w": bad}, "e")


def test_bfloat16_models_predict_and_keep_a_probe(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(8, 2).bfloat16()
    x = np.random.default_rng(1).normal(size=(16, 8)).astype(np.float32)
    assert amber.predict(net, x).dtype == np.float32
    amber.save(net, tmp_path / "bf.amber", sample=x)
    assert "probe matched" in str(amber.verify(tmp_path / "bf.amber").probe)


def test_several_inputs_and_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _nets.TwoHeads()
    rng = np.random.default_rng(1)
    sample = (
        rng.normal(size=(6, 5)).astype(np.float32),
        rng.normal(size=(6, 2)).astype(np.float32),
    )
    path = tmp_path / "two.amber"
    info = amber.save(net, path, sample=sample)
    assert info.manifest["payload"]["rebuild"] == "export"
    assert "probe matched" in str(amber.verify(path).probe)
    y, total = amber.predict(amber.load(path), sample)
    assert y.shape == (6, 3) and total.shape == (6,)


def test_an_exported_model_is_in_inference_mode_and_eval_works(tmp_path: Path, net: Any) -> None:
    x = np.random.default_rng(1).normal(size=(8, 5)).astype(np.float32)
    amber.save(net.eval(), tmp_path / "e.amber", sample=x)
    back = amber.load(tmp_path / "e.amber")
    assert back.training is False
    assert back.eval() is back and back.train(False) is back
    with pytest.raises(NotImplementedError, match="format='class'"):
        back.train()


def test_a_state_dict_is_stored_as_tensors(tmp_path: Path, net: Any) -> None:
    """Not pickled (its tensors would need torch's own unpickler): safetensors, no warning,
    no trust needed, and it loads into the module."""
    import warnings

    state = net.state_dict()
    path = tmp_path / "sd.amber"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = amber.save(state, path)
    assert info.handler == "torch" and info.manifest["payload"]["rebuild"] == "tensors"
    back = amber.load(path)
    assert list(back) == list(state)
    for key in state:
        assert torch.equal(back[key], state[key])
    fresh = _nets.TwoLayer(5, 16, 3)
    fresh.load_state_dict(back)
    x = torch.randn(4, 5)
    assert torch.equal(fresh(x), net(x))


def test_a_failed_export_is_reported(tmp_path: Path) -> None:
    """A one-row sample cannot trace a dynamic batch: the error (or, for a class that can be
    rebuilt, the warning) says what torch.export said and what to do."""
    seq = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ReLU())
    one = np.zeros((1, 5), dtype=np.float32)
    with pytest.raises(TypeError, match=r"(?s)could not trace.*at least two rows"):
        amber.save(seq, tmp_path / "s.amber", sample=one)
    with pytest.warns(UserWarning, match=r"(?s)could not trace.*at least two rows"):
        info = amber.save(_nets.TwoLayer(5, 4), tmp_path / "t.amber", sample=one)
    assert info.manifest["payload"]["rebuild"] == "class"


class _Outer:
    class Net(torch.nn.Linear):
        pass


def test_rows_as_a_list_are_one_batch_and_nested_classes_load(tmp_path: Path) -> None:
    """A list of row arrays is one input (a batch), as before tuples meant several inputs; a
    nested class saved by class loads with the name the warning gives."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 2)
    rows = [np.zeros(5, dtype=np.float32), np.ones(5, dtype=np.float32)]
    assert amber.predict(lin, rows).shape == (2, 2)
    net = _Outer.Net(5, 2)
    path = tmp_path / "nested.amber"
    with pytest.warns(UserWarning, match=r"trusted=\['test_torch:_Outer\.Net'\]"):
        amber.save(net, path, format="class")
    back = amber.load(path, trusted=["test_torch:_Outer.Net"])
    assert type(back) is _Outer.Net


@pytest.mark.parametrize(
    ("field", "value"),
    [("order", [1, "weight", "bias"]), ("order", [{}, {}]), ("aliases", {"x": ["weight"]})],
)
def test_a_malformed_tensors_payload_is_refused(tmp_path: Path, field: str, value: Any) -> None:
    from amber.artifact._rewrite import rewrite as rewrite_manifest
    from amber.errors import FormatError

    path = tmp_path / "sd.amber"
    amber.save(torch.nn.Linear(3, 2).state_dict(), path)

    def forge(manifest: dict[str, Any]) -> dict[str, Any]:
        manifest["payload"][field] = value
        return manifest

    rewrite_manifest(path, path, update=forge)
    with pytest.raises(FormatError, match="malformed torch payload"):
        amber.load(path)


def _set_payload(path: Path, **fields: Any) -> None:
    """Change the manifest's payload fields (amber.artifact._rewrite; no signature)."""
    from amber.artifact._rewrite import rewrite as rewrite_manifest

    def update(manifest: dict[str, Any]) -> dict[str, Any]:
        manifest["payload"].update(fields)
        return manifest

    rewrite_manifest(path, path, update=update)


@pytest.mark.parametrize(
    "forged",
    [
        "torch.nn.modules.module:torch.ao.quantization.observer.MinMaxObserver",
        "torch.nn.modules.linear.Linear.__base__",
    ],
)
def test_a_class_reached_through_torch_nn_modules_needs_trust(tmp_path: Path, forged: str) -> None:
    """The class check was a prefix test, and the import walked attributes: any class reached
    from a torch.nn.modules path was built without trust."""
    path = tmp_path / "lin.amber"
    amber.save(torch.nn.Linear(4, 2), path)
    _set_payload(path, **{"class": forged})
    with pytest.raises(UntrustedTypeError):
        amber.load(path)


@pytest.mark.parametrize(
    "init",
    [
        {"in_features": 4, "out_features": 2, "bogus": 1},  # TypeError from the constructor
        {"in_features": 5, "out_features": 2},  # RuntimeError from load_state_dict
    ],
)
def test_what_torch_raises_on_a_forged_payload_is_a_format_error(
    tmp_path: Path, init: dict[str, Any]
) -> None:
    path = tmp_path / "lin.amber"
    amber.save(torch.nn.Linear(4, 2), path)

    _set_payload(path, init=init)
    with pytest.raises(FormatError, match=r"could not be loaded by its torch handler"):
        amber.load(path)


def test_a_constructor_argument_beyond_the_weights_is_refused(tmp_path: Path) -> None:
    """LSTM(num_layers=10**8) took minutes to build, even on the meta device."""
    path = tmp_path / "lin.amber"
    amber.save(torch.nn.Linear(4, 2), path)

    _set_payload(
        path,
        **{
            "class": "torch.nn.modules.rnn.LSTM",
            "init": {"input_size": 4, "hidden_size": 2, "num_layers": 10**8},
        },
    )
    with pytest.raises(FormatError, match=r"argument of 100000000 is larger than the 10 stored"):
        amber.load(path)
    # the same size inside a numpy-array parameter ({"$array": ...}) is read as well: an
    # AdaptiveAvgPool2d output of 6000 x 6000 went through unchecked
    _set_payload(
        path,
        **{
            "class": "torch.nn.modules.pooling.AdaptiveAvgPool2d",
            "init": {
                "output_size": {"$array": {"dtype": "<i8", "shape": [2], "data": [6000, 6000]}}
            },
        },
    )
    with pytest.raises(FormatError, match=r"argument of 6000 is larger than the 10 stored"):
        amber.load(path)


def test_an_exported_program_creating_a_huge_tensor_is_refused(tmp_path: Path) -> None:
    """aten.full([50000, 50000]) from a forged program asked for 10 GB at predict."""

    class Shifted(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(X.shape[1], 2)

        def forward(self, x: Any) -> Any:
            return self.lin(x) + torch.zeros(1, 2)

    path = tmp_path / "s.amber"
    amber.save(Shifted(), path, sample=X[:4])
    assert amber.load(path) is not None
    honest = path.read_bytes()
    rewrite(
        path,
        "model/program.json",
        lambda b: b.replace(b'"as_ints": [1, 2]', b'"as_ints": [50000, 50000]'),
    )
    with pytest.raises(FormatError, match=r"asks for 2,500,000,000 elements"):
        amber.load(path)
    # the same size spelled as symbolic ints took 6.6 GB
    path.write_bytes(honest)
    rewrite(
        path,
        "model/program.json",
        lambda b: b.replace(
            b'"as_ints": [1, 2]', b'"as_sym_ints": [{"as_int": 50000}, {"as_int": 50000}]'
        ),
    )
    with pytest.raises(FormatError, match=r"asks for 2,500,000,000 elements"):
        amber.load(path)


def test_an_honest_model_beyond_a_size_bound_is_saved_with_a_warning_and_loads_when_trusted(
    tmp_path: Path,
) -> None:
    """A one-hot of over 2**20 classes is past the bound a forged program is held to: the
    save says loading will need allow_arbitrary_code=True, the plain load refuses it (saying
    so), and the trusting load warns and gives back the same model."""
    classes = 2**20 + 8

    class Wide(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(X.shape[1], 1)

        def forward(self, x: Any) -> Any:
            index = (x[:, 0].abs() * 1000).long().clamp(0, classes - 1)
            hot = torch.nn.functional.one_hot(index, classes).float()
            return self.lin(x) + hot[:, -8:].sum(1, keepdim=True)

    torch.manual_seed(0)
    model = Wide().eval()
    path = tmp_path / "wide.amber"
    with pytest.warns(UserWarning, match=r"one_hot.*will need allow_arbitrary_code=True"):
        amber.save(model, path, sample=X[:2])
    with pytest.raises(FormatError, match=r"one_hot.*Only if you made it yourself"):
        amber.load(path)
    with pytest.warns(UnsafeLoadWarning, match="beyond Amber's size bounds") as caught:
        loaded = amber.load(path, allow_arbitrary_code=True)
    assert caught[0].filename == __file__  # the caller's line, not Amber's
    with torch.no_grad():
        want = model(torch.from_numpy(X[:2])).numpy()
    np.testing.assert_array_equal(amber.predict(loaded, X[:2]), want)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.nn.LSTM(8, 6, num_layers=2, batch_first=True, bidirectional=True),
        lambda: torch.nn.GRU(8, 6, num_layers=2),
        lambda: torch.nn.RNN(8, 4, nonlinearity="relu", bias=False),
        lambda: torch.nn.Identity(),
    ],
    ids=["LSTM", "GRU", "RNN", "Identity"],
)
def test_modules_whose_constructor_takes_star_args_are_saved_by_class(
    tmp_path: Path, make: Any
) -> None:
    """LSTM, GRU and RNN take *args, so their constructor arguments could not be read from
    their signature: saving one without a sample was refused."""
    torch.manual_seed(0)
    model = make().eval()
    path = tmp_path / "rnn.amber"
    info = amber.save(model, path)
    assert info.manifest["payload"]["rebuild"] == "class"
    loaded = amber.load(path)
    assert type(loaded) is type(model) and repr(loaded) == repr(model)
    x = torch.randn(3, 5, 8)
    with torch.no_grad():
        want, got = model(x), loaded(x)
    leaves = torch.utils._pytree.tree_leaves
    for a, b in zip(leaves(want), leaves(got), strict=True):
        assert torch.equal(a, b)


def test_the_save_checks_constructor_arguments_as_a_load_reads_them(tmp_path: Path) -> None:
    """The save walked the JSON form of the arguments: an array parameter's shape (5000)
    counted as a size, and the save warned about a bound the load never applies."""
    from amber.handlers._common import SizeBounds, decode_params, encode_params
    from amber.handlers.torch import _check_sizes

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        amber.save(_nets.Lookup(np.zeros(5000)), tmp_path / "lookup.amber")
    said = [str(w.message) for w in caught]
    assert not any("allow_arbitrary_code" in m for m in said), said
    loaded = amber.load(tmp_path / "lookup.amber", trusted=["_nets.Lookup"])
    assert isinstance(loaded.table, np.ndarray) and loaded.table.shape == (5000,)
    bounds = SizeBounds.for_save()
    _check_sizes(decode_params(encode_params({"sizes": np.array([6000])}, "m")), {}, bounds)
    assert bounds.found and "6000" in bounds.found[0]


def test_a_nested_output_is_probed(tmp_path: Path) -> None:
    """An LSTM answers (output, (h, c)): a container inside a container, which the probe could
    not store, so an LSTM saved with a sample was refused."""
    torch.manual_seed(0)
    model = torch.nn.LSTM(8, 6, batch_first=True).eval()
    x = np.random.default_rng(0).normal(size=(3, 5, 8)).astype(np.float32)
    path = tmp_path / "lstm.amber"
    info = amber.save(model, path, sample=x)
    out = info.manifest["signature"]["outputs"]["predict"]
    assert out["kind"] == "sequence" and out["items"][1]["kind"] == "sequence"
    assert amber.verify(path).ok
    got = amber.predict(amber.load(path), x)
    assert isinstance(got, tuple) and isinstance(got[1], tuple) and got[1][0].shape == (1, 3, 6)


def test_an_honest_module_saved_by_class_beyond_a_size_bound(tmp_path: Path) -> None:
    """An integer constructor argument beyond the weights' count and 4096 (here an
    AdaptiveAvgPool1d's output size) is how a forged file asked for minutes of building; an
    honest module like it saves with a warning and loads only when trusted."""
    model = torch.nn.AdaptiveAvgPool1d(5000)
    path = tmp_path / "pool.amber"
    with pytest.warns(UserWarning, match=r"constructor argument of 5000.*allow_arbitrary_code"):
        amber.save(model, path)
    with pytest.raises(FormatError, match="constructor argument of 5000"):
        amber.load(path)
    with pytest.warns(UnsafeLoadWarning, match="beyond Amber's size bounds"):
        loaded = amber.load(path, allow_arbitrary_code=True)
    assert isinstance(loaded, torch.nn.AdaptiveAvgPool1d) and loaded.output_size == 5000


def test_a_transformer_layer_exports_and_verifies_within_a_tolerance(tmp_path: Path) -> None:
    """Its program's symbolic sizes nest symbols in products (refused before), and the
    exported attention differs from the eager fast path in the last bits: the probe then
    compares within a tolerance, as for a SavedModel."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0).eval()
    x = np.random.default_rng(0).normal(size=(2, 5, 16)).astype(np.float32)
    path = tmp_path / "t.amber"
    info = amber.save(layer, path, sample=x)
    assert info.manifest["payload"]["rebuild"] == "export"
    amber.verify(path)
    with torch.no_grad():
        want = layer(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(amber.predict(amber.load(path), x), want, rtol=1e-5, atol=1e-6)


def test_recurrent_and_sliced_exports_load_and_verify(tmp_path: Path) -> None:
    """An open-ended slice stores its end as 2**63 - 1, which a first size check read as an
    allocation: every GRU, LSTM and x[:, 1:] export was saved and then refused."""

    class Tail(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(4, 3, batch_first=True)

        def forward(self, x: Any) -> Any:
            out, _ = self.rnn(x)
            return out[:, 1:].mean(1)

    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(2, 6, 4)).astype(np.float32)
    path = tmp_path / "gru.amber"
    amber.save(Tail().eval(), path, sample=x)
    amber.verify(path)
    assert amber.load(path) is not None


@pytest.mark.parametrize(
    ("old", "new", "what"),
    [
        (b'"as_int": 3}', b'"as_int": 20000000}', "one_hot"),  # 4 GB for a few rows
        (b'"as_ints": [0, 1]', b'"as_ints": [0, 400000000]', "pad"),  # a product of 0
    ],
)
def test_size_arguments_of_other_operators_are_bounded(
    tmp_path: Path, old: bytes, new: bytes, what: str
) -> None:
    class Spread(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(X.shape[1], 1)

        def forward(self, x: Any) -> Any:
            hot = torch.nn.functional.one_hot(x[:, 0].long().clamp(0, 2), 3).float()
            return torch.nn.functional.pad(self.lin(x) + hot.sum(1, keepdim=True), (0, 1))

    path = tmp_path / "s.amber"
    amber.save(Spread(), path, sample=X[:4])
    assert amber.load(path) is not None
    raw = path.read_bytes()
    with ArtifactReader(path) as reader:
        assert old in bytes(reader.read("model/program.json"))
    path.write_bytes(raw)
    rewrite(path, "model/program.json", lambda b: b.replace(old, new))
    with pytest.raises(FormatError, match=rf"aten\.{what}.* asks for"):
        amber.load(path)
