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
import math
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from amber.artifact._reader import ArtifactReader
from amber.artifact._writer import ArtifactWriter
from amber.errors import FormatError
from amber.handlers._base import SavedPayload
from amber.handlers._common import (
    SizeBounds,
    check_trusted,
    import_trusted,
    installed,
    type_name,
)
from amber.security._policy import LoadPolicy, trust_name

__all__ = ["HANDLER", "KerasHandler", "keras_predict", "referenced_names"]

_ENTRY = "model/model.keras"
_BUILTIN_ROOTS = frozenset({"keras", "keras_hub", "keras_nlp", "keras_cv"})
_LAMBDA = "keras.layers.Lambda (Python bytecode)"
# Values Keras serializes under a class_name of its own and rebuilds itself (a tensor, a numpy
# array, bytes, a slice...), never by looking a class up: not objects to trust.
_MARKERS = frozenset(
    {"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"}
)
# A type spec names its class by spec_name and registered_name, looked up in the registry first.
_TYPESPEC = "__typespec__"


def _strings(node: Any) -> Iterator[str]:
    """Every string in a config, keys aside: Keras deserializes a bare string (a loss, a metric,
    an activation) by looking it up among custom objects, its global registry included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every serialized object in a Keras config: a dict naming a ``class_name`` (with its
    ``module``, ``config`` or ``registered_name``), whatever its module says."""
    if isinstance(node, dict):
        if isinstance(node.get("class_name"), str) and (
            "module" in node or "config" in node or "registered_name" in node
        ):
            yield node
        for v in node.values():
            yield from _objects(v)
    elif isinstance(node, list):
        for v in node:
            yield from _objects(v)


def _registered(key: Any) -> Any:
    """What Keras's global registry holds under ``key``: Keras looks there first, before the
    node's module, so a registered class is built whatever module the config names."""
    if not isinstance(key, str) or not key:
        return None
    try:
        return keras.saving.get_registered_object(key)
    except Exception:  # a registry Keras could not search: nothing found there
        return None


def _real_name(obj: Any) -> str:
    return trust_name(str(getattr(obj, "__module__", "?")), str(getattr(obj, "__qualname__", obj)))


def _keras_own(obj: Any) -> bool:
    return str(getattr(obj, "__module__", "")).split(".")[0] in _BUILTIN_ROOTS


def referenced_names(config: Any) -> tuple[list[str], list[str], dict[str, str]]:
    """(every name the config references, those outside Keras, lookup key -> name).

    A class or function is outside Keras when the module the config names is not Keras's, when
    it names no module (Keras writes none for classes defined in ``__main__``: a script or a
    notebook; such a class counts as ``__main__.Name``), or when Keras's registry of custom
    objects holds something outside Keras under the key Keras will look up first. The keys map
    to the names to import once trusted, handed to Keras as custom objects.
    """
    names: list[str] = []
    foreign: list[str] = []
    registered: dict[str, str] = {}

    def mark(name: str, key: str | None = None) -> None:
        """Note ``name``; with ``key`` (the name Keras looks it up by) it is outside Keras."""
        if name not in names:
            names.append(name)
        if key is not None:
            if name not in foreign:
                foreign.append(name)
            registered[key] = name

    for text in sorted(set(_strings(config))):
        hit = _registered(text)
        if hit is not None and not _keras_own(hit):
            mark(_real_name(hit), text)
    for obj in _objects(config):
        module, cls = obj.get("module"), obj["class_name"]
        if cls in _MARKERS:
            continue
        if cls == _TYPESPEC:
            spec_key = obj.get("registered_name") or obj.get("spec_name")
            hit = _registered(spec_key)
            if hit is not None and not _keras_own(hit):
                mark(_real_name(hit), str(spec_key))
            continue
        function = cls == "function"
        # the key Keras's registry is searched with (a missing registered_name means the class)
        key = obj.get("config") if function else obj.get("registered_name", cls)
        hit = _registered(key)
        outside = False
        if cls == "__lambda__" or (cls == "Lambda" and "function" in (obj.get("config") or {})):
            name = _LAMBDA
        elif hit is not None and not _keras_own(hit):
            name, outside = _real_name(hit), True
        elif not isinstance(module, str):
            name, outside = f"__main__.{obj.get('config') if function else cls}", True
        else:
            name = f"{module}.{obj.get('config')}" if function else f"{module}.{cls}"
            outside = module.split(".")[0] not in _BUILTIN_ROOTS
        mark(name, (key if isinstance(key, str) and key else cls) if outside else None)
    return names, foreign, registered


