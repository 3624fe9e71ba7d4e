"""Keras 3 native format (safe mode, audited config) and TensorFlow SavedModel.

TensorFlow takes seconds to import on the reference machine, so this module keeps to a few tests
sharing one tiny model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from _cases import forge_entry  # noqa: E402

import amber  # noqa: E402
from amber.errors import FormatError, UnsafeLoadWarning, UntrustedTypeError  # noqa: E402

X = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)


@keras.saving.register_keras_serializable(package="amber_tests")
class Doubler(keras.layers.Layer):
    def call(self, x: Any) -> Any:
        return x * 2.0


@pytest.fixture(scope="module")
def model() -> Any:
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(2)]
    )
    m.compile(optimizer="sgd", loss="mse")
    m.fit(X, X[:, :2], epochs=1, verbose=0)
    return m


def test_native_format_round_trip_is_exact(tmp_path: Path, model: Any) -> None:
    path = tmp_path / "k.amber"
    info = amber.save(model, path, sample=X[:4])
    assert info.handler == "keras" and "keras.layers.Dense" in info.globals
    assert info.environment["packages"]["keras"] == keras.__version__
    loaded = amber.load(path, probe="always")
    assert isinstance(loaded, keras.Model)
    np.testing.assert_array_equal(loaded(X).numpy(), model(X).numpy())


def test_custom_layers_need_trust_and_lambdas_need_arbitrary_code(tmp_path: Path) -> None:
    custom = keras.Sequential([keras.Input((4,)), Doubler()])
    path = tmp_path / "c.amber"
    with pytest.warns(UserWarning, match="Doubler"):
        amber.save(custom, path)
    with pytest.raises(UntrustedTypeError, match=r"test_keras_tf\.Doubler"):
        amber.load(path)
    loaded = amber.load(path, trusted=["test_keras_tf.Doubler"])
    np.testing.assert_array_equal(amber.predict(loaded, X), X * 2)

    lam = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x + 1)])
    path = tmp_path / "lam.amber"
    with pytest.warns(UserWarning, match="Lambda") as warned:
        amber.save(lam, path)
    text = str(warned[0].message)  # Python bytecode: never offered to trusted=
    assert "trusted=" not in text.split("allowlist")[1][:60] and "allow_arbitrary_code" in text
    with pytest.raises(FormatError, match=r"Lambda layer.*allow_arbitrary_code=True"):
        amber.load(path)
    with pytest.warns(UnsafeLoadWarning, match="safe_mode=False"):
        loaded = amber.load(path, allow_arbitrary_code=True)
    np.testing.assert_array_equal(amber.predict(loaded, X), X + 1)


def _forge_keras_files(path: Path, changes: dict[str, Callable[[bytes], bytes]]) -> None:
    """Re-write files inside the .keras entry (digests recomputed: a forged file)."""
    import io
    import zipfile

    def rezip(raw: bytes) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(raw)) as old, zipfile.ZipFile(out, "w") as new:
            for item in old.infolist():
                data = old.read(item)
                new.writestr(item, changes.get(item.filename, lambda b: b)(data))
        return out.getvalue()

    forge_entry(path, "model/model.keras", rezip)


def _forge_keras_config(path: Path, change: Any) -> None:
    """Re-write the .keras entry's config.json (a forged file)."""
    import json

    _forge_keras_files(path, {"config.json": lambda b: json.dumps(change(json.loads(b))).encode()})


def _repeat_forged(path: Path, n: int) -> Path:
    """A saved RepeatVector(3) model whose config then asks for RepeatVector(n)."""
    repeat = keras.Sequential(
        [keras.Input((4,)), keras.layers.RepeatVector(3), keras.layers.GlobalAveragePooling1D()]
    )
    amber.save(repeat, path)

    def many(config: dict[str, Any]) -> dict[str, Any]:
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "RepeatVector":
                layer["config"]["n"] = n
        return config

    _forge_keras_config(path, many)
    return path


