"""PyTorch: weights as safetensors (no pickle, memory-mappable) plus a way to rebuild the module.

Two ways to rebuild, neither of which unpickles anything:

- ``"export"`` (the default when ``sample=`` is given and the model exports): the
  ``torch.export`` program as its JSON serialization, with the weights and tensor constants in
  safetensors entries. ``torch.export.load`` is *not* used: it calls ``torch.load(...,
  weights_only=False)`` and ``pickle.loads``. The JSON is deserialized by PyTorch's serde module
  after Amber has audited it: every operator must be an ATen/prims op or a Python operator,
  every symbolic size a plain arithmetic expression (the deserializer feeds them to
  ``sympy.sympify``, which evaluates), no guard code, no custom objects. A program that fails the
  audit needs ``trusted=[...]`` naming what failed.
- ``"class"``: the module's import path and constructor arguments (JSON), found with
  ``get_config()`` or the ``__init__`` parameters stored as same-named attributes. The class is
  code, so it must be trusted (``trusted=["pkg.mod.Net"]``) unless it is a ``torch.nn`` layer.
  The module is built on the meta device and the weights assigned, so loading copies nothing.

``torch.load`` is never called.
"""

from __future__ import annotations

import contextlib
import inspect as _inspect
import json
import math
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from amber.artifact._reader import ArtifactReader
from amber.artifact._writer import ArtifactWriter
from amber.errors import FormatError, UntrustedTypeError
from amber.handlers import _safetensors
from amber.handlers._base import SavedPayload
from amber.handlers._common import (
    SizeBounds,
    check_trusted,
    decode_params,
    encode_params,
    import_trusted,
    type_name,
)
from amber.security._policy import LoadPolicy

__all__ = ["HANDLER", "TorchHandler"]

