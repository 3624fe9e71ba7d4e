"""Load a pickle stream at C speed without letting it run code from outside the allowlist.

``safe_loads`` vets the stream (:func:`~amber.security._scanner.scan_pickle`), refuses every
global outside the allowlist at once, then runs a :class:`pickle.Unpickler` subclass whose
``find_class`` hands out allowed globals only. A few allowed callables are replaced by
guarded versions (``_GUARDS``) that refuse arguments no honest pickle contains, and numpy's
``_frombuffer`` (every array of a protocol-5 stream) by its C equivalent. Objects of
types whose data can be hostile are validated right after their state is set: the stream
is rewritten so that each such object passes through its validator before any later opcode
can use it (see ``hook_sites`` in the scanner).
"""

from __future__ import annotations

import _compat_pickle
import codecs
import contextlib
import copyreg
import functools
import gc
import io
import math
import mmap
import os
import pickle
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any, cast

import numpy as np

from amber.errors import AmberError, FormatError, UntrustedTypeError
from amber.security._allowlist import (
    BUILT_BY_NEWOBJ,
    entries,
    is_allowed,
    never_reduced,
    reference_only,
    resolve,
)
from amber.security._pickle_scan import (
    frombuffer,
    predictor_check,
    release_claims,
    splice_hooks,
)
from amber.security._policy import LoadPolicy, trust_name
from amber.security._scanner import (
    CALL_ONLY,
    DATA,
    OBJECT,
    STATE,
    PickleScan,
    effective_name,
    scan_pickle,
)
from amber.security._validators import (
    GENERIC_CONSTRUCTORS,
    OBJECT_VALIDATORS,
    PREDICTOR,
    STATE_VALIDATORS,
    Validator,
    forget_predictors,
    predictor_spec,
    run_validator,
    validate_loaded,
    validate_object,
)

__all__ = ["GUARDED", "OWN_METHODS", "STR_METHODS", "safe_loads", "untrusted_globals"]

_HOOK_MODULE = "amber.security._unpickler.hook"
_HOOK_BYTES = _HOOK_MODULE.encode()

_Buffer = bytes | bytearray | memoryview