def test_a_class_defined_in_a_script_needs_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keras records no module for a class of ``__main__`` (a script, a notebook): it is still
    a class from outside Keras, named ``__main__.Name``, and must be trusted."""
    import sys

    class Tripler(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return x * 3.0

    Tripler.__module__ = "__main__"
    Tripler.__qualname__ = "Tripler"
    monkeypatch.setattr(sys.modules["__main__"], "Tripler", Tripler, raising=False)
    path = tmp_path / "main.amber"
    with pytest.warns(UserWarning, match=r"__main__\.Tripler"):
        info = amber.save(keras.Sequential([keras.Input((4,)), Tripler()]), path)
    assert "__main__.Tripler" in info.manifest["untrusted"]
    with pytest.raises(UntrustedTypeError, match=r"__main__\.Tripler"):
        amber.load(path)
    loaded = amber.load(path, trusted=["__main__.Tripler"])
    np.testing.assert_allclose(amber.predict(loaded, X), X * 3)
    monkeypatch.delattr(sys.modules["__main__"], "Tripler")
    with pytest.raises(FormatError, match="define it in this script"):
        amber.load(path, trusted=["__main__.Tripler"])


def _set(path: list[Any], value: Any) -> Any:
    """A change to a Keras config: ``value`` at ``path`` (keys and list indices)."""

    def change(config: dict[str, Any]) -> dict[str, Any]:
        node: Any = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return config

    return change


_LAYER = ["config", "layers", 1]
_TYPE_SPEC = {
    "class_name": "__typespec__",
    "spec_name": "Spec",
    "module": "tensorflow",
    "config": [[1, 2], "float32"],
    "registered_name": "amber_tests>Doubler",
}


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        (_set([*_LAYER, "registered_name"], "amber_tests>Doubler"), r"test_keras_tf\.Doubler"),
        (_set([*_LAYER, "module"], None), r"__main__\.Dense"),
        # a bare string is looked up in the registry too
        (_set(["compile_config", "loss"], "amber_tests>Doubler"), r"test_keras_tf\.Doubler"),
        (_set(["compile_config", "loss_weights"], _TYPE_SPEC), r"test_keras_tf\.Doubler"),
    ],
    ids=["registered-name", "no-module", "string", "type-spec"],
)
def test_a_registered_class_is_trusted_by_what_keras_would_build(
    tmp_path: Path, model: Any, change: Any, refused: str
) -> None:
    """Keras builds what its registry holds under a node's registered name before it looks at
    the node's module: a file claiming module keras.layers for a registered class from
    elsewhere must not pass as Keras's own."""
    path = tmp_path / "k.amber"
    amber.save(model, path)
    _forge_keras_config(path, change)
    with pytest.raises(UntrustedTypeError, match=refused):
        amber.load(path)


def test_a_model_of_several_inputs_and_named_outputs_keeps_its_probe(tmp_path: Path) -> None:
    """Inputs of one shape come back as a list of arrays (not one stacked array read back as
    nested lists), and a dict of named outputs is stored and compared key by key."""
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    summed = keras.layers.Add()([a, b])
    model = keras.Model([a, b], {"s": summed, "y": keras.layers.Dense(2)(summed)})
    path = tmp_path / "multi.amber"
    info = amber.save(model, path, sample=[X[:5], 2 * X[:5]])
    probe = info.manifest["probe"]
    assert probe["input"]["kind"] == "sequence" and len(probe["input"]["items"]) == 2
    assert probe["outputs"]["predict"]["kind"] == "mapping"
    assert probe["outputs"]["predict"]["keys"] == ["s", "y"]
    assert "predict: identical" in str(amber.verify(path).probe)
    loaded = amber.load(path, probe="always")
    np.testing.assert_array_equal(amber.predict(loaded, [X, X])["s"], 2 * X)


def test_savedmodel_inside_the_artifact_and_from_a_folder(tmp_path: Path, model: Any) -> None:
    path = tmp_path / "sm.amber"
    info = amber.save(model, path, sample=X[:4], format="savedmodel")
    assert info.handler == "tensorflow"
    assert "model/savedmodel/saved_model.pb" in info.manifest["entries"]
    assert info.manifest["probe"]["exact"] is False  # another program: a stated tolerance
    loaded = amber.load(path, probe="always")
    assert "serving_default" in loaded.signatures
    np.testing.assert_allclose(amber.predict(loaded, X), model(X).numpy(), rtol=1e-5, atol=1e-6)

    folder = tmp_path / "exported"
    model.export(str(folder), verbose=False)
    for wrapped in (amber.load_savedmodel_dir(folder), amber.load(folder)):
        np.testing.assert_allclose(amber.predict(wrapped, X), model(X).numpy(), rtol=1e-5)
    # a wrapped folder saves as an artifact too
    again = amber.save(amber.load(folder), tmp_path / "again.amber", sample=X[:4])
    assert again.handler == "tensorflow"
    with pytest.raises(FormatError, match="not a TensorFlow SavedModel folder"):
        amber.load_savedmodel_dir(tmp_path)


