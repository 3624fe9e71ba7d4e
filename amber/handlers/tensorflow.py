"""TensorFlow SavedModel: a Keras model (``model.export``) or a ``tf.Module``
(``tf.saved_model.save``) stored as a SavedModel folder inside the artifact.

Each file of the folder is an entry under ``model/savedmodel/``. Loading writes them to a
private temporary folder, calls ``tf.saved_model.load`` and removes the folder; the model is
called through its ``serving_default`` signature. A SavedModel holds graphs, not Python code,
so loading runs none; but graph ops can touch files (or the network, or Python) when the model
is called, or when a resource's initializer runs inside ``tf.saved_model.load``. Amber refuses
graphs that use any such op (``denied_op``: files, datasets and readers, summaries,
checkpoints, printing, debugging, Python callbacks, send/receive, collectives, TPU), except the
save and restore ops of the functions that the SavedModel's own saver calls.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import tensorflow as tf

from amber.artifact._reader import ArtifactReader
from amber.artifact._writer import ArtifactWriter
from amber.errors import FormatError, UntrustedTypeError
from amber.handlers._base import SavedPayload
from amber.handlers._common import type_name
from amber.handlers.keras import distributions, keras_predict
from amber.security._policy import LoadPolicy

__all__ = ["HANDLER", "TensorFlowHandler", "denied_op"]

_ROOT = "model/savedmodel/"
SIGNATURE = "serving_default"
# Op types that reach outside the graph: a name pattern rather than a list, so that the many
# dataset, reader and summary ops (TextLineDataset, FixedLengthRecordDataset, DatasetToTFRecord,
# InitializeTableFromTextFileV2, CreateSummaryFileWriter, ...) and their later versions are
# all covered. An inference graph uses none of them.
_DENIED = re.compile(
    r"Dataset|Iterator|Reader|File|Summary|Writer|Checkpoint|^Save|^Restore|Sharded|PyFunc"
    r"|Print|^Debug|ImmutableConst|^Load|^_?(Host)?(Send|Recv)$|^Collective|TPU|Rpc|DataService"
    # Abort ends the process; the proto codecs take a descriptor file path; a distributed
    # save writes files; a remote call runs a function elsewhere
    r"|^Abort$|Proto|Save|RemoteCall|ImportEvent"
    # vocabulary files, record files, thread pools, cluster heartbeats
    r"|^GenerateVocabRemapping$|^FixedUnigramCandidateSampler$|^RecordInput$|ThreadPool"
    r"|WorkerHeartbeat"
)
# An attribute naming a file, whatever the op (an op the pattern does not know)
_FILE_ATTRS = re.compile(r"file|path|directory|logdir", re.IGNORECASE)
# What a SavedModel's own saver functions use (its variables' checkpoint), allowed there only.
_SAVER_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename"})


def denied_op(op: str) -> bool:
    """Whether a graph op type can touch files, the network or Python."""
    return bool(_DENIED.search(op))


def _names_a_file(node: Any) -> bool:
    """Whether a node has a non-empty string attribute named like a file or path."""
    for key, value in node.attr.items():
        if _FILE_ATTRS.search(key) and (value.s or any(value.list.s)):
            return True
    return False


def _refused(node: Any) -> bool:
    return denied_op(node.op) or _names_a_file(node)


# The reloaded graph is not the Keras code that produced the probe: same maths, other kernels.
PARITY = {"exact": False, "rtol": 1e-5, "atol": 1e-6}


def _is_keras(obj: Any) -> bool:
    import keras

    return isinstance(obj, keras.Model)


def _called(node: Any) -> list[str]:
    """The functions a node calls (``f`` of a call, the branches of ``If``, ``While``, ...)."""
    names = []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names.extend(f.name for f in value.list.func)
    return names


def _reachable(functions: dict[str, Any], roots: list[str]) -> set[str]:
    """The functions ``roots`` name and every function they call, transitively."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in functions and name not in seen:
            seen.add(name)
            todo.extend(f for n in functions[name].node_def for f in _called(n))
    return seen