# --------------------------------------------------------------------------- guards
def _dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype`` as pickles call it, always returning a fresh, unshared dtype.

    Pickled dtypes are ``BUILD``-ed after construction; with ``copy=False`` numpy would hand
    back its process-wide singleton and the stream's state would be written into it.
    """
    if not isinstance(obj, (str, bytes)) or not isinstance(align, bool):
        raise FormatError(f"numpy.dtype called with {type(obj).__name__} {obj!r:.60}")
    return np.dtype(obj, align=align, copy=True)  # type: ignore[arg-type]


def _check_empty_array(cls: Any, shape: Any, dtype: Any) -> None:
    """Honest pickles start every array empty (shape ``(0,)``) and fill it with BUILD.

    A preallocated array is refused: numpy's ``__setstate__`` swaps the dtype before it
    checks the data, and on that error path it later frees the old block under the new
    size, corrupting its allocation cache.
    """
    if not (isinstance(cls, type) and issubclass(cls, np.ndarray)):
        raise FormatError(f"array reconstruction of a non-array type {cls!r:.80}")
    dims = shape if isinstance(shape, tuple) else (shape,)
    if not all(type(n) is int and n >= 0 for n in dims) or math.prod(dims) != 0:
        raise FormatError(f"array reconstruction with a preallocated shape {shape!r:.80}")
    if not isinstance(dtype, (bytes, str, np.dtype)):
        raise FormatError(f"array reconstruction with dtype {dtype!r:.80}")


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """``numpy._core.multiarray._reconstruct``, refusing the huge allocations it could do.

    Honest pickles always pass shape ``(0,)``; the data arrives afterwards via ``BUILD``.
    """
    from numpy._core.multiarray import _reconstruct as real

    _check_empty_array(subtype, shape, dtype)
    return cast(np.ndarray, real(subtype, shape, dtype))


def _scalar(dtype: Any, *obj: Any) -> Any:
    """``numpy._core.multiarray.scalar`` as pickles call it: a dtype and exactly its bytes.

    Without the bytes numpy makes a zeroed scalar of the dtype's size, which a stream can make
    a gigabyte for a few bytes of its own.
    """
    from numpy._core.multiarray import scalar as real

    if not isinstance(dtype, np.dtype) or len(obj) != 1:
        raise FormatError("numpy scalar rebuilt without a dtype and its data")
    if dtype.subdtype is not None:
        raise FormatError(f"numpy scalar of a sub-array dtype {dtype}, which numpy never makes")
    data = obj[0]
    if dtype.hasobject:
        # a record with object fields comes with its 0-d array, which the scalar views
        if not (isinstance(data, np.ndarray) and data.shape == () and data.dtype == dtype):
            raise FormatError(f"numpy scalar of {dtype} rebuilt from other than its 0-d array")
    elif not (isinstance(data, bytes) and len(data) == dtype.itemsize):
        raise FormatError(f"numpy scalar of {dtype.itemsize} bytes rebuilt from other data")
    return real(dtype, data)


def _mareconstruct(subtype: Any, baseclass: Any, baseshape: Any, basetype: Any) -> Any:
    """``numpy.ma.core._mareconstruct`` with the same limits as :func:`_reconstruct`."""
    from numpy.ma.core import MaskedArray
    from numpy.ma.core import _mareconstruct as real  # type: ignore[attr-defined]

    if not (isinstance(subtype, type) and issubclass(subtype, MaskedArray)):
        raise FormatError(f"masked array reconstruction of {subtype!r:.80}")
    _check_empty_array(baseclass, baseshape, basetype)
    return real(subtype, baseclass, baseshape, basetype)


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` restricted to the bases the pickler itself writes."""
    if base not in (object, dict, list, set, frozenset, tuple, int, float, str, bytes):
        raise FormatError(f"copyreg._reconstructor with base {base!r:.80}")
    if (
        not (isinstance(cls, type) and issubclass(cls, base))
        or cls is tuple  # (honest pickles write tuples with TUPLE opcodes, which the scan bounds)
        or cls.__module__ in BUILT_BY_NEWOBJ
    ):
        raise FormatError(f"copyreg._reconstructor of {cls!r:.80}")
    return copyreg._reconstructor(cls, base, state)  # type: ignore[attr-defined]


def _check_newobj_class(cls: Any, helper: str) -> None:
    if (
        not isinstance(cls, type)
        or issubclass(cls, np.ndarray)
        or reference_only(cls.__module__, cls.__qualname__)
    ):
        # arrays and numpy scalars are rebuilt by numpy's own helpers; through __new__ they
        # could ask for any amount of memory
        raise FormatError(f"copyreg.{helper} of {cls!r:.80}")


def _newobj(cls: Any, *args: Any) -> Any:
    _check_newobj_class(cls, "__newobj__")
    return cls.__new__(cls, *args)


def _newobj_ex(cls: Any, args: Any, kwargs: Any) -> Any:
    _check_newobj_class(cls, "__newobj_ex__")
    if not (isinstance(args, tuple) and isinstance(kwargs, dict)):
        raise FormatError("copyreg.__newobj_ex__ with malformed arguments")
    return cls.__new__(cls, *args, **kwargs)


