"""The four verbs, one path each: validate -> policy -> integrity -> handler -> probe."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
import reprlib
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from amber import _env, _probe
from amber._info import ArtifactInfo, VerifyReport
from amber._paths import is_stream
from amber._words import counted
from amber.artifact import _manifest
from amber.artifact._manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    JSON_INT_RANGE,
    SIGNATURE_NAME,
    is_utf8,
)
from amber.artifact._reader import ArtifactReader, NotAnArtifact
from amber.artifact._writer import artifact_writer
from amber.errors import (
    AmberError,
    EnvironmentMismatch,
    EnvironmentMismatchError,
    FormatError,
    IntegrityError,
    ParityError,
)
from amber.handlers import get_handler, handler_for
from amber.handlers._base import call_save, probe_methods
from amber.security._policy import LoadPolicy, runners_note, split_trust

__all__ = ["inspect", "load", "load_savedmodel_dir", "save", "scan", "verify"]

ProbeMode = Literal["auto", "always", "never"]
ParityMode = Literal["raise", "warn"]
EnvMode = Literal["warn", "strict"]
_ZIP_MAGIC = b"PK\x03\x04"


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(
            f"{name}={value!r} is not valid; use one of {', '.join(repr(c) for c in choices)}"
        )


def check_load_options(probe: object, parity: object, environment: object, mmap: object) -> None:
    """The options ``amber.load`` and ``Registry.load`` share (checked by both: a URI load
    passes them on)."""
    _check_choice("probe", probe, ("auto", "always", "never"))
    _check_choice("parity", parity, ("raise", "warn"))
    _check_choice("environment", environment, ("warn", "strict"))
    if mmap is not True and mmap is not False:
        raise TypeError(f"mmap must be True or False, got {mmap!r}")


def _existing(source: str | os.PathLike[str]) -> Path:
    if not isinstance(source, (str, os.PathLike)):
        hint = (
            "; to load bytes held in memory, write them to a file first"
            if isinstance(source, (bytes, bytearray, memoryview))
            else ""
        )
        raise TypeError(f"expected a file path, got {_kind(source)}: {reprlib.repr(source)}{hint}")
    text = os.fspath(source)
    if not text:
        raise FileNotFoundError("the path is empty; give the model file's path")
    if isinstance(text, str) and _URL.match(text):
        raise ValueError(
            f"{text!r} is a URL: Amber reads local files (and registry URIs, models:/NAME/VERSION "
            f"or models:/NAME@ALIAS); download the file first and pass its path"
        )
    return Path(source)


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _kind(value: object) -> str:
    return f"a value of type {type(value).__name__}"


def _registry_uri(source: Any) -> bool:
    return isinstance(source, str) and source.startswith("models:")


def _existing_or_registered(source: str | os.PathLike[str]) -> Path:
    """A file path, or the local copy of a registry version named by a ``models:/`` URI."""
    if _registry_uri(source):
        from amber.registry._default import default_registry

        return Path(default_registry().path(str(source)))
    return _existing(source)


_TAIL = 16 << 10  # the end of a zip: its central directory's last records


def _is_artifact(path: Path) -> bool:
    """True for a zip (an artifact), False for anything else; clear errors for bad paths, for a
    pipe or device (which the 4 bytes read here would consume) and for a zip that another
    library wrote (a PyTorch checkpoint, a Keras archive)."""
    if is_stream(path):
        raise ValueError(
            f"{str(path)!r} is a pipe or a device, not a file, and this needs a file it can "
            f"read more than once; save what it gives to a file and pass that file instead"
        )
    try:
        with open(path, "rb") as f:
            if f.read(4) != _ZIP_MAGIC:
                return False
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - _TAIL, 0))
            tail = f.read(_TAIL)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no such file: {str(path)!r}; check the path and the working folder"
        ) from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{str(path)!r} is a folder, not a model file") from None
    except PermissionError:
        raise PermissionError(
            f"cannot read {str(path)!r}: permission denied; check its permissions and its "
            f"folder's (ls -l), or run as a user who may read it"
        ) from None
    other = _other_zip(tail)
    if other is not None:
        raise FormatError(f"{str(path)!r} is a ZIP file but not an Amber artifact: {other}")
    return True


def _other_zip(tail: bytes) -> str | None:
    """What a zip whose last bytes are ``tail`` is, when another library wrote it."""
    if b"amber.json" in tail:
        return None  # Amber's manifest entry: the reader judges the rest
    if any(m in tail for m in (b"/data.pkl", b"/.data/", b"/byteorder", b"/constants.pkl")):
        return (
            "it looks like a PyTorch checkpoint (torch.save) or TorchScript archive, which "
            "Amber does not read (loading one unpickles it). Where you trust the file, load it "
            "with torch.load(path, weights_only=True) into your model, then amber.save(model, "
            "'model.amber', sample=...)"
        )
    if b"config.json" in tail and (b"metadata.json" in tail or b"model.weights.h5" in tail):
        return (
            "it looks like a Keras archive (.keras). Load it with "
            "keras.saving.load_model(path, safe_mode=True), then amber.save(model, "
            "'model.amber', sample=...)"
        )
    return None


@contextlib.contextmanager
def _local(path: Path) -> Iterator[Path]:
    """``path``, or for a pipe or device (``<(cat model.amber)``, ``/dev/stdin``) a temporary
    file holding what it gave: read once (sniffing it and reading it again would lose the
    first bytes), and at most ``STREAM_LIMIT`` bytes (``/dev/zero`` never ends)."""
    if not is_stream(path):
        yield path
        return
    from amber.security._foreign import copy_stream

    with tempfile.TemporaryDirectory(prefix="amber-") as folder:
        copy = Path(folder) / "stream"
        with open(copy, "wb") as out:  # chunk by chunk: the stream is held once, on disk
            copy_stream(path, out.write)
        yield copy


@contextlib.contextmanager
def _naming(path: Path | str, local: Path | None = None) -> Iterator[None]:
    """Errors of the block name ``path`` (not its temporary copy ``local``), or a registry
    URI, when they name no file (a truncated zip: "no end-of-central-directory record found").
    ``load`` of a file catches in place instead (a try is free on its hot path)."""
    try:
        yield
    except AmberError as exc:
        _name_the_file(exc, path, local)
        raise


def _name_the_file(exc: AmberError, path: Path | str, local: Path | None = None) -> None:
    """Make ``exc``'s message name ``path`` (see :func:`_naming`)."""
    message = str(exc)
    if local is not None and str(local) != str(path):
        message = message.replace(str(local), str(path))
    if str(path) not in message and repr(str(path))[1:-1] not in message:
        message = f"{str(path)!r}: {message}"
    if message != str(exc):
        exc.args = (message,)
        if isinstance(exc, ImportError):
            exc.msg = message  # what an ImportError (HandlerNotAvailable) shows