def test_a_graph_that_reads_files_is_refused(tmp_path: Path) -> None:
    class Reader(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x: Any) -> Any:
            tf.io.read_file("/etc/hostname")
            return x

    path = tmp_path / "r.amber"
    with pytest.warns(UserWarning, match="ReadFile"):
        amber.save(Reader(), path)
    with pytest.raises(UntrustedTypeError, match=r"tf\.raw_ops\.ReadFile"):
        amber.load(path)
    assert amber.load(path, trusted=["tf.raw_ops.ReadFile"]) is not None
    folder = tmp_path / "reader"
    tf.saved_model.save(Reader(), str(folder))
    with pytest.raises(UntrustedTypeError, match=r"tf\.raw_ops\.ReadFile"):
        amber.load_savedmodel_dir(folder)
    assert amber.load(folder, trusted=["tf.raw_ops.ReadFile"]) is not None


def _reads_lines(path: str) -> Any:
    lines = tf.data.TextLineDataset(path)
    return lines.reduce(tf.constant(""), lambda acc, line: acc + line)


def _writes_summary(path: str) -> Any:
    writer = tf.raw_ops.SummaryWriter(shared_name="amber-test")  # made in the graph
    tf.raw_ops.CreateSummaryFileWriter(
        writer=writer, logdir=path, max_queue=1, flush_millis=0, filename_suffix=""
    )
    return tf.constant("")


def _writes_checkpoint(path: str) -> Any:
    tf.raw_ops.SaveV2(
        prefix=path, tensor_names=["x"], shape_and_slices=[""], tensors=[tf.constant(1.0)]
    )
    return tf.constant("")


def _remaps_vocabulary(path: str) -> Any:
    remap, _ = tf.raw_ops.GenerateVocabRemapping(
        new_vocab_file=path, old_vocab_file=path, new_vocab_offset=0, num_new_vocab=1
    )  # reads both files: the output depended on /etc/hostname
    return tf.strings.as_string(remap[0])


def _toucher(touch: Callable[[str], Any], target: str) -> Any:
    """A tf.Module whose serving function passes its input through and calls ``touch``."""

    class Toucher(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x: Any) -> Any:
            return {"x": x, "s": tf.fill([tf.shape(x)[0]], touch(target))}

    return Toucher()


@pytest.mark.parametrize(
    ("touch", "op"),
    [
        (_remaps_vocabulary, "GenerateVocabRemapping"),
        (_reads_lines, "TextLineDataset"),
        (_writes_summary, "CreateSummaryFileWriter"),
        (_writes_checkpoint, "SaveV2"),  # allowed only in the saver's own functions
    ],
)
def test_graphs_reaching_files_through_datasets_summaries_or_checkpoints_are_refused(
    tmp_path: Path, touch: Callable[[str], Any], op: str
) -> None:
    """The op check was a list of six file ops: datasets read /etc/hostname into a model's
    output, summary writers and checkpoint ops wrote files, from an honest amber.save."""
    target = str(tmp_path / "touched")
    path = tmp_path / "t.amber"
    with pytest.warns(UserWarning, match=op):
        amber.save(_toucher(touch, target), path)
    assert f"tf.raw_ops.{op}" in amber.inspect(path).manifest["untrusted"]
    with pytest.raises(UntrustedTypeError, match=rf"tf\.raw_ops\.{op}"):
        amber.load(path)
    assert not list(tmp_path.glob("touched*"))


def test_a_plain_model_and_its_saver_pass_the_op_check(tmp_path: Path, model: Any) -> None:
    from amber.handlers.tensorflow import denied_ops

    folder = tmp_path / "plain"
    model.export(str(folder), verbose=False)  # its saver functions hold SaveV2 and RestoreV2
    assert denied_ops(folder) == set()