def _encode(obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """``_codecs.encode`` as protocols 0-2 use it for bytes: latin-1 text to bytes only."""
    if not (isinstance(obj, str) and isinstance(encoding, str) and errors == "strict"):
        raise FormatError("_codecs.encode called with unexpected arguments")
    if codecs.lookup(encoding).name != "iso8859-1":
        raise FormatError(f"_codecs.encode with encoding {encoding!r:.40}")
    return obj.encode("latin-1")


def _binary(kind: type[bytes] | type[bytearray]) -> Callable[..., Any]:
    """``bytes``/``bytearray`` from bytes (or latin-1 text), never from a size to allocate."""

    def make(*args: Any) -> Any:
        if args and not isinstance(args[0], (bytes, bytearray, str)):
            raise FormatError(f"{kind.__name__} called with a {type(args[0]).__name__}")
        if (
            len(args) == 2
            and isinstance(args[0], str)
            and isinstance(args[1], str)
            and codecs.lookup(args[1]).name == "iso8859-1"
        ):
            return kind(args[0], "latin-1")
        if len(args) > 1 or (args and isinstance(args[0], str)):
            raise FormatError(f"{kind.__name__} called with unexpected arguments")
        return kind(*args)

    return make


_FRACTION = re.compile(r"[+-]?[0-9]{1,4300}(?:/[0-9]{1,4300})?")
_FRACTION_BITS = 1 << 16


def _fraction(*args: Any) -> Any:
    """``fractions.Fraction`` as pickles call it: numerator and denominator (Python 3.11 on),
    or its own ``str()``, ``"n/d"`` (before).

    Fraction also parses decimal exponents, and ``Fraction("1e99999999")`` computes a
    hundred-million-digit integer, as reducing two huge integers does: minutes of CPU from a
    small stream. Honest fractions in a model are small.
    """
    from fractions import Fraction

    if len(args) == 2 and all(type(a) is int and a.bit_length() <= _FRACTION_BITS for a in args):
        if args[1] != 0:
            return Fraction(*args)
    elif len(args) == 1 and isinstance(args[0], str) and _FRACTION.fullmatch(args[0]):
        return Fraction(args[0])
    shown = ", ".join(
        f"an int of {a.bit_length()} bits"
        if type(a) is int and a.bit_length() > 256
        else f"{a!r:.40}"
        for a in args
    )
    raise FormatError(f"fractions.Fraction called with ({shown})")


# The string methods a text pipeline is given as its tokenizer or preprocessor
# (CountVectorizer(tokenizer=str.split)): pickle writes each as getattr(str, "split").
STR_METHODS = frozenset(
    {
        "split", "rsplit", "splitlines", "lower", "upper", "casefold", "strip", "lstrip",
        "rstrip", "title", "capitalize", "swapcase",
    }
)  # fmt: skip


# Bound methods an estimator keeps of itself in its own __dict__, which pickle writes as
# getattr(estimator, name): HistGradientBoosting*, fitted with early stopping and a scorer, puts
# _raw_predict back as an attribute after patching it (_patch_raw_predict). The method is the
# class's own, bound to the estimator the stream built (amber.save leaves it out).
OWN_METHODS = {
    ("sklearn.ensemble._hist_gradient_boosting.gradient_boosting", cls): "_raw_predict"
    for cls in ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")
}


def _str_method(obj: Any, name: Any) -> Any:
    """``getattr`` as pickles call it: for a method of ``str``, or for a method an estimator
    keeps of itself (``OWN_METHODS``), and for nothing else."""
    if obj is str and type(name) is str and name in STR_METHODS:
        return getattr(str, name)
    cls = type(obj)
    if type(name) is str and OWN_METHODS.get((cls.__module__, cls.__qualname__)) == name:
        method = getattr(cls, name)
        return method.__get__(obj, cls)  # the class's function, never the instance's attribute
    raise FormatError(
        f"getattr in a pickle stream only reaches the string methods a text pipeline is "
        f"given (str.{', str.'.join(sorted(STR_METHODS))}) and a HistGradientBoosting "
        f"model's own _raw_predict; this one asks for "
        f"{getattr(obj, '__name__', type(obj).__name__)!s:.60}.{name!s:.60}. If you made "
        f"the file yourself, load it with allow_arbitrary_code=True"
    )


def _complex(*args: Any) -> complex:
    """``complex`` as pickles call it: ``complex(real, imag)`` from numbers."""
    if not (1 <= len(args) <= 2 and all(type(a) in (int, float) for a in args)):
        raise FormatError(f"complex called with {len(args)} argument(s) that are not numbers")
    return complex(*args)


_DECIMAL = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?|[+-]?(?:Infinity|s?NaN)"
)


