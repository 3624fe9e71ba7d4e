"""What a load is allowed to do: the options that travel together through every loader."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from amber.errors import UnsafeLoadWarning

__all__ = [
    "CODE_RUNNERS",
    "LoadPolicy",
    "parse_global_name",
    "runners_note",
    "runs_code",
    "split_trust",
    "trust_name",
]

#: Globals that run code Amber cannot vet: a nested unpickler (torch's storage loader behind
#: tensors pickled by torch, pickle, joblib, dill) or an evaluator. Trusting one would trust
#: whatever the file holds, so ``trusted=`` refuses them; only ``allow_arbitrary_code=True``
#: loads such a file.
CODE_RUNNERS = frozenset(
    {
        ("torch.storage", "_load_from_bytes"),
        ("torch", "load"),
        ("torch.serialization", "load"),
        ("pickle", "loads"),
        ("pickle", "load"),
        ("pickle", "Unpickler"),
        ("_pickle", "loads"),
        ("_pickle", "load"),
        ("_pickle", "Unpickler"),
        ("numpy", "load"),
        ("numpy.lib.npyio", "load"),
        ("numpy.lib._npyio_impl", "load"),
        ("joblib", "load"),
        ("joblib.numpy_pickle", "load"),
        ("dill", "load"),
        ("dill", "loads"),
        ("dill._dill", "_load_type"),
        ("cloudpickle", "load"),
        ("cloudpickle", "loads"),
        ("marshal", "loads"),
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("builtins", "compile"),
        ("builtins", "__import__"),
        ("importlib", "import_module"),
        ("os", "system"),
        ("posix", "system"),
        ("os", "popen"),
        *(
            (mod, f"exec{s}")
            for mod in ("os", "posix")
            for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")
        ),
        *(
            (mod, f"spawn{s}")
            for mod in ("os", "posix")
            for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")
        ),
        *((mod, f"posix_spawn{s}") for mod in ("os", "posix") for s in ("", "p")),
        ("os", "fork"),
        ("posix", "fork"),
        ("pty", "spawn"),
        ("runpy", "run_path"),
        ("runpy", "run_module"),
        ("runpy", "_run_code"),
        ("code", "interact"),
        ("code", "InteractiveInterpreter"),
        ("codeop", "compile_command"),
        ("builtins", "getattr"),
        ("builtins", "setattr"),
        ("builtins", "delattr"),
        ("builtins", "globals"),
        ("builtins", "vars"),
        ("builtins", "breakpoint"),
        ("torch.serialization", "_load"),
        ("torch", "_load_global_deps"),
        ("ctypes", "CDLL"),
        ("ctypes", "cdll"),
        ("ctypes", "PyDLL"),
        ("subprocess", "Popen"),
        ("subprocess", "run"),
        ("subprocess", "call"),
        ("subprocess", "check_call"),
        ("subprocess", "check_output"),
        ("subprocess", "getoutput"),
        ("subprocess", "getstatusoutput"),
    }
)


# scipy.stats' distribution base classes (the distributions themselves are named ``*_gen``)
_SCIPY_DISTRIBUTIONS = frozenset(
    {
        "rv_generic",
        "rv_continuous",
        "rv_discrete",
        "rv_histogram",
        "rv_sample",
        "rv_frozen",
        "rv_continuous_frozen",
        "rv_discrete_frozen",
    }
)


def runs_code(module: str, name: str, obj: object = None) -> bool:
    """Whether loading ``module.name`` runs code from the file: one of ``CODE_RUNNERS``, or a
    scipy.stats distribution (a class of ``rv_generic`` or ``rv_frozen``, scipy's or a subclass
    of them), whose ``__setstate__`` hands a string of the pickled state to ``exec``
    (``_attach_argparser_methods``). scipy.stats' own distributions frozen with plain numbers
    are saved as data instead (amber/handlers/scipy_stats.py).

    ``obj``: the object itself, once imported; else it is looked up in modules already
    imported, and a name in a module that is not is judged by its name (nothing is imported).
    """
    if (module, name) in CODE_RUNNERS:
        return True
    if obj is None:
        obj = _imported(module, name)
    if obj is None:
        scipy_stats = module == "scipy.stats" or module.startswith("scipy.stats.")
        return scipy_stats and (name.endswith("_gen") or name in _SCIPY_DISTRIBUTIONS)
    infrastructure = sys.modules.get("scipy.stats._distn_infrastructure")
    bases = tuple(
        base
        for base in (getattr(infrastructure, n, None) for n in ("rv_generic", "rv_frozen"))
        if isinstance(base, type)
    )
    return bool(bases) and isinstance(obj, type) and issubclass(obj, bases)


def _imported(module: str, name: str) -> object:
    """``module.name`` if its module is imported already, else None. Looked up in the
    namespaces themselves: a module's ``__getattr__`` (scipy's lazy submodules) is not run."""
    obj: object = sys.modules.get(module)
    for part in name.split(".") if obj is not None else ():
        try:
            obj = vars(obj).get(part)
        except TypeError:  # no __dict__
            return None
    return obj


def trust_name(module: str, name: str) -> str:
    """The name to write in ``trusted=[...]``: the colon form when the name is nested
    (``pkg.mod:Outer.Inner``), where the dotted form would split at the wrong dot."""
    return f"{module}:{name}" if "." in name else f"{module}.{name}"


def split_trust(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """``names`` (sorted) as (those ``trusted=`` can admit, the code runners it never admits)."""
    listed = sorted(set(names))
    runners = [
        n
        for n in listed
        if n.endswith("(Python bytecode)")  # a Keras Lambda
        or ((pair := _split_quietly(n)) is not None and runs_code(*pair))
    ]
    return [n for n in listed if n not in runners], runners


def runners_note(runners: list[str]) -> str:
    return (
        f"{', '.join(runners)} run{'s' if len(runners) == 1 else ''} code Amber cannot vet (a "
        f"nested unpickler, an evaluator, or a scipy.stats distribution, which executes source "
        f"from the file), which no trusted= admits: only "
        f"allow_arbitrary_code=True loads such a file, and only a file you made yourself"
    )


def _split_quietly(name: str) -> tuple[str, str] | None:
    try:
        return parse_global_name(name)
    except ValueError:
        return None


def parse_global_name(name: str) -> tuple[str, str]:
    """Split ``"pkg.mod:Class"`` or ``"pkg.mod.Class"`` into ``("pkg.mod", "Class")``.

    The colon form is exact (it allows nested qualified names such as ``"m:Outer.Inner"``);
    the dotted form takes the last component as the name.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"a trusted name must be a non-empty string like 'pkg.mod.Class', got {name!r}"
        )
    name = name.strip()
    if ":" in name:
        module, _, qualname = name.partition(":")
    else:
        module, _, qualname = name.rpartition(".")
    if not module or not qualname:
        raise ValueError(
            f"trusted name {name!r} has no module part; write it as 'pkg.module.Name' "
            f"or 'pkg.module:Name'"
        )
    return module, qualname


