"""Read joblib files without joblib: a hardened pure-Python unpickler.

A joblib file is a pickle stream in which every numpy array is replaced by a
``joblib.numpy_pickle.NumpyArrayWrapper`` instance (NEWOBJ, then BUILD with a dict of
``subclass``, ``shape``, ``order``, ``dtype``, ``allow_mmap`` and, since joblib 1.2,
``numpy_array_alignment_bytes``). Right after that BUILD, *in the file*, comes the array:

- plain dtypes: one byte ``n`` (only when the alignment is not None), ``n`` bytes 0xFF, then
  the raw bytes in C or Fortran order;
- dtypes holding Python objects: a nested, complete pickle stream of the array.

joblib reads those with ``NumpyUnpickler.load_build``, which trusts the stream. This module
never imports joblib. :class:`_Machine` runs the opcode loop of ``pickle._Unpickler`` in
one of two modes:

- *scan*: nothing is imported or called. Globals become inert :class:`_Ref` objects, calls
  become inert :class:`_Obj` records, and each array's bytes are skipped using the wrapper's
  metadata, decoded symbolically, so every global of the whole stream can be listed;
- *load*: globals are handed out exactly as Amber's own unpickler hands them out (allowlist,
  guarded callables), objects of validated types are checked as soon as their state is set,
  and each wrapper is replaced by an array read from the stream with strict checks.

Both modes refuse the same hostile constructs, and a load is always preceded by a scan whose
array layout it must reproduce exactly, so the names listed by the scan are the names loaded.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import struct
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal

import numpy as np

from amber.errors import AmberError, FormatError, UntrustedTypeError
from amber.security._allowlist import entries, is_allowed, never_reduced, reference_only
from amber.security._pickle_scan import release_claims
from amber.security._policy import LoadPolicy, trust_name
from amber.security._scanner import PickleScan, effective_name
from amber.security._unpickler import CALL_ONLY_GUARDS, _SafeUnpickler
from amber.security._validators import OBJECT_VALIDATORS, STATE_VALIDATORS, run_validator

__all__ = ["JoblibScan", "is_wrapper_name", "load_joblib", "scan_joblib"]

WRAPPER_MODULES: Final = frozenset({"joblib.numpy_pickle", "sklearn.externals.joblib.numpy_pickle"})
LEGACY_MODULES: Final = WRAPPER_MODULES | {
    "joblib.numpy_pickle_compat",
    "sklearn.externals.joblib.numpy_pickle_compat",
}
LEGACY_NAMES: Final = frozenset({"NDArrayWrapper", "ZNDArrayWrapper"})
_WRAPPER: Final = "NumpyArrayWrapper"
_WRAPPER_KEYS: Final = frozenset(
    {"subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes"}
)
_REQUIRED_KEYS: Final = frozenset({"subclass", "shape", "order", "dtype"})
_SUBCLASSES: Final = frozenset({"ndarray", "memmap", "matrix"})
_MAX_NDIM: Final = 64
_MEMO_SLACK: Final = 1 << 16  # a PUT index may run this far ahead of the memo's size
_PLAIN_KINDS: Final = frozenset("biufcmMSUV")
_FIXED_SIZES: Final = {
    "b": {1},
    "i": {1, 2, 4, 8},
    "u": {1, 2, 4, 8},
    "f": {2, 4, 8, 10, 12, 16},
    "c": {8, 16, 20, 24, 32},
    "m": {8},
    "M": {8},
    "O": {4, 8},
}
_TYPESTR: Final = re.compile(r"([biufcmMOSUV])(\d{0,10})")
_LEGACY_HINT: Final = (
    "it was written by joblib < 0.10, which keeps each array in a companion file next to "
    "the pickle; Amber reads only single-file joblib formats. Load it once with the joblib "
    "version that wrote it, in an environment you trust, and save it again with amber.save "
    "or a current joblib.dump"
)


def is_wrapper_name(module: str, name: str) -> bool:
    """True for joblib's array wrapper, which Amber reads itself instead of importing it."""
    return name == _WRAPPER and module in WRAPPER_MODULES


def _is_legacy_name(module: str, name: str) -> bool:
    return name in LEGACY_NAMES and module in LEGACY_MODULES


def is_any_wrapper_name(module: str, name: str) -> bool:
    """True for joblib's array wrapper and the NDArrayWrapper and ZNDArrayWrapper of old joblib:
    names only a joblib file holds."""
    return is_wrapper_name(module, name) or _is_legacy_name(module, name)


# --------------------------------------------------------------------------- Amber's rules

Validator = Callable[[Any], None]
_MAX_MARKS: Final = 10_000


def _amber_find_class(policy: LoadPolicy) -> Callable[[str, str], Any]:
    """Exactly what Amber's own unpickler hands out for a global.

    Delegating to it keeps both loaders identical: the allowlist check, the guarded versions
    of risky callables (``numpy.dtype``, ``_reconstruct``, ``copyreg`` helpers, ...) and the
    refusal of unvalidated aliases of validated types.
    """
    plain = PickleScan(globals=(), protocol=0, n_buffers_used=0)  # names arrive mapped
    return _SafeUnpickler(
        io.BytesIO(b""), buffers=[], policy=policy, scan=plain, hooks=[]
    ).find_class


def _refs_only(module: str, name: str) -> Any:
    raise RuntimeError(f"a scan never imports {module}.{name}")


