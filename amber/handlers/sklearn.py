"""scikit-learn, and any Python object built from allowlisted types: a vetted pickle stream.

The object is pickled with protocol 5. Every buffer of at least ``OUT_OF_BAND_MIN`` bytes (numpy
arrays, scipy.sparse parts, tree node arrays) leaves the stream and becomes an entry of its own,
stored aligned and, unless compressed, memory-mappable; smaller ones stay in the stream, where
the C unpickler reads them faster than a separate entry could be looked up. From 32 kB an entry
of its own is the faster of the two: a stream of 64 kB or more is read into a fresh private map
(see ``read_with_room``), whose pages are faulted in again at every load, while a buffer entry is
read into memory the allocator reuses (the forest's hundred 42 kB value arrays in its stream:
22.7 ms a load; as entries of their own: 19.6 ms, pickle's 14.0, in one loop). The memo stores that
no GET reads back are dropped from the stream (``_prune_memo``, what ``pickletools.optimize``
does): a vocabulary's 300,000 keys are each memoized by the pickler and never referenced again,
and each store costs a load time. Loading goes through the allowlist unpickler: no code from the
file runs.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

from amber.artifact._reader import ArtifactReader, ReadAhead
from amber.artifact._writer import ArtifactWriter
from amber.errors import FormatError
from amber.handlers import _prune_memo, scipy_stats
from amber.handlers._base import SavedPayload
from amber.security._allowlist import is_allowed
from amber.security._fitted import refusals
from amber.security._policy import LoadPolicy, trust_name
from amber.security._scanner import StreamRefused, scan_pickle
from amber.security._unpickler import OWN_METHODS, STR_METHODS, hooked_names, safe_loads

__all__ = ["HANDLER", "SklearnHandler", "pickle_payload"]

OUT_OF_BAND_MIN = 32 * 1024
_STREAM = "model/model.pkl"
_BUFFER = "model/buffers/{:06d}.bin"
_FRAMEWORKS = {"sklearn": "scikit-learn", "numpy": "numpy", "scipy": "scipy", "pandas": "pandas"}


class _LazyBuffers:
    """A sized iterable of buffer entries, each read and verified only when it is reached, or
    taken from those being decoded ahead."""

    def __init__(
        self, reader: ArtifactReader, names: list[str], ahead: ReadAhead | None = None
    ) -> None:
        self._reader = reader
        self._names = names
        self._ahead = ahead

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[memoryview]:
        ahead = self._ahead
        if ahead is None:
            return (self._reader.read(name) for name in self._names)
        return (ahead.read(n) if n in ahead else self._reader.read(n) for n in self._names)


def pickle_payload(payload: dict[str, Any]) -> tuple[str, list[str]]:
    """The stream's entry name and the buffers' of a pickle payload, vetted."""
    stream, names = payload.get("stream"), payload.get("buffers")
    if not isinstance(stream, str):
        raise FormatError("malformed manifest: the payload names no stream entry")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FormatError("malformed manifest: the payload buffer list is not a list of names")
    return stream, names


_WALK_LIMIT = 100_000  # objects visited looking for strided arrays (a model is far smaller)
_ROUND_TRIP_MAX = 16 << 20
_ATOMS = (str, bytes, int, float, complex, bool, type(None))


def _holds_strided_array(obj: Any) -> bool:
    """Whether an array neither C- nor Fortran-contiguous is reachable from ``obj`` through
    containers and instance dictionaries (where estimators keep their fitted arrays)."""
    import numpy as np

    stack: list[Any] = [obj]
    seen: set[int] = set()
    while stack and len(seen) < _WALK_LIMIT:
        item = stack.pop()
        if isinstance(item, _ATOMS) or id(item) in seen:
            continue  # a vocabulary's 300,000 numbers are not 300,000 objects to visit
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            if not (item.flags.c_contiguous or item.flags.f_contiguous):
                return True
            if item.dtype.hasobject:
                stack.extend(item.ravel().tolist())
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        else:
            state = getattr(item, "__dict__", None)
            if isinstance(state, dict):
                stack.extend(state.values())
    return bool(stack)  # past the limit: round-trip to be sure


_METHOD_TYPES = (
    types.MethodType,
    types.BuiltinMethodType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.ClassMethodDescriptorType,
)


def _without_own_methods(obj: Any) -> Any:
    """``obj``'s reduction without the bound methods of itself that it keeps under their own
    names: the attribute then resolves to the class's method, the same function."""
    rv = obj.__reduce_ex__(5)
    state = rv[2] if isinstance(rv, tuple) and len(rv) > 2 else None
    if isinstance(state, dict):
        cls = type(obj)
        own = {
            k
            for k, v in state.items()
            if isinstance(v, types.MethodType)
            and v.__self__ is obj
            and getattr(cls, k, None) is v.__func__
        }
        if own:
            kept = {k: v for k, v in state.items() if k not in own}
            return (rv[0], rv[1], kept, *rv[3:])
    return rv