_WEIGHTS = "model/weights.safetensors"
_CONSTANTS = "model/constants.safetensors"
_PROGRAM = "model/program.json"
_PROGRAM_TOKEN = "torch.export.ExportedProgram"
_SAFE_TARGET = re.compile(
    r"(torch\.ops\.(aten|prims)\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+|_operator\.\w+)"
)
# ATen operators that reach outside the graph: from_file reads, creates or writes any path
# (PyTorch's own checker counts it pure), _print writes to the process's output.
_FILE_OPS = [["from_file"], ["_print"]]
_SYMBOL = re.compile(r"Symbol\('[a-z]+[0-9]+'(, (positive|integer|nonnegative)=True)*\)")
_EXPR = re.compile(r"[A-Za-z0-9_ +\-*/(),]*")
_EXPR_WORDS = frozenset(
    {"Symbol", "Integer", "Mod", "FloorDiv", "CeilToInt", "FloorToInt", "Max", "Min", "Mul", "Add"}
    | {"PythonMod", "CleanDiv", "positive", "integer", "nonnegative", "True", "False"}
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A class of torch.nn's own modules, named as its module and class: no dunders, no other path
_NN_CLASS = re.compile(
    r"torch\.nn\.modules\.[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*\.[A-Z][A-Za-z0-9]*"
)
# Guards PyTorch turns into code run on every call: only comparisons of input sizes with each
# other or with integers (two inputs that share a batch dimension) are admitted.
_SIZE = r"(L\['[A-Za-z_][A-Za-z0-9_]*'\]\.size\(\)\[[0-9]{1,3}\]|[0-9]{1,19})"
_GUARD = re.compile(rf"{_SIZE} (==|!=|<=|>=|<|>) {_SIZE}")


def _float_dtype(model: torch.nn.Module) -> torch.dtype | None:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def _as_tensor(inputs: Any, dtype: torch.dtype | None) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs
    x = torch.as_tensor(np.asarray(inputs))
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        x = x.to(dtype)
    return x


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was = getattr(model, "training", False)
    if was:
        try:
            model.eval()
        except NotImplementedError:  # an exported program's module
            was = False
    try:
        yield
    finally:
        if was:
            model.train()


def _is_state_dict(obj: Any) -> bool:
    """A dict of tensors by name, such as ``model.state_dict()``."""
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(type(k) is str and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _call_args(inputs: Any, dtype: torch.dtype | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A model's call arguments: one tensor, or one per input for a tuple of arrays
    (positional) or a str-keyed dict of arrays (by name). A list is one input, as before: a
    list of rows is a batch."""
    if isinstance(inputs, dict):
        return (), {str(k): _as_tensor(v, dtype) for k, v in inputs.items()}
    if isinstance(inputs, tuple) and inputs and all(_several(v) for v in inputs):
        return tuple(_as_tensor(v, dtype) for v in inputs), {}
    return (_as_tensor(inputs, dtype),), {}


def _several(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (isinstance(value, np.ndarray) and value.ndim >= 1)


def _batch_hint(sample: Any) -> str:
    rows = getattr(sample, "shape", (None,))[:1]
    if rows == (1,):
        return (
            "; a sample of one row fixes the batch size at 1, so the batch dimension cannot be "
            "traced as dynamic: pass at least two rows"
        )
    return ""


def _inference_only(module: Any) -> Any:
    """An exported program's module, in inference mode as it was traced: ``eval()`` is a no-op
    (PyTorch's own raises NotImplementedError) and ``train()`` says what to do instead."""
    import types

    def train(self: Any, mode: bool = True) -> Any:
        if mode:
            raise NotImplementedError(
                "this model was loaded from a torch.export program, traced in inference mode; "
                "it cannot train. To train further, save the model with format='class'"
            )
        for m in self.modules():
            m.training = False
        return self

    def eval_(self: Any) -> Any:
        return train(self, False)

    module.train = types.MethodType(train, module)
    module.eval = types.MethodType(eval_, module)
    module.eval()
    return module


def _to_numpy(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu()
        if out.dtype == torch.bfloat16:  # numpy has no bfloat16: float32 holds it exactly
            out = out.float()
        return out.numpy()
    if isinstance(out, (tuple, list)):
        return type(out)(_to_numpy(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_numpy(v) for k, v in out.items()}
    return out


def _retie(model: torch.nn.Module, aliases: dict[str, str]) -> None:
    """Make tied parameters one object again (``load_state_dict(assign=True)`` splits them)."""
    for key, target in aliases.items():
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name)
        source_name, _, source_attr = target.rpartition(".")
        value = getattr(model.get_submodule(source_name), source_attr)
        if isinstance(value, torch.nn.Parameter):
            owner.register_parameter(attr, value)
        else:
            owner.register_buffer(attr, value)


# -- constructor arguments ----------------------------------------------------------------------
# torch.nn classes whose constructors take *args, and the attributes that hold what they take
_RNN_ARGS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout")
_STARRED_ARGS: dict[type, tuple[str, ...]] = {
    torch.nn.LSTM: (*_RNN_ARGS, "bidirectional", "proj_size"),
    torch.nn.GRU: (*_RNN_ARGS, "bidirectional"),
    torch.nn.RNN: (*_RNN_ARGS, "bidirectional", "nonlinearity"),
    torch.nn.Identity: (),
}


def _init_args(model: torch.nn.Module) -> dict[str, Any]:
    cls = type(model)
    get_config = getattr(model, "get_config", None)
    if callable(get_config):
        return encode_params(dict(get_config()), f"a {cls.__name__}")
    known = _STARRED_ARGS.get(cls)
    if known is not None:  # the exact class: a subclass has a constructor of its own
        return encode_params({name: getattr(model, name) for name in known}, cls.__name__)
    found: dict[str, Any] = {}
    missing = []
    for p in list(_inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            if p.kind == p.VAR_POSITIONAL:
                missing.append(f"*{p.name}")
            continue
        has_default = p.default is not p.empty
        if not hasattr(model, p.name):
            if not has_default:
                missing.append(p.name)
            continue
        try:
            found[p.name] = encode_params({p.name: getattr(model, p.name)}, "")[p.name]
        except TypeError:
            if not has_default:
                missing.append(p.name)
    if missing:
        raise TypeError(
            f"cannot record how to rebuild a {type_name(cls)}: its constructor arguments "
            f"{', '.join(missing)} are not stored as plain attributes of the same name. Save "
            f"with sample= so the model is rebuilt from a torch.export program, or give the "
            f"class a get_config() method returning its constructor arguments as a dict"
        )
    return found


# -- the export program audit -------------------------------------------------------------------
def _walk(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from _walk(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)


def _safe_expr(expr: str) -> bool:
    if _SYMBOL.fullmatch(expr):
        return True
    if len(expr) > 2000:
        return False
    # symbols inside a larger expression (Mul(Integer(10), Symbol('s28', positive=True))):
    # checked by their own pattern, then read as a plain name
    expr = _SYMBOL.sub("s0", expr)
    if not _EXPR.fullmatch(expr) or "**" in expr:
        # sympy evaluates powers as it parses: 0*9**9**9 did not finish
        return False
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr)
    return all(w in _EXPR_WORDS or re.fullmatch(r"[a-z]+[0-9]+", w) for w in words)


_SMALL_INT = 4096


def _check_sizes(init: dict[str, Any], state: dict[str, Any], bounds: SizeBounds) -> None:
    """Refuse constructor arguments larger than the weights could account for.

    A module's sizes (features, layers, heads, embeddings) show in its weights: an integer
    argument beyond both the stored element count and a small bound (kernel sizes, pooling
    outputs) is not the module that was saved. LSTM(num_layers=10**8) took minutes to build
    even on the meta device.
    """
    stored = sum(int(t.numel()) for t in state.values())
    bound = max(stored, _SMALL_INT)
    stack: list[Any] = [init]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif isinstance(value, np.ndarray):  # a {"$array": ...} parameter
            stack.extend(value.ravel().tolist())
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > bound:
            bounds.exceeded(
                f"a constructor argument of {value} is larger than the {stored:,} stored "
                f"weights could account for"
            )


# A tensor the graph creates from static sizes may hold this many elements, or as many as the
# weights: aten.full([50000, 50000]) from a forged program asked for 10 GB at predict.
_STATIC_ELEMENTS = 2**26


# Operators whose named scalar arguments size what they create: (op name, argument names
# multiplied together). An open-ended slice's end (2**63 - 1) sizes nothing, so only these count.
_SIZE_SCALARS: dict[str, tuple[str, ...]] = {
    "arange": ("end",),
    "randperm": ("n",),
    "linspace": ("steps",),
    "logspace": ("steps",),
    "one_hot": ("num_classes",),
    "eye": ("n", "m"),
    "repeat_interleave": ("repeats",),
    "tril_indices": ("row", "col"),
    "triu_indices": ("row", "col"),
}
# Resampling by factors: their product multiplies the input's size
_SCALE_LIMIT = 4096
# Operators that multiply every input element by their scalar (a one-hot of 20,000,000
# classes took 4 GB for a few rows): bounded per element
_PER_ELEMENT = frozenset({"one_hot", "repeat_interleave"})
_PER_ELEMENT_LIMIT = 2**20


def _number(arg: dict[str, Any]) -> float | None:
    for kind in ("as_int", "as_float"):
        value = arg.get(kind)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return abs(float(value))
    scalar = arg.get("as_scalar")
    return _number(scalar) if isinstance(scalar, dict) else None


def _check_static_sizes(program: dict[str, Any], bound: int, bounds: SizeBounds) -> None:
    """Refuse a node whose static size arguments ask for more elements than ``bound``: a
    list of ints (a shape, repeats) by its product, a padding by its sum, the scalars that
    size a creating operator (``_SIZE_SCALARS``) by their product, resampling factors by
    theirs (at most ``_SCALE_LIMIT``)."""
    graph = program.get("graph_module", {}).get("graph", {}) if isinstance(program, dict) else {}
    nodes = graph.get("nodes", []) if isinstance(graph, dict) else []
    for node in nodes if isinstance(nodes, list) else []:
        if not isinstance(node, dict):
            continue
        target = str(node.get("target", ""))
        op = target.split(".")[3] if target.startswith("torch.ops.aten.") else ""
        inputs = node.get("inputs", [])
        scalars: list[float] = []
        for item in inputs if isinstance(inputs, list) else []:
            arg = item.get("arg", {}) if isinstance(item, dict) else {}
            if not isinstance(arg, dict):
                continue
            sizes = arg.get("as_ints")
            symbolic = arg.get("as_sym_ints")
            if isinstance(symbolic, list):  # a shape of ints and symbols: its static part
                sizes = [d.get("as_int") for d in symbolic if isinstance(d, dict)]
                sizes = [v for v in sizes if type(v) is int]
            if isinstance(sizes, list) and all(type(v) is int for v in sizes):
                asked = (sum if "pad" in op else math.prod)(abs(v) for v in sizes)
                _refuse_size(asked, bound, target, bounds)
            factors = arg.get("as_floats")
            if isinstance(factors, list) and ("upsample" in op or "interpolate" in op):
                scale = math.prod(abs(float(f)) for f in factors if type(f) in (int, float))
                _refuse_size(scale, _SCALE_LIMIT, target, bounds)
            if item.get("name") in _SIZE_SCALARS.get(op, ()):
                value = _number(arg)
                if value is not None:
                    scalars.append(value)
        if scalars:
            limit = _PER_ELEMENT_LIMIT if op in _PER_ELEMENT else bound
            _refuse_size(math.prod(scalars), limit, target, bounds)


def _static_bound(*tensors: dict[str, Any]) -> int:
    """How many elements a tensor the graph creates from static sizes may hold."""
    stored = sum(int(t.numel()) for group in tensors for t in group.values())
    return max(stored, _STATIC_ELEMENTS)


def _refuse_size(asked: float, bound: float, target: str, bounds: SizeBounds) -> None:
    if asked > bound:
        bounds.exceeded(
            f"the exported program's {target} asks for {asked:,.0f} elements (or times), "
            f"more than {bound:,.0f}"
        )


EXPORT_PARITY = {"exact": False, "rtol": 1e-5, "atol": 1e-6}


def audit_program(program: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(operators the graph calls, names that fail the audit) of a serialized ExportedProgram."""
    targets: list[str] = []
    refused: list[str] = []
    guards = program.get("guards_code")
    if guards and not (
        isinstance(guards, list) and all(isinstance(g, str) and _GUARD.fullmatch(g) for g in guards)
    ):
        refused.append(f"{_PROGRAM_TOKEN} (guard code)")
    for key, value in _walk(program):
        if key == "target" and isinstance(value, str):
            if value not in targets:
                targets.append(value)
            if not _SAFE_TARGET.fullmatch(value) or value.split(".")[3:4] in _FILE_OPS:
                refused.append(value)
        elif key == "expr_str" and isinstance(value, str) and not _safe_expr(value):
            refused.append(f"{_PROGRAM_TOKEN} (expression {value[:60]!r})")
        elif key in ("custom_obj", "as_custom_obj", "as_operator", "as_graph") and value:
            refused.append(f"{_PROGRAM_TOKEN} ({key})")
        elif key == "name" and isinstance(value, str) and not _NAME.fullmatch(value):
            refused.append(f"{_PROGRAM_TOKEN} (node name {value[:60]!r})")
    for key in program.get("range_constraints", {}) or {}:
        if not _safe_expr(str(key)):
            refused.append(f"{_PROGRAM_TOKEN} (range {str(key)[:60]!r})")
    return targets, sorted(set(refused))


class TorchHandler:
    name = "torch"
    module_roots: tuple[str, ...] = ("torch",)
    formats: tuple[str, ...] = ("export", "class", "tensors")

    def matches(self, obj: Any) -> bool:
        return isinstance(obj, torch.nn.Module) or _is_state_dict(obj)

    # -- save -------------------------------------------------------------------------------
    def save(
        self, obj: Any, writer: ArtifactWriter, *, format: str | None = None, sample: Any = None
    ) -> SavedPayload:
        cls = type_name(obj)
        if _is_state_dict(obj):
            if format not in (None, "tensors"):
                raise ValueError(f"a dict of tensors is saved as tensors, not format={format!r}")
            return SavedPayload(
                payload={
                    "kind": "torch",
                    "rebuild": "tensors",
                    "weights": _WEIGHTS,
                    "order": list(obj),
                    **self._write_weights(writer, _WEIGHTS, obj),
                },
                framework="torch",
                object_type=cls,
                globals=(),
                modules=("torch", "safetensors"),
            )
        export_error = None
        if format == "export" or (format is None and sample is not None):
            if sample is None:
                raise ValueError(
                    "format='export' traces the model with torch.export and needs sample= "
                    "(a batch of inputs)"
                )
            try:
                return self._save_export(obj, writer, sample)
            except Exception as exc:
                if format == "export":
                    raise TypeError(f"torch.export cannot export this {cls}: {exc}") from exc
                export_error = f"{type(exc).__name__}: {exc}"[:300]
        try:
            init = _init_args(obj)
        except TypeError as exc:
            if export_error is None:
                raise
            reason = str(exc).replace(
                "Save with sample= so the model is rebuilt from a torch.export program, or",
                "Make torch.export trace it, or",
            )
            raise TypeError(
                f"sample= was given, but torch.export could not trace the model on it "
                f"({export_error}{_batch_hint(sample)}); and {reason}"
            ) from None
        state = obj.state_dict()
        bounds = SizeBounds.for_save()
        _check_sizes(decode_params(init), state, bounds)  # what a load will check
        payload: dict[str, Any] = {
            "kind": "torch",
            "rebuild": "class",
            "class": cls,
            "init": init,
            "training": bool(obj.training),
            "weights": _WEIGHTS,
            **self._write_weights(writer, _WEIGHTS, state),
        }
        if export_error:
            payload["export_error"] = export_error
            warnings.warn(
                f"torch.export could not trace this {cls} on the sample ({export_error}"
                f"{_batch_hint(sample)}); it is saved by class and constructor arguments "
                f"instead, and loading it needs the class's code",
                UserWarning,
                stacklevel=4,
            )
        return SavedPayload(
            payload=payload,
            framework="torch",
            object_type=cls,
            globals=(cls,),
            modules=("torch", "safetensors"),
            untrusted=() if cls.startswith("torch.nn.modules.") else (cls,),
            over_bounds=tuple(bounds.found),
        )

    def _write_weights(
        self, writer: ArtifactWriter, entry: str, tensors: dict[str, torch.Tensor], prefix: str = ""
    ) -> dict[str, Any]:
        """Write unique tensors; tied ones (same storage, same view) become aliases. Returns
        the payload fields ``<prefix>aliases`` and, if any tensor is stored in other than
        row-major order, ``<prefix>layouts`` (what :meth:`_tensors` reads back)."""
        seen: dict[tuple[Any, ...], str] = {}
        unique: dict[str, torch.Tensor] = {}
        aliases: dict[str, str] = {}
        for key, t in tensors.items():
            ident = (
                t.untyped_storage().data_ptr(),
                t.storage_offset(),
                tuple(t.shape),
                tuple(t.stride()),
                t.dtype,
            )
            if t.numel() and ident in seen:
                aliases[key] = seen[ident]
                continue
            seen[ident] = key
            unique[key] = t
        data, layouts = _safetensors.dump(unique)
        writer.add(entry, data)
        fields: dict[str, Any] = {f"{prefix}aliases": aliases}
        if layouts:
            fields[f"{prefix}layouts"] = layouts
        return fields

    def _save_export(self, obj: Any, writer: ArtifactWriter, sample: Any) -> SavedPayload:
        from torch._export.serde.serialize import serialize

        args, kwargs = _call_args(sample, _float_dtype(obj))
        batch = torch.export.Dim("batch")
        dynamic: Any = (
            {k: {0: batch} for k in kwargs} if kwargs else tuple({0: batch} for _ in args)
        )
        with _eval_mode(obj), torch.no_grad():
            ep = torch.export.export(obj, args, kwargs, dynamic_shapes=dynamic)
        tensors = {**ep.state_dict}
        constants = {k: v for k, v in ep.constants.items()}
        if not all(isinstance(v, torch.Tensor) for v in constants.values()):
            raise TypeError("the program holds non-tensor constants (script objects)")
        art = serialize(
            ep,
            serialize_state_dict=False,
            serialize_constants=False,
            serialize_example_inputs=False,
        )
        program = json.loads(art.exported_program)
        targets, refused = audit_program(program)
        if refused:
            raise TypeError(f"the program fails Amber's audit: {', '.join(refused)}")
        bounds = SizeBounds.for_save()
        _check_static_sizes(program, _static_bound(tensors, constants), bounds)
        writer.add(_PROGRAM, art.exported_program)
        cls = type_name(obj)
        # The reloaded program is not the eager code that produced the probe: a fused attention
        # kernel against its decomposition, or the deserialized program against the one in
        # memory, differ in the last bits. The probe compares within a tolerance, as for a
        # SavedModel.
        return SavedPayload(
            parity=EXPORT_PARITY,
            payload={
                "kind": "torch",
                "rebuild": "export",
                "class": cls,
                "program": _PROGRAM,
                "weights": _WEIGHTS,
                "constants": _CONSTANTS,
                **self._write_weights(writer, _WEIGHTS, tensors),
                **self._write_weights(writer, _CONSTANTS, constants, "constant_"),
            },
            framework="torch",
            object_type=cls,
            globals=tuple(targets),
            modules=("torch", "safetensors"),
            over_bounds=tuple(bounds.found),
        )

    # -- load -------------------------------------------------------------------------------
    def _tensors(
        self, reader: ArtifactReader, payload: dict[str, Any], entry: str, prefix: str = ""
    ) -> dict[str, Any]:
        """The tensors of ``entry``, with the payload's ``<prefix>aliases`` and
        ``<prefix>layouts`` (as :meth:`_write_weights` recorded them) applied."""
        aliases = payload.get(f"{prefix}aliases", {})
        if not isinstance(aliases, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
        ):
            raise FormatError("malformed torch payload: aliases")
        # Under mmap=True an uncompressed entry is a view of the reader's copy-on-write map of
        # the file, as torch.load(mmap=True) maps: tensors view the file, writes stay private.
        tensors = _safetensors.parse(reader.read(entry), entry)
        _safetensors.restore_layouts(tensors, payload.get(f"{prefix}layouts") or {}, entry)
        for key, target in aliases.items():
            if target not in tensors:
                raise FormatError(f"{entry}: alias {key!r} names no tensor")
            tensors[key] = tensors[target]
        return tensors

    def load(self, reader: ArtifactReader, payload: dict[str, Any], *, policy: LoadPolicy) -> Any:
        rebuild = payload.get("rebuild")
        source = str(reader.path)
        if rebuild == "export":
            return self._load_export(reader, payload, policy)
        if rebuild == "tensors":  # a state_dict: the tensors alone, in their order
            from collections import OrderedDict

            tensors = self._tensors(reader, payload, _WEIGHTS)
            order = payload.get("order", sorted(tensors))
            if (
                not isinstance(order, list)
                or not all(isinstance(k, str) for k in order)
                or sorted(order) != sorted(tensors)
            ):
                raise FormatError("malformed torch payload: order does not list the tensors")
            return OrderedDict((k, tensors[k]) for k in order)
        if rebuild != "class":
            raise FormatError(f"malformed torch payload: rebuild {rebuild!r}")
        name = str(payload.get("class"))
        allowed = [name] if _NN_CLASS.fullmatch(name) else []
        cls = import_trusted(name, allowed, policy, source=source)
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            raise FormatError(f"{source}: {name} is not a torch.nn.Module")
        if allowed and f"{cls.__module__}.{cls.__qualname__}" != name:
            # the name is admitted for what it says: a torch.nn class reached by another path
            # (an alias to a class of another module) is not
            raise UntrustedTypeError([f"{cls.__module__}.{cls.__qualname__}"], source=source)
        state = self._tensors(reader, payload, _WEIGHTS)
        init = decode_params(payload.get("init"))
        bounds = SizeBounds.for_load(source, policy)
        _check_sizes(init, state, bounds)
        bounds.warn_if_lifted()
        with torch.device("meta"):
            model = cls(**init)
        model.load_state_dict(state, strict=True, assign=True)
        if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            # non-persistent buffers are not in the state dict: build for real
            model = cls(**init)
            model.load_state_dict(state, strict=True, assign=True)
        _retie(model, payload.get("aliases", {}))
        model.train(bool(payload.get("training", False)))
        return model

    def _load_export(
        self, reader: ArtifactReader, payload: dict[str, Any], policy: LoadPolicy
    ) -> Any:
        from torch._export.serde.serialize import SerializedArtifact, deserialize

        raw = bytes(reader.read(_PROGRAM))
        try:
            program = json.loads(raw)
        except ValueError as exc:
            raise FormatError(f"{_PROGRAM} is not JSON: {exc}") from exc
        _, refused = audit_program(program)
        if refused:
            names = [r.split(" (")[0] for r in refused]
            check_trusted(names, [], policy, source=str(reader.path))
        state = self._tensors(reader, payload, _WEIGHTS)
        constants = self._tensors(reader, payload, _CONSTANTS, "constant_")
        bounds = SizeBounds.for_load(str(reader.path), policy)
        _check_static_sizes(program, _static_bound(state, constants), bounds)
        bounds.warn_if_lifted()
        specs = program.get("graph_module", {}).get("signature", {}).get("input_specs", [])
        for spec in specs if isinstance(specs, list) else []:
            param = spec.get("parameter") if isinstance(spec, dict) else None
            if isinstance(param, dict) and param.get("parameter_name") in state:
                key = param["parameter_name"]
                state[key] = torch.nn.Parameter(state[key], requires_grad=False)
        try:
            ep = deserialize(SerializedArtifact(raw, state, constants, ()))  # type: ignore[arg-type]
        except UntrustedTypeError:
            raise
        except Exception as exc:
            raise FormatError(
                f"{reader.path}: the torch.export program cannot be read: {exc}"
            ) from exc
        return _inference_only(ep.module())

    # -- predict ----------------------------------------------------------------------------
    def probe_methods(self, model: Any) -> dict[str, Callable[[Any], Any]]:
        return {"predict": lambda x: self.predict(model, x)}

    def predict(self, model: Any, inputs: Any) -> Any:
        args, kwargs = _call_args(inputs, _float_dtype(model))
        with _eval_mode(model), torch.inference_mode():
            return _to_numpy(model(*args, **kwargs))


HANDLER = TorchHandler()