def _decimal(value: Any = "0") -> Any:
    """``decimal.Decimal`` as pickles call it: from its own ``str()``, exponents of at most four
    digits (an int() of ``Decimal("1e200000000")`` would take minutes)."""
    from decimal import Decimal

    if not (isinstance(value, str) and len(value) <= 1000 and _DECIMAL.fullmatch(value)):
        shown = f"{value!r:.60}" if isinstance(value, str) else f"a {type(value).__name__}"
        raise FormatError(f"decimal.Decimal called with {shown}")
    return Decimal(value)


def _bit_generator(name: Any = "MT19937") -> Any:
    """numpy's ``__bit_generator_ctor``: a known bit generator, by name or class only."""
    from numpy.random import _pickle as real

    known: dict[str, Any] = dict(real.BitGenerators)
    if isinstance(name, str) and name in known:
        return known[name]()
    if any(name is cls for cls in known.values()):
        return name()
    raise FormatError(f"unknown numpy bit generator {name!r:.60}")


def _rng_ctor(kind: str) -> Callable[..., Any]:
    def make(bit_generator: Any = "MT19937", ctor: Any = _bit_generator) -> Any:
        from numpy.random import BitGenerator, Generator, RandomState

        if not isinstance(bit_generator, BitGenerator):
            if ctor is not _bit_generator:
                raise FormatError("numpy random state built with an unexpected constructor")
            bit_generator = _bit_generator(bit_generator)
        return Generator(bit_generator) if kind == "generator" else RandomState(bit_generator)

    return make


def _compiled_new(module: str, *bases: str) -> Callable[[Any], Any]:
    """scikit-learn's ``newObj`` of the KD and ball trees and the distance metrics, building
    only its own module's trees or metrics (subclasses of ``bases``): their compiled
    ``__setstate__`` reads its state unchecked, and the state check that runs before it is
    chosen by this constructor (the metrics' ``newObj`` building a tree let a 3-item state
    through to a tree's 13 reads)."""

    def new(cls: Any) -> Any:
        found = (getattr(sys.modules.get(module), base, None) for base in bases)
        kinds = tuple(kind for kind in found if isinstance(kind, type))
        if not (isinstance(cls, type) and issubclass(cls, kinds) and cls.__module__ == module):
            raise FormatError(f"{module}.newObj of {cls!r:.80}, which it never builds")
        return cls.__new__(cls)

    return new


_GUARDS: dict[tuple[str, str], Any] = {
    ("sklearn.neighbors._kd_tree", "newObj"): _compiled_new(
        "sklearn.neighbors._kd_tree", "BinaryTree64", "BinaryTree32", "BinaryTree"
    ),
    ("sklearn.neighbors._ball_tree", "newObj"): _compiled_new(
        "sklearn.neighbors._ball_tree", "BinaryTree64", "BinaryTree32", "BinaryTree"
    ),
    ("sklearn.metrics._dist_metrics", "newObj"): _compiled_new(
        "sklearn.metrics._dist_metrics", "DistanceMetric"
    ),
    ("numpy", "dtype"): _dtype,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copyreg", "__newobj__"): _newobj,
    ("copyreg", "__newobj_ex__"): _newobj_ex,
    ("_codecs", "encode"): _encode,
    ("numpy.ma.core", "_mareconstruct"): _mareconstruct,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("builtins", "bytearray"): _binary(bytearray),
    ("builtins", "bytes"): _binary(bytes),
    ("numpy.random._pickle", "__bit_generator_ctor"): _bit_generator,
    ("fractions", "Fraction"): _fraction,
    ("decimal", "Decimal"): _decimal,
    ("builtins", "complex"): _complex,
    ("builtins", "getattr"): _str_method,
    ("numpy.random._pickle", "__randomstate_ctor"): _rng_ctor("randomstate"),
    ("numpy.random._pickle", "__generator_ctor"): _rng_ctor("generator"),
}
"""Allowed callables that are replaced, when loading, by versions that check arguments."""

GUARDED = frozenset(_GUARDS)

# Stand-ins a stream may also hold as values: numpy < 2 pickles a Generator as
# __generator_ctor("PCG64", __bit_generator_ctor), handing the constructor over as an argument,
# which the __generator_ctor stand-in accepts only when it is this stand-in (which builds only
# numpy's own bit generators, by name or class).
HELD_GUARDS = frozenset({("numpy.random._pickle", "__bit_generator_ctor")})
# the stand-ins a stream may only call
CALL_ONLY_GUARDS = GUARDED - HELD_GUARDS

