"""Every error Amber raises, in one shallow hierarchy.

::

    AmberError (Exception)
    ├── FormatError (ValueError)          not an artifact, unknown version, malformed content
    ├── IntegrityError (ValueError)       hash or signature mismatch, truncation, corruption
    ├── UntrustedTypeError (TypeError)    the payload names a type or function off the allowlist
    ├── ParityError (AssertionError)      the probe's outputs differ after reload
    ├── EnvironmentMismatchError          the environment differs and the policy is strict
    ├── SchemaError (ValueError)          input does not match the model's signature
    ├── ModelNotFound (KeyError)          a registry name, version or alias does not exist
    └── HandlerNotAvailable (ImportError) the framework a handler needs is not installed

    EnvironmentMismatch (UserWarning)     the environment differs; the probe was re-run
    UnsafeLoadWarning (UserWarning)       arbitrary pickle code was allowed to run

Every message says what happened, the offending value, and what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterable

from amber._words import counted

__all__ = [
    "AmberError",
    "EnvironmentMismatch",
    "EnvironmentMismatchError",
    "FormatError",
    "HandlerNotAvailable",
    "IntegrityError",
    "ModelNotFound",
    "ParityError",
    "SchemaError",
    "UnsafeLoadWarning",
    "UntrustedTypeError",
]


class AmberError(Exception):
    """Root of every error Amber raises."""


class FormatError(AmberError, ValueError):
    """The file is not an Amber artifact (or a loadable pickle), or its structure is malformed."""


class IntegrityError(AmberError, ValueError):
    """The bytes are not the bytes that were saved: corruption, truncation or tampering."""


class UntrustedTypeError(AmberError, TypeError):
    """The payload references Python globals that are not on the allowlist.

    ``names`` holds the offending dotted names, sorted.
    """

    def __init__(
        self, names: Iterable[str], *, source: str = "the file", runs_code: bool = False
    ) -> None:
        from amber.security._policy import runners_note, split_trust

        self.names = tuple(sorted(set(names)))
        # runs_code: the names were found (once imported) to run code from the file
        trustable, runners = ([], list(self.names)) if runs_code else split_trust(self.names)
        message = (
            f"{source} references "
            f"{counted(len(self.names), 'type or function', 'types or functions')} outside "
            f"Amber's allowlist: {', '.join(map(_escaped, self.names))}. Nothing from the file "
            f"was run."
        )
        absent = _absent_from_installed(trustable)
        trustable = [n for n in trustable if n not in absent]
        own = [n for n in absent if n.startswith("__main__.")]
        absent = [n for n in absent if n not in own]
        if own:
            message += (
                f" {', '.join(map(_escaped, own))}: defined by the script or notebook that "
                f"saved the file (__main__), and not by this program; define "
                f"{'it' if len(own) == 1 else 'them'} here before loading (then pass "
                f"trusted={own!r} if you trust the file's author), or better, move "
                f"{'it' if len(own) == 1 else 'them'} into a module both programs import and "
                f"save the model again."
            )
        if absent:
            message += (
                f" {', '.join(map(_escaped, absent))} "
                f"{'does' if len(absent) == 1 else 'do'} not exist in the installed "
                f"{_releases(absent)}: the file was written with another release, and trusting "
                f"cannot help; load it where that release is installed (to move the model to "
                f"this release, fit it again here)."
            )
        if trustable:
            message += (
                f" If you trust the file's author and these names, pass trusted={trustable!r} "
                f"(or --trust NAME on the command line); check first with amber.scan() what "
                f"else the file imports."
            )
        if runners:
            message += f" {runners_note([_escaped(r) for r in runners])}."
        super().__init__(message)


def _absent_from_installed(names: Iterable[str]) -> list[str]:
    """The names whose module lacks them: written by another release of its library.

    Only modules already imported, or that the allowlist names (which a load imports for
    allowed names anyway), are looked at: no module named only by a file is imported."""
    import importlib
    import inspect
    import sys
    import types

    from amber.security._allowlist import allowed_modules

    absent = []
    for dotted in names:
        module, sep, attr = dotted.partition(":")
        if not sep:
            module, _, attr = dotted.rpartition(".")
        found = sys.modules.get(module)
        if found is None and module in allowed_modules():
            try:
                found = importlib.import_module(module)
            except ImportError:
                continue
        if found is None:
            continue
        obj: object = found
        for part in attr.split("."):
            # a static lookup: numpy, scipy and scikit-learn import submodules in a module
            # __getattr__, which a plain getattr would run for a name the file chose
            owner, obj = obj, inspect.getattr_static(obj, part, _MISSING)
            if obj is _MISSING:
                lazy = isinstance(owner, types.ModuleType) and "__getattr__" in vars(owner)
                if not lazy:  # else it may be there, made on first use: not known absent
                    absent.append(dotted)
                break
    return absent


_MISSING = object()


def _releases(names: Iterable[str]) -> str:
    """``scikit-learn 1.9.1``: the distributions and versions behind ``names``."""
    from amber._env import distribution_for, installed_version

    found = []
    for name in names:
        dist = distribution_for(name.split(".")[0].split(":")[0])
        if dist is not None:
            entry = f"{dist} {installed_version(dist) or ''}".strip()
            if entry not in found:
                found.append(entry)
    return ", ".join(found) or "packages"


def _escaped(name: str) -> str:
    """A name from a file, its control characters escaped: a message printed on a terminal
    must not let the file move the cursor or erase what was written."""
    from amber._info import printable_line

    return printable_line(name)


class ParityError(AmberError, AssertionError):
    """The reloaded model's outputs on the stored probe differ from the original outputs."""


class EnvironmentMismatchError(AmberError):
    """The loading environment differs from the saving one and the policy forbids it."""


class SchemaError(AmberError, ValueError):
    """Input does not match the model's recorded signature."""


class ModelNotFound(AmberError, KeyError):
    """A registry name, version or alias does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class HandlerNotAvailable(AmberError, ImportError):
    """The framework a handler needs is not installed."""


class EnvironmentMismatch(UserWarning):
    """The loading environment differs from the saving one (a warning; the probe was re-run)."""


class UnsafeLoadWarning(UserWarning):
    """Arbitrary pickle code was allowed to run because the caller opted in."""