def _validator(module: str, name: str) -> Validator | None:
    """The check an object built by ``module.name`` gets right after its state is set."""
    if (module, name) in OBJECT_VALIDATORS:
        return OBJECT_VALIDATORS[(module, name)]
    entry = entries().get((module, name))
    if entry is None or not entry.validator:
        return None
    return next(v for v in OBJECT_VALIDATORS.values() if v.__name__ == entry.validator)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class _Span:
    """Where one array's payload lies in the stream (after the wrapper's BUILD)."""

    kind: Literal["raw", "pickle"]
    start: int
    end: int


@dataclass(frozen=True)
class JoblibScan:
    """What a scan of a joblib stream found, without importing or constructing anything.

    ``globals`` lists ``(module, name)`` pairs in order of first reference, the nested
    object-array streams included; ``error`` is set when the stream does not vet (then the
    other fields hold what was read before the fault).
    """

    globals: tuple[tuple[str, str], ...]
    protocol: int | None
    n_arrays: int
    legacy: bool
    error: str | None = None
    layout: tuple[_Span, ...] = field(default=(), repr=False)
    hooks_built: tuple[bool, ...] = field(default=(), repr=False)

    def untrusted(self, policy: LoadPolicy) -> tuple[str, ...]:
        """Dotted names outside the allowlist (joblib's own array wrapper excepted)."""
        return tuple(
            trust_name(m, n)
            for m, n in self.globals
            if not is_wrapper_name(m, n)
            and not _is_legacy_name(m, n)
            and not is_allowed(m, n, policy)
        )


# --------------------------------------------------------------------------- stream


class _Reader:
    """Reads over an in-memory stream that refuse to run past its end."""

    def __init__(self, data: bytes, budget: int | None = None) -> None:
        self._data = data
        self._view = memoryview(data)
        self.pos = 0
        self._taken = 0  # bytes of array data (read in bulk, never by the opcode loop)
        self._budget = budget  # most bytes the opcode loop may read (None: the whole stream)

    @property
    def remaining(self) -> int:
        return len(self._data) - self.pos

    @property
    def size(self) -> int:
        return len(self._data)

    def _claim(self, n: int, what: str) -> int:
        if n < 0 or n > self.remaining:
            raise FormatError(
                f"{what} needs {n} bytes at offset {self.pos} but only {self.remaining} remain: "
                f"the file is truncated or malformed"
            )
        start = self.pos
        self.pos += n
        return start

    def read(self, n: int) -> bytes:
        start = self._claim(n, "the pickle stream")
        self._spend()
        return self._data[start : start + n]

    def readline(self) -> bytes:
        end = self._data.find(b"\n", self.pos)
        end = len(self._data) if end < 0 else end + 1
        start, self.pos = self.pos, end
        self._spend()
        return self._data[start:end]

    def take(self, n: int, what: str) -> memoryview:
        start = self._claim(n, what)
        self._taken += n
        return self._view[start : start + n]

    def _spend(self) -> None:
        if self._budget is not None and self.pos - self._taken > self._budget:
            raise FormatError(
                f"its pickle opcodes run past {self._budget // MIB} MiB once decompressed, more "
                f"than {PICKLE_RATIO} times the compressed file (at least "
                f"{PICKLE_FLOOR // MIB} MiB), which Amber's joblib reader works through one "
                f"opcode at a time: a decompression bomb? A file of your own converts where "
                f"you trust it: amber.save(joblib.load(path), 'model.amber')"
            )


# --------------------------------------------------------------------------- inert values


class _Ref:
    """A global named by the stream, never imported (scan mode)."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    @property
    def key(self) -> tuple[str, str]:
        return (self.module, self.name)


class _Obj:
    """The inert result of calling or instantiating a global (scan mode)."""

    __slots__ = ("args", "budget", "built", "func", "hook", "state", "wrapper")

    def __init__(
        self, func: _Ref, args: tuple[Any, ...], budget: _Budget, *, wrapper: bool = False
    ) -> None:
        self.func, self.args, self.wrapper = func, args, wrapper
        self.budget = budget
        self.state: Any = None
        self.built = False
        self.hook: int | None = None

    def append(self, item: Any) -> None:
        """Accept APPEND, keeping nothing (see :func:`_refuse_stand_ins`)."""
        _refuse_stand_ins(item, self.budget)

    def extend(self, items: Any) -> None:
        """Accept APPENDS, keeping nothing."""
        _refuse_stand_ins(list(items), self.budget)

    def add(self, item: Any) -> None:
        """Accept ADDITEMS, keeping nothing."""
        _refuse_stand_ins(item, self.budget)

    def __setitem__(self, key: Any, value: Any) -> None:
        """Accept SETITEM(S), keeping nothing."""
        _refuse_stand_ins((key, value), self.budget)


MAX_TUPLE_DEPTH = 1000  # as the C scanner's: CPython hashes nested tuples recursively
MIB = 1 << 20
# The opcodes (the stream without its arrays' bytes) of a compressed file are read at most up
# to this many times its compressed size, and at least PICKLE_FLOOR: this reader is Python, a
# microsecond an opcode, and a 64 kB gzip file inflates to 32 million opcodes (a minute).
PICKLE_RATIO = 64
PICKLE_FLOOR = 8 * MIB


def pickle_budget(compressed: int | None, limit: int | None = None) -> int | None:
    """The most bytes of opcodes read from a stream that was ``compressed`` bytes on disk
    (None: not compressed, no bound); ``limit``, the caller's ``max_decompressed_size``,
    replaces the default."""
    if compressed is None:
        return None
    return limit if limit is not None else max(PICKLE_FLOOR, PICKLE_RATIO * compressed)


class _Budget:
    """Steps left to vet what a stream adds to called objects (shared by nested streams)."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