def _metadata_problem(metadata: dict[str, Any]) -> str | None:
    """What JSON cannot hold in ``metadata``, or would silently change, as "where: what, and
    what to do"; None when it can be stored (tuples load as lists, and subclasses of dict,
    list, str and the numbers as those)."""
    # (where, value, the ids of the containers above it: a container among them is a cycle)
    stack: list[tuple[str, Any, tuple[int, ...]]] = [("metadata", metadata, ())]
    while stack:
        where, value, above = stack.pop()
        if len(above) > _manifest.MAX_NESTING:
            return f"it nests deeper than the {_manifest.MAX_NESTING} levels a reader accepts"
        if value is None or isinstance(value, (bool, str, float, int)):
            if isinstance(value, float) and not math.isfinite(value):
                return f"{where} is {value}: JSON has no NaN or infinity; store None or a string"
            if isinstance(value, int) and not JSON_INT_RANGE[0] <= value <= JSON_INT_RANGE[1]:
                return (
                    f"{where} is {value}, beyond 64 bits (it would load as a float); store a string"
                )
            if isinstance(value, str) and not is_utf8(value):
                return f"{where} {_NOT_TEXT}"
            continue
        if not isinstance(value, (dict, list, tuple)):
            return f"{where} is {_metadata_advice(value)}"
        if id(value) in above:
            return f"{where} is a container that holds itself (a cycle), which JSON cannot hold"
        inner = (*above, id(value))
        if isinstance(value, dict):  # (a subclass, an OrderedDict, loads as a plain dict)
            for key, item in value.items():
                if not isinstance(key, str):
                    return f"{where} has the key {key!r}, not a string (JSON keys are strings)"
                if not is_utf8(key):
                    return f"{where} has a key that {_NOT_TEXT}"
                stack.append((f"{where}[{key!r}]", item, inner))
        else:  # (a tuple, a shape, loads as a list)
            stack.extend((f"{where}[{k}]", item, inner) for k, item in enumerate(value))
    return None


