"""Keras 3: the native ``.keras`` format (a zip of ``config.json``, metadata and weights).

The ``.keras`` bytes are one entry, ``model/model.keras``. Before loading, Amber reads its
``config.json`` and lists every class and function it names: Keras's own (modules ``keras.*``)
are built in; any other (a custom layer) must be named in ``trusted=[...]``, and is then imported
and handed to Keras as a custom object. Keras loads with ``safe_mode=True``, which refuses
``Lambda`` layers holding Python bytecode; only ``allow_arbitrary_code=True`` turns it off (and
warns). ``format="savedmodel"`` goes to the ``tensorflow`` handler instead.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from amber.artifact._reader import ArtifactReader
from amber.artifact._writer import ArtifactWriter
from amber.errors import FormatError
from amber.handlers._base import SavedPayload
from amber.handlers._common import check_trusted, import_trusted, installed, type_name
from amber.security._policy import LoadPolicy

__all__ = ["HANDLER", "KerasHandler", "keras_predict", "referenced_names"]

_ENTRY = "model/model.keras"
_BUILTIN_ROOTS = frozenset({"keras", "keras_hub", "keras_nlp", "keras_cv"})
_LAMBDA = "keras.layers.Lambda (Python bytecode)"


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("class_name"), str) and isinstance(node.get("module"), str):
            yield node
        for v in node.values():
            yield from _objects(v)
    elif isinstance(node, list):
        for v in node:
            yield from _objects(v)


def referenced_names(config: Any) -> tuple[list[str], list[str], dict[str, str]]:
    """(every name the config references, those outside Keras, registered name -> name)."""
    names: list[str] = []
    foreign: list[str] = []
    registered: dict[str, str] = {}
    for obj in _objects(config):
        module, cls = obj["module"], obj["class_name"]
        if cls == "__lambda__" or (cls == "Lambda" and "function" in obj.get("config", {})):
            name = _LAMBDA
        elif cls == "function":
            name = f"{module}.{obj.get('config')}"
        else:
            name = f"{module}.{cls}"
        if name not in names:
            names.append(name)
        if module.split(".")[0] not in _BUILTIN_ROOTS and name != _LAMBDA:
            if name not in foreign:
                foreign.append(name)
            reg = obj.get("registered_name")
            registered[reg if isinstance(reg, str) and reg else cls] = name
    return names, foreign, registered


def _config_of(data: Any) -> Any:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return json.loads(zf.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise FormatError(f"{_ENTRY} is not a readable .keras archive: {exc}") from exc


def keras_predict(model: Any, inputs: Any) -> Any:
    """Numpy in, numpy out: one forward pass in inference mode (no ``model.predict`` loop)."""
    out = model(inputs, training=False)
    if isinstance(out, (list, tuple)):
        return type(out)(keras.ops.convert_to_numpy(o) for o in out)
    if isinstance(out, dict):
        return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    return np.asarray(keras.ops.convert_to_numpy(out))


def distributions() -> tuple[str, ...]:
    return installed("keras", "tensorflow", "tensorflow-cpu")


class KerasHandler:
    name = "keras"
    module_roots: tuple[str, ...] = ("keras",)
    formats: tuple[str, ...] = ("keras",)

    def matches(self, obj: Any) -> bool:
        return isinstance(obj, keras.Model)

    def save(self, obj: Any, writer: ArtifactWriter, *, format: str = "keras") -> SavedPayload:
        from keras.src.saving import saving_lib

        buf = io.BytesIO()
        saving_lib.save_model(obj, buf)
        data = buf.getbuffer()
        names, foreign, _ = referenced_names(_config_of(data))
        writer.add(_ENTRY, data)
        return SavedPayload(
            payload={"kind": "keras", "format": "keras", "entry": _ENTRY},
            framework="keras",
            object_type=type_name(obj),
            globals=tuple(names),
            modules=("keras",),
            untrusted=tuple(foreign) + ((_LAMBDA,) if _LAMBDA in names else ()),
            distributions=distributions(),
        )

    def load(self, reader: ArtifactReader, payload: dict[str, Any], *, policy: LoadPolicy) -> Any:
        from keras.src.saving import saving_lib

        if payload.get("entry") != _ENTRY:
            raise FormatError(f"malformed keras payload: entry {payload.get('entry')!r}")
        data = reader.read(_ENTRY)
        names, foreign, registered = referenced_names(_config_of(data))
        source = str(reader.path)
        if _LAMBDA in names and not policy.allow_arbitrary_code:
            raise FormatError(
                f"{source} holds a Keras Lambda layer, whose Python bytecode would run on "
                f"load; Keras's safe mode refuses it. Only for a file you made yourself: "
                f"amber.load(..., allow_arbitrary_code=True)"
            )
        check_trusted(foreign, [], policy, source=source)
        custom = {
            reg: import_trusted(name, [], policy, source=source) for reg, name in registered.items()
        }
        safe = not policy.allow_arbitrary_code
        if not safe:
            policy.warn_if_unsafe(f"{source} (Keras safe_mode=False)")
        return saving_lib.load_model(
            io.BytesIO(data), custom_objects=custom or None, compile=True, safe_mode=safe
        )

    def probe_methods(self, model: Any) -> dict[str, Callable[[Any], Any]]:
        return {"predict": lambda x: self.predict(model, x)}

    def predict(self, model: Any, inputs: Any) -> Any:
        return keras_predict(model, inputs)


HANDLER = KerasHandler()