def _refuse_stand_ins(root: Any, budget: _Budget) -> None:
    """Refuse a scanned value that holds, other than as something called, a global the load
    replaces by a stand-in: a guarded callable (``_unpickler.CALL_ONLY_GUARDS``, which checks its
    arguments) or joblib's array wrapper (no behaviour at all). Honest pickles only call them;
    as a value, the stand-in would be in the model where pickle puts the global itself.

    Each value visited spends a step of ``budget``: a stream that appends one large shared
    value many times would otherwise take steps quadratic in its length."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        value = stack.pop()
        budget.left -= 1
        if budget.left < 0:
            raise FormatError(
                "the stream adds the same values to objects over and over (vetting them would "
                "take more steps than 16 per byte of the stream); the file is damaged or crafted"
            )
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, _Ref):
            if value.key in CALL_ONLY_GUARDS or is_wrapper_name(*value.key):
                raise FormatError(
                    f"the stream holds {value.module}.{value.name} as a value; honest pickles "
                    f"only call it, so the file is damaged or crafted"
                )
        elif isinstance(value, _Obj):
            # not .func: that is the call; nor, for a wrapper made below protocol 2, the
            # wrapper class that copyreg._reconstructor is given to instantiate
            stack.extend((value.args[1:] if value.wrapper else value.args, value.state))
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend(value)


class _WrapperStub:
    """Stands in for ``NumpyArrayWrapper`` while loading; it has no behaviour at all."""

    __slots__ = ("consumed",)


# --------------------------------------------------------------------------- dtypes


@dataclass(frozen=True)
class _DType:
    itemsize: int
    hasobject: bool


def _symbolic_dtype(obj: Any, depth: int = 0) -> _DType:
    """Size of a dtype pickled as ``numpy.dtype(typestr, align, copy)`` + BUILD(state)."""
    if depth > 32:
        raise FormatError("the array dtype nests more than 32 levels deep")
    if not (
        isinstance(obj, _Obj)
        and obj.func.key == ("numpy", "dtype")
        and not obj.wrapper
        and obj.built
    ):
        raise FormatError("an array wrapper's dtype is not a numpy dtype built the usual way")
    args, state = obj.args, obj.state
    if not (1 <= len(args) <= 3 and type(args[0]) is str):
        raise FormatError(f"unexpected numpy.dtype arguments {args!r}")
    match = _TYPESTR.fullmatch(args[0])
    if match is None:
        raise FormatError(f"unsupported array dtype {args[0]!r}")
    if not (type(state) is tuple and len(state) in (8, 9) and state[0] in (3, 4)):
        raise FormatError(f"unexpected numpy dtype state {state!r}")
    kind, digits = match.group(1), match.group(2)
    subarray, fields, elsize = state[2], state[4], state[5]
    hasobject = kind == "O"
    if fields is not None:
        if type(fields) is not dict:
            raise FormatError("a structured dtype's fields are not a dict")
        for entry in fields.values():
            if type(entry) is not tuple or len(entry) not in (2, 3):
                raise FormatError("a structured dtype's field is not (dtype, offset[, title])")
            hasobject |= _symbolic_dtype(entry[0], depth + 1).hasobject
    if subarray is not None:
        if type(subarray) is not tuple or len(subarray) != 2:
            raise FormatError("a sub-array dtype is not (dtype, shape)")
        hasobject |= _symbolic_dtype(subarray[0], depth + 1).hasobject
    if kind in "SUV":
        if type(elsize) is not int or elsize <= 0:
            raise FormatError(f"dtype {args[0]!r} has an invalid item size {elsize!r}")
        return _DType(elsize, hasobject)
    if type(elsize) is not int or elsize != -1 or not digits:
        raise FormatError(f"dtype {args[0]!r} has an unexpected item size {elsize!r}")
    size = int(digits)
    if size not in _FIXED_SIZES[kind]:
        raise FormatError(f"unsupported array dtype {args[0]!r}")
    return _DType(size, hasobject)


def _check_plain(dt: np.dtype[Any], depth: int = 0) -> None:
    if depth > 32:
        raise FormatError("the array dtype nests more than 32 levels deep")
    if dt.fields is not None:
        for sub in dt.fields.values():
            _check_plain(sub[0], depth + 1)
    elif dt.subdtype is not None:
        _check_plain(dt.subdtype[0], depth + 1)
    elif dt.kind not in _PLAIN_KINDS and dt.kind != "O":
        raise FormatError(f"unsupported array dtype {dt!r} (kind {dt.kind!r})")


def _real_dtype(dt: Any) -> _DType:
    if not isinstance(dt, np.dtype):
        raise FormatError(f"an array wrapper's dtype is {type(dt).__name__}, not a numpy dtype")
    _check_plain(dt)
    if not dt.hasobject and dt.itemsize <= 0:
        raise FormatError(f"array dtype {dt!r} has no item size")
    return _DType(dt.itemsize, bool(dt.hasobject))


def _byte_order_mismatch(dt: np.dtype[Any]) -> bool:
    """joblib's rule: swap when the dtype (or every field of it) is of the other order."""
    other = ">" if sys.byteorder == "little" else "<"
    if dt.byteorder == other:
        return True
    if dt.byteorder == "|" and dt.fields:
        return all(entry[0].byteorder == other for entry in dt.fields.values())
    return False