_NOT_TEXT = (
    "holds a character that is not Unicode text (a lone surrogate, from bytes decoded with "
    "errors='surrogateescape'?); store valid text"
)


def _metadata_advice(value: object) -> str:
    """What ``value`` (not a JSON value) is, and what to store instead."""
    kind = type(value)
    if kind.__module__ == "numpy":
        if getattr(value, "ndim", 0):
            return f"a numpy.{kind.__name__}: convert it with .tolist()"
        return f"a numpy.{kind.__name__}: convert it with .item() (or float(), int(), bool())"
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    a = "an" if name[0] in "aeiou" else "a"
    if isinstance(value, (set, frozenset)):
        return f"{a} {name}, which JSON cannot hold: store a sorted list"
    if isinstance(value, (_dt.date, _dt.time)):
        return f"{a} {name}, which JSON cannot hold: store its .isoformat() string"
    if isinstance(value, (bytes, bytearray)):
        return f"{name}, which JSON cannot hold: store a string (decoded text, or base64)"
    return (
        f"{a} {name}, which JSON cannot hold: metadata holds str, numbers, bools, None, lists "
        f"and dicts"
    )


def _json_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {_kind(metadata)}")
    problem = _metadata_problem(metadata)
    if problem:
        raise TypeError(f"metadata cannot be stored: {problem}")
    # plain JSON values (tuples as lists, subclasses as their bases); the walk above bounds
    # the nesting, so this round trip cannot run out of stack
    return dict(json.loads(json.dumps(metadata, allow_nan=False)))


