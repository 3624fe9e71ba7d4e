"""Structured logs: one JSON object per line, for access records and model events alike."""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import sys
import time
from typing import Any

import orjson

__all__ = ["ACCESS", "EVENTS", "JsonFormatter", "access", "event", "setup_logging"]

ACCESS = logging.getLogger("amber.serving.access")
EVENTS = logging.getLogger("amber.serving")


def event(level: int, name: str, **fields: Any) -> None:
    """Log a model event (``model_loaded``, ``swap_failed``, ...) with its fields."""
    if EVENTS.isEnabledFor(level):
        EVENTS.log(level, name, extra={"fields": {"event": name, **fields}})


_second: list[Any] = [None, ""]


def _timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds; the part down to the second is reused within a second."""
    whole = int(created)
    if _second[0] != whole:
        _second[0] = whole
        _second[1] = _dt.datetime.fromtimestamp(whole, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second[1]}.{int((created - whole) * 1000):03d}+00:00"


def _head(created: float, level: str, logger: str) -> dict[str, Any]:
    """The fields every line starts with."""
    return {"ts": _timestamp(created), "level": level, "logger": logger}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", ...fields or "message"}``, one line each."""

    def format(self, record: logging.LogRecord) -> str:
        out = _head(record.created, record.levelname.lower(), record.name)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


# Set by setup_logging (the process is the server's own): access records then skip the logging
# machinery (a LogRecord, the handler's lock, a buffered write and a flush: about a twentieth of
# a cheap request) and go to stderr as the same JSON line, in one write.
_direct_fd: int | None = None


def access(fields: dict[str, Any]) -> None:
    """Log one access record (``fields``: method, path, status, ms, ...)."""
    if _direct_fd is not None and not ACCESS.disabled:
        out = {**_head(time.time(), "info", ACCESS.name), **fields}
        with contextlib.suppress(OSError):  # stderr closed at shutdown
            os.write(_direct_fd, orjson.dumps(out, default=str) + b"\n")
        return
    ACCESS.info("access", extra={"fields": fields})


def setup_logging(level: str = "info", *, access_log: bool = True) -> None:
    """Send Amber's and uvicorn's logs to stderr as JSON lines (the CLI's set-up).

    The server's process is ours here, so logging skips what no record of ours uses: the caller's
    file and line (a stack walk per record), thread and process names.
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    ACCESS.disabled = not access_log
    global _direct_fd
    try:
        sys.stderr.flush()
        _direct_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced by something without a fd
        _direct_fd = None
    logging.captureWarnings(True)
