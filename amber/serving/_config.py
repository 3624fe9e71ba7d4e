"""What to serve and how: frozen option groups for ``create_app`` and ``amber serve``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ModelSpec", "ServeConfig"]

Batching = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class ModelSpec:
    """One model to serve.

    Parameters
    ----------
    source:
        An ``.amber`` file or a registry URI (``models:/iris@production``, ``models:/iris/3``).
    name:
        The name in URLs (``/v2/models/<name>/infer``); defaults to the file's stem or the
        registry name.
    batching:
        ``"auto"`` (measure at load: on when a batch costs clearly less than its rows one by
        one), ``"on"`` or ``"off"``.
    max_batch_size, max_latency_ms:
        The most rows one prediction call gathers, and the longest a request waits for others.
        Requests larger than ``max_batch_size`` are predicted alone.
    trusted:
        Extra types to admit when loading, as for ``amber.load(trusted=...)``.
    allow_arbitrary_code:
        As for ``amber.load(allow_arbitrary_code=True)``: only for files you made yourself.
        Each load (and each hot swap to a new version) runs the file's pickle code unchecked
        and lifts Amber's size bounds, with an ``UnsafeLoadWarning`` in the log.
    """

    source: str
    name: str | None = None
    batching: Batching = "auto"
    max_batch_size: int = 1024
    max_latency_ms: float = 2.0
    trusted: tuple[str, ...] = ()
    allow_arbitrary_code: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.allow_arbitrary_code, bool):
            raise TypeError(
                f"allow_arbitrary_code must be True or False, got {self.allow_arbitrary_code!r}"
            )
        if self.batching not in ("auto", "on", "off"):
            raise ValueError(
                f"batching must be 'auto', 'on' or 'off', got {self.batching!r} (--batching)"
            )
        size = self.max_batch_size
        if type(size) is not int or size < 1:
            raise ValueError(
                f"the most rows per prediction call must be a whole number of at least 1, got "
                f"{size!r} (--max-batch-size ROWS)"
            )
        check_duration(
            self.max_latency_ms, "the longest wait for a batch, in ms", "--max-latency-ms MS"
        )


def check_duration(value: object, what: str, option: str, *, positive: bool = False) -> None:
    """A duration (seconds or milliseconds, as ``what`` says): a finite number, at least 0
    (more than 0 when ``positive``)."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (value > 0 if positive else value >= 0)
    )
    if not ok:
        bound = "more than 0" if positive else "0 or more"
        raise ValueError(f"{what} must be a finite number, {bound}, got {value!r} ({option})")


@dataclass(frozen=True)
class ServeConfig:
    """Server-wide options.

    ``token`` guards every endpoint that names the models (``Authorization: Bearer <token>``):
    inference, model metadata and readiness, readiness details, ``/metrics`` (its labels name
    the models) and ``/openapi.json`` and ``/docs`` (every model's name and inputs); liveness and
    the readiness verdict stay open for probes. ``public_metrics`` opens ``/metrics``, and
    ``public_docs`` opens ``/openapi.json`` and ``/docs``, to clients without the token.
    ``reload_token`` enables ``POST /admin/reload`` and guards it. ``poll_interval_s`` is how
    often movable sources (aliases, files) are checked for a new version; ``None`` or 0 turns
    polling off. ``preload`` makes startup wait until every model has been tried once, so the
    server accepts no connection before (``amber serve --workers N`` sets it: workers share one
    socket, and one that is still loading must not take requests from one that is ready).
    ``warning_filters="once"`` leaves the process a single warning filter after each model
    loads (every warning shown once per place, as ``amber serve`` shows them anyway):
    scikit-learn's ensembles re-install every filter of the process for each tree of each
    prediction (``sklearn.utils.parallel``), and the dozen filters numpy and scipy add at
    import cost a 100-tree forest 40% of its prediction time. ``amber serve`` sets it; the
    default, ``"keep"``, leaves the filters of a process that mounts the app alone.
    ``freeze_heap`` keeps what the server loaded out of the garbage collector's passes
    (``gc.freeze``; see ``amber.serving._heap``): ``amber serve`` sets it, a process that mounts
    the app keeps its collector as it set it.
    """

    models: tuple[ModelSpec, ...]
    token: str | None = field(default=None, repr=False)
    reload_token: str | None = field(default=None, repr=False)
    public_metrics: bool = False
    public_docs: bool = False
    poll_interval_s: float | None = 30.0
    request_timeout_s: float = 30.0
    max_body_bytes: int = 16 * 1024 * 1024
    registry: str | None = None
    warning_filters: Literal["keep", "once"] = "keep"
    freeze_heap: bool = False
    access_log: bool = True
    preload: bool = False

    def __post_init__(self) -> None:
        for name in ("public_metrics", "public_docs"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        timeout = self.request_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"request_timeout_s must be a number of seconds, got {timeout!r}")
        if not 0 < timeout < 86400:
            raise ValueError(
                f"the request timeout must be more than 0 and less than a day, got {timeout!r} s "
                f"(--request-timeout SECONDS)"
            )
        if self.poll_interval_s is not None:
            check_duration(
                self.poll_interval_s, "the poll interval, in seconds", "--poll-interval SECONDS"
            )
        body = self.max_body_bytes
        if type(body) is not int or body < 1:
            raise ValueError(
                f"the request body limit must be at least 1 byte, got {body!r} (--max-body-mb; "
                f"a limit of 0 would refuse every request)"
            )