# -- save ---------------------------------------------------------------------------------------
def save(
    obj: Any,
    path: str | os.PathLike[str],
    *,
    sample: Any = None,
    metadata: dict[str, Any] | None = None,
    compress: str = "none",
    handler: str | None = None,
    format: str | None = None,
) -> ArtifactInfo:
    """Save a fitted model to one ``.amber`` file, atomically.

    Parameters
    ----------
    obj:
        The fitted model (scikit-learn estimator or pipeline, or any picklable object; None
        and classes are refused, an unfitted estimator is warned about).
    path:
        Where to write. An existing file is replaced only once the new one is complete.
    sample:
        A few input rows. Stored with the model's outputs on them (the probe) and used to
        infer the input signature; ``verify`` re-runs it.
    metadata:
        JSON-serialisable user data (metrics, tags, description).
    compress:
        ``"none"`` (default; entries memory-mappable), ``"zlib"``, ``"lzma"``, ``"lz4"``,
        ``"zstd"``, or ``"auto"`` (chosen per entry by measurement).
    format:
        The payload format, where a handler offers several: ``"keras"`` (default) or
        ``"savedmodel"`` for Keras models, ``"export"`` or ``"class"`` for PyTorch modules,
        ``"ubj"`` (default) or ``"json"`` for XGBoost. ``None`` picks the default.

    Examples
    --------
    >>> info = amber.save(clf, "iris.amber", sample=X[:32])  # doctest: +SKIP
    """
    if not isinstance(path, (str, os.PathLike)):
        swapped = isinstance(obj, (str, os.PathLike))
        raise TypeError(
            f"path must be a file path, got {_kind(path)}"
            + ("; the arguments are amber.save(model, path)" if swapped else "")
        )
    if obj is None:
        raise TypeError("amber.save was given None, not a model: pass the fitted object")
    if isinstance(obj, type):
        example = f" ({obj.__name__}().fit(X, y))" if hasattr(obj, "fit") else ""
        raise TypeError(
            f"amber.save was given the class {obj.__qualname__}, not a model: pass the fitted "
            f"object{example}"
        )
    meta = _json_metadata(metadata)
    chosen = handler_for(obj, handler, format=format)
    _warn_if_unfitted(obj, path)
    _warn_if_extra_columns(obj, sample, path)
    with artifact_writer(path, compress=compress) as writer:
        saved = call_save(chosen, obj, writer, format=format, sample=sample)
        manifest: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "amber_version": _amber_version(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "handler": chosen.name,
            "framework": saved.framework,
            "object_type": saved.object_type,
            "payload": saved.payload,
            "globals": list(saved.globals),
            "untrusted": list(saved.untrusted),
            "environment": _env.capture(saved.modules, saved.distributions),
            "metadata": meta,
        }
        if sample is not None:
            as_reloaded = getattr(chosen, "as_reloaded", None)
            probed = obj if as_reloaded is None else as_reloaded(obj)
            probe = _probe.record(
                probed,
                sample,
                writer,
                methods=probe_methods(chosen, probed),
                parity=saved.parity,
                original=None if probed is obj else probe_methods(chosen, obj),
            )
            manifest["probe"] = probe
            _warn_if_large_probe(writer.entries, path)
            manifest["signature"] = {
                "inputs": _probe.describe(sample),
                "outputs": {m: spec["signature"] for m, spec in probe["outputs"].items()},
            }
        writer.finish(manifest)
        manifest["entries"] = writer.entries
    if saved.untrusted:
        trustable, runners = split_trust(saved.untrusted)
        advice = [f"loading it will need trusted={trustable!r}"] if trustable else []
        advice += [runners_note(runners)] if runners else []
        if any(n.startswith("scipy.stats.") for n in saved.untrusted):
            advice.append(
                "these scipy.stats distributions (not scipy.stats' own frozen with plain "
                "numbers, which Amber stores as data) are a randomized search's "
                "param_distributions: save search.best_estimator_ to store the fitted model alone"
            )
        if any(n.startswith("__main__") for n in saved.untrusted):
            advice.append(
                "what it names from __main__ (this script or notebook) must be defined by any "
                "program that loads it: better move it into a module both import"
            )
        warnings.warn(
            f"{os.fspath(path)!r} references types or functions outside Amber's allowlist "
            f"({', '.join(saved.untrusted)}); {'; '.join(advice)}",
            UserWarning,
            stacklevel=2,
        )
    if saved.over_bounds:
        warnings.warn(
            f"{os.fspath(path)!r}: {'; '.join(saved.over_bounds[:3])}. Amber refuses sizes "
            f"like these from files it cannot trust (a forged file could ask for gigabytes), "
            f"so loading this one will need allow_arbitrary_code=True",
            UserWarning,
            stacklevel=2,
        )
    if saved.refused_state:
        shown = "; ".join(saved.refused_state[:3])
        more = len(saved.refused_state) - 3
        warnings.warn(
            f"{os.fspath(path)!r} was saved, but Amber's safe load will refuse it: {shown}"
            + (f" (and {more} more)" if more > 0 else "")
            + ". Amber cannot prove that state safe to use when it comes from a file, so "
            "loading this one will need allow_arbitrary_code=True (only for a file you made "
            "yourself)",
            UserWarning,
            stacklevel=2,
        )
    return ArtifactInfo(Path(path), manifest, writer.file_size, False)


_LARGE_PROBE = 16 << 20


def _warn_if_large_probe(entries: dict[str, dict[str, Any]], path: Any) -> None:
    size = sum(rec["size"] for name, rec in entries.items() if name.startswith("probe/"))
    if size > _LARGE_PROBE:
        warnings.warn(
            f"{os.fspath(path)!r}: the probe (sample= and the outputs on it) takes "
            f"{size / 1e6:,.1f} MB, which the file carries and every verify re-computes; a "
            f"few rows prove parity as well (sample=X[:32])",
            UserWarning,
            stacklevel=3,
        )


def _warn_if_extra_columns(obj: Any, sample: Any, path: Any) -> None:
    """Warn when a DataFrame sample has columns the model was not fitted on: the signature
    records the sample's columns, so a server would require them in every request."""
    names = getattr(obj, "feature_names_in_", None)
    columns = getattr(sample, "columns", None)
    if names is None or columns is None or not hasattr(sample, "iloc"):
        return
    try:
        known = set(names)
        extra = [c for c in columns if c not in known]
    except TypeError:  # unhashable labels: no verdict
        return
    if extra:
        shown = ", ".join(map(repr, extra[:5])) + (", ..." if len(extra) > 5 else "")
        warnings.warn(
            f"{os.fspath(path)!r}: sample= has {counted(len(extra), 'column')} the model was "
            f"not fitted on ({shown}); the input signature records every sample column, so a "
            f"server would ask for them too: pass sample[model.feature_names_in_]",
            UserWarning,
            stacklevel=3,
        )