# The globals whose results hold bytes an array may view in place: numpy's _frombuffer makes an
# array on a bytearray of the stream or an out-of-band buffer (the BYTEARRAY8 and NEXT_BUFFER
# opcodes), and bytearray makes such bytes. Validators check those arrays where they lie, so
# the scanner refuses any later change to these (``DATA``).
_FROMBUFFER = frozenset(
    {("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer")}
)
VIEWED_DATA = _FROMBUFFER | {("builtins", "bytearray")}

# Allowed callables that are replaced, when loading, by an equivalent that is faster: the same
# checks, the same results.
_FASTER: dict[tuple[str, str], Any] = dict.fromkeys(_FROMBUFFER, frombuffer)


# --------------------------------------------------------------------------- hooks
@functools.cache
def hooked_names() -> dict[tuple[str, str], int]:
    """Raw names whose objects (or states) are validated while loading, with their modes.

    Python 2 spellings are included: below protocol 3 the stream says ``copy_reg`` where
    the unpickler imports ``copyreg``.
    """
    modes = dict.fromkeys(OBJECT_VALIDATORS, OBJECT)
    modes.update(dict.fromkeys(GENERIC_CONSTRUCTORS, OBJECT))
    modes.update((k, OBJECT) for k, e in entries().items() if e.validator)
    for key in STATE_VALIDATORS:
        modes[key] = modes.get(key, 0) | STATE
    for key in CALL_ONLY_GUARDS:  # loaded as stand-ins that check arguments: called, not held
        modes[key] = modes.get(key, 0) | CALL_ONLY
    for key in VIEWED_DATA:  # arrays on the stream's bytes, and such bytes: never modified
        modes[key] = modes.get(key, 0) | DATA
    for (module, name), mode in list(modes.items()):
        old = _compat_pickle.REVERSE_NAME_MAPPING.get((module, name))
        if old is None and module in _compat_pickle.REVERSE_IMPORT_MAPPING:
            old = (_compat_pickle.REVERSE_IMPORT_MAPPING[module], name)
        if old is not None:
            modes[old] = modes.get(old, 0) | mode
    return modes


def _validator_for(name: tuple[str, str], kind: int) -> Validator:
    # objects are checked by their type, whichever allowed global built them
    if kind != _STATE_SITE:
        return validate_object
    return STATE_VALIDATORS[effective_name(*name, fix_imports=True)]


_STATE_SITE = 1


def _passing_through(validator: Validator, kind: int) -> Callable[[Any], Any]:
    """The hook spliced into the stream: it checks what was built and leaves it in place; a
    state validator may leave a replacement state instead (see ``Validator``)."""
    if kind != _STATE_SITE:

        def check(obj: Any) -> Any:
            run_validator(validator, obj)
            return obj

        return check

    def check_state(state: Any) -> Any:
        replaced = run_validator(validator, state)
        return state if replaced is None else replaced

    return check_state


def _hook(name: tuple[str, str], kind: int) -> Callable[[Any], Any]:
    check = _passing_through(_validator_for(name, kind), kind)
    if kind != _STATE_SITE and effective_name(*name, fix_imports=True) == PREDICTOR:
        # a boosting model's thousands of predictors: checked in C, with this as the fallback
        return functools.partial(predictor_check, predictor_spec(check))
    return check