# --------------------------------------------------------------------------- the machine


@dataclass
class _Shared:
    """State shared by a machine and the machines of its nested object-array streams."""

    names: dict[tuple[str, str], None] = field(default_factory=dict)
    layout: list[_Span] = field(default_factory=list)
    expected: Iterator[_Span] | None = None
    legacy: bool = False
    protocol: int | None = None
    # one entry per object made by a validated global, in stream order: is it BUILT later?
    hooks_built: list[bool] = field(default_factory=list)
    plan: list[bool] | None = None  # the scan's hooks_built, followed by the load
    vetting: _Budget = field(default_factory=lambda: _Budget(0))  # set by the outer machine


def _refuse(what: str) -> Callable[[Any], None]:
    def load_refused(self: Any) -> None:
        raise FormatError(
            f"the stream uses {what} at offset {self._reader.pos - 1}, which pickle files "
            f"written by pickle.dump or joblib.dump for models never need; refusing it"
        )

    return load_refused


_NOT_A_TARGET = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
                 types.MethodType)  # fmt: skip


def _weighed(build: Callable[[Any], None]) -> Callable[[Any], None]:
    """pickle's opcode handler ``build`` (a tuple or frozenset), followed by ``_weigh``."""

    def load(self: Any) -> None:
        build(self)
        self._weigh()

    return load