def _warn_if_unfitted(obj: Any, path: Any) -> None:
    """Warn on a scikit-learn estimator that was never fitted (saving the template rather than
    the model is the usual slip); scikit-learn is not imported for anything else."""
    base = sys.modules.get("sklearn.base")
    if base is None or not isinstance(obj, base.BaseEstimator):
        return
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        # the estimator's own verdict, or its fitted attributes (scikit-learn's rule); then
        # scikit-learn's full check, which reads tags (slow: a tenth of a small model's
        # save), only to confirm a model that looks unfitted
        own = getattr(obj, "__sklearn_is_fitted__", None)
        looks_fitted = (
            own() if callable(own) else any(k.endswith("_") and k[:2] != "__" for k in vars(obj))
        )
        if not looks_fitted:
            check_is_fitted(obj)
    except NotFittedError:
        warnings.warn(
            f"{os.fspath(path)!r}: this {type(obj).__name__} is not fitted, so the file holds "
            f"its parameters only; call .fit(X, y) before saving if you meant the model",
            UserWarning,
            stacklevel=3,
        )
    except Exception:  # an estimator whose own check fails: no verdict
        pass


def _amber_version() -> str:
    from amber import __version__

    return __version__


# -- load ---------------------------------------------------------------------------------------


def _load_payload(handler: Any, reader: Any, payload: dict[str, Any], policy: LoadPolicy) -> Any:
    """``handler.load``, with what a framework raises on a file it cannot read (RuntimeError
    from load_state_dict, XGBoostError, LightGBMError, KeyError, RecursionError, an h5
    OSError, ...) reported as the FormatError every damaged or crafted file gets."""
    try:
        return handler.load(reader, payload, policy=policy)
    except (AmberError, Warning, ImportError, MemoryError, TimeoutError, InterruptedError):
        raise
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # the system's (a disk, a signal handler's deadline), not the file's
        raise FormatError(
            f"{str(reader.path)!r} could not be loaded by its {handler.name} handler: "
            f"{type(exc).__name__}: {str(exc)[:300]}. The file passed its checksums but its "
            f"content is inconsistent (damaged before it was saved, or crafted); re-create it "
            f"from the original model with amber.save()"
        ) from exc


def load(
    source: str | os.PathLike[str],
    *,
    mmap: bool = False,
    trusted: list[str] | tuple[str, ...] | None = None,
    allow_arbitrary_code: bool = False,
    probe: ProbeMode = "auto",
    parity: ParityMode = "raise",
    environment: EnvMode = "warn",
    trusted_keys: Sequence[Any] | None = None,
) -> Any:
    """Load a model from an ``.amber`` artifact, or from a pickle or joblib file, safely.

    No code from the file runs: only allowlisted types (plus ``trusted`` ones) are built.
    Checksums of every entry read are verified. The stored probe is re-run when the environment
    differs from the one that saved the model (``probe="always"`` forces it, ``"never"`` skips
    it); a difference raises :class:`~amber.errors.ParityError` (across environments,
    ``parity="warn"`` turns that into a warning).

    Parameters
    ----------
    mmap:
        Memory-map large arrays instead of reading them: no copy, pages shared with the page
        cache; the map is private copy-on-write, so writes never reach the file.
    trusted:
        Extra types to admit, as ``"pkg.module.Name"`` strings.
    allow_arbitrary_code:
        Run any pickle code: only for files you made yourself. Warns every time.
    environment:
        ``"strict"`` refuses to load in an environment that differs from the saving one.
    trusted_keys:
        Ed25519 public keys (``.pub`` files, PEM bytes or key objects): the artifact must carry
        a valid signature by one of them, and every entry's BLAKE3 digest is checked.

    ``source`` may also be a registry URI: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or
    ``models:/NAME/latest``, resolved in ``$AMBER_REGISTRY`` (default ``./amber-models``).

    Examples
    --------
    >>> clf = amber.load("iris.amber")  # doctest: +SKIP
    >>> clf = amber.load("models:/iris@production")  # doctest: +SKIP
    """
    check_load_options(probe, parity, environment, mmap)
    if _registry_uri(source):
        from amber.registry._default import load_uri

        with _naming(str(source)):
            return load_uri(
                str(source),
                mmap=mmap,
                trusted=trusted,
                allow_arbitrary_code=allow_arbitrary_code,
                probe=probe,
                parity=parity,
                environment=environment,
                trusted_keys=trusted_keys,
            )
    policy = LoadPolicy.make(trusted, allow_arbitrary_code=allow_arbitrary_code)
    check = None
    if trusted_keys is not None:
        from amber.security._signing import reader_check

        check = reader_check(trusted_keys)
    path = _existing(source)
    # a pipe or a device is copied to a file first: telling an artifact from a pickle opens it
    # once and the load again, and a named pipe's writer loses what the first open left unread
    with _local(path) as local:
        try:
            return _load_path(
                local,
                policy=policy,
                mmap=mmap,
                probe=probe,
                parity=parity,
                environment=environment,
                check=check,
            )
        except AmberError as exc:  # (a try costs nothing until it catches)
            _name_the_file(exc, path, local)
            raise