@dataclass(frozen=True)
class LoadPolicy:
    """Options of one load.

    Attributes
    ----------
    trusted:
        Extra ``(module, name)`` pairs admitted beyond the built-in allowlist.
    allow_arbitrary_code:
        Run any pickle code at all. Only for files you made yourself; warns every time.
    """

    trusted: frozenset[tuple[str, str]] = frozenset()
    allow_arbitrary_code: bool = False

    @classmethod
    def make(
        cls, trusted: Iterable[str] | None = None, *, allow_arbitrary_code: bool = False
    ) -> LoadPolicy:
        if isinstance(trusted, str):
            raise TypeError(
                f"trusted must be a list of names, not the string {trusted!r}; "
                f"write trusted=[{trusted!r}]"
            )
        if allow_arbitrary_code is not True and allow_arbitrary_code is not False:
            raise TypeError(
                f"allow_arbitrary_code must be True or False, got {allow_arbitrary_code!r}"
            )
        pairs = frozenset(parse_global_name(n) for n in (trusted or ()))
        runners = sorted(trust_name(*p) for p in pairs if runs_code(*p))
        if runners:
            raise ValueError(
                f"trusted= cannot admit {', '.join(runners)}: it runs code Amber cannot vet (a "
                f"nested unpickler, an evaluator, or a scipy.stats distribution, which executes "
                f"source from the file), so trusting it would trust anything the file holds. "
                f"For a file you made yourself, load it with allow_arbitrary_code=True instead"
            )
        return cls(trusted=pairs, allow_arbitrary_code=allow_arbitrary_code)

    def warn_if_unsafe(self, source: str) -> None:
        if self.allow_arbitrary_code:
            warnings.warn(
                f"loading {source} with allow_arbitrary_code=True: the pickle stream may run any "
                f"code with your privileges. Use this only for files you created yourself.",
                UnsafeLoadWarning,
                stacklevel=3,
            )