def _dumps(
    obj: Any, buffer_callback: Callable[[pickle.PickleBuffer], bool]
) -> tuple[bytes, list[str]]:
    """Protocol 5, with scipy.stats' frozen distributions written as data (``scipy_stats``),
    estimators' copies of their own methods left out and unread memo stores dropped; with the
    methods the stream reaches through ``getattr`` that the safe loader will refuse (all but
    ``str``'s own)."""
    refused: list[str] = []

    def method(m: Any) -> Any:
        rv = m.__reduce_ex__(5)
        if isinstance(rv, tuple) and len(rv) == 2 and rv[0] is getattr:
            owner, name = rv[1]
            if not (owner is str and name in STR_METHODS):
                refused.append(f"{getattr(owner, '__qualname__', type(owner).__qualname__)}.{name}")
        return rv

    table: dict[type, Callable[[Any], Any]] = {**copyreg.dispatch_table}
    table.update(scipy_stats.dispatch_table())
    table.update(dict.fromkeys(_METHOD_TYPES, method))
    # estimators that keep a bound method of their own in their instance dictionary, which
    # pickles as getattr(estimator, name): the loader admits it (OWN_METHODS), the saver leaves
    # it out
    for module_name, name in OWN_METHODS:
        cls = getattr(sys.modules.get(module_name), name, None)
        if isinstance(cls, type):
            table[cls] = _without_own_methods
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=5, buffer_callback=buffer_callback)
    pickler.dispatch_table = table
    pickler.dump(obj)
    stream = out.getvalue()
    pruned = _prune_memo.prune(stream)
    return stream if pruned is None else pruned, refused