class _Machine(pickle._Unpickler):
    """The opcode loop of ``pickle._Unpickler`` with joblib arrays and hardened opcodes."""

    stack: list[Any]
    metastack: list[list[Any]]
    memo: dict[int, Any]
    proto: int
    fix_imports: bool
    read: Callable[[int], bytes]
    readline: Callable[[], bytes]
    append: Callable[[Any], None]
    _unframer: Any

    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = dict(pickle._Unpickler.dispatch)

    def __init__(
        self,
        reader: _Reader,
        *,
        mode: Literal["scan", "load"],
        shared: _Shared,
        policy: LoadPolicy,
        nested: bool = False,
    ) -> None:
        super().__init__(reader, encoding="ASCII")
        self._reader = reader
        self._scan = mode == "scan"
        self._shared = shared
        self._policy = policy
        self._nested = nested
        self._globals: dict[int, Any] = {}  # id -> object, kept alive for identity checks
        self._refs: dict[tuple[str, str], _Ref] = {}
        self._validators: dict[int, Validator] = {}  # id(global) -> check of what it makes
        self._pending: dict[int, tuple[Any, Validator]] = {}  # made, not yet built/checked
        self._keys: dict[int, tuple[str, str]] = {}  # id(global) -> its (module, name)
        self._state_validators: dict[int, Validator] = {}  # id(global) -> check of a state
        # objects made by a global whose BUILD state is checked, or whose object is: their
        # state is checked before BUILD applies it, and no item assignment may reach them
        # (arr[i] = ... after the array's check); id -> (object, the state check or None)
        self._checked: dict[int, tuple[Any, Validator | None]] = {}
        # id(tuple) -> (tuple, expanded size, nesting depth)
        self._weights: dict[int, tuple[Any, int, int]] = {}
        if not nested:
            shared.vetting.left = reader.size * 16 + (1 << 20)
        self._wrappers = 0  # array wrappers made and not yet turned into their arrays
        self._find = _refs_only if self._scan else _amber_find_class(policy)

    # -- loop ---------------------------------------------------------------------------

    def load(self) -> Any:
        try:
            value = super().load()
        except (AmberError, OSError):  # clear already (as safe_loads passes them)
            raise
        except RecursionError as exc:
            raise FormatError("the pickle stream nests too deeply") from exc
        except Exception as exc:  # any fault of a hostile or corrupt stream
            raise FormatError(
                f"malformed pickle stream near offset {self._reader.pos}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self._end_of_frame("after STOP")
        if self._wrappers:
            # a wrapper stands for the array that follows it in the file; one that never
            # got its array would stay in the model as an object with no behaviour
            raise FormatError(
                f"{self._wrappers} of joblib's array wrappers have no array (their BUILD is "
                f"missing): the file is damaged or crafted"
            )
        for obj, check in self._pending.values():  # made but never built: check as made
            check(obj)
        self._pending.clear()
        return value

    def _end_of_frame(self, where: str) -> None:
        frame = getattr(self._unframer, "current_frame", None)
        if frame is not None and frame.read(1):
            raise FormatError(f"the pickle stream has data left inside a frame {where}")
        self._unframer.current_frame = None

    def _remaining(self) -> int:
        frame = getattr(self._unframer, "current_frame", None)
        left = 0
        if frame is not None:
            with frame.getbuffer() as view:
                left = view.nbytes - frame.tell()
        return left + self._reader.remaining

    # -- globals ------------------------------------------------------------------------

    def find_class(self, module: str, name: str) -> Any:
        if len(module) > 1000 or len(name) > 1000:  # as the C scanner: no real name is that long
            raise FormatError(
                f"a global's name is {max(len(module), len(name)):,} characters long (at most "
                f"1,000); the file is damaged or crafted"
            )
        # as Amber's own unpickler reads names: Python 2's mapped, misnamed modules read as meant
        module, name = effective_name(module, name, self.proto < 3 and self.fix_imports)
        self._shared.names.setdefault((module, name), None)
        if is_wrapper_name(module, name) and self._nested:
            raise FormatError(
                "a nested object-array pickle references joblib's array wrapper; "
                "joblib never writes this"
            )
        if _is_legacy_name(module, name):
            self._shared.legacy = True
            if not self._scan:
                raise FormatError(f"cannot load this joblib file: {_LEGACY_HINT}")
        obj: Any
        if self._scan:
            obj = self._refs.setdefault((module, name), _Ref(module, name))
        elif is_wrapper_name(module, name):
            obj = _WrapperStub
        else:
            obj = self._find(module, name)
        self._globals[id(obj)] = obj
        self._keys[id(obj)] = (module, name)
        check = _validator(module, name)
        if check is not None:
            self._validators[id(obj)] = check
        state_check = STATE_VALIDATORS.get((module, name))
        if state_check is not None:
            self._state_validators[id(obj)] = state_check
        return obj

    def _made(self, func: Any, obj: Any) -> Any:
        """Note an object made by a validated global; check it now unless a BUILD follows."""
        state_check = self._state_validators.get(id(func))
        check = self._validators.get(id(func))
        if state_check is not None or (check is not None and self._scan):
            # the scan (which refuses the item assignments) keeps every checked object; the
            # load only those whose state is still to be checked, until their BUILD
            self._checked[id(obj)] = (obj, state_check)
        if check is None:
            return obj
        shared = self._shared
        index = len(shared.hooks_built)
        shared.hooks_built.append(False)
        if self._scan:
            obj.hook = index
        elif shared.plan is None or index >= len(shared.plan):
            raise FormatError("the validated objects differ between the scan and the load")
        elif shared.plan[index]:
            self._pending[id(obj)] = (obj, check)
        else:
            check(obj)
        return obj

    def _built(self, inst: Any) -> None:
        if isinstance(inst, _Obj) and inst.hook is not None:
            self._shared.hooks_built[inst.hook] = True
        pending = self._pending.pop(id(inst), None)
        if pending is not None:
            pending[1](pending[0])

    def _is_global(self, obj: Any) -> bool:
        return id(obj) in self._globals and self._globals[id(obj)] is obj

    def _is_wrapper_cls(self, obj: Any) -> bool:
        return obj is _WrapperStub or (isinstance(obj, _Ref) and is_wrapper_name(*obj.key))

    def _callable(self, func: Any, opcode: str) -> None:
        if not self._is_global(func):
            raise FormatError(
                f"{opcode} at offset {self._reader.pos - 1} calls an object that is not a "
                f"global named in the stream; refusing it"
            )
        key = func.key if isinstance(func, _Ref) else self._keys.get(id(func))
        if key is not None and reference_only(*key) and not self._is_wrapper_cls(func):
            raise FormatError(
                f"{opcode} at offset {self._reader.pos - 1} calls {key[0]}.{key[1]}, which "
                f"honest pickles only name, never call; refusing it"
            )
        if key is not None and opcode == "REDUCE" and never_reduced(*key):
            raise FormatError(
                f"REDUCE at offset {self._reader.pos - 1} constructs {key[0]}.{key[1]} with "
                f"arguments, which honest pickles never do; refusing it"
            )

    def _target(self, obj: Any, opcode: str) -> None:
        if opcode != "BUILD" and id(obj) in self._checked:
            raise FormatError(
                f"{opcode} at offset {self._reader.pos - 1} would modify a validated object "
                f"(an array, a tree, a matrix) outside its state; refusing it"
            )
        if self._is_global(obj) or isinstance(obj, (_Ref, *_NOT_A_TARGET)):
            if isinstance(obj, _Ref):
                what = f"{obj.module}.{obj.name}"
            else:
                what = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"
            raise FormatError(
                f"{opcode} at offset {self._reader.pos - 1} modifies the global {what} "
                f"instead of an instance; refusing it"
            )

    # -- calls --------------------------------------------------------------------------

    def _call(self, func: Any, args: tuple[Any, ...]) -> Any:
        key = func.key if isinstance(func, _Ref) else self._keys.get(id(func))
        # below protocol 2 a wrapper is made by copyreg._reconstructor(wrapper, object, None)
        wrapper = (
            key == ("copyreg", "_reconstructor")
            and len(args) == 3
            and self._is_wrapper_cls(args[0])
        )
        self._wrappers += wrapper
        if not self._scan:
            return self._made(func, func(*args))
        return self._made(func, _Obj(func, args, self._shared.vetting, wrapper=wrapper))

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        self._callable(func, "REDUCE")
        if self._is_wrapper_cls(func):
            raise FormatError(
                "joblib's array wrapper is called with REDUCE; joblib never does this"
            )
        if type(args) is not tuple:
            raise FormatError("REDUCE arguments are not a tuple")
        self.stack[-1] = self._call(func, args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def _new(self, cls: Any, args: Any, kwargs: Any, opcode: str) -> Any:
        self._callable(cls, opcode)
        if type(args) is not tuple or type(kwargs) is not dict:
            raise FormatError(f"{opcode} arguments are malformed")
        wrapper = self._is_wrapper_cls(cls)
        if wrapper and (args or kwargs):
            raise FormatError("joblib's array wrapper is created with arguments")
        self._wrappers += wrapper
        if self._scan:
            return self._made(cls, _Obj(cls, args, self._shared.vetting, wrapper=wrapper))
        if not isinstance(cls, type):
            raise FormatError(f"{opcode} on {cls!r}, which is not a class")
        return self._made(cls, cls.__new__(cls, *args, **kwargs))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, {}, "NEWOBJ"))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, kwargs, "NEWOBJ_EX"))

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    # -- BUILD and the arrays -----------------------------------------------------------

    def load_build(self) -> None:
        inst = self.stack[-2]
        if isinstance(inst, _WrapperStub) or (isinstance(inst, _Obj) and inst.wrapper):
            state = self.stack.pop()
            self.stack[-1] = self._array(inst, state)
            return
        self._target(inst, "BUILD")
        if not self._scan:
            checked = self._checked.pop(id(inst), None)
            if checked is not None and checked[1] is not None:
                # the state, before it is applied (or the replacement the validator gives)
                replaced = run_validator(checked[1], self.stack[-1])
                if replaced is not None:
                    self.stack[-1] = replaced
            pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
            self._built(inst)
            return
        state = self.stack.pop()
        if not isinstance(inst, _Obj) or inst.built:
            raise FormatError(f"BUILD on {type(inst).__name__}, which is not a new object")
        inst.state, inst.built = state, True
        self._built(inst)

    dispatch[pickle.BUILD[0]] = load_build

    def _array(self, inst: Any, state: Any) -> Any:
        done = inst.built if isinstance(inst, _Obj) else getattr(inst, "consumed", False)
        if done:
            raise FormatError("joblib's array wrapper is built twice")
        self._wrappers -= 1
        if isinstance(inst, _Obj):
            inst.built = True
        else:
            inst.consumed = True
        if type(state) is not dict or not _REQUIRED_KEYS <= state.keys() <= _WRAPPER_KEYS:
            keys = sorted(map(str, state)) if type(state) is dict else type(state).__name__
            raise FormatError(f"joblib's array wrapper has unexpected state {keys}")
        shape, order = state["shape"], state["order"]
        align = state.get("numpy_array_alignment_bytes")
        if not (
            type(shape) is tuple
            and len(shape) <= _MAX_NDIM
            and all(type(n) is int and n >= 0 for n in shape)
        ):
            raise FormatError(f"joblib's array wrapper has an invalid shape {shape!r}")
        if order not in ("C", "F") or type(state.get("allow_mmap", False)) is not bool:
            raise FormatError("joblib's array wrapper has an invalid order or allow_mmap")
        if align is not None and not (type(align) is int and 1 <= align <= 255):
            raise FormatError(f"joblib's array wrapper has an invalid alignment {align!r}")
        subclass = self._subclass(state["subclass"])
        info = _symbolic_dtype(state["dtype"]) if self._scan else _real_dtype(state["dtype"])
        self._end_of_frame("before array data")
        start = self._reader.pos
        if info.hasobject:
            value = self._nested_array(state["dtype"], shape)
            span = _Span("pickle", start, self._reader.pos)
        else:
            value = self._raw_array(state["dtype"], info, shape, order, align, subclass)
            span = _Span("raw", start, self._reader.pos)
        self._shared.layout.append(span)
        if self._shared.expected is not None and next(self._shared.expected, None) != span:
            raise FormatError("the array layout differs between the scan and the load")
        return value

    def _subclass(self, cls: Any) -> Any:
        ok = (
            isinstance(cls, _Ref) and cls.name in _SUBCLASSES and cls.module.startswith("numpy")
        ) or (not self._scan and any(cls is c for c in (np.ndarray, np.memmap, np.matrix)))
        if not (ok and self._is_global(cls)):
            raise FormatError(f"joblib's array wrapper names an unsupported array type {cls!r}")
        return cls

    def _raw_array(
        self, dt: Any, info: _DType, shape: tuple[int, ...], order: str, align: Any, cls: Any
    ) -> Any:
        reader = self._reader
        if align is not None:
            pad = reader.read(1)[0]
            if pad > align or reader.take(pad, "array padding") != b"\xff" * pad:
                raise FormatError(
                    f"invalid alignment padding before the array at offset {reader.pos}"
                )
        count = math.prod(shape)
        nbytes = count * info.itemsize
        if nbytes > reader.remaining:
            raise FormatError(
                f"an array of shape {shape} needs {nbytes} bytes but only {reader.remaining} "
                f"remain in the file: the file is truncated or crafted"
            )
        if self._scan:
            reader.take(nbytes, "array data")
            placeholder = _Obj(_Ref("numpy", "ndarray"), (), self._shared.vetting)
            placeholder.built = True  # joblib never BUILDs on an array
            return placeholder
        data = reader.take(nbytes, "array data")
        flat = np.frombuffer(data, dtype=dt, count=count).copy() if count else np.empty(0, dt)
        arr = flat.reshape(shape[::-1]).transpose() if order == "F" else flat.reshape(shape)
        if _byte_order_mismatch(arr.dtype):
            arr = arr.byteswap().view(arr.dtype.newbyteorder("="))
        return arr.view(np.matrix) if cls is np.matrix else arr

    def _nested_array(self, dt: Any, shape: tuple[int, ...]) -> Any:
        inner = _Machine(
            self._reader,
            mode="scan" if self._scan else "load",
            shared=self._shared,
            policy=self._policy,
            nested=True,
        )
        value = inner.load()
        if self._scan:
            ok = isinstance(value, _Obj) and value.func.name == "_reconstruct"
            ok = ok and value.func.module.startswith("numpy")
        else:
            ok = isinstance(value, np.ndarray) and value.dtype == dt and value.shape == shape
        if not ok:
            raise FormatError("an object array's nested pickle does not hold that array")
        return value

    # -- containers, memo, frames -------------------------------------------------------

    def load_append(self) -> None:
        self._target(self.stack[-2], "APPEND")
        pickle._Unpickler.load_append(self)  # type: ignore[attr-defined]

    def load_appends(self) -> None:
        self._target(self.metastack[-1][-1], "APPENDS")
        pickle._Unpickler.load_appends(self)  # type: ignore[attr-defined]

    def load_setitem(self) -> None:
        self._target(self.stack[-3], "SETITEM")
        pickle._Unpickler.load_setitem(self)  # type: ignore[attr-defined]

    def load_setitems(self) -> None:
        self._target(self.metastack[-1][-1], "SETITEMS")
        pickle._Unpickler.load_setitems(self)  # type: ignore[attr-defined]

    def load_additems(self) -> None:
        self._target(self.metastack[-1][-1], "ADDITEMS")
        pickle._Unpickler.load_additems(self)  # type: ignore[attr-defined]

    # -- tuples: the expanded size of shared copies ---------------------------------------

    def _weigh(self) -> None:
        """Refuse the tuple (or frozenset) just built if expanding its shared items makes it
        huge: 64 levels of (t, t) are 2**64 steps to hash or print, from a kilobyte (the same
        bound as the C scanner's)."""
        made = self.stack[-1]
        weight, depth = 1, 1
        for item in made:
            if type(item) in (tuple, frozenset):
                # (a tuple not remembered holds no tuple: see below)
                _, inner, levels = self._weights.get(id(item), (None, 1 + len(item), 1))
                weight += inner
                depth = max(depth, levels + 1)
        if weight > self._reader.size * 16 + (1 << 20):
            raise FormatError(
                f"a tuple repeats shared items into {weight} nested items; hashing or printing "
                f"it would take that many steps"
            )
        if depth > MAX_TUPLE_DEPTH:
            raise FormatError(
                f"tuples nest more than {MAX_TUPLE_DEPTH} levels deep; hashing one recurses as "
                f"deeply and would overflow the stack"
            )
        if weight > 1 + len(made) or depth > 1:  # shared or nested structure: remembered
            self._weights[id(made)] = (made, weight, depth)

    for _opcode, _name in (
        (pickle.TUPLE, "load_tuple"),
        (pickle.TUPLE1, "load_tuple1"),
        (pickle.TUPLE2, "load_tuple2"),
        (pickle.TUPLE3, "load_tuple3"),
        (pickle.FROZENSET, "load_frozenset"),
    ):
        dispatch[_opcode[0]] = _weighed(getattr(pickle._Unpickler, _name))
    del _opcode, _name

    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def _put(self, index: int) -> None:
        if index < 0 or index > len(self.memo) + _MEMO_SLACK:
            raise FormatError(
                f"memo index {index} is far beyond the {len(self.memo)} entries stored so far"
            )
        self.memo[index] = self.stack[-1]

    def load_put(self) -> None:
        self._put(int(self.readline()[:-1]))

    def load_binput(self) -> None:
        self._put(self.read(1)[0])

    def load_long_binput(self) -> None:
        self._put(struct.unpack("<I", self.read(4))[0])

    dispatch[pickle.PUT[0]] = load_put
    dispatch[pickle.BINPUT[0]] = load_binput
    dispatch[pickle.LONG_BINPUT[0]] = load_long_binput

    def _no_wrapper_copy(self) -> None:
        top = self.stack[-1]
        if isinstance(top, _WrapperStub) or (isinstance(top, _Obj) and top.wrapper):
            raise FormatError("joblib's array wrapper is referenced twice; joblib never does this")
        if id(top) in self._pending or (
            isinstance(top, _Obj) and top.hook is not None and not top.built
        ):
            raise FormatError(
                "the stream copies an object before its state is set and validated; refusing it"
            )

    def load_get(self) -> None:
        pickle._Unpickler.load_get(self)  # type: ignore[attr-defined]
        self._no_wrapper_copy()

    def load_binget(self) -> None:
        pickle._Unpickler.load_binget(self)  # type: ignore[attr-defined]
        self._no_wrapper_copy()

    def load_long_binget(self) -> None:
        pickle._Unpickler.load_long_binget(self)  # type: ignore[attr-defined]
        self._no_wrapper_copy()

    def load_dup(self) -> None:
        pickle._Unpickler.load_dup(self)  # type: ignore[attr-defined]
        self._no_wrapper_copy()

    dispatch[pickle.GET[0]] = load_get
    dispatch[pickle.BINGET[0]] = load_binget
    dispatch[pickle.LONG_BINGET[0]] = load_long_binget
    dispatch[pickle.DUP[0]] = load_dup

    def load_proto(self) -> None:
        pickle._Unpickler.load_proto(self)  # type: ignore[attr-defined]
        if self._shared.protocol is None and not self._nested:
            self._shared.protocol = self.proto

    def load_frame(self) -> None:
        (size,) = struct.unpack("<Q", self.read(8))
        if size > self._reader.remaining:
            raise FormatError(f"a frame of {size} bytes is longer than the rest of the file")
        self._end_of_frame("before a new frame")
        self._unframer.load_frame(size)

    def load_bytearray8(self) -> None:
        (size,) = struct.unpack("<Q", self.read(8))
        if size > self._remaining():
            raise FormatError(f"a bytearray of {size} bytes is longer than the rest of the file")
        self.append(bytearray(self.read(size)))

    def load_mark(self) -> None:
        if len(self.metastack) >= _MAX_MARKS:
            raise FormatError(f"the stream nests more than {_MAX_MARKS} MARKs")
        pickle._Unpickler.load_mark(self)  # type: ignore[attr-defined]

    def load_stop(self) -> None:
        if len(self.stack) != 1 or self.metastack:
            raise FormatError("STOP leaves a MARK open or more than one object on the stack")
        pickle._Unpickler.load_stop(self)  # type: ignore[attr-defined]

    dispatch[pickle.MARK[0]] = load_mark
    dispatch[pickle.STOP[0]] = load_stop
    dispatch[pickle.PROTO[0]] = load_proto
    dispatch[pickle.FRAME[0]] = load_frame
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    for _op, _what in (
        (pickle.PERSID, "PERSID (persistent ids)"),
        (pickle.BINPERSID, "BINPERSID (persistent ids)"),
        (pickle.EXT1, "EXT1 (the copyreg extension registry)"),
        (pickle.EXT2, "EXT2 (the copyreg extension registry)"),
        (pickle.EXT4, "EXT4 (the copyreg extension registry)"),
        (pickle.INST, "INST (old-style instantiation)"),
        (pickle.OBJ, "OBJ (old-style instantiation)"),
        (pickle.NEXT_BUFFER, "NEXT_BUFFER (out-of-band buffers)"),
        (pickle.READONLY_BUFFER, "READONLY_BUFFER (out-of-band buffers)"),
    ):
        dispatch[_op[0]] = _refuse(_what)
    del _op, _what