def _config_of(data: Any) -> Any:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return json.loads(zf.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise FormatError(f"{_ENTRY} is not a readable .keras archive: {exc}") from exc


# Layer arguments that size weights: Keras allocates them when it builds the layer, before any
# weight is read (a 20 kB config asking for Dense(units=2**26) took 4.2 GB). Each is bounded by
# the stored weights' element count or 4096.
_SIZES = frozenset(
    {"units", "filters", "kernel_size", "input_dim", "output_dim", "num_heads", "key_dim"}
    | {"value_dim", "depth_multiplier", "intermediate_dim", "hidden_dim", "num_layers"}
    | {"head_dim", "num_query_heads", "num_key_value_heads", "num_bins", "num_mel_bins"}
    | {"num_tokens", "max_tokens", "fft_length"}
)
# Arguments that size activations, per row: RepeatVector(n=6,000,000) took 3.8 GB and
# Resizing to 16000x16000 7.9 GB at predict. A value's ints (a shape, a padding) are bounded
# by their product, height and width together, at 2**22 or the stored weights' count.
_ACTIVATIONS = frozenset(
    {"n", "target_shape", "size", "padding", "cropping", "output_sequence_length"}
    | {"dilation_rate", "strides", "pool_size", "repeats", "output_padding", "sequence_length"}
    | {"frame_length", "height", "width"}
)
_SMALL_INT = 4096
_ROW_ELEMENTS = 2**22


def _stored_elements(data: Any) -> int:
    """How many weight values the archive's ``model.weights.h5`` holds (its metadata only)."""
    import h5py

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            if "model.weights.h5" not in zf.namelist():
                return 0
            raw = zf.read("model.weights.h5")
        total = 0

        def count(_: str, item: Any) -> None:
            # what is stored, not what a dataset declares: a never-written chunked dataset of
            # (1e6, 1e6) in a 23 kB file lifted every bound
            nonlocal total
            if isinstance(item, h5py.Dataset) and item.dtype.itemsize:
                total += int(item.id.get_storage_size()) // item.dtype.itemsize

        with h5py.File(io.BytesIO(raw), "r") as weights:
            weights.visititems(count)
        return total
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FormatError(f"{_ENTRY}'s weights are not a readable HDF5 file: {exc}") from exc


def _ints_in(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _ints_in(item)]
    return []


def _check_sizes(config: Any, stored_elements: Callable[[], int], bounds: SizeBounds) -> None:
    """Refuse a layer whose sizes its stored weights cannot account for (see ``_SIZES`` and
    ``_ACTIVATIONS``). The weights are counted (``stored_elements``: opening the archive's HDF5
    file, 1.6 ms for a small MLP) only when a size passes the floor every model is allowed."""
    counted: list[int] = []

    def stored() -> int:
        if not counted:
            counted.append(stored_elements())
        return counted[0]

    stack: list[Any] = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if isinstance(value, (dict, list)) and key not in _ACTIVATIONS:
                stack.append(value)
            if key in _SIZES:
                big = [v for v in _ints_in(value) if abs(v) > _SMALL_INT]
                over = [v for v in big if abs(v) > stored()] if big else []
                if over:
                    _too_large(bounds, key, over[0], stored())
            elif key in _ACTIVATIONS:
                asked = math.prod(max(abs(v), 1) for v in _ints_in(value))
                if key == "height" and isinstance(node.get("width"), int):
                    asked *= max(abs(node["width"]), 1)
                if asked > _ROW_ELEMENTS and asked > stored():
                    _too_large(bounds, key, value, stored())


def _too_large(bounds: SizeBounds, key: str, value: Any, stored: int) -> None:
    bounds.exceeded(
        f"a Keras layer asks for {key}={value}, more than the {stored:,} stored weights could "
        f"account for"
    )


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
        config = _config_of(data)
        names, foreign, _ = referenced_names(config)
        bounds = SizeBounds.for_save()
        _check_sizes(config, lambda: _stored_elements(data), bounds)
        writer.add(_ENTRY, data)
        return SavedPayload(
            payload={"kind": "keras", "format": "keras", "entry": _ENTRY},
            framework="keras",
            object_type=type_name(obj),
            globals=tuple(names),
            modules=("keras",),
            untrusted=tuple(foreign) + ((_LAMBDA,) if _LAMBDA in names else ()),
            distributions=distributions(),
            over_bounds=tuple(bounds.found),
        )

    def load(self, reader: ArtifactReader, payload: dict[str, Any], *, policy: LoadPolicy) -> Any:
        from keras.src.saving import saving_lib

        if payload.get("entry") != _ENTRY:
            raise FormatError(f"malformed keras payload: entry {payload.get('entry')!r}")
        data = reader.read(_ENTRY)
        config = _config_of(data)
        names, foreign, registered = referenced_names(config)
        source = str(reader.path)
        bounds = SizeBounds.for_load(source, policy)
        _check_sizes(config, lambda: _stored_elements(data), bounds)
        bounds.warn_if_lifted()
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