def _load_path(
    path: Path,
    *,
    policy: LoadPolicy,
    mmap: bool,
    probe: ProbeMode,
    parity: ParityMode,
    environment: EnvMode,
    check: Callable[[ArtifactReader], object] | None = None,
) -> Any:
    """``load`` of a local path; ``check`` vets the open artifact first (signatures, registry)."""
    if check is not None and not _is_artifact(path):
        raise IntegrityError(
            f"{str(path)!r} is not an Amber artifact, so it cannot carry a signature and a "
            f"signed load refuses it; convert it (`amber convert`) and sign the result"
        )
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise IsADirectoryError(
                f"{str(path)!r} is a folder, not a model file; pass the path of an .amber, "
                f"pickle or joblib file (a folder loads only as a TensorFlow SavedModel, which "
                f"holds saved_model.pb)"
            )
        return _savedmodel_dir(path, policy)
    try:
        reader = ArtifactReader(path, mmap=mmap)
    except NotAnArtifact:
        from amber.security._foreign import load_foreign

        return load_foreign(path, policy)
    with reader:
        if check is not None:
            check(reader)
        manifest = reader.manifest
        changes = _env.diff(manifest["environment"])
        # another processor alone is no reason to refuse or to warn: the probe is re-run (the
        # same code computes in other last bits there) and speaks only if it differs
        versions = _env.software(changes)
        if versions and environment == "strict":
            raise EnvironmentMismatchError(
                f"{str(path)!r} was saved in another environment ({'; '.join(versions)}) and "
                f"environment='strict' forbids loading it; install the same versions, or load "
                f"with environment='warn' to re-run the probe instead"
            )
        chosen = get_handler(manifest["handler"])
        model = _load_payload(chosen, reader, manifest["payload"], policy)
        has_probe = "probe" in manifest
        if has_probe and (probe == "always" or (probe == "auto" and changes)):
            methods = probe_methods(chosen, model)
            report = _probe.check(
                model, manifest["probe"], reader, exact=not changes, methods=methods
            )
            _judge(path, report, changes, parity)
        elif versions:
            warnings.warn(
                f"{str(path)!r} was saved in another environment ({'; '.join(versions)}) and "
                + (
                    "has no probe, so parity cannot be checked; re-save it with sample= to "
                    "record one"
                    if not has_probe
                    else "probe='never' skipped the parity check"
                ),
                EnvironmentMismatch,
                stacklevel=3,
            )
    return model


def load_savedmodel_dir(
    source: str | os.PathLike[str],
    *,
    trusted: list[str] | tuple[str, ...] | None = None,
    allow_arbitrary_code: bool = False,
) -> Any:
    """Load an existing TensorFlow SavedModel folder (``tf.saved_model.load``).

    The result answers :func:`amber.predict` through its ``serving_default`` signature, and
    ``amber.save`` stores it as an artifact. ``amber.load`` on a folder does the same. Graphs
    that use file or Python-callback ops are refused unless those ops are trusted
    (``trusted=["tf.raw_ops.ReadFile"]``).

    Examples
    --------
    >>> m = amber.load_savedmodel_dir("exported/")  # doctest: +SKIP
    >>> y = amber.predict(m, x)                      # doctest: +SKIP
    """
    policy = LoadPolicy.make(trusted, allow_arbitrary_code=allow_arbitrary_code)
    return _savedmodel_dir(_existing(source), policy)