def _with_hooks(
    data: _Buffer, scan: PickleScan, room: mmap.mmap | None = None
) -> tuple[_Buffer, list[Callable[[Any], Any]]]:
    """Insert ``validator(x)`` calls into the stream around each hooked object or state.

    At a site's ``start`` the validator is pushed (a GLOBAL naming it); at its ``end``,
    ``TUPLE1 REDUCE`` calls it on what was built in between and leaves the result (the
    same object) in place. Sites nest like the stack (at one offset: closings, inner first,
    then openings, outer first); frames that enclose inserted bytes are grown to match. The
    splicing itself is ``splice_hooks`` in _pickle_scan.c.

    The memo stores in ``scan.forget`` (nothing reads them back) store ``None`` instead, so
    that the unpickler's memo does not hold everything it built until the load ends: a forest
    whose trees copy their node arrays frees each array as soon as its tree is built, and a
    boosting model's 20,000 argument tuples go as soon as they are used.

    With ``room`` (a writable map that starts with ``data``) the stream is rewritten in place
    when it fits, and the result is a view of ``room``.
    """
    if not scan.hook_sites and not scan.forget:
        return data, []
    keys = sorted({(name, kind) for _, _, name, kind in scan.hook_sites})
    number = {key: k for k, key in enumerate(keys)}
    numbers = [number[(name, kind)] for _, _, name, kind in scan.hook_sites]
    hooks = [_hook(name, kind) for name, kind in keys]
    args = (scan.hook_sites, numbers, scan.frames, _HOOK_BYTES, scan.forget)
    if room is not None:
        size: int | None = splice_hooks(data, *args, room)
        if size is not None:
            return memoryview(room)[:size], hooks
    spliced: bytes = splice_hooks(data, *args)
    return spliced, hooks


_GIVE_BACK_STEP = 64 * 1024  # one pickle frame
_COPY_STEP = 8 << 20  # of a large read (readinto)


class _Consuming:
    """A read-only file over the stream in a private map, for the unpickler to read.

    Pages it has read are given back to the system (``MADV_DONTNEED``) as it goes, a frame's
    worth at a time: the unpickler copies what it reads, so the stream's memory shrinks while
    the model's grows, and a load holds about what pickle reading from a file holds, not the
    model plus the whole stream.
    """

    def __init__(self, block: mmap.mmap, size: int) -> None:
        self._block = block
        self._view = memoryview(block)[:size]
        self._size = size
        self._pos = 0
        self._given = 0

    def _advance(self, end: int) -> None:
        self._pos = end
        upto = end - end % mmap.PAGESIZE
        if upto - self._given >= _GIVE_BACK_STEP:
            self._block.madvise(mmap.MADV_DONTNEED, self._given, upto - self._given)
            self._given = upto

    def read(self, n: int = -1) -> bytes:
        start = self._pos
        end = self._size if n is None or n < 0 else min(start + n, self._size)
        out = self._view[start:end].tobytes()
        self._advance(end)
        return out

    def readinto(self, buffer: Any) -> int:
        # in steps, each given back once copied: a 264 MB array held in the stream is never
        # in memory twice (the unpickler's bytearray and these pages)
        target = memoryview(buffer).cast("B")
        n = min(target.nbytes, self._size - self._pos)
        for done in range(0, n, _COPY_STEP):
            step = min(_COPY_STEP, n - done)
            target[done : done + step] = self._view[self._pos : self._pos + step]
            self._advance(self._pos + step)
        return n

    def readline(self) -> bytes:
        end = self._block.find(b"\n", self._pos, self._size)
        return self.read(self._size - self._pos if end < 0 else end + 1 - self._pos)


def _input_file(data: _Buffer, room: mmap.mmap | None) -> Any:
    """What the unpickler reads: the stream in place when it is ``room``'s start, else a copy."""
    if (
        room is not None
        and hasattr(mmap, "MADV_DONTNEED")
        and isinstance(data, memoryview)
        and data.obj is room
    ):
        return _Consuming(room, data.nbytes)
    return io.BytesIO(data if isinstance(data, bytes) else bytes(data))


# --------------------------------------------------------------------------- unpickler
# (raw module, raw name, fix_imports) -> ((module, name), object): what find_class handed out,
# so that later loads skip the import machinery. Depends on the name alone; whether the
# name is allowed is still decided per load, by that load's policy.
_FOUND: dict[tuple[str, str, bool], tuple[tuple[str, str], Any]] = {}