def test_a_layer_larger_than_its_weights_is_refused(tmp_path: Path, model: Any) -> None:
    """A 20 kB config asking for Dense(units=2**26) made Keras allocate 4.2 GB before any
    weight was read."""

    def huge(config: dict[str, Any]) -> dict[str, Any]:
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "Dense":
                layer["config"]["units"] = 2**26
        return config

    path = tmp_path / "k.amber"
    amber.save(model, path)
    _forge_keras_config(path, huge)
    with pytest.raises(FormatError, match=r"units=67108864, more than the"):
        amber.load(path)
    # and an activation's size: RepeatVector(n=6,000,000) took 3.8 GB at predict
    path = _repeat_forged(tmp_path / "r.amber", 6_000_000)
    with pytest.raises(FormatError, match=r"n=6000000, more than the"):
        amber.load(path)
    # Resizing to 16000x16000 took 7.9 GB at predict: height and width count together
    resize = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Resizing(16, 16)])
    path = tmp_path / "z.amber"
    amber.save(resize, path)

    def larger(config: dict[str, Any]) -> dict[str, Any]:
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "Resizing":
                layer["config"].update(height=16000, width=16000)
        return config

    _forge_keras_config(path, larger)
    with pytest.raises(FormatError, match=r"height=16000, more than the"):
        amber.load(path)


def test_honest_layers_with_large_activation_sizes_load(tmp_path: Path) -> None:
    """Audio-length reshapes and long repeats are within the activation bound (the first
    bound of 4096 refused them)."""
    audio = keras.Sequential(
        [
            keras.Input((16000,)),
            keras.layers.Reshape((16000, 1)),
            keras.layers.Conv1D(2, 3),
            keras.layers.GlobalAveragePooling1D(),
        ]
    )
    repeat = keras.Sequential(
        [keras.Input((4,)), keras.layers.RepeatVector(5000), keras.layers.GlobalAveragePooling1D()]
    )
    for k, (net, x) in enumerate(
        [(audio, np.ones((2, 16000), "float32")), (repeat, np.ones((2, 4), "float32"))]
    ):
        path = tmp_path / f"{k}.amber"
        amber.save(net, path, sample=x)
        np.testing.assert_allclose(amber.predict(amber.load(path), x), net(x).numpy(), rtol=1e-6)


def test_an_honest_layer_beyond_the_activation_bound_loads_only_when_trusted(
    tmp_path: Path,
) -> None:
    """RepeatVector(n=2**22 + 8) is past the bound a forged config is held to: the save says
    loading will need allow_arbitrary_code=True, the plain load refuses it (saying so), and the
    trusting load warns and gives back the same layers."""
    n = 2**22 + 8
    net = keras.Sequential(
        [keras.Input((1,)), keras.layers.RepeatVector(n), keras.layers.GlobalAveragePooling1D()]
    )
    path = tmp_path / "long.amber"
    with pytest.warns(UserWarning, match=rf"n={n}.*will need allow_arbitrary_code=True"):
        amber.save(net, path)
    with pytest.raises(FormatError, match=rf"n={n}.*Only if you made it yourself"):
        amber.load(path)
    with pytest.warns(UnsafeLoadWarning) as caught:  # and Keras's safe_mode=False, as ever
        loaded = amber.load(path, allow_arbitrary_code=True)
    assert any("beyond Amber's size bounds" in str(w.message) for w in caught)
    assert loaded.layers[0].n == n