def _savedmodel_dir(path: Path, policy: LoadPolicy) -> Any:
    if not path.is_dir() or not (path / "saved_model.pb").is_file():
        raise FormatError(
            f"{str(path)!r} is not a TensorFlow SavedModel folder (no saved_model.pb in it); "
            f"pass the folder that tf.saved_model.save or model.export wrote"
        )
    tf_handler: Any = get_handler("tensorflow")
    return tf_handler.load_dir(path, policy=policy)


def _judge(path: Path, report: _probe.ProbeReport, changes: list[str], parity: ParityMode) -> None:
    """Raise or warn as ``report`` and ``parity`` say; a match on another processor alone (the
    same packages) is no news."""
    versions = _env.software(changes)
    if report.ok:
        if versions:
            warnings.warn(
                f"{str(path)!r} was saved in another environment ({'; '.join(changes)}); the "
                f"probe was re-run and still matched ({', '.join(report.matched)} "
                f"{report.tolerance})",
                EnvironmentMismatch,
                stacklevel=4,
            )
        return
    details = "; ".join(f"{m}: {why}" for m, why in report.mismatched.items())
    if not changes:
        raise ParityError(
            f"{str(path)!r}: the reloaded model does not reproduce the stored outputs in the "
            f"environment that saved it ({details}). The artifact or the installed libraries "
            f"are not what they claim; do not use this model, re-save it from the original"
        )
    remedy = (
        "Install the saving environment's versions"
        if versions
        else "On this processor the model computes differently beyond the precision of its "
        "floats (an ill-conditioned model amplifies rounding); check it here"
    )
    message = (
        f"{str(path)!r} was saved in another environment ({'; '.join(changes)}) and the "
        f"reloaded model no longer reproduces the stored outputs ({details}). {remedy}, or "
        f"pass parity='warn' to accept the difference"
    )
    if parity == "raise":
        raise ParityError(message)
    warnings.warn(message, EnvironmentMismatch, stacklevel=4)


# -- inspect, verify, scan ----------------------------------------------------------------------
def inspect(source: str | os.PathLike[str]) -> ArtifactInfo:
    """Read an artifact's manifest: framework, types referenced, environment, signature, metadata.

    Runs no model code and imports no framework.

    Examples
    --------
    >>> print(amber.inspect("iris.amber"))  # doctest: +SKIP
    """
    path = _existing_or_registered(source)
    with _local(path) as local, _naming(path, local):
        if not _is_artifact(local):
            raise FormatError(
                f"{str(path)!r} is not an Amber artifact; for a pickle or joblib file, `amber "
                f"scan` (amber.scan()) shows what it imports and `amber convert` makes an "
                f"artifact of it"
            )
        with ArtifactReader(local) as reader:
            signed = SIGNATURE_NAME in reader.zip_entries
            signer = None
            if signed:
                from amber.security._signing import claimed_signer

                signer = claimed_signer(reader.raw_signature())
            return ArtifactInfo(path, reader.manifest, reader.file_size, signed, signer)


def verify(
    source: str | os.PathLike[str],
    *,
    trusted: list[str] | tuple[str, ...] | None = None,
    allow_arbitrary_code: bool = False,
    trusted_keys: Sequence[Any] | None = None,
) -> VerifyReport:
    """Check everything: structure, every entry's blake3 digest, the payload, the probe.

    Raises an :class:`~amber.errors.AmberError` subclass on the first problem; returns a
    :class:`VerifyReport` saying what was checked otherwise. With ``trusted_keys`` (Ed25519
    public keys), a valid signature by one of them is required too.

    Examples
    --------
    >>> print(amber.verify("iris.amber"))  # doctest: +SKIP
    >>> print(amber.verify("models:/iris@production"))  # doctest: +SKIP
    """
    if _registry_uri(source):  # the registry also checks the manifest recorded at push
        from amber.registry._default import default_registry

        with _naming(str(source)):
            report: VerifyReport = default_registry().verify(
                str(source),
                trusted_keys=trusted_keys,
                trusted=trusted,
                allow_arbitrary_code=allow_arbitrary_code,
            )
        return report
    path = _existing(source)
    with _naming(path):  # every message names the file (a truncated zip's said none)
        return _verify_path(path, trusted, allow_arbitrary_code, trusted_keys)