def denied_ops(folder: Path) -> set[str]:
    """The op types in the SavedModel's graphs that ``denied_op`` refuses.

    The save and restore ops are allowed in the functions only the saver calls (the nodes its
    ``saver_def`` names, and what they call), where every SavedModel has them; anywhere else,
    and every other denied op anywhere, counts. A TF1 SavedModel keeps its saver in the graph
    itself, so its save and restore ops count: such a model needs them trusted.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString((folder / "saved_model.pb").read_bytes())
    except Exception as exc:
        raise FormatError(f"{folder}/saved_model.pb is not a SavedModel protobuf: {exc}") from exc
    found: set[str] = set()
    for mg in sm.meta_graphs:
        graph = mg.graph_def
        functions = {fn.signature.name: fn for fn in graph.library.function}
        reach = functools.partial(_reachable, functions)

        saver_nodes = {
            name.split(":")[0].lstrip("^")
            for name in (mg.saver_def.save_tensor_name, mg.saver_def.restore_op_name)
            if name
        }
        # what a load or a call can run: the object graph's functions (signatures, resource
        # initializers) and every other node of the graph. A function the saver shares with
        # them is not the saver's: a saver_def pointed at a serving function exempts nothing.
        runs = reach(
            [*mg.object_graph_def.concrete_functions]
            + [f for n in graph.node if n.name not in saver_nodes for f in _called(n)]
        )
        saver = reach([f for n in graph.node if n.name in saver_nodes for f in _called(n)]) - runs
        # in the graph itself (a TF1 SavedModel's saver and init ops) nothing is exempt
        found.update(n.op for n in graph.node if _refused(n))
        for name, fn in functions.items():
            allowed = _SAVER_OPS if name in saver else frozenset()
            found.update(n.op for n in fn.node_def if _refused(n) and n.op not in allowed)
    return found


def _check_ops(folder: Path, source: str, policy: LoadPolicy) -> None:
    bad = sorted(denied_ops(folder))
    if not bad or policy.allow_arbitrary_code:
        return
    refused = [f"tf.raw_ops.{op}" for op in bad if ("tf.raw_ops", op) not in policy.trusted]
    if refused:
        raise UntrustedTypeError(refused, source=source)


class TensorFlowHandler:
    name = "tensorflow"
    module_roots: tuple[str, ...] = ("tensorflow", "keras")
    formats: tuple[str, ...] = ("savedmodel",)

    def matches(self, obj: Any) -> bool:
        return isinstance(obj, tf.Module) or _is_keras(obj) or hasattr(obj, "signatures")

    def save(self, obj: Any, writer: ArtifactWriter, *, format: str = "savedmodel") -> SavedPayload:
        with tempfile.TemporaryDirectory(prefix="amber-savedmodel-") as tmp:
            folder = Path(tmp) / "m"
            order: list[str] = []
            if _is_keras(obj):
                obj.export(str(folder), format="tf_saved_model", verbose=False)
                order = _keras_input_order(obj, folder)
            else:
                signatures = getattr(obj, "signatures", None)
                tf.saved_model.save(obj, str(folder), signatures=dict(signatures or {}) or None)
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            names = []
            for p in files:
                rel = p.relative_to(folder).as_posix()
                try:
                    writer.add(_ROOT + rel, p.read_bytes())
                except ValueError as exc:
                    raise ValueError(
                        f"the SavedModel file {rel!r} cannot be stored: {exc}; rename the "
                        f"asset to letters, digits, '_', '-' and '.'"
                    ) from exc
                names.append(rel)
            ops = sorted(denied_ops(folder))
        payload = {"kind": "savedmodel", "root": _ROOT, "files": names, "signature": SIGNATURE}
        if order:
            payload["inputs"] = order
        return SavedPayload(
            payload=payload,
            framework="tensorflow",
            object_type=type_name(obj),
            globals=tuple(f"tf.raw_ops.{op}" for op in ops),
            modules=("tensorflow", "keras") if _is_keras(obj) else ("tensorflow",),
            untrusted=tuple(f"tf.raw_ops.{op}" for op in ops),
            distributions=distributions(),
            parity=PARITY,
        )

    def load(self, reader: ArtifactReader, payload: dict[str, Any], *, policy: LoadPolicy) -> Any:
        files = payload.get("files")
        if payload.get("root") != _ROOT or not isinstance(files, list):
            raise FormatError("malformed savedmodel payload")
        with tempfile.TemporaryDirectory(prefix="amber-savedmodel-") as tmp:
            folder = Path(tmp)
            for rel in files:
                if not isinstance(rel, str) or rel.startswith("/") or ".." in rel.split("/"):
                    raise FormatError(f"malformed savedmodel payload: file {rel!r}")
                target = folder / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(reader.read(_ROOT + rel))
            _check_ops(folder, str(reader.path), policy)
            model = tf.saved_model.load(str(folder))
        order = payload.get("inputs")
        if order is not None:
            if (
                not isinstance(order, list)
                or not 1 < len(order) <= 64
                or not all(isinstance(n, str) for n in order)
                or len(set(order)) != len(order)
            ):
                raise FormatError("malformed savedmodel payload: inputs")
            _INPUT_ORDER[model] = tuple(order)
        return model

    def load_dir(self, folder: str | os.PathLike[str], *, policy: LoadPolicy) -> Any:
        """An existing SavedModel folder, with the same op check."""
        path = Path(folder)
        _check_ops(path, str(path), policy)
        return tf.saved_model.load(str(path))

    def probe_methods(self, model: Any) -> dict[str, Callable[[Any], Any]]:
        return {"predict": lambda x: self.predict(model, x)}

    def predict(self, model: Any, inputs: Any) -> Any:
        if _is_keras(model):
            return keras_predict(model, inputs)
        signatures = getattr(model, "signatures", None)
        if signatures is not None and SIGNATURE in signatures:
            fn = signatures[SIGNATURE]
            out = fn(**_signature_inputs(fn, inputs, _INPUT_ORDER.get(model)))
            values = {k: v.numpy() for k, v in out.items()}
            if len(values) == 1:
                return next(iter(values.values()))
            listed = [f"output_{k}" for k in range(len(values))]
            if sorted(values) == sorted(listed):  # a Keras model's list of outputs, exported
                return [values[k] for k in listed]
            return values
        if callable(model):
            out = model(tf.constant(np.asarray(inputs)))
            return out.numpy() if hasattr(out, "numpy") else out
        raise TypeError(
            f"a {type_name(model)} has no {SIGNATURE!r} signature and is not callable; "
            f"export it with a serving signature"
        )


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # an input name TF keeps as it is


def _signature_input_names(folder: Path) -> list[str]:
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((folder / "saved_model.pb").read_bytes())
    for graph in saved.meta_graphs:
        if SIGNATURE in graph.signature_def:
            return list(graph.signature_def[SIGNATURE].inputs.keys())
    return []


def _keras_input_order(model: Any, folder: Path) -> list[str]:
    """The serving signature's input names in the order the Keras model takes a list of them
    (the signature keeps names, not an order); [] for a model of one input or of a dict of
    inputs (taken by name). A model whose inputs the signature names otherwise (TF rewrites
    'in-a' as 'in_a'; a subclassed model's are its own) cannot be matched: refused."""
    names = _signature_input_names(folder)
    if len(names) <= 1:
        return []
    try:
        inputs = list(getattr(model, "inputs", None) or [])
    except (AttributeError, ValueError):  # a subclassed model has no symbolic inputs
        inputs = []
    if isinstance(getattr(model, "_inputs_struct", None), dict):
        keyed = sorted(str(t.name) for t in inputs)
        if keyed == sorted(names) and all(_PLAIN_NAME.fullmatch(n) for n in keyed):
            return []  # a dict of inputs: by name
    order = [str(t.name) for t in inputs]
    plain = all(_PLAIN_NAME.fullmatch(n) for n in order)
    if not plain or sorted(order) != sorted(names):  # TF renames the others when loading
        raise TypeError(
            f"a Keras model of {len(names)} inputs is saved as a SavedModel only when its "
            f"inputs are named (keras.Input(..., name='age')) with letters, digits and '_': "
            f"its serving signature names them {sorted(names)}, which cannot be matched to the "
            f"model's inputs {order or '(a subclassed model: no named inputs)'}. Name them so, "
            f"or save with format='keras'"
        )
    return order


# loaded SavedModel -> its inputs' order, as a Keras model's payload recorded it (for lists of
# inputs); the entry goes with the model
_INPUT_ORDER: weakref.WeakKeyDictionary[Any, tuple[str, ...]] = weakref.WeakKeyDictionary()


def _signature_inputs(fn: Any, inputs: Any, order: tuple[str, ...] | None) -> dict[str, Any]:
    """The serving signature's keyword arguments for ``inputs``: one array for a signature of
    one input; for several, a dict by their names, or a list or tuple in the order the saved
    Keras model takes them (``order``; a signature itself keeps none)."""
    _, kwargs = fn.structured_input_signature
    if len(kwargs) == 1:
        ((name, spec),) = kwargs.items()
        if isinstance(inputs, dict) and list(inputs) == [name]:
            inputs = inputs[name]
        elif (
            isinstance(inputs, (list, tuple))
            and len(inputs) == 1
            and (isinstance(inputs[0], np.ndarray) or hasattr(inputs[0], "numpy"))
        ):
            inputs = inputs[0]  # keras.Model([inp], out) takes a list of one array
        return {name: tf.constant(np.asarray(inputs), dtype=spec.dtype)}
    known = order is not None and sorted(order) == sorted(kwargs)
    if isinstance(inputs, dict) and sorted(inputs) == sorted(kwargs):
        given = inputs
    elif known and isinstance(inputs, (list, tuple)) and len(inputs) == len(kwargs):
        given = dict(zip(cast(tuple[str, ...], order), inputs, strict=True))
    else:
        how = f" or a list of {len(kwargs)} arrays in that order" if known else ""
        names = ", ".join(order) if known and order else ", ".join(sorted(kwargs))
        raise TypeError(
            f"the serving signature takes {len(kwargs)} inputs ({names}): pass a dict by "
            f"those names{how}"
        )
    return {
        name: tf.constant(np.asarray(given[name]), dtype=spec.dtype)
        for name, spec in kwargs.items()
    }


HANDLER = TensorFlowHandler()