class _SafeUnpickler(pickle.Unpickler):
    def __init__(
        self,
        file: io.BytesIO,
        *,
        buffers: Iterable[Any],
        policy: LoadPolicy,
        scan: PickleScan,
        hooks: list[Callable[[Any], Any]],
    ) -> None:
        super().__init__(file, buffers=buffers)
        self._policy = policy
        self._scan = scan
        self._hooks = hooks
        self._hooked = hooked_names()

    def find_class(self, module: str, name: str) -> Any:
        if module == _HOOK_MODULE:
            return self._hooks[int(name)]
        raw = (module, name)
        cached = _FOUND.get((module, name, self._scan.fix_imports))
        if cached is not None and is_allowed(*cached[0], self._policy):
            return cached[1]
        module, name = effective_name(module, name, self._scan.fix_imports)
        if not is_allowed(module, name, self._policy):
            raise UntrustedTypeError([trust_name(module, name)])
        obj = self._find(raw, module, name)
        if module != "__main__":  # a notebook may define it again: look it up every time
            _FOUND[(*raw, self._scan.fix_imports)] = ((module, name), obj)
        return obj

    def _find(self, raw: tuple[str, str], module: str, name: str) -> Any:
        guard = _GUARDS.get((module, name)) or _FASTER.get((module, name))
        if guard is not None:
            return guard
        obj = resolve(module, name, self._policy)
        if isinstance(obj, type) and raw not in self._hooked:
            key = (obj.__module__, obj.__qualname__)
            if key in OBJECT_VALIDATORS:
                raise FormatError(
                    f"{module}.{name} is an alias of {key[0]}.{key[1]}, whose objects must be "
                    f"validated; Amber cannot validate them under this name"
                )
        return obj