def test_a_multi_input_keras_model_exported_as_savedmodel_verifies(tmp_path: Path) -> None:
    """A SavedModel's serving signature of several inputs was refused by amber.predict ("passes
    one array"), so such a Keras model saved with format="savedmodel" failed verify: inputs
    go by name (a dict) or in the model's order (a list), and Keras's list of outputs comes
    back as a list."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6)).astype("float32")
    z = rng.normal(size=(4, 3)).astype("float32")
    # named against alphabetical order: a signature keeps its inputs' names, not their order
    first, second = keras.Input((6,), name="zeta"), keras.Input((3,), name="alpha")
    joined = keras.layers.Concatenate()([keras.layers.Dense(4)(first), second])
    outputs = [keras.layers.Dense(1)(joined), keras.layers.Dense(2)(joined)]
    by_list = keras.Model([first, second], outputs)
    by_name = keras.Model({"zeta": first, "alpha": second}, outputs)
    for k, (net, sample) in enumerate([(by_list, [x, z]), (by_name, {"zeta": x, "alpha": z})]):
        path = tmp_path / f"m{k}.amber"
        amber.save(net, path, sample=sample, format="savedmodel")
        assert amber.verify(path).ok
        loaded = amber.load(path)
        want = net(sample)
        calls = [sample] + ([[x, z], {"zeta": x, "alpha": z}] if k == 0 else [])
        for got in (amber.predict(loaded, given) for given in calls):
            assert isinstance(got, list) and len(got) == 2
            for a, b in zip(got, want, strict=True):
                np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match=r"takes 2 inputs .*pass a dict by those names"):
        amber.predict(loaded, x)


def test_multi_input_savedmodels_whose_inputs_cannot_be_matched_are_refused_at_save(
    tmp_path: Path,
) -> None:
    """TF renames an input 'in-a' to 'in_a' when it loads the SavedModel, and a subclassed
    model's inputs have no names: a list of inputs could not be matched to the signature, and
    verify failed on an honest model. The save says so instead; one input in a list is fine."""
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(4, 6)).astype("float32") for _ in range(2))
    i1, i2 = keras.Input((6,), name="in-a"), keras.Input((6,), name="in-b")
    dashed = keras.Model([i1, i2], keras.layers.Concatenate()([i1, i2]))
    with pytest.raises(TypeError, match=r"named .* with letters, digits and '_'"):
        amber.save(dashed, tmp_path / "d.amber", sample=[a, b], format="savedmodel")
    assert not (tmp_path / "d.amber").exists()
    one = keras.Input((6,))
    single = keras.Model([one], keras.layers.Dense(2)(one))  # takes a list of one array
    path = tmp_path / "s.amber"
    amber.save(single, path, sample=[a], format="savedmodel")
    assert amber.verify(path).ok


def test_a_saver_def_pointed_at_the_serving_function_exempts_nothing(tmp_path: Path) -> None:
    """Save and restore ops are allowed in the saver's own functions; a forged saver_def
    naming the node that calls the serving function must not make its SaveV2 the saver's."""
    from tensorflow.core.protobuf import saved_model_pb2

    from amber.handlers.tensorflow import _called, denied_ops

    folder = tmp_path / "sm"
    tf.saved_model.save(_toucher(_writes_checkpoint, str(tmp_path / "touched")), str(folder))
    assert "SaveV2" in denied_ops(folder)
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((folder / "saved_model.pb").read_bytes())
    graph = sm.meta_graphs[0].graph_def
    serving = next(n.name for n in graph.node if any("signature_wrapper" in f for f in _called(n)))
    sm.meta_graphs[0].saver_def.restore_op_name = serving
    (folder / "saved_model.pb").write_bytes(sm.SerializeToString())
    assert "SaveV2" in denied_ops(folder)


def test_op_families_that_reach_outside_the_graph_are_denied() -> None:
    from amber.handlers.tensorflow import denied_op

    reaching = [
        "ReadFile", "TextLineDataset", "InitializeTableFromTextFileV2", "WriteScalarSummary",
        "SaveV2", "DistributedSave", "RestoreV2", "PyFunc", "PrintV2", "Abort",
        "DecodeProtoV2", "RemoteCall", "_Send", "CollectiveReduceV2", "GenerateVocabRemapping",
        "FixedUnigramCandidateSampler", "RecordInput",
    ]  # fmt: skip
    assert all(denied_op(op) for op in reaching)
    plain = ["MatMul", "BiasAdd", "Relu", "ReadVariableOp", "StatefulPartitionedCall", "While"]
    assert not any(denied_op(op) for op in plain)


def test_declared_but_unwritten_weights_do_not_lift_the_size_bounds(tmp_path: Path) -> None:
    """A never-written chunked dataset of (1e6, 1e6) in a 23 kB weights file declared 1e12
    elements and lifted every bound (RepeatVector(n=50,000,000) took 3.9 GB)."""
    import io

    import h5py

    path = _repeat_forged(tmp_path / "r.amber", 50_000_000)

    def padded(raw: bytes) -> bytes:
        buffer = io.BytesIO(raw)
        with h5py.File(buffer, "a") as weights:
            weights.create_dataset("pad", shape=(10**6, 10**6), dtype="f4", chunks=True)
        return buffer.getvalue()

    _forge_keras_files(path, {"model.weights.h5": padded})
    with pytest.raises(FormatError, match=r"n=50000000, more than the 0 stored"):
        amber.load(path)