# --------------------------------------------------------------------------- entry points


def scan_joblib(data: bytes, *, budget: int | None = None) -> JoblibScan:
    """List every global a joblib stream references, building nothing and importing nothing.

    ``budget``: the most bytes of opcodes to read (:func:`pickle_budget`).

    Example
    -------
    >>> scan = scan_joblib(open("model.joblib", "rb").read())  # doctest: +SKIP
    >>> scan.globals[:2]  # doctest: +SKIP
    (('sklearn.linear_model._logistic', 'LogisticRegression'), ('numpy', 'dtype'))
    """
    shared = _Shared()
    reader = _Reader(data, budget)
    error: str | None = None
    try:
        machine = _Machine(reader, mode="scan", shared=shared, policy=LoadPolicy())
        _refuse_stand_ins(machine.load(), shared.vetting)
        if reader.remaining:
            raise FormatError(
                f"{reader.remaining} bytes of trailing data follow the end of the pickle stream"
            )
    except FormatError as exc:
        error = str(exc)
    return JoblibScan(
        globals=tuple(shared.names),
        protocol=shared.protocol,
        n_arrays=len(shared.layout),
        legacy=shared.legacy,
        error=error,
        layout=tuple(shared.layout),
        hooks_built=tuple(shared.hooks_built),
    )