def _verify_path(
    path: Path,
    trusted: list[str] | tuple[str, ...] | None,
    allow_arbitrary_code: bool,
    trusted_keys: Sequence[Any] | None,
) -> VerifyReport:
    if not _is_artifact(path):
        from amber.security._foreign import converted_name, unconvertible

        said = unconvertible(path)
        if said is not None:  # no pickle or joblib file either: nothing to convert
            raise FormatError(
                f"{said}; verify checks .amber artifacts (and `amber convert` makes one of a "
                f"pickle or joblib file), so there is nothing here to verify or convert"
            )
        out = converted_name(path)
        raise FormatError(
            f"{str(path)!r} is not an Amber artifact, so it carries no checksums or probe to "
            f"verify; convert it with `amber convert {path} {out}` first"
        )
    policy = LoadPolicy.make(trusted, allow_arbitrary_code=allow_arbitrary_code)
    report = VerifyReport(path)
    with ArtifactReader(path) as reader:
        manifest = reader.manifest
        report.checks.append(
            f"format {manifest['format_version']}: zip structure and manifest are well formed"
        )
        reader.verify_all(strong=True)
        n = len(reader.entries)
        parts = sum(len(d) for d in reader.parts.values())
        report.checks.append(
            f"{counted(n, 'entry', 'entries')}: blake3 digests and CRC-32s match"
            + (f", and the xxh3-128 digests of {counted(parts, 'part', 'parts')}" if parts else "")
        )
        if trusted_keys is not None:
            from amber.security._signing import check_reader

            report.checks.append(str(check_reader(reader, trusted_keys)))
        elif (signature := reader.raw_signature()) is not None:
            from amber.security._signing import parse_signature

            # only a key proves who signed it; without one, the document must still be one
            parse_signature(signature, repr(str(path)))
            report.checks.append("signed (pass a public key to check the signature)")
        chosen = get_handler(manifest["handler"])
        model = _load_payload(chosen, reader, manifest["payload"], policy)
        referenced = f"{counted(len(manifest.get('globals', [])), 'global')} referenced"
        report.checks.append(
            f"payload loaded WITHOUT the allowlist or size bounds (allow_arbitrary_code=True; "
            f"{referenced})"
            if allow_arbitrary_code
            else f"payload loaded through the allowlist ({referenced})"
        )
        changes = _env.diff(manifest["environment"])
        report.environment_changes = changes
        if "probe" in manifest:
            probe_report = _probe.check(
                model,
                manifest["probe"],
                reader,
                exact=not changes,
                methods=probe_methods(chosen, model),
            )
            if not probe_report.ok:
                details = "; ".join(f"{m}: {w}" for m, w in probe_report.mismatched.items())
                where = (
                    f"in another environment ({'; '.join(changes)})"
                    if changes
                    else "in the environment that saved it"
                )
                raise ParityError(
                    f"{str(path)!r}: the reloaded model does not reproduce the stored outputs "
                    f"{where}: {details}"
                )
            report.probe = str(probe_report)
        else:
            report.probe = "no probe stored (save with sample= to prove parity)"
    return report


def scan(source: str | os.PathLike[str]) -> Any:
    """List the Python globals a file would import, with a verdict, without loading anything.

    Works on ``.amber`` artifacts and on pickle and joblib files.

    Examples
    --------
    >>> print(amber.scan("legacy_model.pkl"))  # doctest: +SKIP
    """
    from amber.security import _foreign

    path = _existing_or_registered(source)
    with _local(path) as local, _naming(path, local):
        if not _is_artifact(local):
            return _foreign.scan_file(local, name=str(path))
        with ArtifactReader(local) as reader:
            manifest = reader.manifest
            payload = manifest["payload"]
            if payload.get("kind") != "pickle":
                # a torch program or class, a Keras archive, a booster: the names the manifest
                # lists, as inspect shows them and as a load refuses them
                return _foreign.scan_artifact_names(
                    path,
                    str(payload.get("kind") or manifest["handler"]),
                    manifest.get("globals", []),
                    manifest.get("untrusted", []),
                )
            from amber.handlers.sklearn import pickle_payload

            stream_name, buffers = pickle_payload(payload)
            return _foreign.scan_artifact_stream(path, reader.read(stream_name), len(buffers))
