"""scipy.stats frozen distributions (a randomized search's ``param_distributions``), stored as data.

Pickled as they are, scipy's distribution objects carry Python source that their
``__setstate__`` runs (``_parse_arg_template``, given to ``exec``) and, for discrete ones,
vectorized bound methods (reached through ``getattr``): loading them runs what the file says,
so the safe loader refuses them. A distribution that is one of scipy.stats' own (``uniform``,
``loguniform``, ``randint``, ...), frozen with plain numbers, is stored instead as a call to
:func:`frozen` with its name, its arguments and its random state; loading freezes it again
through scipy.stats, with scipy's own code. Any other distribution (a subclass of the user's,
``rv_histogram``, array arguments) is pickled as before.

This module's path and :func:`frozen`'s arguments are part of the file format (docs/FORMAT.md).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

from amber.errors import FormatError

__all__ = ["dispatch_table", "frozen"]

_MAX_ARGUMENTS = 16  # scipy's distributions take at most a handful of shapes, loc and scale


def _is_number(value: Any) -> bool:
    import numpy as np

    if type(value) is int:
        return -(2**63) <= value < 2**63  # scipy makes arrays of them: int64
    if type(value) in (float, bool):
        return True
    return (
        isinstance(value, (np.integer, np.floating, np.bool_))
        and not isinstance(value, np.timedelta64)  # a numpy integer too
        and np.ndim(value) == 0
    )


def _plain_arguments(args: Any, kwds: Any) -> bool:
    """Whether ``args`` is a tuple and ``kwds`` a dict by name, of at most
    ``_MAX_ARGUMENTS`` plain numbers in all."""
    return (
        isinstance(args, tuple)
        and isinstance(kwds, dict)
        and len(args) + len(kwds) <= _MAX_ARGUMENTS
        and all(_is_number(a) for a in args)
        and all(type(k) is str and _is_number(v) for k, v in kwds.items())
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and bool(a == b)


def _public(name: Any) -> Any:
    """scipy.stats' own distribution called ``name`` (looked up without importing), or None."""
    stats = sys.modules.get("scipy.stats")
    if stats is None or not isinstance(name, str):
        return None
    from scipy.stats import rv_continuous, rv_discrete

    # the module's dictionary, not getattr: scipy.stats' __getattr__ imports submodules
    candidate = vars(stats).get(name)
    if isinstance(candidate, (rv_continuous, rv_discrete)) and candidate.name == name:
        return candidate
    return None


def _reduce(obj: Any) -> Any:
    """``obj`` as a call to :func:`frozen`, or pickled as usual when it is not one of
    scipy.stats' own distributions frozen with plain numbers."""
    import numpy as np

    dist = obj.dist
    canonical = _public(getattr(dist, "name", None))
    params = getattr(dist, "_updated_ctor_param", None)
    args, kwds = obj.args, obj.kwds
    if (
        canonical is None
        or type(canonical) is not type(dist)
        or params is None
        or not _plain_arguments(args, kwds)
    ):
        return obj.__reduce_ex__(5)
    mine, theirs = params(), canonical._updated_ctor_param()
    if mine.keys() != theirs.keys() or not all(_same(mine[k], theirs[k]) for k in mine):
        return obj.__reduce_ex__(5)
    state = dist._random_state
    # the process-wide generator, as a distribution frozen here uses, stays that one on load
    random_state = None if state is np.random.mtrand._rand else state
    return frozen, (dist.name, args, kwds, random_state)


def dispatch_table() -> dict[type, Callable[[Any], Any]]:
    """Reducers for the pickler: scipy.stats' frozen distributions, when scipy.stats is loaded
    (else no object can be one)."""
    if "scipy.stats" not in sys.modules:
        return {}
    from scipy.stats import _distn_infrastructure as infrastructure

    return {
        cls: _reduce
        for cls in (
            getattr(infrastructure, "rv_continuous_frozen", None),
            getattr(infrastructure, "rv_discrete_frozen", None),
        )
        if cls is not None
    }


def frozen(name: Any, args: Any, kwds: Any, random_state: Any) -> Any:
    """scipy.stats' distribution ``name`` frozen with ``args`` and ``kwds`` (plain numbers),
    drawing from ``random_state`` (a numpy RandomState or Generator; None: numpy's global one).

    Called by the unpickler for what :func:`dispatch_table` wrote; every argument comes from the
    file and is checked before scipy sees it.
    """
    import numpy as np

    if "scipy.stats" not in sys.modules:
        import scipy.stats  # noqa: F401  (the distributions live there)
    dist = _public(name)
    if dist is None:
        raise FormatError(
            f"the file names the distribution {name!r:.80}, which is not one of scipy.stats' "
            f"own; the file is damaged or was not written by Amber"
        )
    if not _plain_arguments(args, kwds):
        raise FormatError(
            f"the arguments of the distribution {name!r} in the file are not plain numbers; "
            f"the file is damaged or was not written by Amber"
        )
    if random_state is not None and not isinstance(
        random_state, (np.random.RandomState, np.random.Generator)
    ):
        raise FormatError(
            f"the random state of the distribution {name!r} in the file is a "
            f"{type(random_state).__name__}, not a numpy RandomState or Generator"
        )
    try:
        made = dist(*args, **kwds)
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise FormatError(
            f"scipy.stats.{name} cannot be frozen with the file's arguments ({exc})"
        ) from exc
    if random_state is not None:
        made.random_state = random_state
    return made