def load_joblib(
    data: bytes, *, policy: LoadPolicy, source: str, budget: int | None = None
) -> tuple[Any, JoblibScan]:
    """Scan, check the allowlist for every name at once, then load a joblib stream.

    Returns the object and the scan. Raises :class:`FormatError` for a malformed or
    unsupported stream and :class:`UntrustedTypeError` listing every name outside the
    allowlist; nothing from the file is imported or run before both checks pass.
    """
    scan = scan_joblib(data, budget=budget)
    untrusted = scan.untrusted(policy)
    if untrusted:  # even in a malformed stream: the names read so far are the best warning
        raise UntrustedTypeError(untrusted, source=source)
    if scan.error is not None:
        raise FormatError(f"{source} is not a valid joblib file: {scan.error}")
    if scan.legacy:
        raise FormatError(f"cannot load {source}: {_LEGACY_HINT}")
    shared = _Shared(expected=iter(scan.layout), plan=list(scan.hooks_built))
    reader = _Reader(data)  # (the scan read it all: no bound needed twice)
    try:
        value = _Machine(reader, mode="load", shared=shared, policy=policy).load()
    except FormatError as exc:  # (a refusal of what the stream builds: its own message says)
        raise FormatError(f"{source}: {exc}") from exc
    finally:
        release_claims()  # (the bytes objects this load's arrays view: see claim_bytes)
    if (
        reader.remaining
        or len(shared.layout) != len(scan.layout)
        or len(shared.hooks_built) != len(scan.hooks_built)
    ):
        raise FormatError(f"{source}: the load did not read the stream the scan read")
    return value, scan