class SklearnHandler:
    name = "sklearn"
    module_roots: tuple[str, ...] = ()

    def matches(self, obj: Any) -> bool:
        return True

    def save(self, obj: Any, writer: ArtifactWriter) -> SavedPayload:
        buffers: list[pickle.PickleBuffer] = []

        def out_of_band(buf: pickle.PickleBuffer) -> bool:
            if buf.raw().nbytes < OUT_OF_BAND_MIN:
                return True  # in band
            buffers.append(buf)
            return False

        try:
            stream, refused_methods = _dumps(obj, out_of_band)
        except RecursionError:
            raise TypeError(
                f"cannot save a {type(obj).__module__}.{type(obj).__qualname__}: it nests "
                f"containers more deeply than pickle can write (Python's recursion limit, "
                f"{sys.getrecursionlimit()}); flatten the deepest list, dict or tuple first"
            ) from None
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise TypeError(
                f"cannot save a {type(obj).__module__}.{type(obj).__qualname__}: it cannot be "
                f"pickled ({exc}). Objects holding lambdas, open files or locks must drop them "
                f"first."
            ) from exc
        try:
            # the scan the load will make, validation sites included: a stream that loading
            # would refuse is not written
            scan = scan_pickle(stream, n_buffers=len(buffers), hooks=hooked_names())
        except StreamRefused as exc:
            raise TypeError(
                f"cannot save a {type(obj).__module__}.{type(obj).__qualname__}: Amber's safe "
                f"loader would refuse its pickle stream ({exc.reason}), so no file was written. "
                f"This comes from an object that holds itself through an array or a checked "
                f"type (an object array that contains itself); break that cycle and save again"
            ) from None
        names = tuple(f"{m}.{n}" for m, n in scan.globals)
        default = LoadPolicy()
        untrusted = tuple(
            trust_name(m, n) for m, n in scan.globals if not is_allowed(m, n, default)
        )
        if refused_methods:  # getattr is allowed, but only for str's methods: say so now
            untrusted += ("builtins.getattr",)
        # fitted state that a safe load will refuse, checked on the live model: said now
        refused_state = tuple(refusals(obj, scan.globals))
        writer.add(_STREAM, stream)
        buffer_names = []
        for i, buf in enumerate(buffers):
            name = _BUFFER.format(i)
            writer.add(name, buf.raw())
            buffer_names.append(name)
            buf.release()
        cls = type(obj)
        root = cls.__module__.split(".")[0]
        return SavedPayload(
            payload={
                "kind": "pickle",
                "protocol": 5,
                "stream": _STREAM,
                "buffers": buffer_names,
            },
            framework=_FRAMEWORKS.get(root, root),
            object_type=f"{cls.__module__}.{cls.__qualname__}",
            globals=names,
            modules=tuple(sorted({m for m, _ in scan.globals})),
            untrusted=untrusted,
            refused_state=refused_state,
        )

    def load(self, reader: ArtifactReader, payload: dict[str, Any], *, policy: LoadPolicy) -> Any:
        stream_name, names = pickle_payload(payload)
        # A large stream is read into a map of its own with room to spare, so that the
        # validation hooks are spliced in place and the pages are given back as the unpickler
        # consumes them: the load holds the model plus about one frame of the stream, as pickle
        # reading a file does, instead of the model plus the whole stream.
        stream, room = reader.read_with_room(stream_name)
        # Buffers are read, verified and decoded on another thread (read_ahead), at most 4 MB
        # ahead of the unpickler, which takes each when it gets there: an object that copies
        # its buffer (a decision tree) frees it soon after, so loading never holds the file's
        # contents twice. (The forest's 21 MB took 2.5 ms of a 12 ms load to read on this
        # thread; stored with compress="auto", 6 ms of 18 to decode.) Those it leaves (a small
        # file read whole, large entries, a memory-mapped artifact) are read here, one at a
        # time, when reached.
        reader.check_ahead(names)  # (a memory-mapped artifact: on two threads, all at once)
        ahead = reader.read_ahead(names)
        buffers = _LazyBuffers(reader, names, ahead)
        source = f"{str(reader.path)!r}"
        try:
            return safe_loads(
                stream, buffers=buffers, policy=policy, source=source, release=True, room=room
            )
        finally:
            if ahead is not None:
                ahead.close()

    def as_reloaded(self, obj: Any) -> Any:
        """``obj`` as loading its pickle gives it back, for the probe to record.

        Pickling lays a strided array out afresh (a transposed or reversed view becomes
        contiguous) and BLAS then takes other paths, so such an object can differ in the last
        bits from any reload (PCA's components_ after the randomized or ARPACK solver). The
        round trip is in memory: contiguous arrays are shared with ``obj``, not copied, but
        objects that copy their state (trees) take memory again. So an object is round-tripped
        when it holds a strided array, or when it pickles to at most ``_ROUND_TRIP_MAX`` bytes
        (the probe then also shows state that pickling drops); a larger one without strided
        arrays is returned as it is.
        """
        buffers: list[pickle.PickleBuffer] = []
        data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        size = len(data) + sum(b.raw().nbytes for b in buffers)
        if size > _ROUND_TRIP_MAX and not _holds_strided_array(obj):
            for b in buffers:
                b.release()
            return obj
        try:
            return pickle.loads(data, buffers=buffers)  # the caller's own object, just pickled
        except (MemoryError, RecursionError):
            raise
        except Exception as exc:
            cls = type(obj)
            raise TypeError(
                f"cannot save a {cls.__module__}.{cls.__qualname__} with a probe: its pickle "
                f"cannot be read back ({type(exc).__name__}: {exc}), so no load could read the "
                f"file either; fix its __reduce__/__setstate__"
            ) from exc

    def predict(self, model: Any, inputs: Any) -> Any:
        return model.predict(inputs)


HANDLER = SklearnHandler()