_GC_LOCK = threading.Lock()
_gc_pauses = 0  # loads in progress that paused the cyclic collector
_gc_was_enabled = False


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a stream is unpickled.

    Everything an unpickler builds stays alive, so the collections its allocations trigger
    (one every 700 new containers) only re-traverse the growing model: a model of 20,000
    small arrays paid several milliseconds for them. The collector is resumed (if it was
    running) when the last concurrent load ends.
    """
    global _gc_pauses, _gc_was_enabled
    with _GC_LOCK:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


def _after_fork_in_child() -> None:
    """A child forked while other threads were loading has none of those loads: its count of
    paused loads starts at zero, with the collector as it was before them, and a fresh lock
    (the parent's may have been held at the fork)."""
    global _GC_LOCK, _gc_pauses
    _GC_LOCK = threading.Lock()
    if _gc_pauses:
        _gc_pauses = 0
        if _gc_was_enabled:
            gc.enable()


os.register_at_fork(after_in_child=_after_fork_in_child)


def untrusted_globals(scan: PickleScan, policy: LoadPolicy) -> list[str]:
    """The dotted names in ``scan`` that ``policy`` does not allow, in order of first use."""
    return [trust_name(m, n) for m, n in scan.globals if not is_allowed(m, n, policy)]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "it asks for more memory than is available (a hostile size?)"
    if isinstance(exc, RecursionError):
        return "it nests objects too deeply"
    return f"{type(exc).__name__}: {exc}"


def safe_loads(
    stream: _Buffer,
    *,
    buffers: Iterable[Any] = (),
    policy: LoadPolicy,
    source: str = "the data",
    release: bool = False,
    room: mmap.mmap | None = None,
    vet: Callable[[PickleScan], None] | None = None,
    max_memo: int | None = None,
) -> Any:
    """Unpickle ``stream`` without running code from outside the allowlist.

    Parameters
    ----------
    stream:
        The pickle stream (protocol 0-5).
    buffers:
        The out-of-band buffers, in order; the stream must use all of them. A sized iterable
        (one with ``len``) is consumed lazily, one buffer per ``NEXT_BUFFER``.
    policy:
        What is allowed; ``policy.trusted`` extends the allowlist and
        ``policy.allow_arbitrary_code`` falls back to plain :func:`pickle.loads` (with a
        warning).
    release:
        ``stream`` is a memoryview the caller is done with: it is released as soon as the
        unpickler has its own copy (with the validation hooks inserted), so that a buffer
        only it holds is freed before the objects are built (peak memory).
    room:
        A writable private map that starts with ``stream`` and has spare room after it
        (:meth:`~amber.artifact._reader.ArtifactReader.read_with_room`): the stream is then
        rewritten in place and read from there, its pages given back to the system as the
        unpickler consumes them.
    vet:
        Called with the stream's scan before anything is built or rewritten; it may raise to
        refuse the stream.
    max_memo:
        The most memo entries the stream may store (see :func:`scan_pickle`).

    Raises
    ------
    FormatError
        The stream breaks a rule, or its data is inconsistent (damaged or crafted).
    UntrustedTypeError
        The stream references globals outside the allowlist; all are listed, nothing ran.

    Examples
    --------
    >>> import pickle
    >>> safe_loads(pickle.dumps({"a": [1, 2]}, protocol=5), policy=LoadPolicy())
    {'a': [1, 2]}
    """
    if not isinstance(buffers, Sized):
        buffers = list(buffers)
    # a sized iterable is passed through as is: its buffers are fetched one at a time, when
    # the unpickler reaches them
    if policy.allow_arbitrary_code:
        policy.warn_if_unsafe(source)
        try:
            return pickle.loads(stream, buffers=buffers)
        except (AmberError, Warning, OSError):
            raise
        except Exception as exc:
            raise FormatError(f"{source} could not be unpickled: {_describe(exc)}") from exc
    n_buffers = len(cast(Sized, buffers))
    scan = scan_pickle(
        stream, n_buffers=n_buffers, hooks=hooked_names(), source=source, max_memo=max_memo
    )
    if vet is not None:
        vet(scan)
    refused = untrusted_globals(scan, policy)
    if refused:
        raise UntrustedTypeError(refused, source=source)
    called = sorted(f"{m}.{n}" for m, n in scan.called if reference_only(m, n))
    if called:
        raise FormatError(
            f"{source} calls {', '.join(called)}, which honest pickles only name, never call "
            f"(arrays and numpy scalars are rebuilt through numpy's helpers; functions are "
            f"estimator parameters); it was refused before loading"
        )
    reduced = sorted(f"{m}.{n}" for m, n in scan.reduced if never_reduced(m, n))
    if reduced:
        raise FormatError(
            f"{source} constructs {', '.join(reduced)} with arguments, which honest pickles "
            f"never do (they set a sparse matrix's state; its constructor would allocate for "
            f"any shape); it was refused before loading"
        )
    data, hooks = _with_hooks(stream, scan, room)
    file = _input_file(data, room)
    if isinstance(data, memoryview) and data is not stream:
        data.release()
    del data
    if release and isinstance(stream, memoryview):
        stream.release()
    unpickler = _SafeUnpickler(file, buffers=buffers, policy=policy, scan=scan, hooks=hooks)
    try:
        with _collector_paused():
            obj = unpickler.load()
            validate_loaded(obj, scan.globals, cross_only=True)  # each object checked as built
    except (AmberError, Warning, OSError):
        raise
    except MemoryError as exc:
        # the unpickler's stack and memo hold what was built so far, and, when the check after
        # the load ran short, ``obj`` and the check's frames (through the traceback) all of it:
        # free them before the error is made, which would otherwise meet the same shortage and
        # escape as itself
        traceback.clear_frames(exc.__traceback__)
        del unpickler
        obj = None
        raise FormatError(
            f"{source} could not be unpickled: {_describe(MemoryError())}. The stream passed "
            f"Amber's checks, but its contents are inconsistent (damaged or crafted); nothing "
            f"outside the allowlist was run."
        ) from None
    except Exception as exc:
        raise FormatError(
            f"{source} could not be unpickled: {_describe(exc)}. The stream passed Amber's "
            f"checks, but its contents are inconsistent (damaged or crafted); nothing "
            f"outside the allowlist was run."
        ) from exc
    finally:
        forget_predictors()
        release_claims()  # (the bytes objects this load's arrays view: see claim_bytes)
    return obj


# The tables every load consults (the allowlist, the names to hook) are static data: build them
# with the module, as its code is, rather than in the middle of the first load.
hooked_names()
